#!/usr/bin/env python3
"""Render a node's feed in the terminal, using only the public client API.

    .venv/bin/python examples/render_feed.py http://127.0.0.1:2583
    .venv/bin/python examples/render_feed.py http://127.0.0.1:2583 --login alice.skyfed.test

Without --login it shows the network's latest posts as that node sees them; with
--login (the password is read from the SKYFED_PASSWORD environment variable or asked
for) it shows that account's timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import os
import sys
import textwrap
from typing import Any

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)
import aiohttp

from node.client import Client, XrpcError, node_url
from node.counts import format_count


def ago(iso: str) -> str:
    then = datetime.datetime.fromisoformat(iso)
    seconds = (datetime.datetime.now(datetime.UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def render(item: dict[str, Any]) -> str:
    post = item["post"]
    author = post["author"]
    name = author.get("displayName") or author["handle"]
    lines = []
    if "reason" in item:
        lines.append(f"  ⟳ reposted by @{item['reason']['by']['handle']}")
    if "reply" in item and "author" in item["reply"]["parent"]:
        lines.append(f"  ↳ replying to @{item['reply']['parent']['author']['handle']}")
    lines.append(f"{name} @{author['handle']} · {ago(post['indexedAt'])}")
    lines += textwrap.wrap(post["record"]["text"], 72, initial_indent="  ", subsequent_indent="  ")
    counts = (
        format_count(post.get(key), one, many)
        for key, one, many in (
            ("replyCount", "reply", "replies"),
            ("repostCount", "repost", "reposts"),
            ("likeCount", "like", "likes"),
        )
    )
    lines.append("  " + " · ".join(counts))
    return "\n".join(lines)


async def main(url: str, login: str | None) -> int:
    async with Client(url) as c:
        if login:
            password = os.environ.get("SKYFED_PASSWORD") or getpass.getpass(
                f"password for {login}: "
            )
            await c.login(login, password)
            out = await c.call("app.bsky.feed.getTimeline", params={"limit": 30})
            title = f"timeline of @{login} on {url}"
        else:
            out = await c.call("skyfed.feed.getLatest", params={"limit": 30})
            title = f"latest posts on {url}"
        print(title)
        print("─" * len(title))
        for item in out["feed"]:
            print(render(item))
            print()
        if not out["feed"]:
            print("(nothing yet)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node_url", help="the node's URL, e.g. http://127.0.0.1:2583")
    parser.add_argument("--login", metavar="HANDLE", help="show this account's timeline")
    args = parser.parse_args()
    try:
        args.node_url = node_url(args.node_url)  # 127.0.0.1:2583 means http://
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        code = asyncio.run(main(args.node_url, args.login))
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
