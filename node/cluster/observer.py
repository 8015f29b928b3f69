"""What the harness watches while a scenario runs.

- Every node's firehose (``com.atproto.sync.subscribeRepos``): per node and repo,
  when each rev arrived, as a ``#commit`` (gossip) or a ``#sync`` (a repo fetched by
  reconciliation). A write is on a node once that node holds a rev at or above the
  write's own (a repo has one writer, so a later head contains it unless deleted).
  A restarted node is subscribed again from the last seq seen, so nothing it took in
  while the harness was reconnecting is missed. The commit CID of every frame is kept
  too (:attr:`Observer.commits`): a forged commit a node took and later replaced is
  still seen.
- Every ``interval`` seconds: how many nodes agree with the newest head of each
  repo (convergence over time; a repo a node refuses by policy is left out for it),
  each node's CPU and RSS (psutil), and its gossip counters
  (``skyfed.node.listPeers``: messages delivered and redundant copies).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from protocol.cid import CID, cid_for_msgpack
from protocol.errors import SkyfedError

from .harness import Cluster

__all__ = ["Observer", "Sample"]


@dataclass(slots=True)
class Sample:
    t: float
    #: Share of (live node, repo) pairs holding the newest head of that repo.
    agreement: float
    alive: int
    cpu: dict[int, float] = field(default_factory=dict)  # percent of one core
    rss: dict[int, int] = field(default_factory=dict)  # bytes


class Observer:
    def __init__(self, cluster: Cluster, *, interval: float = 0.5):
        self.cluster = cluster
        self.interval = interval
        self.t0 = time.monotonic()
        #: (node, did) -> [(t, rev)] in arrival order.
        self.arrivals: dict[tuple[int, str], list[tuple[float, str]]] = defaultdict(list)
        self.samples: list[Sample] = []
        self.frames: dict[int, int] = defaultdict(int)
        #: Gossip counters per node, summed over its process lifetimes.
        self.gossip: dict[int, dict[str, int]] = {}
        self._gossip_base: dict[int, dict[str, int]] = defaultdict(dict)
        self._gossip_pid: dict[int, int | None] = {}
        self._last_seq: dict[int, int] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._highs: dict[tuple[int, str], list[str]] = {}
        #: node -> every commit CID its firehose showed (``#commit`` and ``#sync``).
        self.commits: dict[int, set[str]] = defaultdict(set)

    async def __aenter__(self) -> Observer:
        self.t0 = time.monotonic()
        for n in self.cluster.nodes:
            self._tasks.append(asyncio.create_task(self._watch(n.index)))
        self._tasks.append(asyncio.create_task(self._sampler()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- firehoses ---------------------------------------------------------------
    async def _watch(self, i: int) -> None:
        node = self.cluster.nodes[i]
        while True:
            if not node.alive:
                await asyncio.sleep(0.1)  # poll: wait for a restart
                continue
            cursor = self._last_seq.get(i)
            client = self.cluster.client(i)
            try:
                async for header, body in client.subscribe(
                    cursor=None if cursor is None else cursor + 1
                ):
                    if header.get("op") != 1:
                        break
                    self._last_seq[i] = int(body.get("seq", self._last_seq.get(i, 0)))
                    self.frames[i] += 1
                    kind = header.get("t")
                    did = body.get("repo") if kind == "#commit" else body.get("did")
                    rev = body.get("rev")
                    if kind in ("#commit", "#sync") and did and rev:
                        self.arrivals[(i, str(did))].append((self.now(), str(rev)))
                        cid = _commit_cid(kind, body)
                        if cid is not None:
                            self.commits[i].add(cid)
            except (aiohttp.ClientError, OSError, TimeoutError, SkyfedError):
                pass
            await asyncio.sleep(0.1)  # poll: the node died or closed the stream

    def first_seen(self, i: int, did: str, rev: str) -> float | None:
        """When node ``i`` first held ``did`` at ``rev`` or later."""
        seen = self.arrivals.get((i, did))
        if not seen:
            return None
        # Revs mostly arrive in order; a running maximum makes the search exact.
        key = (i, did)
        cached = self._highs.get(key)
        if cached is None or len(cached) != len(seen):
            best = ""
            cached = []
            for _, r in seen:
                best = max(best, r)
                cached.append(best)
            self._highs[key] = cached
        k = bisect.bisect_left(cached, rev)
        return seen[k][0] if k < len(seen) else None

    # -- sampling ----------------------------------------------------------------
    async def _sampler(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, SkyfedError):
                await self.sample()
            await asyncio.sleep(self.interval)

    async def sample(self) -> Sample:
        newest: dict[str, tuple[str, str]] = {}
        revs = await self._revs()
        for view in revs.values():
            for did, (head, rev) in view.items():
                if did not in newest or rev > newest[did][1]:
                    newest[did] = (head, rev)
        pairs = agree = 0
        for i, view in revs.items():
            for did, (head, _) in newest.items():
                if not self.cluster.owes(i, did):
                    continue  # refused by the node's policy: not owed
                pairs += 1
                agree += view.get(did, ("", ""))[0] == head
        s = Sample(self.now(), agree / pairs if pairs else 1.0, len(revs))
        for n in self.cluster.nodes:
            if not n.alive or n.pid is None:
                continue
            proc = self._procs.get(n.index)
            try:
                if proc is None or proc.pid != n.pid:
                    proc = psutil.Process(n.pid)
                    proc.cpu_percent(None)  # the first reading is a baseline
                    self._procs[n.index] = proc
                s.cpu[n.index] = proc.cpu_percent(None)
                s.rss[n.index] = proc.memory_info().rss
            except psutil.Error:
                continue
        await self._read_gossip()
        self.samples.append(s)
        return s

    async def _revs(self) -> dict[int, dict[str, tuple[str, str]]]:
        async def one(i: int) -> dict[str, tuple[str, str]]:
            out = {}
            async for r in self.cluster.client(i).paginate(
                "com.atproto.sync.listRepos", "repos", {"limit": 1000}
            ):
                out[r["did"]] = (r["head"], r["rev"])
            return out

        alive = self.cluster.alive()
        got = await asyncio.gather(*(one(i) for i in alive), return_exceptions=True)
        return {i: g for i, g in zip(alive, got, strict=True) if isinstance(g, dict)}

    async def _read_gossip(self) -> None:
        for n in self.cluster.nodes:
            if not n.alive:
                continue
            try:
                info: dict[str, Any] = await self.cluster.call(n.index, "skyfed.node.listPeers")
            except (aiohttp.ClientError, OSError, TimeoutError, SkyfedError):
                continue
            now = {
                "delivered": int(info["gossip"].get("delivered", 0)),
                "duplicates": int(info["gossip"].get("duplicates", 0)),
                "ingested": int(info.get("ingested", 0)),
                "rejected": int(info.get("rejected", 0)),
            }
            if self._gossip_pid.get(n.index) not in (None, n.pid):
                # A new process: its counters start at zero; keep the old life's.
                prev = self.gossip.get(n.index, {})
                self._gossip_base[n.index] = dict(prev)
            self._gossip_pid[n.index] = n.pid
            base = self._gossip_base[n.index]
            self.gossip[n.index] = {k: base.get(k, 0) + v for k, v in now.items()}


def _commit_cid(kind: str, body: dict[str, Any]) -> str | None:
    """The commit a firehose frame carries: named in a ``#commit``, the block of a
    ``#sync``."""
    try:
        if kind == "#commit":
            raw = body.get("commit")
            if isinstance(raw, CID):
                return str(raw)
            return str(CID.from_bytes(raw)) if isinstance(raw, bytes) else None
        block = body.get("blocks")
        return str(cid_for_msgpack(block)) if isinstance(block, bytes) else None
    except (SkyfedError, TypeError, ValueError):
        return None
