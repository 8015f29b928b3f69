"""A cluster of real node processes on 127.0.0.1, wired through fault proxies.

    async with Cluster(nodes=5, topology="ring") as c:
        c.partition({0, 1, 2}, {3, 4})
        ...
        c.heal()
        await c.converged(timeout=30)
        await c.kill(3)
        await c.restart(3)
        async with c.client(0) as alice: ...

Each node is its own process with its own data dir, port and config file. For every
edge ``(i, j)`` of the topology, node ``i`` has one static peer, a :class:`LinkProxy`
that forwards to node ``j``; peer sharing is off, so the links are exactly the
topology and every byte between nodes passes a proxy the harness controls. A killed
node's proxies hold incoming dials until it is restarted (on a new port).

With ``settings={"share_peers": True}`` (a public node's default, for the hostile
nodes scenario) there are no proxies: nodes start one after another, each dialling
its neighbours' own URLs, and then link to whatever peers they hear of. Link faults,
kills and restarts need the proxies and are not available then.

With ``network="namespaces"`` (root only) there are no proxies either: each node
is a network host, alone in a Linux network namespace with its own address on a
bridge, and links faults are the kernel's, on real packets (see :mod:`.netns`):
``partition`` and ``cut`` drop packets (TCP retransmits into the void until the
heal), ``shape(loss=...)`` loses a share of packets, ``bandwidth`` is an HTB class
and ``delay``/``jitter`` a netem qdisc (where the kernel has netem). ``drop`` (whole
WebSocket messages) is the proxy's alone, ``loss`` the namespaces' alone. A node
keeps its address and port across a restart. ``hosts=N`` spreads the nodes over N
"host" namespaces joined by VXLAN (docs/cluster-hosts.md).

The harness also plays a misbehaving author: :meth:`Cluster.equivocate` signs two
conflicting commits with an account's real key (read from its home node's database)
and hands one to each of two nodes over the peer wire; :meth:`Cluster.forge` hands a
node a commit signed by the wrong key.

And it plays each node's operator: every node gets the cluster's :attr:`admin_token`,
and :meth:`Cluster.take_down` applies node policy to an account on one node. A node
that refuses to serve or carry an account owes the network no copy of it, so from
then on agreement (:meth:`agree`, :meth:`converged`) leaves that (node, repo) pair
out; every other node must still agree on the account's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from protocol.car import read_car
from protocol.commit import Commit, CommitEvent
from protocol.errors import SkyfedError
from protocol.keys import SigningKey
from protocol.mst import MST, MemoryBlockStore
from protocol.peerwire import MAX_FRAME, auth_payload, decode_message, encode_message
from protocol.repo import Repo, Write
from protocol.syntax import TidClock

from ..client import Client
from ..store.repos import iso_now
from .netns import NODE_PORT, KernelFaults, NamespaceNet
from .process import NodeProcess, start_node
from .proxy import LinkProxy
from .topology import Edge, make_topology

__all__ = ["NETWORKS", "Cluster", "ClusterNode", "WirePeer"]

#: How nodes are wired: through the harness's proxies on 127.0.0.1 (the default),
#: or each in its own network namespace with the kernel's faults (root only).
NETWORKS = ("proxy", "namespaces")

#: Settings every cluster node gets: links exactly as the topology says, and no
#: write or login throttle (the workload must not measure the rate limiter). Every
#: honest node is on 127.0.0.1: loopback may be dialled, and that address is shared
#: by many nodes, so their links are neither capped nor cut off by address, nor
#: accepted slowly.
BASE_SETTINGS: dict[str, Any] = {
    "share_peers": False,
    "points_per_hour": 1_000_000_000,
    "points_per_day": 1_000_000_000,
    "auth_rate": 100_000.0,
    "auth_burst": 100_000,
    "dial_policy": "loopback",
    # Only 127.0.0.1: hostile nodes connect from 127.0.0.2 and up, and are judged by
    # address as a node on the internet would judge them.
    "shared_networks": ["127.0.0.1/32", "::1/128"],
    "max_inbound_links": 100_000,
    "peer_accept_rate": 100_000.0,
    "peer_accept_burst": 100_000,
}


def namespace_settings(net: NamespaceNet) -> dict[str, Any]:
    """What a node in namespace mode gets instead of the loopback settings: it may
    dial the cluster's subnet (and nothing private or loopback beyond it), and only
    the harness's address is shared by many (every client and observer); each node
    has an address of its own and is judged by it, as on a real network."""
    return {
        "dial_policy": "public",
        "dial_allow": [net.subnet],
        "shared_networks": [f"{net.harness_address}/32"],
    }


@dataclass(slots=True)
class ClusterNode:
    index: int
    data_dir: Path
    clock_skew: float = 0.0
    process: NodeProcess | None = None
    url: str = ""
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Cluster:
    """N node processes, a topology, a proxy per link; see the module docstring."""

    def __init__(
        self,
        nodes: int = 5,
        topology: str | Sequence[Sequence[int]] = "full",
        *,
        degree: int = 3,
        seed: int = 0,
        workdir: Path | None = None,
        reconcile_interval: float = 1.0,
        settings: Mapping[str, Any] | None = None,
        clock_skew: Mapping[int, float] | None = None,
        start_concurrency: int = 8,
        network: str = "proxy",
        hosts: int = 1,
    ):
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, not {network!r}")
        if hosts != 1 and network != "namespaces":
            raise ValueError("hosts (several host namespaces) needs network='namespaces'")
        self.network = network
        #: The namespaces, bridge and kernel rules (namespace mode only).
        self.net: NamespaceNet | None = (
            NamespaceNet(nodes, hosts=hosts) if network == "namespaces" else None
        )
        #: Namespace mode: what the kernel does to each (sender, receiver) pair.
        self._kernel: dict[Edge, KernelFaults] = {}
        self._creating: asyncio.Future[None] | None = None
        if isinstance(topology, str):
            self.edges: list[Edge] = make_topology(topology, nodes, degree=degree, seed=seed)
            self.topology = topology
        else:
            self.edges = make_topology("edges", nodes, edges=topology)
            self.topology = "edges"
        self.seed = seed
        self._rng = random.Random(seed)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="skyfed-cluster-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        #: The operator's token on every node (node policy: takedowns).
        self.admin_token = secrets.token_urlsafe(24)
        self.settings = {
            **BASE_SETTINGS,
            "reconcile_interval": reconcile_interval,
            "admin_token": self.admin_token,
        }
        self.settings.update(settings or {})
        self._chosen = set(settings or {})
        self.admin_token = str(self.settings["admin_token"])
        #: (node, did) -> the scopes of that node's active takedown of the account.
        self.takedowns: dict[tuple[int, str], frozenset[str]] = {}
        skew = dict(clock_skew or {})
        self.nodes = [
            ClusterNode(i, workdir / f"node{i}", float(skew.get(i, 0.0))) for i in range(nodes)
        ]
        #: One proxy per edge, keyed (dialler, target).
        self.links: dict[Edge, LinkProxy] = {}
        self._start_slots = asyncio.Semaphore(start_concurrency)
        self._http: aiohttp.ClientSession | None = None
        self._peers: list[WirePeer] = []
        #: Commits the harness forged (signed by a wrong key): none may be accepted.
        self.forged: set[str] = set()
        self.started_at = 0.0

    def __len__(self) -> int:
        return len(self.nodes)

    # -- life cycle --------------------------------------------------------------
    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def direct(self) -> bool:
        """Nodes that share peers link directly, without proxies: a node reachable
        under two URLs (its proxy's and its own, which its hello announces) gets two
        links to one peer, and today's node can then stall on that pair (seen: a node
        that took nothing in for 15 s with every link up). (In namespace mode every
        node has one URL and there are no proxies: nothing changes.)"""
        return self.net is None and bool(self.settings.get("share_peers"))

    async def start(self, *, wait_linked: float = 60.0) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        if self.net is not None:
            # A thread (a hundred nodes take a few hundred `ip` calls); close() waits
            # for it, so a Ctrl-C here still removes whatever it made.
            self._creating = asyncio.ensure_future(asyncio.to_thread(self.net.create))
            await asyncio.shield(self._creating)
            for k, v in namespace_settings(self.net).items():
                if k not in self._chosen:  # what the caller set stands
                    self.settings[k] = v
            self.net.count([e for a, b in self.edges for e in ((a, b), (b, a))])
            for n in self.nodes:
                n.url = self.net.url(n.index)
            # Last first: node a dials node b > a, and a dial to an address where
            # nothing listens yet is refused and backs off (up to 10 s); started in
            # this order, most dials find their node up.
            await asyncio.gather(*(self._launch(n) for n in reversed(self.nodes)))
            self.started_at = time.monotonic()
            if wait_linked:
                await self.linked(wait_linked)
            return
        if self.direct:
            # In order: each node dials its neighbours started before it, by their URL.
            for n in self.nodes:
                await self._launch(n)
            self.started_at = time.monotonic()
            if wait_linked:
                await self.linked(wait_linked)
            return
        for a, b in self.edges:
            proxy = LinkProxy(f"{a}->{b}", None, rng=random.Random(self._rng.getrandbits(64)))
            await proxy.start()
            self.links[(a, b)] = proxy
        await asyncio.gather(*(self._launch(n) for n in self.nodes))
        self.started_at = time.monotonic()
        if wait_linked:
            await self.linked(wait_linked)

    async def close(self) -> None:
        for peer in self._peers:
            await peer.close()
        self._peers.clear()
        await asyncio.gather(
            *(n.process.stop() for n in self.nodes if n.process is not None),
            return_exceptions=True,
        )
        for proxy in self.links.values():
            await proxy.close()
        if self.net is not None:
            if self._creating is not None:
                with contextlib.suppress(Exception):
                    await self._creating
            await asyncio.to_thread(self.net.close)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _node_settings(self, node: ClusterNode) -> dict[str, Any]:
        net_settings: dict[str, Any] = {}
        if self.net is not None:
            i = node.index
            peers = [self.net.url(b) for a, b in self.edges if a == i]
            inbound = sum(1 for e in self.edges if e[1] == i)
            net_settings = {"host": self.net.address(i), "port": NODE_PORT}
        elif self.direct:
            i = node.index
            near = {b for a, b in self.edges if a == i} | {a for a, b in self.edges if b == i}
            peers = [self.nodes[j].url for j in sorted(near) if j < i and self.nodes[j].url]
            inbound = len(near)
        else:
            peers = [self.links[e].url for e in self.edges if e[0] == node.index]
            inbound = sum(1 for e in self.edges if e[1] == node.index)
        room = int(self.settings.get("max_peers", 8))
        out = {
            **self.settings,
            **net_settings,
            "peers": peers,
            "max_peers": max(room, len(peers)),
        }
        # A full mesh of many nodes dials the last ones more than a node takes by
        # default; the fake peers a scenario adds need room too.
        out.setdefault("max_inbound_links", max(32, inbound + 16))
        if node.clock_skew:
            out["clock_skew"] = node.clock_skew
        return out

    async def _launch(self, node: ClusterNode) -> None:
        command = ""
        if self.net is not None:
            argv = [*self.net.exec_prefix(node.index), sys.executable, "-m", "node.cli"]
            command = shlex.join(argv)
        async with self._start_slots:
            node.process = await start_node(
                node.data_dir, settings=self._node_settings(node), command=command
            )
        node.url = node.process.url
        for (_, b), proxy in self.links.items():
            if b == node.index:
                proxy.set_target(node.process.port)

    # -- faults ------------------------------------------------------------------
    def _between(self, edge: Edge, groups: Sequence[Collection[int]]) -> bool:
        def group(i: int) -> int:
            for g, members in enumerate(groups):
                if i in members:
                    return g
            return len(groups)  # the unnamed rest are one more side

        return group(edge[0]) != group(edge[1])

    def partition(self, *groups: Collection[int]) -> list[Edge]:
        """Cut every link between different groups (nodes in no group form one
        more); returns the links cut."""
        for g in groups:
            for i in g:
                self._check(i)
        cut = [e for e in self.edges if self._between(e, groups)]
        if self.net is not None:
            # A real partition: no packet crosses, on a topology link or not.
            pairs = [
                (a, b)
                for a in range(len(self.nodes))
                for b in range(len(self.nodes))
                if a != b and self._between((a, b), groups)
            ]
            self._kernel_change(pairs, cut=True)
            return cut
        for e in cut:
            self.links[e].cut()
        return cut

    def heal(self) -> None:
        """Restore every cut link (shaping stays as it is)."""
        if self.net is not None:
            self._kernel_change(list(self._kernel), cut=False)
            return
        for proxy in self.links.values():
            proxy.restore()

    def edges_of(self, links: str | Iterable[Sequence[int]] | None = None) -> list[Edge]:
        """Topology links by ``"all"``/None or a list of node pairs (either order)."""
        if links is None or links == "all":
            return list(self.edges)
        if isinstance(links, str):
            raise ValueError(f"links must be 'all' or a list of node pairs, not {links!r}")
        out = []
        known = set(self.edges)
        for pair in links:
            a, b = (int(x) for x in pair)
            edge = (a, b) if a < b else (b, a)
            if edge not in known:
                raise ValueError(f"there is no link between nodes {a} and {b}")
            out.append(edge)
        return out

    def select(self, links: str | Iterable[Sequence[int]] | None = None) -> list[LinkProxy]:
        """Proxies by ``"all"``/None or a list of node pairs (either order)."""
        if self.net is not None:
            raise ValueError("this cluster has no link proxies (its faults are the kernel's)")
        if links is None or links == "all":
            return list(self.links.values())  # none with share_peers
        edges = self.edges_of(links)
        if any(e not in self.links for e in edges):
            raise ValueError("this cluster has no link proxies (share_peers links directly)")
        return [self.links[e] for e in edges]

    def shape(self, links: str | Iterable[Sequence[int]] | None = None, **faults: Any) -> None:
        """Delay, jitter, bandwidth, and drop (proxy: whole WebSocket messages) or
        loss (namespaces: packets); see :meth:`LinkProxy.shape` and :mod:`.netns`.
        Each direction of each link gets the same."""
        if self.net is None:
            if faults.get("loss"):
                raise ValueError(
                    "loss (of packets) needs network='namespaces': the proxy relays a TCP "
                    "stream and cannot lose packets (drop loses whole messages)"
                )
            faults.pop("loss", None)
            for proxy in self.select(links):
                proxy.shape(**faults)
            return
        if faults.get("drop"):
            raise ValueError(
                "drop (whole WebSocket messages) needs network='proxy': the kernel loses "
                "packets, not messages (use loss)"
            )
        faults.pop("drop", None)
        pairs = [p for a, b in self.edges_of(links) for p in ((a, b), (b, a))]
        self._kernel_change(pairs, **faults)

    def sever(self, links: str | Iterable[Sequence[int]] | None = None) -> None:
        if self.net is not None:
            self.net.sever(self.edges_of(links))
            return
        for proxy in self.select(links):
            proxy.sever()

    def cut(self, links: str | Iterable[Sequence[int]] | None = None) -> None:
        if self.net is not None:
            pairs = [p for a, b in self.edges_of(links) for p in ((a, b), (b, a))]
            self._kernel_change(pairs, cut=True)
            return
        for proxy in self.select(links):
            proxy.cut()

    def restore(self, links: str | Iterable[Sequence[int]] | None = None) -> None:
        if self.net is not None:
            pairs = [p for a, b in self.edges_of(links) for p in ((a, b), (b, a))]
            self._kernel_change(pairs, cut=False)
            return
        for proxy in self.select(links):
            proxy.restore()

    def _kernel_change(
        self,
        pairs: Iterable[Edge],
        *,
        cut: bool | None = None,
        delay: float | None = None,
        jitter: float | None = None,
        bandwidth: float | None = None,
        loss: float | None = None,
        clear: bool = False,
    ) -> None:
        """Change the kernel's faults on these (sender, receiver) pairs and apply
        them at once (one ``nft`` and a ``tc`` per changed veth: this blocks for
        some milliseconds, so the fault is in force when the call returns)."""
        assert self.net is not None
        if (delay is not None and delay < 0) or (jitter is not None and jitter < 0):
            raise ValueError("delay and jitter must not be negative")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError("bandwidth must be positive")
        if loss is not None and not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be between 0 and 1")
        new = dict(self._kernel)
        for pair in pairs:
            f = new.get(pair, KernelFaults())
            if clear:
                f = KernelFaults(cut=f.cut)
            changes: dict[str, Any] = {
                k: v
                for k, v in (
                    ("cut", cut),
                    ("delay", delay),
                    ("jitter", jitter),
                    ("bandwidth", bandwidth),
                    ("loss", loss),
                )
                if v is not None
            }
            new[pair] = dataclasses.replace(f, **changes)
        self.net.set_faults(new)
        self._kernel = {k: v for k, v in new.items() if v != KernelFaults()}

    def link_traffic(self) -> list[dict[str, Any]]:
        """Bytes each way on each topology link (``a->b``: ``a`` dials ``b``) and
        messages the proxy dropped; empty for a share_peers cluster (no proxies)."""
        out = []
        if self.net is not None:
            counted = self.net.counters()
            for a, b in self.edges:
                out.append(
                    {
                        "link": f"{a}->{b}",
                        "bytes_up": counted.get((a, b), 0),
                        "bytes_down": counted.get((b, a), 0),
                        "dropped_frames": 0,
                    }
                )
            return out
        for (a, b), p in sorted(self.links.items()):
            out.append(
                {
                    "link": f"{a}->{b}",
                    "bytes_up": p.up.bytes,
                    "bytes_down": p.down.bytes,
                    "dropped_frames": p.up.dropped_frames + p.down.dropped_frames,
                }
            )
        return out

    async def kill(self, i: int) -> None:
        """SIGKILL node ``i``; its links hold dials until it restarts."""
        node = self._check(i)
        if node.process is None or not node.alive:
            raise ValueError(f"node {i} is not running")
        for (_, b), proxy in self.links.items():
            if b == i:
                proxy.set_target(None)
        node.process.kill()
        await node.process.proc.wait()

    async def restart(self, i: int, *, clock_skew: float | None = None) -> None:
        """Start node ``i`` again on its data dir (a new port; in namespace mode the
        same address and port)."""
        node = self._check(i)
        if node.alive:
            raise ValueError(f"node {i} is running")
        if clock_skew is not None:
            node.clock_skew = clock_skew
        node.restarts += 1
        await self._launch(node)

    def _check(self, i: int) -> ClusterNode:
        if not 0 <= i < len(self.nodes):
            raise ValueError(f"no node {i} (the cluster has nodes 0..{len(self.nodes) - 1})")
        return self.nodes[i]

    # -- observing ---------------------------------------------------------------
    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the cluster is not started")
        return self._http

    def client(self, i: int) -> Client:
        """A client of node ``i`` (its own login state; the cluster's HTTP pool)."""
        return Client(self._check(i).url, session=self.http)

    def alive(self) -> list[int]:
        return [n.index for n in self.nodes if n.alive]

    async def call(self, i: int, nsid: str, **params: Any) -> Any:
        return await self.client(i).call(nsid, params=params)

    async def heads(self, i: int) -> dict[str, str]:
        """did -> head CID held by node ``i``."""
        out: dict[str, str] = {}
        async for repo in self.client(i).paginate(
            "com.atproto.sync.listRepos", "repos", {"limit": 1000}
        ):
            out[repo["did"]] = repo["head"]
        return out

    async def all_heads(self) -> dict[int, dict[str, str] | None]:
        """Every live node's heads (None where the node did not answer)."""

        async def one(i: int) -> dict[str, str] | None:
            try:
                return await self.heads(i)
            except (aiohttp.ClientError, OSError, TimeoutError, SkyfedError):
                return None

        alive = self.alive()
        got = await asyncio.gather(*(one(i) for i in alive))
        return dict(zip(alive, got, strict=True))

    def owes(self, i: int, did: str) -> bool:
        """Must node ``i`` hold ``did``'s head? Not once its operator took the account
        down from serving or carrying (by :meth:`take_down`)."""
        return not self.takedowns.get((i, did), frozenset()) & {"serve", "carry"}

    def disagreements(self, views: Mapping[int, Mapping[str, str] | None]) -> list[str]:
        """The repos on which the nodes in ``views`` that owe them (:meth:`owes`) do
        not all hold one head; ``"node N"`` for a node that did not answer."""
        out = [f"node {i}" for i, v in views.items() if v is None]
        held = [(i, v) for i, v in views.items() if v is not None]
        for did in sorted({d for _, v in held for d in v}):
            owed = {v.get(did) for i, v in held if self.owes(i, did)}
            if len(owed) > 1 or None in owed:
                out.append(did)
        return out

    async def agree(self, *, everyone: bool = True) -> bool:
        """Do the nodes hold the same heads (leaving out what a node refuses by
        policy)? Every node must be up and answer, unless ``everyone`` is False (then
        the nodes that are up)."""
        views = await self.all_heads()
        if everyone and len(views) != len(self.nodes):
            return False
        return bool(views) and not self.disagreements(views)

    async def converged(
        self,
        timeout: float = 30.0,  # noqa: ASYNC109 - the issue's API: converged(timeout=...)
        *,
        interval: float = 0.2,
        everyone: bool = True,
    ) -> float:
        """Wait until every node is up and holds the same heads (with ``everyone``
        False: the nodes that are up); seconds waited. Raises TimeoutError."""
        start = time.monotonic()
        async with asyncio.timeout(timeout):
            while not await self.agree(everyone=everyone):  # noqa: ASYNC110
                await asyncio.sleep(interval)  # poll: N processes, no shared event
        return time.monotonic() - start

    async def linked(self, limit: float = 60.0) -> None:
        """Wait until every link of the topology is up (on both ends)."""
        dids: dict[int, str] = {}
        for n in self.nodes:
            dids[n.index] = (await self.call(n.index, "skyfed.node.getInfo"))["did"]

        # Once a node has been seen with all its links it counts as linked: with
        # share_peers on, a node also dials its peers' own URLs, and the duplicate
        # links replace each other now and then.
        done: set[int] = set()

        async def up() -> bool:
            for n in self.nodes:
                if n.index in done:
                    continue
                peers = await self.call(n.index, "skyfed.node.listPeers")
                have = {p["did"] for p in peers["peers"]}
                want = {dids[b] for a, b in self.edges if a == n.index}
                want |= {dids[a] for a, b in self.edges if b == n.index}
                if not want <= have:
                    return False
                done.add(n.index)
            return True

        async with asyncio.timeout(limit):
            while not await up():  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # poll

    # -- an operator -------------------------------------------------------------
    async def take_down(
        self, i: int, did: str, reason: str, scopes: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Node ``i``'s operator takes ``did`` down there (all scopes unless named);
        returns the published takedown."""
        out = await self.client(i).take_down(
            did, reason, admin_token=self.admin_token, scopes=scopes
        )
        self.takedowns[(i, did)] = frozenset(out["scopes"])
        return out

    async def reverse_takedown(self, i: int, did: str, reason: str) -> dict[str, Any]:
        """Node ``i``'s operator reverses its takedown of ``did``."""
        out = await self.client(i).reverse_takedown(did, reason, admin_token=self.admin_token)
        self.takedowns.pop((i, did), None)
        return out

    # -- a misbehaving author ----------------------------------------------------
    def account_key(self, i: int, did: str) -> SigningKey:
        """The signing key of ``did``, read from node ``i``'s database (the harness
        owns the data dirs; a node never hands a key out)."""
        db = self._check(i).data_dir / "node.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT signing_key FROM accounts WHERE did = ?", (did,)).fetchone()
        if row is None:
            raise ValueError(f"node {i} hosts no account {did}")
        return SigningKey.from_str(row[0])

    async def _repo(self, i: int, did: str) -> Repo:
        car = await self.client(i).call("com.atproto.sync.getRepo", params={"did": did})
        roots, blocks = read_car(car)
        commit = Commit.from_bytes(blocks[roots[0]])
        return Repo(did, MST.load(MemoryBlockStore(blocks), commit.data), commit, roots[0])

    def _fork(self, repo: Repo, key: SigningKey, text: str, rev: str) -> CommitEvent:
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": iso_now()}
        w = Write("create", "app.bsky.feed.post", rev, record)
        return repo.apply_writes([w], key, rev=rev, time=iso_now()).event

    async def equivocate(self, home: int, did: str, to: Sequence[int]) -> list[str]:
        """Sign one conflicting commit per node in ``to`` (all on the current head)
        with ``did``'s key from ``home``, and deliver each to its node over the peer
        wire at the same moment. Returns the commit CIDs."""
        if len(to) < 2:
            raise ValueError("an equivocation needs at least two nodes to tell")
        key = self.account_key(home, did)
        repo = await self._repo(home, did)
        clock = TidClock(secrets.randbelow(1024))
        clock.observe(repo.rev)
        forks = [
            self._fork(repo, key, f"history {n} of two", clock.next(int(time.time() * 1e6)))
            for n in range(len(to))
        ]
        peers = [await WirePeer.connect(self.http, self._check(i).url) for i in to]
        self._peers += peers
        await asyncio.gather(*(p.push(f) for p, f in zip(peers, forks, strict=True)))
        return [str(f.commit) for f in forks]

    async def forge(self, home: int, did: str, to: int) -> str:
        """A commit on ``did``'s head signed by a key that is not its own, delivered
        to node ``to``. Every node must refuse it."""
        repo = await self._repo(home, did)
        impostor = SigningKey.from_seed(secrets.token_bytes(32))
        clock = TidClock(secrets.randbelow(1024))
        clock.observe(repo.rev)
        event = self._fork(repo, impostor, "forged", clock.next(int(time.time() * 1e6)))
        peer = await WirePeer.connect(self.http, self._check(to).url)
        self._peers.append(peer)
        await peer.push(event)
        self.forged.add(str(event.commit))
        return str(event.commit)


class WirePeer:
    """A hand-driven peer: the signed handshake with its own node key, then whatever
    the harness sends. It reads and ignores what the node sends back, so the node
    never blocks on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, key: SigningKey):
        self.ws = ws
        self.key = key
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> WirePeer:
        key = SigningKey.from_seed(secrets.token_bytes(32))
        ws = await http.ws_connect(url + "/xrpc/skyfed.peer.connect", max_msg_size=MAX_FRAME)
        peer = cls(ws, key)
        challenge = secrets.token_bytes(32)
        hello_out = encode_message(
            "hello", v=1, node=key.did_key(), url=None, challenge=challenge, caps=[], share=False
        )
        await ws.send_bytes(hello_out)
        hello = decode_message((await ws.receive()).data)
        sig = key.sign(auth_payload(hello["challenge"], key.did_key(), hello["node"]))
        await ws.send_bytes(encode_message("auth", sig=sig))
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY or decode_message(msg.data)["t"] != "auth":
            await ws.close()
            raise ConnectionRefusedError("the node closed the link during the handshake")
        peer._drain = asyncio.create_task(peer._read())
        return peer

    async def _read(self) -> None:
        async for _ in self.ws:
            pass

    async def push(self, event: CommitEvent) -> None:
        data = encode_message(
            "push", id=event.commit.to_bytes(), kind="commit", data=event.to_bytes(), round=0
        )
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
