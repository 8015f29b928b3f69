"""CPU cost of indexing records (node/appview/index.py) in one tree, per record.

    PYTHONPATH=TREE python bench/index_cost.py DB

Copies the database ``DB`` (one ``bench/views.py --data-dir`` built, say), takes its
posts, likes, reposts and follows, and times (``time.process_time``, best of three)
indexing each as a new record does in ``_apply_commit``: ``unindex_record`` then
``index_record``, inside one transaction that is rolled back. Run it with two trees'
``PYTHONPATH`` (``git worktree add /tmp/old COMMIT``) on the same ``DB`` to compare
what a change to indexing costs every write.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# Not this directory (bench/protocol.py would shadow the package): the tree on
# PYTHONPATH is the one measured.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from node.appview.index import index_record, unindex_record  # noqa: E402

COLLECTIONS = (
    "app.bsky.feed.post",
    "app.bsky.feed.like",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="skyfed-index-cost-") as tmp:
        db = Path(tmp) / "copy.sqlite3"
        shutil.copy(sys.argv[1], db)
        conn = sqlite3.connect(db, isolation_level=None)
        rows = conn.execute(
            "SELECT r.did, r.collection, r.rkey, r.cid, b.data FROM records r"
            " JOIN blocks b ON b.cid = r.cid"
            f" WHERE r.collection IN ({','.join('?' * len(COLLECTIONS))}) ORDER BY r.rkey",
            COLLECTIONS,
        ).fetchall()
        best = float("inf")
        for _ in range(3):
            conn.execute("BEGIN")
            for did, collection, rkey, _cid, _data in rows:
                unindex_record(conn, did, collection, rkey)  # as if new (not timed)
            t0 = time.process_time()
            for did, collection, rkey, cid, data in rows:
                unindex_record(conn, did, collection, rkey)
                index_record(conn, did, collection, rkey, data, cid, "2026-12-01T00:00:00.000Z")
            best = min(best, time.process_time() - t0)
            conn.execute("ROLLBACK")
        conn.close()
    print(f"{len(rows):,} records: {best:.2f} s CPU, {1e6 * best / len(rows):.0f} us/record")


if __name__ == "__main__":
    main()
