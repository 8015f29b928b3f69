#!/usr/bin/env python3
"""Start three peered skyfed nodes in one process and keep them running.

    .venv/bin/python examples/local_network.py [--data-dir DIR] [--no-wait]

Node B links to A, and C to A and B. Point clients (or examples/render_feed.py) at
any of the printed URLs: what is written on one appears on all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)

from node.config import NodeConfig
from node.wiring import Node


async def main(data_dir: Path | None, no_wait: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="skyfed-net-") as tmp:
        root = data_dir or Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            for name in "abc":
                config = NodeConfig(
                    data_dir=root / f"node-{name}", port=0, peers=tuple(n.url for n in nodes)
                )
                nodes.append(await stack.enter_async_context(Node(config)))
            for name, node in zip("ABC", nodes, strict=True):
                print(f"node {name}  {node.url}", flush=True)

            async def linked() -> None:
                while any(len(n.federation.links) < 2 for n in nodes):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # poll: links come up on their own

            await asyncio.wait_for(linked(), 20)
            print("all three nodes are linked", flush=True)
            if no_wait:
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print("Ctrl-C to stop.", flush=True)
            await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="keep the nodes' data under here")
    parser.add_argument("--no-wait", action="store_true", help="exit once linked")
    args = parser.parse_args()
    asyncio.run(main(args.data_dir, args.no_wait))
