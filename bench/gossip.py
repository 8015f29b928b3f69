"""Gossip: how fast and how cheaply a post reaches every node of a small federation.

    python bench/gossip.py                         # 10 and 30 nodes, 100 posts each
    python bench/gossip.py --sizes 10 --posts 50 --rate 5
    python bench/gossip.py --in-process            # exact Plumtree counters (see below)

Each node is a ``skyfed node start`` subprocess (its own data dir, port 0, a TOML
config), so the nodes share the machine's cores as real processes do. The peer graph
is random with degree 4-6 from a seeded ``random.Random``: node ``i`` is started with
``peers`` = its neighbours numbered below ``i`` (each link is dialled once and carries
both directions), and ``share_peers = false`` so nodes keep to that graph instead of
dialling peers they hear about. ``reconcile_interval`` is an hour, so the bytes
measured are gossip only (reconciliation is measured by bench/reconcile.py).

One account per node (``--accounts-per-node``); then ``--posts`` posts by random
accounts at ``--rate`` per second. The bench subscribes to every node's firehose and
timestamps each commit CID's arrival. Per post, *spread* = last node's arrival minus
the origin node's own arrival; *end to end* = last arrival minus the moment the
``createRecord`` request was sent.

Copies and bytes. ``skyfed.node.listPeers`` gives bytes per link but not the Plumtree
counters (PlumtreeStats), so with subprocess nodes the copies a node receives per post
are *estimated* as its received gossip bytes / the mean push size (a push is the
commit event plus ~50 bytes: the firehose frame size is used as its stand-in). This
over-counts a little (IHAVE, GRAFT and PRUNE bytes are included). ``--in-process``
runs the same graph with Node objects in this one process (one core, so its latency
figures are not comparable) and reads ``plumtree.stats`` exactly.
Flooding would give copies = degree; the target is <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.client import Client, split_frame
from protocol.cid import CID

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"


def peer_graph(n: int, rng: random.Random, lo: int = 4, hi: int = 6) -> list[set[int]]:
    """A connected random graph, every degree in [lo, hi] where n allows it."""
    adj: list[set[int]] = [set() for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    for k in range(n):  # a random ring: connected from the start
        a, b = order[k], order[(k + 1) % n]
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    target = [min(rng.randint(lo, hi), n - 1) for _ in range(n)]
    for _ in range(50 * n * hi):
        short = [i for i in range(n) if len(adj[i]) < target[i]]
        if len(short) < 2:
            break
        a, b = rng.sample(short, 2)
        if b not in adj[a]:
            adj[a].add(b)
            adj[b].add(a)
    for _ in range(50 * n * hi):  # anyone still under lo takes an edge from anyone under hi
        short = [i for i in range(n) if len(adj[i]) < lo]
        if not short:
            break
        a = short[0]
        options = [b for b in range(n) if b != a and b not in adj[a] and len(adj[b]) < hi]
        if not options:
            break
        b = rng.choice(options)
        adj[a].add(b)
        adj[b].add(a)
    return adj


# -- clusters ---------------------------------------------------------------------------


class Cluster:
    """n nodes wired as ``adj``; URLs in node order."""

    urls: list[str]

    async def start(self, adj: list[set[int]], base: Path) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def stats(self, i: int) -> tuple[int, int] | None:
        """(delivered, duplicates) from node i's Plumtree, if reachable."""
        return None

    async def diagnose(self, i: int, did: str, cid: str) -> str:
        """What node i holds for ``did`` (in-process only)."""
        return ""


def _config(data_dir: Path, peers: list[str]) -> str:
    quoted = ", ".join(f'"{u}"' for u in peers)
    return (
        f'data_dir = "{data_dir}"\nport = 0\npeers = [{quoted}]\n'
        "share_peers = false\nreconcile_interval = 3600.0\n"
        # Every node is on 127.0.0.1: no per-address caps, cut-offs or accept rate.
        'shared_networks = ["127.0.0.0/8"]\n'
        "max_inbound_links = 100000\npeer_accept_rate = 100000.0\npeer_accept_burst = 100000\n"
    )


