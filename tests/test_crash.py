"""kill -9 in the middle of writes loses nothing that was acknowledged.

The node runs as a real subprocess (the CLI). Concurrent writers record every write
the node acknowledged; once enough are acknowledged, and while more are in flight,
the process gets SIGKILL. A second process on the same data dir must then serve
every acknowledged record with the same CID, repos that verify from their signed
commits down to every record block, heads that agree between listRepos and
getLatestCommit, and a firehose whose replay from seq 1 verifies inductively.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, Session, XrpcError
from node.cluster.process import node_process as cluster_node
from protocol.car import read_car
from protocol.cid import CID
from protocol.commit import Commit, CommitEvent, verify_commit_event
from protocol.identity import resolve_log
from protocol.keys import VerifyKey, verify_key
from protocol.mst import MST, MemoryBlockStore

PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 4
WORKERS_PER_ACCOUNT = 2  # two loops per account keep its lock contended
KILL_AFTER = 100  # acknowledged writes before the SIGKILL
COLLECTION = "app.bsky.feed.post"


@dataclass(frozen=True, slots=True)
class Acked:
    did: str
    rkey: str
    cid: str


@contextlib.asynccontextmanager
async def node_process(
    data_dir: Path, log: Path, storage: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A node started with the CLI; yields (process, url). Always killed on the way out.
    ``storage`` is its storage setting (SQLite, or a PostgreSQL database: conftest)."""
    settings = {} if storage == "sqlite" else {"storage": storage}
    async with cluster_node(data_dir, settings=settings, log_path=log, kill=True) as node:
        assert node.url.startswith("http://127.0.0.1:"), node.url
        yield node.proc, node.url


async def signing_key(c: Client, did: str) -> VerifyKey:
    """The repo key, from the identity log resolved here (not from the node's doc)."""
    doc = await c.call("skyfed.identity.getLog", params={"did": did})
    ops = [base64.b64decode(o) for o in doc["ops"]]
    return verify_key(resolve_log(did, ops).state.signing_key)


async def write_until_killed(
    c: Client,
    acked: list[Acked],
    in_flight: list[int],
    enough: asyncio.Event,
    killed: asyncio.Event,
) -> None:
    """createRecord in a loop; a connection error is expected only after the kill."""
    i = 0
    while True:
        in_flight[0] += 1
        try:
            ref = await c.post(f"write {i} by {c.did}")
        except aiohttp.ClientError:
            if killed.is_set():
                return
            raise
        finally:
            in_flight[0] -= 1
        # The response arrived, so the node acknowledged it (even if it died since).
        acked.append(Acked(c.did, ref.uri.rsplit("/", 1)[1], ref.cid))
        if len(acked) >= KILL_AFTER:
            enough.set()
        i += 1


async def replay(c: Client, last_seq: int) -> list[tuple[int, CommitEvent]]:
    """Every #commit from seq 1 up to ``last_seq``."""
    events: list[tuple[int, CommitEvent]] = []
    if last_seq == 0:
        return events
    async for header, body in c.subscribe(cursor=1):
        assert header.get("op") == 1, body
        seq = body["seq"]
        if header["t"] == "#commit":
            events.append((seq, CommitEvent.from_value(body)))
        if seq >= last_seq:
            break
    return events


