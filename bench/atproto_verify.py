"""atproto commit-event verification speed, as a ratio to raw k256 ECDSA verifies
measured in the same run.

    python bench/atproto_verify.py [--events N] [--repo-size N] [--curve k256|p256]

A repo of ``--repo-size`` posts is built, then ``--events`` commits on top of it,
each turned into a ``#commit`` frame the way a PDS sends it (CAR slice with the
commit, the proof nodes and the record, ``prevData``). Two kinds of event: one new
post (the common case on the network), and a mixed commit (create + update +
delete). Prints: raw verifies/s (``cryptography``'s ECDSA over sha-256, DER
signature prepared in advance: no parsing, no low-S check); full verifications/s
(``decode_frame`` + ``verify_commit_event``: frame and CAR decoding, every block
hashed, commit parsed and signature checked, tree loaded and the ops undone to
``prevData``) and their ratio; and the frame-decoding rate alone. The figures are
measured in turns (:func:`rates`), so machine load weighs on them alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.atproto import dagcbor
from protocol.atproto.cid import cid_for_dag_cbor
from protocol.atproto.commit import build_commit_event, verify_commit_event
from protocol.atproto.crypto import SigningKey
from protocol.atproto.firehose import CommitEvent, decode_frame, encode_frame
from protocol.atproto.mst import MST
from protocol.syntax import tid_from_parts

DID = "did:plc:benchbenchbenchbenchbenc"
TIME = "2026-12-02T12:00:00.000Z"
MICROS = 1_764_000_000_000_000


def rates(fns: list[Callable[[], int]], seconds: float) -> list[float]:
    """Operations per second of each ``fn`` (which returns how many it did), run in
    turns (one call each, round after round) until each has had ``seconds``: on a
    shared machine the load then weighs on every figure alike, and the ratios hold
    even when the absolute rates move."""
    done = [0] * len(fns)
    spent = [0.0] * len(fns)
    while min(spent) < seconds:
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            done[i] += fn()
            spent[i] += time.perf_counter() - start
    return [d / t for d, t in zip(done, spent, strict=True)]


def _post(i: int) -> bytes:
    return dagcbor.encode(
        {
            "$type": "app.bsky.feed.post",
            "text": f"post number {i}: the quick brown fox jumps over the lazy dog",
            "createdAt": TIME,
            "langs": ["en"],
        }
    )


def _path(i: int) -> str:
    return f"app.bsky.feed.post/{tid_from_parts(MICROS + i * 1000, 7)}"


def make_events(n: int, key: SigningKey, repo_size: int, mixed: bool) -> list[bytes]:
    """``n`` frames on a repo of ``repo_size`` posts: one create each, or (mixed) a
    create, an update and a delete each."""
    tree = MST.from_entries({_path(i): cid_for_dag_cbor(_post(i)) for i in range(repo_size)})
    rev = tid_from_parts(MICROS + repo_size * 1000, 1)
    frames = []
    for j in range(n):
        new = repo_size + j
        ops: list[tuple[str, str, bytes | None]] = [("create", _path(new), _post(new))]
        if mixed:
            ops.append(("update", _path(2 * j + 1), _post(10**6 + j)))
            ops.append(("delete", _path(2 * j), None))
        next_rev = tid_from_parts(MICROS + (repo_size + j + 1) * 1000, 1)
        event, tree = build_commit_event(
            key=key, did=DID, old_tree=tree, ops=ops, rev=next_rev, since=rev, seq=j, time=TIME
        )
        rev = next_rev
        frames.append(encode_frame(event))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="commit events per kind")
    parser.add_argument("--repo-size", type=int, default=2000, help="posts already in the repo")
    parser.add_argument("--curve", choices=["k256", "p256"], default="k256")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    key = SigningKey.from_seed(args.curve, b"bench")
    pub = key.public
    message = b"x" * 200
    sig = key.sign(message)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    raw_key = pub._key
    algorithm = ec.ECDSA(hashes.SHA256())

    def raw_verify() -> int:
        for _ in range(100):
            raw_key.verify(der, message, algorithm)
        return 100

    single = make_events(args.events, key, args.repo_size, mixed=False)
    mixed = make_events(args.events, key, args.repo_size, mixed=True)

    def full(frames: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            for raw in frames:
                event = decode_frame(raw)
                assert isinstance(event, CommitEvent)
                verify_commit_event(event, pub)
            return len(frames)

        return run

    def decode_only() -> int:
        for raw in single:
            decode_frame(raw)
        return len(single)

    # One call of each is a few tenths of a second: frames come in slices of 50.
    def sliced(frames: list[bytes]) -> list[list[bytes]]:
        return [frames[i : i + 50] for i in range(0, len(frames), 50)]

    def cycle(parts: list[list[bytes]]) -> Callable[[], int]:
        state = {"i": 0}

        def run() -> int:
            part = parts[state["i"] % len(parts)]
            state["i"] += 1
            return full(part)()

        return run

    raw_rate, single_rate, mixed_rate, decode_rate = rates(
        [raw_verify, cycle(sliced(single)), cycle(sliced(mixed)), decode_only], args.seconds
    )
    size = sum(len(f) for f in single) / len(single)
    msize = sum(len(f) for f in mixed) / len(mixed)
    print(f"curve {args.curve}, repo of {args.repo_size:,} posts, {args.events} events per kind")
    print(f"raw {args.curve} ECDSA verifies/s          {raw_rate:12,.0f}")
    print(f"1-create events verified/s        {single_rate:12,.0f}  ({size:,.0f} B/frame)")
    print(f"  ratio to raw verifies           {single_rate / raw_rate:12.2f}")
    print(f"3-op events verified/s            {mixed_rate:12,.0f}  ({msize:,.0f} B/frame)")
    print(f"  ratio to raw verifies           {mixed_rate / raw_rate:12.2f}")
    print(f"frames decoded/s (no checks)      {decode_rate:12,.0f}")


if __name__ == "__main__":
    main()
