"""CPU per getTimeline page in one process, with a post's CID text cached and not.

    python bench/page_cpu.py DB [--pages 200] [--rounds 3]

DB is a node's SQLite file (e.g. the one ``bench/views.py --data-dir DIR`` keeps in
``DIR/data/node.sqlite3``). Renders ``--pages`` first pages (limit 50) of random
viewers with ``node.appview.views.timeline_page`` over a read-only connection, and
measures ``time.process_time`` per page, alternating uncached and cached CID text
(``views._cid_text``) in each round; the same viewers in both, so the cached
measure hits for the posts seen before, as repeated timelines do.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.appview import views
from node.appview.render import open_reader
from protocol.cid import CID


def plain(cid: bytes) -> str:
    return CID.from_bytes(cid).to_str()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db")
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    conn = open_reader(args.db)
    viewers = [r[0] for r in conn.execute("SELECT DISTINCT viewer FROM feed_items LIMIT 100")]
    cached = views._cid_text

    def ms_per_page() -> float:
        rng = random.Random(1)
        t0 = time.process_time()
        for _ in range(args.pages):
            views.timeline_page(views._Read(conn, rng.choice(viewers), "http://x"), 50, None)
        return (time.process_time() - t0) / args.pages * 1e3

    ms_per_page()  # warm the page cache and record caches
    for i in range(args.rounds):
        views._cid_text = plain  # type: ignore[assignment]
        a = ms_per_page()
        views._cid_text = cached
        b = ms_per_page()
        print(f"round {i}: uncached {a:.2f}, cached {b:.2f} ms CPU/page ({b / a:.2f})")


if __name__ == "__main__":
    main()
