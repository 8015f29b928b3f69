"""Pure-protocol benchmark of negentropy reconciliation: round trips, bytes, seconds.

No IO beyond printing: both sides run in this process and hand messages to each
other. Sets are deterministic (seeded), so figures are comparable across runs and with
the reference implementation fed the same sets (``--dump DIR`` writes them as
``SET1``/``SET2`` files in the reference fuzz driver's ``timestamp,hexid`` format).

    python bench/reconcile_core.py                 # n=1M d=1 and n=100k d=100
    python bench/reconcile_core.py --n 10000 --d 50 --frame-size-limit 4096
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.negentropy import Negentropy, NegentropyStorageVector

Items = list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Result:
    n: int
    d: int
    round_trips: int
    up: int
    down: int
    seal_seconds: float
    reconcile_seconds: float
    found: int


def make_sets(n: int, d: int, seed: int) -> tuple[Items, Items]:
    """n items in all; d of them (picked at random) sit on one side only, either side."""
    rng = random.Random(seed)
    base = 1_700_000_000
    items = [(base + rng.randrange(n), rng.randbytes(32)) for _ in range(n)]
    differing = rng.sample(range(n), d)
    client_only = {k for k in differing if rng.random() < 0.5}
    server_only = set(differing) - client_only
    client = [it for k, it in enumerate(items) if k not in server_only]
    server = [it for k, it in enumerate(items) if k not in client_only]
    return client, server


def seal(items: Items) -> NegentropyStorageVector:
    storage = NegentropyStorageVector()
    for ts, id_ in items:
        storage.insert(ts, id_)
    storage.seal()
    return storage


def run(n: int, d: int, seed: int, frame_size_limit: int) -> Result:
    client_items, server_items = make_sets(n, d, seed)
    t0 = time.perf_counter()
    client = Negentropy(seal(client_items), frame_size_limit)
    server = Negentropy(seal(server_items), frame_size_limit)
    t1 = time.perf_counter()
    msg: bytes | None = client.initiate()
    up = down = rounds = 0
    found: set[bytes] = set()
    while msg is not None:
        up += len(msg)
        answer = server.reconcile(msg)
        down += len(answer)
        rounds += 1
        msg, have, need = client.reconcile_client(answer)
        found.update(have, need)
    t2 = time.perf_counter()
    if len(found) != d:
        raise SystemExit(f"found {len(found)} differences, expected {d}")
    return Result(n, d, rounds, up, down, t1 - t0, t2 - t1, len(found))


def dump(n: int, d: int, seed: int, directory: Path) -> None:
    client, server = make_sets(n, d, seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, items in (("SET1", client), ("SET2", server)):
        with (directory / f"{name}-n{n}-d{d}").open("w") as f:
            f.writelines(f"{ts},{id_.hex()}\n" for ts, id_ in items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, help="items in all (default: the two standard cases)")
    ap.add_argument("--d", type=int, default=1, help="items on one side only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frame-size-limit", type=int, default=0)
    ap.add_argument("--dump", type=Path, help="write the sets for the reference driver here")
    args = ap.parse_args()
    cases = [(args.n, args.d)] if args.n else [(1_000_000, 1), (100_000, 100)]
    for n, d in cases:
        if args.dump:
            dump(n, d, args.seed, args.dump)
        r = run(n, d, args.seed, args.frame_size_limit)
        print(
            f"n={r.n} d={r.d} fsl={args.frame_size_limit}: {r.round_trips} round trips, "
            f"up {r.up} B, down {r.down} B, seal {r.seal_seconds:.2f} s, "
            f"reconcile {r.reconcile_seconds:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
