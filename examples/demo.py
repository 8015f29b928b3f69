#!/usr/bin/env python3
"""The skyfed demo: three peered nodes on this machine and a conversation across them.

    .venv/bin/python examples/demo.py          # runs the story and exits (make demo)
    .venv/bin/python examples/demo.py --serve  # then keeps the nodes up until Ctrl-C
                                               # (make demo-serve)

Three nodes start on 127.0.0.1 (free ports, fresh data directories under a temporary
folder unless --data-dir is given) and link to each other. alice's home is node A,
bob's is node B. They follow each other, post, reply, like and repost; every commit
is signed by its author and gossiped. carol, whose home is node C, follows both, and
node C, which hosts neither author, renders her timeline: anyone's posts can be read
from any node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)

from node.client import Client, RecordRef
from node.config import NodeConfig
from node.counts import format_count
from node.wiring import Node

PASSWORD = "demo-password-123"


async def wait_for_paths(client: Client, paths: set[str], limit: float = 20) -> list[str]:
    """Follow a node's firehose until it has seen a commit touching every path."""
    seen: list[str] = []
    async with asyncio.timeout(limit):
        async for header, body in client.subscribe(cursor=1):
            for op in body.get("ops", []):
                if f"at://{body['repo']}/{op['path']}" in paths:
                    paths.discard(f"at://{body['repo']}/{op['path']}")
                    seen.append(
                        f"  seq {body['seq']:>3}  {header['t']}  {op['action']} {op['path']}"
                    )
            if not paths:
                return seen
    return seen


def render_timeline(feed: list[dict[str, Any]]) -> None:
    """Oldest first, replies indented under what they answer."""
    for item in reversed(feed):
        post = item["post"]
        author = post["author"]
        indent = "    ↳ " if "reply" in item else "  "
        if "reason" in item:
            print(f"  ⟳ @{item['reason']['by']['handle']} reposted:")
        counts = ", ".join(
            format_count(post.get(key), one, many)
            for key, one, many in (
                ("replyCount", "reply", "replies"),
                ("repostCount", "repost", "reposts"),
                ("likeCount", "like", "likes"),
            )
        )
        print(f"{indent}@{author['handle']}: {post['record']['text']}   ({counts})")


async def story(urls: list[str]) -> None:
    a, b, c = urls
    async with Client(a) as alice, Client(b) as bob, Client(c) as carol:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await carol.create_account("carol.skyfed.test", PASSWORD)
        print(f"alice  {alice.did}  (home: node A)")
        print(f"bob    {bob.did}  (home: node B)")
        print(f"carol  {carol.did}  (home: node C, a reader)\n")

        refs: list[RecordRef] = []
        refs.append(await alice.follow(bob.did))
        refs.append(await bob.follow(alice.did))
        hello = await alice.post("Hello from node A! Anyone can run a node.")
        refs.append(hello)
        reply = await bob.post("Hi alice, I'm on node B and I can read you.", reply_to=hello)
        refs.append(reply)
        refs.append(
            await alice.post(
                "No company can take this conversation down.", reply_to=reply, root=hello
            )
        )
        refs.append(await alice.like(reply))
        refs.append(await bob.repost(hello))

        print("Waiting for the commits to reach node C, which hosts neither author…")
        events = await wait_for_paths(carol, {r.uri for r in refs})
        print("\n".join(events))
        await carol.follow(alice.did)
        await carol.follow(bob.did)

        timeline = await carol.call("app.bsky.feed.getTimeline", params={"limit": 20})
        print("\ncarol's timeline, rendered by node C:")
        render_timeline(timeline["feed"])

        same = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not same and loop.time() < deadline:
            heads = []
            for url in urls:
                async with Client(url) as c2:
                    repos = await c2.call("com.atproto.sync.listRepos")
                    heads.append({r["did"]: r["head"] for r in repos["repos"]})
            same = all(h == heads[0] for h in heads)
            if not same:
                await asyncio.sleep(0.1)  # poll: carol's follows are still travelling
        print(f"\nAll three nodes hold the same signed heads: {'yes' if same else 'not yet'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="keep the nodes' data under here")
    parser.add_argument(
        "--serve", action="store_true", help="after the story, keep the nodes up until Ctrl-C"
    )
    # The story used to serve by default; --no-wait (its opt-out) is still accepted.
    parser.add_argument("--no-wait", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skyfed-demo-") as tmp:
        root = args.data_dir or Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            for name in "abc":
                peers = tuple(n.url for n in nodes)  # each new node links to the earlier ones
                config = NodeConfig(data_dir=root / f"node-{name}", port=0, peers=peers)
                nodes.append(await stack.enter_async_context(Node(config)))
            for name, node in zip("ABC", nodes, strict=True):
                print(f"node {name}  {node.url}  {node.node_did}")
            print()
            await story([n.url for n in nodes])
            if not args.serve:
                print("\nDone; the nodes are stopped. To keep them up and look around:")
                print("  make demo-serve   (or: .venv/bin/python examples/demo.py --serve)")
                return
            print("\nThe nodes keep serving — try:")
            print(f"  open {nodes[2].url}/ in a browser")
            print(f"  .venv/bin/python examples/render_feed.py {nodes[2].url}")
            print("Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