class ProcessCluster(Cluster):
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.drains: list[asyncio.Task[None]] = []
        self.urls = []

    async def start(self, adj: list[set[int]], base: Path) -> None:
        for i in range(len(adj)):
            data_dir = base / f"node{i}"
            cfg = base / f"node{i}.toml"
            peers = [self.urls[j] for j in sorted(adj[i]) if j < i]
            await asyncio.to_thread(_write, cfg, _config(data_dir, peers))
            err = await asyncio.to_thread(open, base / f"node{i}.stderr", "wb")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "node.cli",
                "node",
                "start",
                "--config",
                str(cfg),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
            err.close()
            self.procs.append(proc)
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError(f"node {i} exited; see {base}/node{i}.stderr")
                    m = re.search(r"listening on (\S+)", line)
                    if m:
                        self.urls.append(m.group(1))
                        break
            self.drains.append(asyncio.create_task(_drain(proc.stdout)))

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self.drains:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


class InProcessCluster(Cluster):
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.urls = []

    async def start(self, adj: list[set[int]], base: Path) -> None:
        from node.config import NodeConfig
        from node.wiring import Node

        for i in range(len(adj)):
            peers = tuple(self.urls[j] for j in sorted(adj[i]) if j < i)
            cfg = NodeConfig(
                data_dir=base / f"node{i}",
                port=0,
                peers=peers,
                share_peers=False,
                reconcile_interval=3600.0,
                shared_networks=("127.0.0.0/8",),
                max_inbound_links=100_000,
                peer_accept_rate=100_000.0,
                peer_accept_burst=100_000,
            )
            node = Node(cfg)
            await node.start()
            self.nodes.append(node)
            self.urls.append(node.url)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()

    def stats(self, i: int) -> tuple[int, int] | None:
        s = self.nodes[i].federation.plumtree.stats
        return s.delivered, s.duplicates

    async def diagnose(self, i: int, did: str, cid: str) -> str:
        node = self.nodes[i]
        held = await node.storage.head_state(did)
        seen = node.federation.plumtree.has_seen(CID.from_str(cid).to_bytes())
        rev = None if held is None else held.rev
        links = len(node.federation.links)
        return f"node {i}: held rev {rev}, gossip id seen {seen}, links {links}"


# -- measuring --------------------------------------------------------------------------


