"""What the stock atproto SDK costs against a node: login, posting and reading.

    python bench/atproto_sdk.py [--posts 200] [--reads 50]

Starts a node in this process (127.0.0.1, port 0, fresh data dir), makes one
account, and times the SDK's sync ``Client`` (in a worker thread, as a script would
run it) doing: ``login`` (createSession + getProfile; once, so it includes the
SDK's first-call set-up), ``--posts`` sequential ``send_post`` calls, then
``--reads`` each of ``get_timeline(limit=50)``, ``get_author_feed(limit=50)`` and
``get_profile``. Prints median and p95 per call.
The figures include the SDK's own work (pydantic models, httpx) and the node's, on
the same cores; compare with ``bench/views.py`` for the node alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atproto import Client, models

# The project root first: this directory's protocol.py would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.config import NodeConfig
from node.wiring import Node

PASSWORD = "correct horse battery staple"


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    rate = len(samples) / sum(samples)
    return (
        f"{name:<28} x{len(samples):<4} median {1000 * statistics.median(samples):6.1f} ms"
        f"   p95 {1000 * p95:6.1f} ms   {rate:6.0f}/s"
    )


def _run(url: str, posts: int, reads: int) -> None:
    maker = Client(base_url=url)
    maker.com.atproto.server.create_account(
        models.ComAtprotoServerCreateAccount.Data(handle="bench.skyfed.test", password=PASSWORD)
    )
    maker.request.close()
    sdk = Client(base_url=url)
    try:
        print(_line("login", _timed(lambda: sdk.login("bench.skyfed.test", PASSWORD), 1)))
        assert sdk.me is not None
        did = sdk.me.did
        counter = iter(range(posts))
        print(_line("send_post", _timed(lambda: sdk.send_post(f"post {next(counter)}"), posts)))
        print(_line("get_timeline(limit=50)", _timed(lambda: sdk.get_timeline(limit=50), reads)))
        feed = _timed(lambda: sdk.get_author_feed(did, limit=50), reads)
        print(_line("get_author_feed(limit=50)", feed))
        print(_line("get_profile", _timed(lambda: sdk.get_profile(did), reads)))
    finally:
        sdk.request.close()


async def main(posts: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Node(NodeConfig(data_dir=Path(tmp), port=0)) as node:
            await asyncio.to_thread(_run, node.url, posts, reads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.reads))
