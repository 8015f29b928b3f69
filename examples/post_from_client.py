"""Post to a running skyfed node, using only the public client API.

    python examples/post_from_client.py http://127.0.0.1:2583

Creates an account (a fresh handle on one of the node's handle domains), posts,
replies to itself, likes the reply, and prints what it reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from node.client import Client, XrpcError


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
        print(f"  likes: {len(likes['records'])}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node_url", help="the node's URL, e.g. http://127.0.0.1:2583")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(args.node_url)))
    except XrpcError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: cannot reach {args.node_url}: {e}", file=sys.stderr)
        sys.exit(1)
