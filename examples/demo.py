"""The skyfed demo: a node on this machine, two accounts, a short conversation.

    python examples/demo.py            # runs the story, then serves until Ctrl-C
    python examples/demo.py --no-wait  # runs the story and exits (used by the tests)

It starts a node on 127.0.0.1 (a free port, a fresh data directory under a temporary
folder unless --data-dir is given), creates alice and bob, has them post, reply, like
and follow, and prints what a client reads back from the node: records, the signed
repo head, and the firehose events the conversation produced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path

from node.app import Node
from node.client import Client, RecordRef
from node.config import NodeConfig

PASSWORD = "demo-password-123"


def _rkey(ref: RecordRef) -> str:
    return ref.uri.rsplit("/", 1)[1]


async def story(url: str) -> None:
    async with Client(url) as alice, Client(url) as bob, Client(url) as reader:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        print(f"alice  {alice.did}")
        print(f"bob    {bob.did}")

        events: list[str] = []
        all_seen = asyncio.Event()

        async def tail() -> None:
            async for header, body in reader.subscribe(cursor=1):
                ops = ", ".join(f"{o['action']} {o['path']}" for o in body.get("ops", []))
                events.append(
                    f"  seq {body.get('seq')}: {header.get('t')} {body.get('repo')} {ops}"
                )
                if len(events) == 7:  # 2 account creations + 5 writes
                    all_seen.set()

        tail_task = asyncio.create_task(tail())

        hello = await alice.post("Hello from a node anyone can run!")
        reply = await bob.post("Hi alice, no company can take this down.", reply_to=hello)
        await alice.like(reply)
        await bob.follow(alice.did)
        await alice.follow(bob.did)

        print("\nWhat a client reads back:")
        for who in (alice, bob):
            handle = who.session.handle if who.session else "?"
            posts = await reader.list_records(who.did, "app.bsky.feed.post")
            for rec in posts["records"]:
                value = rec["value"]
                prefix = "  ↳ reply " if "reply" in value else "  "
                print(f"{prefix}@{handle}: {value['text']}")
        likes = await reader.list_records(alice.did, "app.bsky.feed.like")
        print(f"  alice likes {len(likes['records'])} post(s); ", end="")
        follows = await reader.list_records(bob.did, "app.bsky.graph.follow")
        print(f"bob follows {len(follows['records'])} account(s)")
        head = await reader.call("com.atproto.sync.getLatestCommit", params={"did": alice.did})
        print(f"  alice's signed repo head: {head['cid']} (rev {head['rev']})")

        await asyncio.wait_for(all_seen.wait(), 10)
        tail_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail_task
        print("\nThe firehose (every node's public stream of signed commits):")
        print("\n".join(events))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="keep the node's data here")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--no-wait", action="store_true", help="exit after the story")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skyfed-demo-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        config = NodeConfig(data_dir=data_dir, port=args.port)
        async with Node(config) as node:
            print(f"skyfed node {node.node_did} at {node.url}\n")
            await story(node.url)
            if args.no_wait:
                return
            print(f"\nThe node keeps serving at {node.url} — try:")
            print(f"  curl '{node.url}/xrpc/com.atproto.sync.listRepos'")
            print("Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
