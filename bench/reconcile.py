"""Negentropy over heads: round trips, bytes each way and seconds, pure and end to end.

    python bench/reconcile.py                    # both parts, standard cases
    python bench/reconcile.py --part protocol    # n=1M d=1 and n=100k d=100 only
    python bench/reconcile.py --part e2e --repos 2000 --missing 20

*protocol*: two parties hold sets shaped exactly like a node's heads
(``Federation._items``: timestamp = microseconds of the head's rev TID, id =
sha256(b"repo\\0" + did + b"\\0" + head CID)); ``d`` of the ``n`` items sit on one side
only (either side, picked at random). The exchange is run in memory with the frame
size limit the node uses (500,000) and with 0 (none). Each case is also run with
the node's real mix -- one repo item *and* one identity item (timestamp 0) per
account -- since that is what a node actually reconciles.

*e2e*: two real nodes in this process. A holds ``--repos`` accounts (identity and
repo, one post each); B holds all but ``--missing`` of them. B dials A; the clock runs
from the dial to the moment both hold identical heads; bytes are those counted on the
link by both federations.

Refuses nothing; sets are seeded, so runs are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.cid import cid_for_msgpack
from protocol.ingest import rev_micros
from protocol.negentropy import Negentropy, NegentropyStorageVector
from protocol.syntax import TidClock, tid_from_parts

NODE_FRAME_LIMIT = 500_000  # node/net/federation.py _NEG_FRAME_LIMIT
Items = list[tuple[int, bytes]]

# Reference figures (hoytech/negentropy JS, per REFERENCES.md): (round trips, up, down).
REFERENCE = {(1_000_000, 1): (3, 1200, 1200), (100_000, 100): (2, 30_000, 87_000)}


@dataclass(frozen=True, slots=True)
class Result:
    round_trips: int
    up: int
    down: int
    seal_seconds: float
    reconcile_seconds: float
    found: int


def head_items(accounts: int, seed: int, *, identities: bool) -> Items:
    """Items like ``Federation._items``: repo heads at their rev's microseconds, and
    (with ``identities``) identity heads at timestamp 0."""
    rng = random.Random(seed)
    now = 1_795_000_000_000_000  # 2026-11-18, in microseconds
    month = 30 * 86_400 * 1_000_000
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    items: Items = []
    for _ in range(accounts):
        did = "did:skyfed:" + "".join(rng.choices(alphabet, k=24))
        # Each repo has its own rev clock: any microsecond in the last month.
        rev = tid_from_parts(now - rng.randrange(month), rng.randrange(1024))
        head = cid_for_msgpack(rng.randbytes(120)).to_bytes()
        micros = rev_micros(rev)
        item_id = hashlib.sha256(b"repo\0" + did.encode() + b"\0" + head).digest()
        items.append((micros, item_id))
        if identities:
            ident = cid_for_msgpack(rng.randbytes(200)).to_bytes()
            items.append((0, hashlib.sha256(b"ident\0" + did.encode() + b"\0" + ident).digest()))
    return items


def split(items: Items, d: int, seed: int) -> tuple[Items, Items]:
    """Put ``d`` random items on one side only (either side at random)."""
    rng = random.Random(seed + 1)
    differing = rng.sample(range(len(items)), d)
    client_only = {k for k in differing if rng.random() < 0.5}
    server_only = set(differing) - client_only
    client = [it for k, it in enumerate(items) if k not in server_only]
    server = [it for k, it in enumerate(items) if k not in client_only]
    return client, server


def seal(items: Items) -> NegentropyStorageVector:
    vec = NegentropyStorageVector()
    for ts, id_ in items:
        vec.insert(ts, id_)
    vec.seal()
    return vec


def exchange(client_items: Items, server_items: Items, frame_limit: int, d: int) -> Result:
    t0 = time.perf_counter()
    client = Negentropy(seal(client_items), frame_limit)
    server = Negentropy(seal(server_items), frame_limit)
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
    return Result(rounds, up, down, t1 - t0, t2 - t1, len(found))


def protocol_part(cases: list[tuple[int, int]], seed: int) -> None:
    print("== negentropy over head-shaped items (pure protocol, in memory)")
    for n, d in cases:
        for identities in (False, True):
            accounts = n // 2 if identities else n
            items = head_items(accounts, seed, identities=identities)
            client, server = split(items, d, seed)
            shape = "repo+identity items" if identities else "repo items only"
            for limit in (NODE_FRAME_LIMIT, 0):
                r = exchange(client, server, limit, d)
                ref = REFERENCE.get((n, d))
                ref_txt = (
                    f"  [reference: {ref[0]} rt, ~{ref[1] / 1000:.1f} KB up, "
                    f"~{ref[2] / 1000:.1f} KB down]"
                    if ref and not identities
                    else ""
                )
                print(
                    f"n={n:>9,} d={d:<4} {shape:<20} fsl={limit:<7}: {r.round_trips} round trips, "
                    f"up {r.up:>8,} B, down {r.down:>8,} B, seal {r.seal_seconds:5.2f} s, "
                    f"exchange {r.reconcile_seconds * 1e3:6.1f} ms{ref_txt}",
                    flush=True,
                )


# -- end to end -------------------------------------------------------------------------


async def e2e_part(repos: int, missing: int, seed: int, limit: float) -> None:
    from node.config import NodeConfig
    from node.wiring import Node
    from protocol.identity import IdentityOp, did_for_genesis
    from protocol.keys import SigningKey
    from protocol.mst import MemoryBlockStore
    from protocol.repo import Repo, Write

    print(f"== end to end: A holds {repos} accounts, B lacks {missing}; B dials A", flush=True)
    rng = random.Random(seed)
    clock = TidClock(7)
    base = int(time.time() * 1e6) - 3_600_000_000
    built = []  # (did, identity op bytes, [events])
    t0 = time.perf_counter()
    for i in range(repos):
        key = SigningKey.from_seed(rng.randbytes(32))
        op = IdentityOp.create(
            rotation_keys=[key.did_key()],
            signing_key=key.did_key(),
            handle=f"user{i}.skyfed.test",
            endpoint="http://127.0.0.1:1",
            prev=None,
            signer=key,
        )
        did = did_for_genesis(op)
        store = MemoryBlockStore()
        stamp = "2026-11-23T12:00:00.000Z"
        first = Repo.create(did, key, rev=clock.next(base + 2 * i), time=stamp, source=store)
        store.update(first.blocks)
        post = {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": stamp}
        rkey = clock.next(base + 2 * i + 1)
        second = first.repo.apply_writes(
            [Write("create", "app.bsky.feed.post", rkey, post)], key, rev=rkey, time=stamp
        )
        built.append((did, op.to_bytes(), [first.event, second.event]))
    print(f"   built {repos} signed repos in {time.perf_counter() - t0:.1f} s", flush=True)
    lacking = set(rng.sample(range(repos), missing))
    with tempfile.TemporaryDirectory(prefix="skyfed-rec-") as tmp:
        cfg = {"port": 0, "reconcile_interval": 3600.0, "share_peers": False}
        a = Node(NodeConfig(data_dir=Path(tmp) / "a", **cfg))  # type: ignore[arg-type]
        b = Node(NodeConfig(data_dir=Path(tmp) / "b", **cfg))  # type: ignore[arg-type]
        await a.start()
        await b.start()
        try:
            t0 = time.perf_counter()
            for i, (did, op, events) in enumerate(built):
                for node in (a, b) if i not in lacking else (a,):
                    await node.federation.ingest_identity(did, [op])
                    for ev in events:
                        await node.federation.ingest_event(ev, None)
            print(f"   loaded both nodes in {time.perf_counter() - t0:.1f} s", flush=True)
            t_rows = time.perf_counter()
            await a.storage.all_heads()
            await a.storage.identity_heads()
            t_rows = time.perf_counter() - t_rows
            t_items = time.perf_counter()
            await a.federation._items()
            t_items = time.perf_counter() - t_items
            ingested_before = b.federation.ingested
            want = await _heads(a)
            start = time.perf_counter()
            b.federation.dial(a.url)
            async with asyncio.timeout(limit):
                while await _heads(b) != want:  # noqa: ASYNC110 - bench polls two stores
                    await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - start
            fa, fb = a.federation, b.federation
            print(
                f"   equal heads {elapsed:.2f} s after the dial "
                f"(handshake + negentropy + {missing} identity and {missing} repo fetches)"
            )
            print(
                f"   bytes on the link: B->A {fb.bytes_out:,} B, A->B {fa.bytes_out:,} B "
                f"(B fetched {fb.ingested - ingested_before} repo snapshots)"
            )
            print(
                f"   one Federation._items() over {2 * repos} items at A: {t_items * 1e3:.1f} ms"
                f" (of which the two SQLite reads {t_rows * 1e3:.1f} ms); it runs per session"
                " and per whatis"
            )
        finally:
            await b.stop()
            await a.stop()


async def _heads(node: object) -> dict[str, str]:
    rows = await node.storage.all_heads()  # type: ignore[attr-defined]
    return {did: str(head) for did, head, _ in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--part", choices=("all", "protocol", "e2e"), default="all")
    ap.add_argument("--n", type=int, help="items in all (default: the two standard cases)")
    ap.add_argument("--d", type=int, default=1, help="items on one side only")
    ap.add_argument("--repos", type=int, default=2000, help="e2e: accounts at A")
    ap.add_argument("--missing", type=int, default=20, help="e2e: of which B lacks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="e2e: give up after")
    args = ap.parse_args()
    if args.part in ("all", "protocol"):
        cases = [(args.n, args.d)] if args.n else [(1_000_000, 1), (100_000, 100)]
        protocol_part(cases, args.seed)
    if args.part in ("all", "e2e"):
        asyncio.run(e2e_part(args.repos, args.missing, args.seed, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
