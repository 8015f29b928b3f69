"""What verifying a commit event costs the node's own process: inline, or sent to a
worker process (node/net/verify.py), one at a time and 64 at a time.

    python bench/verify_batches.py [--events 300]

Ways: inline; always to workers; the default (to workers, but fewer than
``MIN_BATCH`` waiting at once inline). Prints, for each way, the median wait for one
event and the node process's CPU per event (getrusage: the workers' CPU is not
counted). These figures chose ``node.net.verify.MIN_BATCH``: a worker call costs
the node a fixed amount however few events it carries, so a lone event is cheaper
inline.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.net.verify import MIN_BATCH, EventVerifier
from node.workers import WorkerPool
from tests.test_ingest_workers import Spawner, author


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(events: int) -> None:
    a = author(9, events - 1)
    key = a.key.did_key()
    datas = [(e, e.to_bytes()) for e in a.events]
    pool = WorkerPool(2, idle_seconds=60)
    try:
        ways = (("inline", 10**9, 1), ("workers", 0, 1), ("default", 0, MIN_BATCH))
        for name, backlog, min_batch in ways:
            v = EventVerifier(
                pool,
                lambda: 1,
                Spawner(),
                cold_backlog=backlog,
                warm_backlog=backlog,
                min_batch=min_batch,
            )
            if name != "inline":
                await pool.warm()
            waits = []
            c0 = cpu()
            for e, d in datas:
                t = time.perf_counter()
                await v.verify(e, d, key)
                waits.append(time.perf_counter() - t)
            per = (cpu() - c0) / len(datas)
            print(
                f"{name:8} one at a time: wait p50 {statistics.median(waits) * 1e6:6.0f} us,"
                f" node CPU {per * 1e6:5.0f} us/event"
            )
            c0 = cpu()
            batches = v.batches
            for i in range(0, len(datas), 64):
                await asyncio.gather(*(v.verify(e, d, key) for e, d in datas[i : i + 64]))
            per = (cpu() - c0) / len(datas)
            print(
                f"{name:8} 64 at a time:                  node CPU {per * 1e6:5.0f} us/event"
                f"   ({v.batches - batches} worker calls)"
            )
    finally:
        await pool.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=300)
    args = ap.parse_args()
    asyncio.run(run(args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