@dataclass
class Watch:
    """Arrivals seen on every node's firehose.

    A post (repo, rev) has reached node i when i's firehose shows a ``#commit`` or a
    ``#sync`` for that repo at that rev or later: a node that got a later commit
    first resyncs the repo (a ``#sync`` frame) and never shows the post's own commit.
    """

    n: int
    arrival: dict[tuple[str, str], dict[int, float]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    seen: list[dict[str, list[tuple[str, float, str]]]] = field(default_factory=list)
    posts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    frame_bytes: dict[str, int] = field(default_factory=dict)
    via_sync: int = 0
    connected: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.seen = [defaultdict(list) for _ in range(self.n)]

    def register(self, did: str, rev: str) -> None:
        self.posts[did].append(rev)
        for i in range(self.n):
            for got, t, kind in self.seen[i][did]:
                if got >= rev:
                    self._arrive(i, did, rev, t, kind)
                    break

    def frame(self, i: int, did: str, rev: str, t: float, kind: str) -> None:
        self.seen[i][did].append((rev, t, kind))
        for p in self.posts[did]:
            if p <= rev and i not in self.arrival[(did, p)]:
                self._arrive(i, did, p, t, kind)
        self.wake.set()

    def _arrive(self, i: int, did: str, rev: str, t: float, kind: str) -> None:
        self.arrival[(did, rev)][i] = t
        if kind == "#sync":
            self.via_sync += 1

    def repos(self, i: int) -> set[str]:
        return set(self.seen[i])


async def watch_firehose(http: aiohttp.ClientSession, url: str, i: int, w: Watch) -> None:
    ws_url = url.replace("http", "ws", 1) + "/xrpc/com.atproto.sync.subscribeRepos"
    async with http.ws_connect(ws_url, max_msg_size=8 * 1024 * 1024) as ws:
        w.connected += 1
        w.wake.set()
        async for msg in ws:
            now = time.perf_counter()
            if msg.type != aiohttp.WSMsgType.BINARY:
                return
            header, body = split_frame(msg.data)
            kind = header.get("t")
            if kind == "#commit":
                w.frame_bytes.setdefault(str(CID.from_bytes(body["commit"])), len(msg.data))
                w.frame(i, body["repo"], body["rev"], now, kind)
            elif kind == "#sync":
                w.frame(i, body["did"], body["rev"], now, kind)


async def wait_for(w: Watch, cond: Any, limit: float, what: str, explain: Any = None) -> None:
    try:
        async with asyncio.timeout(limit):
            while not cond():
                w.wake.clear()
                await w.wake.wait()
    except TimeoutError:
        detail = f"\n{await explain()}" if explain is not None else ""
        raise SystemExit(f"timed out after {limit:.0f} s waiting for {what}{detail}") from None


async def missing_report(
    w: Watch, sent: dict[tuple[str, str], tuple[float, int, str]], cluster: Cluster
) -> str:
    """Which posts have not reached which nodes (for a failed run)."""
    lines = []
    for p, (key, (_, origin, cid)) in enumerate(sent.items()):
        absent = sorted(set(range(w.n)) - set(w.arrival[key]))
        if absent:
            lines.append(
                f"   post {p} (origin node {origin}, rev {key[1]}) missing at nodes {absent}"
            )
            for i in absent[:4]:
                if info := await cluster.diagnose(i, key[0], cid):
                    lines.append(f"      {info}")
    return "\n".join(lines[:40])


async def link_counts(http: aiohttp.ClientSession, urls: list[str]) -> list[tuple[int, int]]:
    """(peers linked, bytes received on peer links) per node, over HTTP."""
    out = []
    for url in urls:
        async with http.get(url + "/xrpc/skyfed.node.listPeers") as r:
            data = await r.json()
        out.append((len(data["peers"]), sum(p["bytesIn"] for p in data["peers"])))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


async def run_size(n: int, args: argparse.Namespace, in_process: bool) -> None:
    rng = random.Random(args.seed * 1000 + n)
    adj = peer_graph(n, rng)
    degrees = [len(a) for a in adj]
    mode = "in-process" if in_process else "subprocesses"
    print(
        f"== {n} nodes ({mode}); degree min {min(degrees)} mean {statistics.mean(degrees):.1f} "
        f"max {max(degrees)}; {args.posts} posts at {args.rate}/s",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix=f"skyfed-gossip{n}-"))
    cluster: Cluster = InProcessCluster() if in_process else ProcessCluster()
    watchers: list[asyncio.Task[None]] = []
    clients: list[Client] = []
    try:
        t0 = time.perf_counter()
        await cluster.start(adj, base)
        urls = cluster.urls
        async with aiohttp.ClientSession() as http:

            async def linked() -> bool:
                counts = await link_counts(http, urls)
                return all(c[0] == degrees[i] for i, c in enumerate(counts))

            async with asyncio.timeout(60):
                while not await linked():  # noqa: ASYNC110 - nodes in other processes
                    await asyncio.sleep(0.2)
            print(f"   started and linked in {time.perf_counter() - t0:.1f} s", flush=True)
            w = Watch(n)
            watchers = [
                asyncio.create_task(watch_firehose(http, url, i, w)) for i, url in enumerate(urls)
            ]
            await wait_for(w, lambda: w.connected == n, 30, "firehose subscriptions")
            dids = []
            for k in range(n * args.accounts_per_node):
                c = Client(urls[k % n])
                clients.append(c)
                await c.create_account(f"bench{k}.skyfed.test", PASSWORD)
                dids.append(c.did)
            want = set(dids)
            await wait_for(
                w, lambda: all(w.repos(i) >= want for i in range(n)), 60, "accounts everywhere"
            )
            print(f"   {len(dids)} accounts on every node", flush=True)

            before = await link_counts(http, urls)
            stats_before = [cluster.stats(i) for i in range(n)]
            # (repo, rev) -> (send time, origin node, commit CID)
            sent: dict[tuple[str, str], tuple[float, int, str]] = {}
            half: list[tuple[int, int]] = []
            stats_half: list[tuple[int, int] | None] = []
            tick = time.perf_counter()
            for p in range(args.posts):
                k = rng.randrange(len(clients))
                c = clients[k]
                record = {
                    "$type": "app.bsky.feed.post",
                    "text": f"gossip bench post {p}: the quick brown fox jumps over the lazy dog",
                    "createdAt": "2026-11-23T12:00:00.000Z",
                    "langs": ["en"],
                }
                t_send = time.perf_counter()
                out = await c.call(
                    "com.atproto.repo.createRecord",
                    data={"repo": c.did, "collection": "app.bsky.feed.post", "record": record},
                )
                key = (c.did, out["commit"]["rev"])
                sent[key] = (t_send, k % n, out["commit"]["cid"])
                w.register(*key)
                if p == args.posts // 2 - 1:
                    await wait_for(
                        w,
                        lambda: all(len(w.arrival[key]) == n for key in sent),
                        args.timeout,
                        "the first half of the posts everywhere",
                        lambda: missing_report(w, sent, cluster),
                    )
                    half = await link_counts(http, urls)
                    stats_half = [cluster.stats(i) for i in range(n)]
                tick += 1 / args.rate
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
            await wait_for(
                w,
                lambda: all(len(w.arrival[key]) == n for key in sent),
                args.timeout,
                "every post on every node",
                lambda: missing_report(w, sent, cluster),
            )
            after = await link_counts(http, urls)
            stats_after = [cluster.stats(i) for i in range(n)]

        spread, e2e = [], []
        for key, (t_send, origin, _cid) in sent.items():
            seen = w.arrival[key]
            last = max(seen.values())
            spread.append(last - seen[origin])
            e2e.append(last - t_send)
        push_size = statistics.mean(w.frame_bytes[cid] for _, _, cid in sent.values())
        ms = 1000.0
        print(
            f"   spread to all {n} nodes:   p50 {pct(spread, 0.5) * ms:7.1f} ms   "
            f"p99 {pct(spread, 0.99) * ms:7.1f} ms   max {max(spread) * ms:7.1f} ms"
        )
        print(
            f"   end to end (send->all):   p50 {pct(e2e, 0.5) * ms:7.1f} ms   "
            f"p99 {pct(e2e, 0.99) * ms:7.1f} ms"
        )
        print(
            f"   arrivals by resync (#sync, the commit came out of order): {w.via_sync}"
            f" of {len(sent) * (n - 1)}"
        )
        posts = len(sent)
        for label, b0, b1, count in (
            ("all posts", before, after, posts),
            ("second half", half, after, posts - posts // 2),
        ):
            got = [b1[i][1] - b0[i][1] for i in range(n)]
            per_node = [g / count for g in got]
            est = [g / count / push_size for g in got]
            print(
                f"   {label:<11}: bytes received per post per node:"
                f" mean {statistics.mean(per_node):,.0f}"
                f" max {max(per_node):,.0f} (push ~{push_size:,.0f} B);"
                f" copies per node per post (bytes estimate, upper bound):"
                f" mean {statistics.mean(est):.2f} max {max(est):.2f}"
            )
        if stats_after[0] is not None:
            for label, s0, cnt in (
                ("all posts", stats_before, posts),
                ("second half", stats_half, posts - posts // 2),
            ):
                copies = []
                per_delivery = []
                for i in range(n):
                    a, b = s0[i], stats_after[i]
                    assert a is not None
                    assert b is not None
                    delivered, dups = b[0] - a[0], b[1] - a[1]
                    copies.append((delivered + dups) / cnt)
                    if delivered:
                        per_delivery.append((delivered + dups) / delivered)
                print(
                    f"   {label:<11}: Plumtree copies received per node per post (exact):"
                    f" mean {statistics.mean(copies):.2f} max {max(copies):.2f};"
                    f" per delivered message mean {statistics.mean(per_delivery):.2f}"
                    f"  (target <= 1.5, flooding = {statistics.mean(degrees):.1f})"
                )
    finally:
        for t in watchers:
            t.cancel()
        for t in watchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in clients:
            await c.close()
        await cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


async def amain(args: argparse.Namespace) -> None:
    for n in args.sizes:
        await run_size(n, args, args.in_process)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--posts", type=int, default=100, help="posts per size")
    ap.add_argument("--rate", type=float, default=5.0, help="posts per second")
    ap.add_argument("--accounts-per-node", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="wait for the last post")
    ap.add_argument("--in-process", action="store_true", help="Node objects, exact counters")
    args = ap.parse_args()
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
