"""Render a node's feed in the terminal, using only the public client API.

    python examples/render_feed.py http://127.0.0.1:2583
    python examples/render_feed.py http://127.0.0.1:2583 --login alice.skyfed.test

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

from node.client import Client, XrpcError


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
    lines.append(f"  💬 {post['replyCount']}  ⟳ {post['repostCount']}  ♥ {post['likeCount']}")
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
        sys.exit(asyncio.run(main(args.node_url, args.login)))
    except XrpcError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: cannot reach {args.node_url}: {e}", file=sys.stderr)
        sys.exit(1)