@pytest.mark.timeout(45)
async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path, storage_url: str) -> None:
    data_dir = tmp_path / "node"
    log = tmp_path / "node.log"
    acked: list[Acked] = []
    sessions: list[Session] = []

    # -- phase 1: write, and kill -9 mid-flight -------------------------------------
    async with node_process(data_dir, log, storage_url) as (proc, url):
        clients = [Client(url) for _ in range(ACCOUNTS)]
        try:
            for n, c in enumerate(clients):
                sessions.append(await c.create_account(f"crash{n}.skyfed.test", PASSWORD))
            in_flight = [0]
            enough = asyncio.Event()
            killed = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                for c in clients:
                    for _ in range(WORKERS_PER_ACCOUNT):
                        tg.create_task(write_until_killed(c, acked, in_flight, enough, killed))
                async with asyncio.timeout(20):
                    await enough.wait()
                # Writers loop without pause, so requests are outstanding right now.
                assert in_flight[0] > 0
                killed.set()
                proc.send_signal(signal.SIGKILL)
                assert await proc.wait() == -signal.SIGKILL
        finally:
            for c in clients:
                await c.close()
    assert len(acked) >= KILL_AFTER
    dids = {s.did for s in sessions}

    # The writes went where the storage setting says (no SQLite file beside a server).
    assert (data_dir / "node.sqlite3").exists() == (storage_url == "sqlite")

    # -- phase 2: restart on the same data dir and check everything ------------------
    async with node_process(data_dir, log, storage_url) as (_, url), Client(url) as reader:
        # Every acknowledged write is there, with the same CID.
        async def stored_cid(a: Acked) -> str | None:
            try:
                got = await reader.get_record(a.did, COLLECTION, a.rkey)
            except XrpcError as e:
                if e.error == "RecordNotFound":
                    return None
                raise
            return str(got["cid"])

        found = await asyncio.gather(*(stored_cid(a) for a in acked))
        lost = [a for a, cid in zip(acked, found, strict=True) if cid != a.cid]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost or changed"

        # listRepos heads agree with getLatestCommit.
        listed = (await reader.call("com.atproto.sync.listRepos"))["repos"]
        assert {r["did"] for r in listed} == dids
        heads: dict[str, tuple[str, str]] = {}
        for r in listed:
            latest = await reader.call("com.atproto.sync.getLatestCommit", params={"did": r["did"]})
            assert (latest["cid"], latest["rev"]) == (r["head"], r["rev"])
            heads[r["did"]] = (r["head"], r["rev"])

        # Every repo verifies: signed commit, canonical tree, every record block present.
        keys: dict[str, VerifyKey] = {}
        for did in dids:
            keys[did] = await signing_key(reader, did)
            car = await reader.call("com.atproto.sync.getRepo", params={"did": did})
            roots, blocks = read_car(car)
            assert str(roots[0]) == heads[did][0]
            commit = Commit.from_bytes(blocks[roots[0]])
            commit.verify(keys[did])
            assert commit.did == did
            assert commit.rev == heads[did][1]
            tree = MST.load(MemoryBlockStore(blocks), commit.data)
            count = tree.verify_structure()
            items = list(tree.items())
            assert len(items) == count
            for path, cid in items:
                assert cid in blocks, path
            mine = [a for a in acked if a.did == did]
            assert count >= len(mine)
            for a in mine:
                assert str(tree.get(f"{COLLECTION}/{a.rkey}")) == a.cid

        # The firehose replays from seq 1 and verifies inductively, repo by repo.
        info = await reader.call("skyfed.node.getInfo")
        last_seq = info["firehose"]["lastSeq"]
        async with asyncio.timeout(15):
            events = await replay(reader, last_seq)
        seqs = [seq for seq, _ in events]
        assert seqs == sorted(set(seqs)), "seqs must strictly increase"
        assert seqs[-1] == last_seq
        state: dict[str, tuple[CID | None, str | None]] = {}
        last_commit: dict[str, CID] = {}
        streamed: dict[tuple[str, str], str] = {}
        for _, event in events:
            prev_data, prev_rev = state.get(event.repo, (None, None))
            commit = verify_commit_event(
                event, keys[event.repo], prev_data=prev_data, prev_rev=prev_rev
            )
            # The first event of a repo is its genesis (since null).
            assert (event.since is None) == (prev_rev is None)
            state[event.repo] = (commit.data, commit.rev)
            last_commit[event.repo] = event.commit
            for op in event.ops:
                streamed[(event.repo, op.path)] = str(op.cid)
        assert set(state) == dids
        for did in dids:
            # The stream ends where the repo's head is.
            assert (str(last_commit[did]), state[did][1]) == heads[did]
        for a in acked:
            assert streamed[(a.did, f"{COLLECTION}/{a.rkey}")] == a.cid

        # And the node takes writes again on every recovered repo.
        for s in sessions:
            async with Client(url) as c:
                c.session = s
                await c.post("after the crash")
                latest = await c.call("com.atproto.sync.getLatestCommit", params={"did": s.did})
                assert latest["rev"] > heads[s.did][1]
