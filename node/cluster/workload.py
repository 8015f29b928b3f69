"""A seeded social workload: accounts spread over the nodes, posting at a rate.

:class:`WorkloadSpec` says how many accounts, the steady rate of writes per second,
the mix of kinds (post, reply, like, follow, delete) and bursts (a flash crowd: a
higher rate for a while). :meth:`Workload.schedule` turns it into a fixed list of
(time, account, kind) from the seed, so two runs issue the same writes at the same
moments; what a reply, like or delete points at is drawn (with the same seed) from
the writes acknowledged by then. Writes go to the account's home node; a write whose
home is down or cut off fails and is counted, never retried: only acknowledged
writes are owed to the network.

Every account is made with a rotation key of its own that the harness holds (a
careful user's recovery key), so a scenario can move it to another node without its
old node's help (:mod:`.steps`).
"""

from __future__ import annotations

import asyncio
import datetime
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from protocol.keys import SigningKey

from ..client import Client, XrpcError
from .harness import Cluster

__all__ = ["KINDS", "Account", "Burst", "Workload", "WorkloadSpec", "WriteRecord"]

KINDS = ("post", "reply", "like", "follow", "delete")
PASSWORD = "cluster harness password"


@dataclass(frozen=True, slots=True)
class Burst:
    at: float
    duration: float
    rate: float


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    accounts: int = 10
    #: Writes per second over the whole cluster.
    rate: float = 5.0
    mix: Mapping[str, float] = field(
        default_factory=lambda: {
            "post": 0.4,
            "reply": 0.2,
            "like": 0.2,
            "follow": 0.1,
            "delete": 0.1,
        }
    )
    bursts: tuple[Burst, ...] = ()
    #: Writes in flight at once at most.
    concurrency: int = 32
    #: Accounts created but never written to by the workload (the harness may
    #: equivocate with them without racing the workload's own writes).
    quiet: tuple[int, ...] = ()


@dataclass(slots=True)
class WriteRecord:
    """One acknowledged write."""

    did: str
    path: str
    cid: str | None  # None for a delete
    rev: str
    home: int
    kind: str
    at: float  # seconds since the run started, when it was acknowledged
    #: Set when a later delete removed the record.
    deleted: bool = False


@dataclass(slots=True)
class Account:
    """One workload account: where it lives now, its session there, its own key."""

    index: int
    home: int
    did: str
    handle: str
    client: Client
    #: The account's own rotation key (first in its identity's list).
    rotation_key: SigningKey
    records: list[WriteRecord] = field(default_factory=list)


