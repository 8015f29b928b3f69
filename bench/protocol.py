"""Protocol-core speed, each figure as a ratio to a baseline measured in the same run.

    python bench/protocol.py [--events N] [--keys N] [--history N]

Rates are per CPU second, each pair measured in turns (:func:`rates`). Prints: raw
ed25519 verifies/s (libsodium, as protocol/keys.py verifies, and OpenSSL through
``cryptography``, which the node used when issue 16's targets were set: libsodium is
about 1.6 times as fast, so the same event verification scores a lower ratio against
it; both ratios are printed); full commit-event verifications/s (decode, signature, inversion
check) and their ratio (target >= 0.5); canonical msgpack decode+encode of typical
records against plain msgpack (target ratio >= 0.5); MST inserts of 100k keys;
and (issue #16) the CPU cost of a one-post commit on a repo kept in memory for
``--history`` commits, against the same repo loaded afresh from its blocks (same
tree, same depth: only the history differs; target ratio 1.0).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.commit import CommitEvent, verify_commit_event
from protocol.encoding import decode, encode
from protocol.keys import SigningKey
from protocol.mst import MST, MemoryBlockStore
from protocol.repo import Repo, Write
from protocol.syntax import TidClock

TIME = "2026-11-23T12:00:00.000Z"


def rates(fns: list[Callable[[], int]], seconds: float = 1.0) -> list[float]:
    """Operations per CPU second of each ``fn`` (which returns how many it did), run
    in turns (one call each, round after round) until each has had ``seconds``: on a
    shared machine the load then weighs on every figure of a ratio alike, and CPU
    time leaves out the time the process waits for a core."""
    done = [0] * len(fns)
    spent = [0.0] * len(fns)
    while min(spent) < seconds:
        for i, fn in enumerate(fns):
            start = time.process_time()
            done[i] += fn()
            spent[i] += time.process_time() - start
    return [d / t for d, t in zip(done, spent, strict=True)]


def make_events(n: int, key: SigningKey, repo_size: int) -> list[bytes]:
    """A repo of ``repo_size`` posts, then ``n`` single-post commit events."""
    store = MemoryBlockStore()
    clock = TidClock(0)
    micros = 1_700_000_000_000_000
    did = "did:skyfed:benchbenchbenchbenchbenc"
    result = Repo.create(did, key, rev=clock.next(micros), time=TIME, source=store)
    store.update(result.blocks)
    repo = result.repo
    i = 0
    while i < repo_size:
        batch = [
            Write("create", "app.bsky.feed.post", clock.next(micros + i + j), _post(i + j))
            for j in range(min(200, repo_size - i))
        ]
        i += len(batch)
        result = repo.apply_writes(
            batch, key, rev=clock.next(micros + i), time=TIME, validate=False
        )
        store.update(result.blocks)
        repo = result.repo
    events = []
    for j in range(n):
        rkey = clock.next(micros + repo_size + 10 + j)
        w = Write("create", "app.bsky.feed.post", rkey, _post(j))
        result = repo.apply_writes(
            [w], key, rev=clock.next(micros + repo_size + 10 + j), time=TIME, validate=False
        )
        store.update(result.blocks)
        repo = result.repo
        events.append(result.event.to_bytes())
    return events


def history_cost(key: SigningKey, history: int, commits: int = 300) -> None:
    """µs of CPU and blocks per one-post commit: the repo as a node keeps it in
    memory after ``history`` commits, and the same head loaded afresh."""
    store = MemoryBlockStore()
    clock = TidClock(1)
    micros = 1_700_000_000_000_000
    did = "did:skyfed:benchbenchbenchbenchbenc"
    result = Repo.create(did, key, rev=clock.next(micros), time=TIME, source=store)
    store.update(result.blocks)
    kept = result.repo
    for i in range(history):
        w = Write("create", "app.bsky.feed.post", clock.next(micros + 1 + i), _post(i))
        result = kept.apply_writes([w], key, rev=clock.next(micros + 1 + i), time=TIME)
        store.update(result.blocks)
        kept = result.repo
    loaded = Repo.load(store, kept.commit_cid)
    base = micros + history + 10

    def run(repo: Repo, offset: int) -> tuple[float, float]:
        blocks = 0
        start = time.process_time()
        for j in range(commits):
            t = base + offset + j
            w = Write("create", "app.bsky.feed.post", clock.next(t), _post(j))
            result = repo.apply_writes([w], key, rev=clock.next(t), time=TIME)
            store.update(result.blocks)
            blocks += len(result.blocks)
            repo = result.repo
        return 1e6 * (time.process_time() - start) / commits, blocks / commits

    # Both continue from the same head (their blocks are content-addressed, so one
    # store serves both); alternate so a change in machine load falls on both.
    costs: dict[str, list[float]] = {"kept": [], "loaded": []}
    blocks: dict[str, float] = {}
    for r in range(3):
        for name, repo in (("kept", kept), ("loaded", loaded)):
            us, blocks[name] = run(repo, 1_000_000 * (2 * r + (name == "kept")))
            costs[name].append(us)
    kept_us, loaded_us = min(costs["kept"]), min(costs["loaded"])
    print(f"one-post commit, repo kept in memory for {history:,} commits:")
    for label, name, us in (
        ("kept in memory", "kept", kept_us),
        ("loaded afresh", "loaded", loaded_us),
    ):
        print(f"  {label:28s}{us:9.0f} µs  {blocks[name]:6.1f} blocks/commit")
    print(f"  ratio loaded : kept (target 1.0) {loaded_us / kept_us:9.2f}")


def _post(i: int) -> dict[str, object]:
    return {
        "$type": "app.bsky.feed.post",
        "text": f"post number {i}: the quick brown fox jumps over the lazy dog",
        "createdAt": TIME,
        "langs": ["en"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="commit events to verify")
    parser.add_argument("--repo-size", type=int, default=2000, help="posts already in the repo")
    parser.add_argument("--keys", type=int, default=100_000, help="MST keys to insert")
    parser.add_argument(
        "--history", type=int, default=3000, help="commits before the kept/loaded comparison"
    )
    parser.add_argument(
        "--only-history", action="store_true", help="print only the kept/loaded comparison"
    )
    args = parser.parse_args()
    if args.only_history:
        history_cost(SigningKey.from_seed(bytes(range(32))), args.history)
        return

    key = SigningKey.from_seed(bytes(range(32)))
    sig = key.sign(b"x" * 200)
    pub = key.public

    def raw_verify() -> int:
        for _ in range(200):
            pub.verify(sig, b"x" * 200)
        return 200

    events = make_events(args.events, key, args.repo_size)

    def full_verify() -> int:
        for raw in events:
            event = CommitEvent.from_bytes(raw)
            verify_commit_event(event, pub, prev_data=event.prev_data)
        return len(events)

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    openssl_pub = Ed25519PublicKey.from_public_bytes(pub.raw)

    def openssl_verify() -> int:
        for _ in range(200):
            openssl_pub.verify(sig, b"x" * 200)
        return 200

    raw_rate, openssl_rate, event_rate = rates(
        [raw_verify, openssl_verify, full_verify], seconds=2.0
    )
    print(f"raw ed25519 verifies/s          {raw_rate:12,.0f}   (libsodium, as the node)")
    print(f"  the same with OpenSSL         {openssl_rate:12,.0f}   (cryptography)")
    print(f"commit events verified/s        {event_rate:12,.0f}")
    print(f"  ratio (target >= 0.5)         {event_rate / raw_rate:12.2f}")
    print(f"  ratio to OpenSSL's verifies   {event_rate / openssl_rate:12.2f}")

    records = [encode(_post(i)) for i in range(1000)]  # type: ignore[arg-type]
    records += [e for e in events[:200]]

    def plain() -> int:
        for r in records:
            msgpack.packb(msgpack.unpackb(r, raw=False), use_bin_type=True)
        return len(records)

    def canonical() -> int:
        for r in records:
            encode(decode(r))
        return len(records)

    plain_rate, canon_rate = rates([plain, canonical])
    print(f"plain msgpack decode+encode/s   {plain_rate:12,.0f}")
    print(f"canonical decode+encode/s       {canon_rate:12,.0f}")
    print(f"  ratio (target >= 0.5)         {canon_rate / plain_rate:12.2f}")

    from protocol.cid import cid_for_msgpack

    value = cid_for_msgpack(b"\x80")
    start = time.perf_counter()
    tree = MST.empty()
    clock = TidClock(3)
    for i in range(args.keys):
        tree = tree.set(f"app.bsky.feed.post/{clock.next(1_700_000_000_000_000 + i)}", value)
    tree.root()
    elapsed = time.perf_counter() - start
    print(
        f"MST inserts of {args.keys:,} keys      {elapsed:9.2f} s"
        f"  ({elapsed / args.keys * 1e6:.1f} µs/op)"
    )
    history_cost(key, args.history)


if __name__ == "__main__":
    main()
