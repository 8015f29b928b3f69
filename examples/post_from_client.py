#!/usr/bin/env python3
"""Post to a running skyfed node, using only the public client API.

    .venv/bin/python examples/post_from_client.py http://127.0.0.1:2583

Creates an account (a fresh handle on one of the node's handle domains), posts,
replies to itself, likes the reply, and prints what it reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)
import aiohttp

from node.client import Client, XrpcError, node_url
from node.counts import format_count


async def main(url: str) -> int:
    async with Client(url) as c:
        info = await c.call("com.atproto.server.describeServer")
        domain = info["availableUserDomains"][0]
        handle = f"user-{secrets.token_hex(3)}{domain}"
        await c.create_account(handle, secrets.token_urlsafe(16))
        print(f"created @{handle} ({c.did})")
        first = await c.post("Posting from a script: hello, decentralized world.")
        reply = await c.post("…and replying to myself.", reply_to=first)
        await c.like(reply)
        page = await c.list_records(c.did, "app.bsky.feed.post")
        for rec in reversed(page["records"]):
            print(f"  {rec['uri']}\n    {rec['value']['text']}")
        likes = await c.list_records(c.did, "app.bsky.feed.like")
        print(f"  {format_count(len(likes['records']), 'like')}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node_url", help="the node's URL, e.g. http://127.0.0.1:2583")
    args = parser.parse_args()
    try:
        args.node_url = node_url(args.node_url)  # 127.0.0.1:2583 means http://
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        code = asyncio.run(main(args.node_url))
        sys.stdout.flush()  # here, so a reader that went away is caught below
    except BrokenPipeError:
        # The reader closed the pipe (`| head`): it had enough. Stop quietly, the way
        # the Python docs' "Note on SIGPIPE" shows.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except XrpcError as e:
        print(f"error: {e.message if e.error == 'NotASkyfedNode' else e}", file=sys.stderr)
        code = 1
    except aiohttp.ClientConnectorError as e:
        refused = isinstance(e.os_error, ConnectionRefusedError)
        reason = "nothing is listening there" if refused else e.os_error.strerror
        print(
            f"error: cannot reach {args.node_url} ({reason}): is a node running there?",
            file=sys.stderr,
        )
        code = 1
    except (aiohttp.ClientError, OSError) as e:
        print(f"error: cannot reach {args.node_url}: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)