class Workload:
    def __init__(self, cluster: Cluster, spec: WorkloadSpec, *, seed: int = 0):
        self.cluster = cluster
        self.spec = spec
        self.seed = seed
        self.accounts: list[Account] = []
        self.acked: list[WriteRecord] = []
        self.failed = 0
        self.failures: dict[str, int] = {}
        self._rng = random.Random(seed ^ 0x5EED)
        self.t0 = time.monotonic()

    async def create_accounts(self) -> None:
        """``spec.accounts`` accounts, round robin over the nodes (a few at a time:
        password hashing is deliberately slow)."""
        slots = asyncio.Semaphore(4)
        n = len(self.cluster.nodes)

        async def make(i: int) -> Account:
            home = i % n
            handle = f"user{i}.skyfed.test"
            client = self.cluster.client(home)
            key = SigningKey.from_seed(secrets.token_bytes(32))
            async with slots:
                session = await client.create_account(handle, PASSWORD, recovery_key=key.did_key())
            return Account(i, home, session.did, handle, client, key)

        self.accounts = list(await asyncio.gather(*(make(i) for i in range(self.spec.accounts))))

    def schedule(self, duration: float) -> list[tuple[float, int, str]]:
        """(seconds from start, account index, kind), sorted, from the seed."""
        rng = random.Random(self.seed)
        kinds = [k for k in KINDS if self.spec.mix.get(k, 0) > 0]
        weights = [float(self.spec.mix[k]) for k in kinds]
        times: list[float] = []
        if self.spec.rate > 0:
            t = rng.expovariate(self.spec.rate)
            while t < duration:
                times.append(t)
                t += rng.expovariate(self.spec.rate)
        for b in self.spec.bursts:
            t = b.at + rng.expovariate(b.rate)
            while t < min(b.at + b.duration, duration):
                times.append(t)
                t += rng.expovariate(b.rate)
        times.sort()
        writers = [i for i in range(len(self.accounts)) if i not in self.spec.quiet]
        if not writers:
            return []
        return [(t, rng.choice(writers), rng.choices(kinds, weights)[0]) for t in times]

    async def run(self, duration: float, t0: float | None = None) -> None:
        """Issue the schedule, from ``t0`` (monotonic) for ``duration`` seconds."""
        self.t0 = t0 if t0 is not None else time.monotonic()
        slots = asyncio.Semaphore(self.spec.concurrency)
        async with asyncio.TaskGroup() as tg:
            for at, who, kind in self.schedule(duration):
                wait = self.t0 + at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await slots.acquire()
                tg.create_task(self._one(self.accounts[who], kind, slots))

    async def _one(self, account: Account, kind: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._write(account, kind)
        except (XrpcError, aiohttp.ClientError, OSError, TimeoutError) as e:
            self.failed += 1
            name = getattr(e, "error", None) or type(e).__name__
            self.failures[name] = self.failures.get(name, 0) + 1
        finally:
            slots.release()

    async def _write(self, account: Account, kind: str) -> None:
        c = self.cluster.client(account.home)
        c.session = account.client.session
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        live = [r for r in self.acked if not r.deleted and r.cid is not None]
        posts = [r for r in live if r.path.startswith("app.bsky.feed.post/")]
        record: dict[str, Any]
        if kind == "delete":
            mine = [r for r in account.records if not r.deleted and r.cid is not None]
            if not mine:
                kind = "post"  # nothing to delete yet
            else:
                target = self._rng.choice(mine)
                target.deleted = True  # no second delete of it
                collection, _, rkey = target.path.partition("/")
                try:
                    out = await c.call(
                        "com.atproto.repo.deleteRecord",
                        data={"repo": account.did, "collection": collection, "rkey": rkey},
                    )
                except BaseException:
                    target.deleted = False
                    raise
                self.record(account, target.path, None, out["commit"]["rev"], kind)
                return
        if kind in ("reply", "like") and not posts:
            kind = "post"
        if kind == "follow":
            other = self._rng.choice(self.accounts)
            collection = "app.bsky.graph.follow"
            record = {"$type": collection, "subject": other.did, "createdAt": now}
        elif kind == "post":
            collection = "app.bsky.feed.post"
            text = f"post {len(self.acked)} by {account.handle}"
            record = {"$type": collection, "text": text, "createdAt": now}
        else:
            target = self._rng.choice(posts)
            ref = {"uri": f"at://{target.did}/{target.path}", "cid": target.cid}
            if kind == "like":
                collection = "app.bsky.feed.like"
                record = {"$type": collection, "subject": ref, "createdAt": now}
            else:
                collection = "app.bsky.feed.post"
                record = {
                    "$type": collection,
                    "text": f"reply by {account.handle}",
                    "reply": {"root": ref, "parent": ref},
                    "createdAt": now,
                }
        out = await c.call(
            "com.atproto.repo.createRecord",
            data={"repo": account.did, "collection": collection, "record": record},
        )
        path = out["uri"].split("/", 3)[3]
        self.record(account, path, out["cid"], out["commit"]["rev"], kind)

    def record(self, account: Account, path: str, cid: str | None, rev: str, kind: str) -> None:
        """Count an acknowledged write of ``account`` (at its current home) as owed."""
        rec = WriteRecord(
            account.did, path, cid, rev, account.home, kind, time.monotonic() - self.t0
        )
        self.acked.append(rec)
        if cid is not None:
            account.records.append(rec)
