"""Scenario files (TOML) and the runner that plays one against a cluster.

A scenario names a cluster, a workload and a schedule of faults::

    name = "partition-heal"
    seed = 7
    duration = 30        # seconds of workload
    settle = 30          # seconds allowed to converge after the end

    [cluster]
    nodes = 5
    topology = "full"    # full | ring | star | random | edges
    degree = 3           # random only
    # edges = [[0, 1], [1, 2]]
    reconcile_interval = 1.0
    clock_skew = { "4" = 90.0 }
    network = "proxy"    # proxy | namespaces (root: each node a network host)
    hosts = 1            # namespaces only: host namespaces joined by VXLAN

    [workload]
    accounts = 10
    rate = 5.0
    mix = { post = 0.4, reply = 0.2, like = 0.2, follow = 0.1, delete = 0.1 }
    quiet = [0]          # accounts the workload never writes with (see equivocate)
    [[workload.burst]]
    at = 10.0
    duration = 3.0
    rate = 100.0

    [[schedule]]
    at = 10.0
    action = "partition"
    groups = [[0, 1, 2], [3, 4]]

Actions: ``partition`` (groups), ``heal``, ``kill`` (node), ``restart`` (node,
optional clock_skew), ``shape`` (links = "all" or pairs; delay, jitter, bandwidth,
drop, loss), ``clear`` (links: shaping off), ``cut`` / ``restore`` / ``sever`` (links),
``equivocate`` (account, nodes: two or more), ``forge`` (account, node).

**Which network.** ``network = "proxy"`` (the default) wires the nodes through the
harness's relays on 127.0.0.1; ``network = "namespaces"`` makes each node a network
host with its own address in its own Linux namespace, and the kernel does the
faults (see :mod:`.netns`; needs root). ``skyfed cluster run --net`` overrides the
file. Most of a scenario runs the same in both; what only one can do is refused,
naming the fault, before any node starts:

- ``drop`` (a share of whole WebSocket messages) is the proxy's alone: the kernel
  loses packets, not messages.
- ``loss`` (a share of packets, each direction; TCP retransmits them) is the
  namespaces' alone: the proxy relays a byte stream and has no packets to lose.
- ``delay`` and ``jitter`` in namespaces need the kernel's netem qdisc; a kernel
  without it (``CONFIG_NET_SCH_NETEM``) refuses them when the run starts.
- hostile nodes (``[[hostile]]``) need the proxy mode: their poisoned-URL listeners
  are on the harness's loopback, which a node in its own namespace cannot reach.
- ``hosts`` (more than one) needs namespaces.
- with ``share_peers`` the proxy mode refuses link faults, kills and restarts (the
  nodes link directly, past the proxies); namespaces do them all (the kernel cuts
  addresses, whatever links the nodes made).

A partition differs in one way: the proxy cuts the topology's links between the
groups (open connections are closed, new dials held); the kernel drops every packet
between the groups' addresses, so open connections stall and retransmit until the
heal, as on a real network.

Story steps (played by :mod:`.steps`; accounts are workload account numbers, and
account ``k`` starts on node ``k % nodes``):

- ``post``: account, optional name (for later steps), text, and ``refused = true``
  when its home node must refuse the write (a check).
- ``follow``: account, subject (an account number).
- ``label``: labeler (account), value (``spam``, ``!hide``, ...), and the subject:
  ``post`` (a named post) or ``account``; optional ``neg = true`` retracts.
- ``takedown``: node, account, reason, optional scopes (some of host, serve,
  carry; all when left out): that node's operator applies its policy.
  ``reverse``: node, account, reason.
- ``migrate``: account, to (a node): the account moves there with the rotation
  key the harness holds for it, without its old node, importing the new node's
  replica (after waiting up to 10 s for it to hold the account's acknowledged
  writes); ``with_old_node = true`` asks the old node to sign and export instead.
  Make a migrating account ``quiet``: a write its old node acknowledges during the
  move is lost to the network, and the verdict counts it.
- ``expect``: post (a named post), visible (true or false), view (posts, thread,
  author, latest, timeline; default posts), and who reads: ``readers`` (account
  numbers, each through its home node of the moment) or ``nodes`` (an anonymous
  reader on each); optional ``labelers`` (account numbers the readers subscribe
  to) and ``within`` (seconds to wait for it to hold; default 15).

Each story step holds the schedule until it is done (an ``expect`` until it holds
or ``within`` runs out), so later actions start at their ``at`` or when it ends,
whichever is later. Each step's outcome is a check in the verdict. Give a negative
expect a positive one first (the post visible to that reader before the label), or
it passes for a post that never arrived.

After the last action and ``duration``, the runner restores every link, clears all
shaping and restarts any node still down, then waits up to ``settle`` seconds for
every node to hold the same heads; the verdict follows (see :mod:`.report`).
Every mistake in a file is a :class:`ScenarioError` naming the file and the field.

Hostile nodes (:mod:`.hostile`) attack the honest cluster over the peer wire while
the workload runs, each from one ``[[hostile]]`` table::

    memory_ceiling_mb = 400    # the verdict's bound on each honest node's peak RSS

    [cluster]
    share_peers = true         # as a public node: takes and passes on peer URLs
    max_peers = 32             # links a node dials at most (default 8)

    [[hostile]]
    behaviours = ["flood", "forge", "replay", "poison", "hold"]
    links_to = [0, 1]
    start = 2.0                # seconds into the workload (default 1)
    stop = 20.0                # default: the end of the workload
    [hostile.flood]            # each behaviour's rates and bounds (all optional)
    rate = 5.0
    messages = 200
    heads_items = 4096
    ihave_ids = 1024
    identities = 100
    keys = 10
    requests = 100
    [hostile.forge]
    rate = 1.0
    count = 20
    kinds = ["bad-signature", "no-tree", "wrapped", "fake-since", "no-op"]
    [hostile.replay]
    rate = 5.0
    count = 200
    keep = 500
    after = 3.0
    [hostile.poison]
    rate = 1.0
    count = 20
    max_dials = 0
    [hostile.hold]
    connections = 10
    links = 2
    requests = 20
    slowloris = 10
    drip = 2.0
    repo_mb = 0                # a repo of its own to ask for (0: the busiest honest one)

A table for a behaviour that is not in ``behaviours`` is a mistake, as is a value
outside its bounds (:data:`HOSTILE_FIELDS`). ``share_peers`` (default false) lets
the honest nodes take peer URLs from ``peers`` messages and hellos and pass them on,
as a public node does; the nodes then link directly, without the proxies (see
:mod:`.harness`), and the links become more than the topology, so a schedule with
link faults, kills or restarts is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.labels import MAX_VAL_BYTES as MAX_LABEL_VAL
from protocol.moderation import MAX_REASON_CHARS, SCOPES

from . import netns
from .harness import NETWORKS, Cluster
from .hostile import (
    BEHAVIOURS,
    FORGE_KINDS,
    MAX_REPLAY_KEEP,
    FloodSpec,
    ForgeSpec,
    HoldSpec,
    HostileNode,
    HostileSpec,
    PoisonSpec,
    ReplaySpec,
)
from .netns import MAX_HOSTS
from .observer import Observer
from .steps import STEPS, Check, Steps
from .topology import TOPOLOGIES, make_topology
from .workload import KINDS, Burst, Workload, WorkloadSpec

__all__ = [
    "ACTIONS",
    "Action",
    "ClusterSpec",
    "Event",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "check_machine",
    "check_network",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "with_network",
]


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with where and why."""


#: action -> (required fields, optional fields)
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "partition": (frozenset({"groups"}), frozenset()),
    "heal": (frozenset(), frozenset()),
    "kill": (frozenset({"node"}), frozenset()),
    "restart": (frozenset({"node"}), frozenset({"clock_skew"})),
    "shape": (frozenset(), frozenset({"links", "delay", "jitter", "bandwidth", "drop", "loss"})),
    "clear": (frozenset(), frozenset({"links"})),
    "cut": (frozenset({"links"}), frozenset()),
    "restore": (frozenset({"links"}), frozenset()),
    "sever": (frozenset(), frozenset({"links"})),
    "equivocate": (frozenset({"account", "nodes"}), frozenset()),
    "forge": (frozenset({"account", "node"}), frozenset()),
    # The story steps (node/cluster/steps.py).
    "post": (frozenset({"account"}), frozenset({"name", "text", "refused"})),
    "follow": (frozenset({"account", "subject"}), frozenset()),
    "label": (frozenset({"labeler", "value"}), frozenset({"post", "account", "neg"})),
    "takedown": (frozenset({"node", "account", "reason"}), frozenset({"scopes"})),
    "reverse": (frozenset({"node", "account", "reason"}), frozenset()),
    "migrate": (frozenset({"account", "to"}), frozenset({"with_old_node"})),
    "expect": (
        frozenset({"post", "visible"}),
        frozenset({"view", "nodes", "readers", "labelers", "within"}),
    ),
}

#: behaviour -> field -> (kind, low, high): the bounds of a hostile node's settings
#: (every one is bounded, so a scenario cannot ask for an unbounded attack).
HOSTILE_FIELDS: dict[str, dict[str, tuple[str, float, float]]] = {
    "flood": {
        "rate": ("number", 0.01, 1000.0),
        "messages": ("whole", 0, 100_000),
        "heads_items": ("whole", 1, 4096),
        "ihave_ids": ("whole", 1, 4096),
        "identities": ("whole", 0, 100_000),
        "keys": ("whole", 0, 1000),
        "requests": ("whole", 0, 100_000),
    },
    "forge": {"rate": ("number", 0.01, 100.0), "count": ("whole", 0, 10_000)},
    "replay": {
        "rate": ("number", 0.01, 1000.0),
        "count": ("whole", 0, 100_000),
        "keep": ("whole", 1, MAX_REPLAY_KEEP),
        "after": ("number", 0.0, 3600.0),
    },
    "poison": {
        "rate": ("number", 0.01, 100.0),
        "count": ("whole", 0, 10_000),
        "max_dials": ("whole", 0, 1_000_000),
    },
    "hold": {
        "connections": ("whole", 0, 1000),
        "links": ("whole", 0, 100),
        "requests": ("whole", 0, 10_000),
        "slowloris": ("whole", 0, 1000),
        "drip": ("number", 0.05, 60.0),
        "repo_mb": ("whole", 0, 256),
    },
}
#: Actions that need the link proxies (or a node's fixed URL): not with share_peers.
_NEEDS_PROXIES = frozenset(
    {"partition", "heal", "kill", "restart", "shape", "clear", "cut", "restore", "sever"}
)
_SPECS: dict[str, type[Any]] = {
    "flood": FloodSpec,
    "forge": ForgeSpec,
    "replay": ReplaySpec,
    "poison": PoisonSpec,
    "hold": HoldSpec,
}

#: What an ``expect`` step reads.
VIEWS = ("posts", "thread", "author", "latest", "timeline")
#: The longest text a ``post`` step may give (the lexicon's grapheme limit).
MAX_POST_TEXT = 300


@dataclass(frozen=True, slots=True)
class Action:
    at: float
    action: str
    args: Mapping[str, Any]

    def describe(self) -> str:
        a = self.args
        if self.action == "partition":
            return "partition " + " | ".join(
                "{" + ",".join(str(i) for i in g) + "}" for g in a["groups"]
            )
        if self.action in ("kill", "restart"):
            return f"{self.action} node {a['node']}"
        if self.action == "equivocate":
            return f"equivocate account {a['account']} to nodes {list(a['nodes'])}"
        if self.action == "forge":
            return f"forge account {a['account']} to node {a['node']}"
        return self._describe_step() or self._describe_rest()

    def _describe_step(self) -> str | None:
        a = self.args
        if self.action == "post":
            what = f" {a['name']!r}" if "name" in a else ""
            refused = " (must be refused)" if a.get("refused") else ""
            return f"account {a['account']} posts{what}{refused}"
        if self.action == "follow":
            return f"account {a['account']} follows account {a['subject']}"
        if self.action == "label":
            subject = f"post {a['post']!r}" if "post" in a else f"account {a['account']}"
            verb = "retracts" if a.get("neg") else "puts"
            return f"labeler {a['labeler']} {verb} {a['value']!r} on {subject}"
        if self.action == "takedown":
            scopes = ",".join(a.get("scopes", SCOPES))
            return f"node {a['node']} takes account {a['account']} down ({scopes})"
        if self.action == "reverse":
            return f"node {a['node']} reverses its takedown of account {a['account']}"
        if self.action == "migrate":
            how = "with" if a.get("with_old_node") else "without"
            return f"account {a['account']} moves to node {a['to']} {how} its old node's help"
        if self.action == "expect":
            who = (
                f"accounts {a['readers']}"
                if "readers" in a
                else f"anonymous readers on nodes {a['nodes']}"
            )
            labelers = f" (labelers {a['labelers']})" if a.get("labelers") else ""
            seen = "see" if a["visible"] else "do not see"
            return f"expect: {who}{labelers} {seen} {a['post']!r} in {a['view']}"
        return None

    def _describe_rest(self) -> str:
        a = self.args
        extra = ", ".join(f"{k}={v}" for k, v in a.items())
        return f"{self.action} {extra}".strip()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: int = 5
    topology: str = "full"
    degree: int = 3
    edges: tuple[tuple[int, int], ...] = ()
    reconcile_interval: float = 1.0
    clock_skew: Mapping[int, float] = field(default_factory=dict)
    #: Honest nodes take and pass on peer URLs (a public node's default).
    share_peers: bool = False
    #: Links a node dials at most (None: the harness's 8, or its static peers).
    max_peers: int | None = None
    #: "proxy" or "namespaces" (see the module docstring).
    network: str = "proxy"
    #: Host namespaces the nodes are spread over (namespaces only).
    hosts: int = 1


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    duration: float
    settle: float
    cluster: ClusterSpec
    workload: WorkloadSpec
    schedule: tuple[Action, ...]
    source: str = "<scenario>"
    hostile: tuple[HostileSpec, ...] = ()
    #: The verdict's bound on each honest node's peak RSS (MB); None: no bound.
    memory_ceiling_mb: float | None = None

    def make_cluster(self, workdir: Path | None = None) -> Cluster:
        c = self.cluster
        topology: str | Sequence[Sequence[int]] = (
            [list(e) for e in c.edges] if c.topology == "edges" else c.topology
        )
        return Cluster(
            c.nodes,
            topology,
            degree=c.degree,
            seed=self.seed,
            workdir=workdir,
            reconcile_interval=c.reconcile_interval,
            clock_skew=c.clock_skew,
            network=c.network,
            hosts=c.hosts,
            settings={
                **({"share_peers": True} if c.share_peers else {}),
                **({"max_peers": c.max_peers} if c.max_peers is not None else {}),
            },
        )


# -- parsing -------------------------------------------------------------------------


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror or e}") from e
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from e
    p = _Fields(raw, source, "")
    p.only(
        {
            "name",
            "description",
            "seed",
            "duration",
            "settle",
            "cluster",
            "workload",
            "schedule",
            "hostile",
            "memory_ceiling_mb",
        }
    )
    name = p.text("name", Path(source).stem)
    description = p.text("description", "")
    seed = p.whole("seed", 0)
    duration = p.number("duration", 30.0, low=0.0)
    settle = p.number("settle", 30.0, low=0.1)

    c = _Fields(p.table("cluster"), source, "cluster.")
    c.only(
        {
            "nodes",
            "topology",
            "degree",
            "edges",
            "reconcile_interval",
            "clock_skew",
            "share_peers",
            "max_peers",
            "network",
            "hosts",
        }
    )
    nodes = c.whole("nodes", 5, low=1, high=500)
    topology = c.text("topology", "full")
    if topology not in TOPOLOGIES:
        raise c.error("topology", f"must be one of {', '.join(TOPOLOGIES)}, not {topology!r}")
    degree = c.whole("degree", 3, low=1)
    edges = tuple(c.pairs("edges"))
    if topology == "edges" and not edges:
        raise c.error("edges", "topology 'edges' needs a list of [a, b] pairs")
    try:
        make_topology(topology, nodes, degree=degree, seed=seed, edges=edges)
    except ValueError as e:
        raise c.error("topology", str(e)) from e
    skew: dict[int, float] = {}
    for k, v in c.table("clock_skew").items():
        k = str(k)
        if not k.isdigit() or not 0 <= int(k) < nodes:
            raise c.error("clock_skew", f"key {k!r} is not a node number in 0..{nodes - 1}")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise c.error("clock_skew", f"value for node {k} must be seconds (a number)")
        skew[int(k)] = float(v)
    cluster = ClusterSpec(
        nodes,
        topology,
        degree,
        edges,
        c.number("reconcile_interval", 1.0, low=0.05),
        skew,
        c.flag("share_peers") if "share_peers" in c.raw else False,
        c.whole("max_peers", None, low=1, high=1000) if "max_peers" in c.raw else None,
        c.text("network", "proxy"),
        c.whole("hosts", 1, low=1, high=min(nodes, MAX_HOSTS)),
    )
    if cluster.network not in NETWORKS:
        raise c.error("network", f"must be one of {', '.join(NETWORKS)}, not {cluster.network!r}")

    w = _Fields(p.table("workload"), source, "workload.")
    w.only({"accounts", "rate", "mix", "burst", "concurrency", "quiet"})
    mix_raw = w.table("mix") or dict(WorkloadSpec().mix)
    mix: dict[str, float] = {}
    for k, v in mix_raw.items():
        if k not in KINDS:
            raise w.error("mix", f"unknown kind {k!r} (expected {', '.join(KINDS)})")
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise w.error("mix", f"weight of {k} must be a number >= 0")
        mix[k] = float(v)
    if not any(mix.values()):
        raise w.error("mix", "at least one kind needs a weight above 0")
    bursts = []
    for n, b in enumerate(w.list_of_tables("burst")):
        bf = _Fields(b, source, f"workload.burst[{n}].")
        bf.only({"at", "duration", "rate"})
        bursts.append(
            Burst(
                bf.number("at", None, low=0.0),
                bf.number("duration", None, low=0.0),
                bf.number("rate", None, low=0.001),
            )
        )
    accounts = w.whole("accounts", 10, low=1)
    quiet = w.raw.get("quiet", [])
    if not isinstance(quiet, list) or not all(_is_node(q, accounts) for q in quiet):
        raise w.error("quiet", f"must be a list of account numbers in 0..{accounts - 1}")
    workload = WorkloadSpec(
        accounts=accounts,
        quiet=tuple(quiet),
        rate=w.number("rate", 5.0, low=0.0),
        mix=mix,
        bursts=tuple(bursts),
        concurrency=w.whole("concurrency", 32, low=1),
    )

    parsed = []
    for n, item in enumerate(p.list_of_tables("schedule")):
        where = f"schedule[{n}]."
        parsed.append((_parse_action(item, source, where, nodes, workload.accounts), where))
    parsed.sort(key=lambda pair: pair[0].at)  # stable: file order at equal times
    _check_story(parsed, source, nodes)
    schedule = [a for a, _ in parsed]
    hostile = tuple(
        _parse_hostile(item, source, f"hostile[{n}].", nodes, duration)
        for n, item in enumerate(p.list_of_tables("hostile"))
    )
    ceiling = None
    if "memory_ceiling_mb" in raw:
        ceiling = p.number("memory_ceiling_mb", None, low=16.0)
    check_network(cluster, parsed, hostile, source)
    return Scenario(
        name,
        description,
        seed,
        duration,
        settle,
        cluster,
        workload,
        tuple(schedule),
        source,
        hostile,
        ceiling,
    )


def check_network(
    cluster: ClusterSpec,
    schedule: Sequence[tuple[Action, str]],
    hostile: Sequence[HostileSpec],
    source: str,
    *,
    where_network: str = "cluster.network",
) -> None:
    """Refuse what ``cluster.network`` cannot do (see the module docstring)."""
    net = cluster.network
    if cluster.hosts > 1 and net != "namespaces":
        raise ScenarioError(f'{source}: cluster.hosts needs network = "namespaces"')
    if net == "proxy" and cluster.share_peers:
        for a, where in schedule:
            if a.action in _NEEDS_PROXIES:
                raise ScenarioError(
                    f"{source}: {where}action {a.action} needs the link proxies, which a "
                    "cluster with share_peers = true does not have"
                )
    for a, where in schedule:
        if net == "proxy" and "loss" in a.args:
            raise ScenarioError(
                f'{source}: {where}loss (of packets) needs network = "namespaces" '
                f'({where_network} is "proxy"): the proxy relays a byte stream and has no '
                "packets to lose; drop loses whole messages"
            )
        if net == "namespaces" and "drop" in a.args:
            raise ScenarioError(
                f"{source}: {where}drop (of whole WebSocket messages) needs network = "
                f'"proxy" ({where_network} is "namespaces"): the kernel loses packets, '
                "not messages; loss is the kernel's"
            )
    if net == "namespaces" and hostile:
        raise ScenarioError(
            f'{source}: hostile nodes need network = "proxy" ({where_network} is '
            '"namespaces"): their poisoned-URL listeners are on the harness\'s loopback, '
            "which a node in its own namespace cannot reach"
        )


def check_machine(scenario: Scenario) -> None:
    """Refuse a namespace scenario this machine cannot run (not root, no ``ip
    netns``, no nftables; delay or jitter without netem; sever without socket
    aborts), before any node starts. Found by trying."""
    if scenario.cluster.network != "namespaces":
        return
    reason = netns.unavailable()
    if reason is not None:
        raise ScenarioError(f'{scenario.source}: network = "namespaces" cannot run here: {reason}')
    caps = netns.capabilities()
    for n, a in enumerate(scenario.schedule):
        if not caps.netem and ("delay" in a.args or "jitter" in a.args):
            raise ScenarioError(
                f"{scenario.source}: {a.describe()} (at {a.at:g} s): delay and jitter in "
                'network = "namespaces" need the kernel\'s netem qdisc '
                "(CONFIG_NET_SCH_NETEM), which this kernel does not have; run it with "
                "--net proxy, or without them"
            )
        if not caps.sever and a.action == "sever":
            raise ScenarioError(
                f"{scenario.source}: schedule item {n} (sever) needs socket aborts "
                "(`ss -K`, CONFIG_INET_DIAG_DESTROY), which this kernel does not have"
            )


def with_network(scenario: Scenario, network: str | None, hosts: int | None = None) -> Scenario:
    """``scenario`` on another network (``--net``, ``--hosts``), checked again."""
    if network is None and hosts is None:
        return scenario
    net = network or scenario.cluster.network
    if net not in NETWORKS:
        raise ScenarioError(f"--net must be one of {', '.join(NETWORKS)}, not {net!r}")
    many = hosts if hosts is not None else scenario.cluster.hosts
    if not 1 <= many <= min(scenario.cluster.nodes, MAX_HOSTS):
        raise ScenarioError(
            f"--hosts must be between 1 and {min(scenario.cluster.nodes, MAX_HOSTS)}"
        )
    cluster = dataclasses.replace(scenario.cluster, network=net, hosts=many)
    schedule = [(a, f"schedule ({a.describe()}): ") for a in scenario.schedule]
    check_network(cluster, schedule, scenario.hostile, scenario.source, where_network="--net")
    return dataclasses.replace(scenario, cluster=cluster)


def _parse_hostile(
    item: dict[str, Any], source: str, where: str, nodes: int, duration: float
) -> HostileSpec:
    f = _Fields(item, source, where)
    f.only({"behaviours", "links_to", "start", "stop", *BEHAVIOURS})
    behaviours = f._get("behaviours", None)
    if (
        not isinstance(behaviours, list)
        or not behaviours
        or not all(isinstance(b, str) and b in BEHAVIOURS for b in behaviours)
    ):
        raise f.error("behaviours", f"must be a list of some of: {', '.join(BEHAVIOURS)}")
    if len(set(behaviours)) != len(behaviours):
        raise f.error("behaviours", "names a behaviour twice")
    links_to = f._get("links_to", None)
    if (
        not isinstance(links_to, list)
        or not links_to
        or not all(_is_node(i, nodes) for i in links_to)
    ):
        raise f.error("links_to", f"must be a list of node numbers in 0..{nodes - 1}")
    if len(set(links_to)) != len(links_to):
        raise f.error("links_to", "names a node twice")
    start = f.number("start", 1.0, low=0.0)
    if start >= duration:
        raise f.error("start", f"must be before the end of the workload ({duration:g} s)")
    stop = None
    if "stop" in item:
        stop = f.number("stop", None, low=0.0)
        if stop <= start:
            raise f.error("stop", "must be after start")
        if stop > duration:
            raise f.error("stop", f"must be at most the workload's duration ({duration:g} s)")
    parts: dict[str, Any] = {}
    for b in BEHAVIOURS:
        if b not in item:
            continue
        if b not in behaviours:
            raise f.error(b, f"is given but {b!r} is not among behaviours")
        sub = _Fields(f.table(b), source, f"{where}{b}.")
        bounds = HOSTILE_FIELDS[b]
        sub.only(set(bounds) | ({"kinds"} if b == "forge" else set()))
        values: dict[str, Any] = {}
        for name, (kind, low, high) in bounds.items():
            if name not in sub.raw:
                continue
            if kind == "whole":
                values[name] = sub.whole(name, None, low=int(low), high=int(high))
            else:
                values[name] = sub.number(name, None, low=low, high=high)
        if b == "forge" and "kinds" in sub.raw:
            kinds = sub.raw["kinds"]
            if (
                not isinstance(kinds, list)
                or not kinds
                or not all(isinstance(k, str) and k in FORGE_KINDS for k in kinds)
            ):
                raise sub.error("kinds", f"must be a list of some of: {', '.join(FORGE_KINDS)}")
            values["kinds"] = tuple(kinds)
        parts[b] = _SPECS[b](**values)
    for b in behaviours:
        parts.setdefault(b, _SPECS[b]())
    return HostileSpec(tuple(behaviours), tuple(links_to), start, stop, **parts)


def _parse_action(
    item: dict[str, Any], source: str, where: str, nodes: int, accounts: int
) -> Action:
    f = _Fields(item, source, where)
    action = f.text("action", None)
    if action not in ACTIONS:
        raise f.error("action", f"unknown action {action!r} (expected {', '.join(ACTIONS)})")
    required, optional = ACTIONS[action]
    f.only({"at", "action"} | required | optional)
    for name in sorted(required):
        if name not in item:
            raise f.error(name, f"is required for {action}")
    at = f.number("at", None, low=0.0)
    args: dict[str, Any] = {}
    if "groups" in item:
        groups = item["groups"]
        if not isinstance(groups, list) or not groups:
            raise f.error("groups", "must be a list of lists of node numbers")
        seen: set[int] = set()
        for g in groups:
            if not isinstance(g, list) or not all(_is_node(x, nodes) for x in g):
                raise f.error("groups", f"each group is a list of node numbers in 0..{nodes - 1}")
            if seen & set(g):
                raise f.error("groups", "a node is in two groups")
            seen |= set(g)
        args["groups"] = [list(g) for g in groups]
    if "node" in item:
        if not _is_node(item["node"], nodes):
            raise f.error("node", f"must be a node number in 0..{nodes - 1}")
        args["node"] = item["node"]
    if "nodes" in item:
        ns = item["nodes"]
        fewest = 2 if action == "equivocate" else 1
        if not isinstance(ns, list) or len(ns) < fewest or not all(_is_node(x, nodes) for x in ns):
            many = "two or more" if fewest == 2 else "a list of"
            raise f.error("nodes", f"must be {many} node numbers in 0..{nodes - 1}")
        args["nodes"] = list(ns)
    for name in ("account", "subject", "labeler"):
        if name in item:
            if not _is_node(item[name], accounts):
                raise f.error(name, f"must be an account number in 0..{accounts - 1}")
            args[name] = item[name]
    for name in ("readers", "labelers"):
        if name in item:
            xs = item[name]
            if not isinstance(xs, list) or not xs or not all(_is_node(x, accounts) for x in xs):
                raise f.error(name, f"must be a list of account numbers in 0..{accounts - 1}")
            args[name] = list(xs)
    if "to" in item:
        if not _is_node(item["to"], nodes):
            raise f.error("to", f"must be a node number in 0..{nodes - 1}")
        args["to"] = item["to"]
    _parse_step_fields(f, action, item, args)
    if "links" in item:
        links = item["links"]
        if links != "all":
            pairs = f.pairs("links")
            for a, b in pairs:
                if not (_is_node(a, nodes) and _is_node(b, nodes)):
                    raise f.error("links", f"pair [{a}, {b}] names a node outside 0..{nodes - 1}")
            links = pairs
        args["links"] = links
    for name in ("delay", "jitter", "bandwidth", "clock_skew"):
        if name in item:
            args[name] = f.number(name, None, low=None if name == "clock_skew" else 0.0)
    if "bandwidth" in args and args["bandwidth"] <= 0:
        raise f.error("bandwidth", "must be above 0 (bytes per second)")
    if "drop" in item:
        args["drop"] = f.number("drop", None, low=0.0)
        if args["drop"] > 1:
            raise f.error("drop", "is a share of frames, between 0 and 1")
    if "loss" in item:
        args["loss"] = f.number("loss", None, low=0.0)
        if args["loss"] > 1:
            raise f.error("loss", "is a share of packets, between 0 and 1")
    return Action(at, action, args)


def _parse_step_fields(f: _Fields, action: str, item: dict[str, Any], args: dict[str, Any]) -> None:
    """The story steps' own fields (post, follow, label, takedown, migrate, expect)."""
    for name in ("refused", "neg", "with_old_node", "visible"):
        if name in item:
            args[name] = f.flag(name)
    for name in ("name", "text", "value", "reason", "post"):
        if name in item:
            args[name] = f.text(name, None)
            if not args[name].strip():
                raise f.error(name, "must not be empty")
    if len(args.get("text", "")) > MAX_POST_TEXT:
        raise f.error("text", f"is longer than {MAX_POST_TEXT} characters")
    if len(args.get("reason", "")) > MAX_REASON_CHARS:
        raise f.error("reason", f"is longer than {MAX_REASON_CHARS} characters")
    if len(args.get("value", "").encode()) > MAX_LABEL_VAL:
        raise f.error("value", f"is longer than {MAX_LABEL_VAL} bytes")
    if action == "post" and args.get("refused") and "name" in args:
        raise f.error("name", "names nothing: a refused post makes no record")
    if action == "follow" and args["subject"] == args["account"]:
        raise f.error("subject", "is the account itself")
    if action == "label" and ("post" in args) == ("account" in args):
        raise f.error("post", "or account: a label needs exactly one subject")
    if "scopes" in item:
        scopes = item["scopes"]
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(x, str) and x in SCOPES for x in scopes)
        ):
            raise f.error("scopes", f"must be a list of some of: {', '.join(SCOPES)}")
        args["scopes"] = [x for x in SCOPES if x in scopes]
    if action == "expect":
        args["view"] = f.text("view", "posts")
        if args["view"] not in VIEWS:
            raise f.error("view", f"must be one of {', '.join(VIEWS)}, not {args['view']!r}")
        if ("nodes" in args) == ("readers" in args):
            raise f.error(
                "readers",
                "or nodes: an expect names either readers (accounts, each reading through "
                "its home node) or nodes (an anonymous reader on each), not both",
            )
        if args["view"] == "timeline" and "readers" not in args:
            raise f.error("view", "timeline needs readers (a timeline is an account's)")
        args["within"] = f.number("within", 15.0, low=0.0)


def _check_story(parsed: Sequence[tuple[Action, str]], source: str, nodes: int) -> None:
    """What only the whole schedule shows: a step names a post made before it, names
    are unique, and a migration goes somewhere new (homes are round robin, as the
    workload makes them, then follow the migrations)."""
    named: set[str] = set()
    moved: dict[int, int] = {}
    for a, where in parsed:
        args = a.args
        if a.action == "post" and "name" in args:
            if args["name"] in named:
                raise ScenarioError(f"{source}: {where}name {args['name']!r} is used twice")
            named.add(args["name"])
        elif "post" in args and args["post"] not in named:
            raise ScenarioError(
                f"{source}: {where}post {args['post']!r} names no post made before it "
                "(a post step with that name and an earlier at)"
            )
        if a.action == "migrate":
            k = args["account"]
            home = moved.get(k, k % nodes)
            if args["to"] == home:
                raise ScenarioError(
                    f"{source}: {where}to: account {k} already lives on node {home} then"
                )
            moved[k] = args["to"]


def _is_node(x: Any, nodes: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < nodes


class _Fields:
    """Typed reads from one TOML table, with errors that say where."""

    def __init__(self, raw: Any, source: str, prefix: str):
        if not isinstance(raw, dict):
            raise ScenarioError(f"{source}: {prefix.rstrip('.') or 'file'} must be a table")
        self.raw = raw
        self.source = source
        self.prefix = prefix

    def error(self, name: str, why: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.prefix}{name} {why}")

    def only(self, allowed: set[str] | frozenset[str]) -> None:
        unknown = sorted(set(self.raw) - set(allowed))
        if unknown:
            where = self.prefix.rstrip(".") or "the top level"
            raise ScenarioError(
                f"{self.source}: unknown field(s) in {where}: {', '.join(unknown)} "
                f"(expected some of: {', '.join(sorted(allowed))})"
            )

    def _get(self, name: str, default: Any) -> Any:
        if name not in self.raw:
            if default is None:
                raise self.error(name, "is required")
            return default
        return self.raw[name]

    def text(self, name: str, default: str | None) -> str:
        v = self._get(name, default)
        if not isinstance(v, str):
            raise self.error(name, "must be a string")
        return v

    def whole(
        self, name: str, default: int | None, *, low: int | None = None, high: int | None = None
    ) -> int:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, "must be a whole number")
        if low is not None and v < low:
            raise self.error(name, f"must be at least {low}")
        if high is not None and v > high:
            raise self.error(name, f"must be at most {high}")
        return v

    def flag(self, name: str) -> bool:
        v = self.raw[name]
        if not isinstance(v, bool):
            raise self.error(name, "must be true or false")
        return v

    def number(
        self,
        name: str,
        default: float | None,
        *,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(name, "must be a number")
        if low is not None and v < low:
            raise self.error(name, f"must be at least {low}")
        if high is not None and v > high:
            raise self.error(name, f"must be at most {high}")
        return float(v)

    def table(self, name: str) -> dict[str, Any]:
        v = self.raw.get(name, {})
        if not isinstance(v, dict):
            raise self.error(name, "must be a table")
        return v

    def list_of_tables(self, name: str) -> list[dict[str, Any]]:
        v = self.raw.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self.error(name, f"must be an array of tables ([[{self.prefix}{name}]])")
        return v

    def pairs(self, name: str) -> list[tuple[int, int]]:
        v = self.raw.get(name, [])
        ok = isinstance(v, list) and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in p)
            for p in v
        )
        if not ok:
            raise self.error(name, "must be a list of [a, b] node pairs")
        return [(p[0], p[1]) for p in v]


# -- running -------------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    """Something that happened during the run, at ``t`` seconds from the start."""

    t: float
    what: str
    action: str


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    cluster: Cluster
    workload: Workload
    observer: Observer
    events: list[Event]
    #: (heal or restart time, seconds until every node agreed, or None)
    convergence: list[tuple[float, str, float | None]]
    final_convergence: float | None
    equivocations: list[dict[str, Any]]
    forks: list[list[str]]
    setup_seconds: float
    wall_seconds: float
    #: The story steps' outcomes (empty when the schedule had none).
    checks: list[Check] = field(default_factory=list)
    #: The hostile nodes, with what they did and saw.
    hostiles: list[HostileNode] = field(default_factory=list)


Progress = Callable[[str, Mapping[str, Any]], None]


async def run_scenario(
    scenario: Scenario,
    *,
    workdir: Path | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Cluster, Workload], None] | None = None,
) -> tuple[RunResult, Callable[[], Any]]:
    """Play ``scenario``; returns the result and a closer for the cluster (the
    report reads from the live cluster before it is closed)."""
    say: Progress = progress or (lambda kind, info: None)
    await asyncio.to_thread(check_machine, scenario)
    started = time.monotonic()
    cluster = scenario.make_cluster(workdir)
    hostiles = [
        HostileNode(k, spec, cluster, seed=scenario.seed) for k, spec in enumerate(scenario.hostile)
    ]

    async def close() -> None:
        for h in hostiles:
            await h.close()
        await cluster.close()

    say("phase", {"text": f"starting {scenario.cluster.nodes} nodes"})
    try:
        await cluster.start()  # in the try: Ctrl-C mid-start must stop the nodes started
        for h in hostiles:
            await h.start()
        workload = Workload(cluster, scenario.workload, seed=scenario.seed)
        if on_start is not None:
            on_start(cluster, workload)
        say("phase", {"text": f"creating {scenario.workload.accounts} accounts"})
        await workload.create_accounts()
        await cluster.converged(timeout=max(30.0, scenario.settle))
        setup = time.monotonic() - started
        events: list[Event] = []
        convergence: list[tuple[float, str, float | None]] = []
        forks: list[list[str]] = []
        checks: set[asyncio.Task[None]] = set()
        observer = Observer(cluster)
        async with observer:
            t0 = observer.t0
            steps = Steps(cluster, workload, t0)
            say("phase", {"text": "running", "t0": t0, "duration": scenario.duration})

            async def measure(at: float, why: str) -> None:
                try:
                    # Among the nodes that are up: another may still be down.
                    took = await cluster.converged(timeout=scenario.settle, everyone=False)
                except TimeoutError:
                    convergence.append((at, why, None))
                    say("convergence", {"t": at, "why": why, "seconds": None})
                    return
                convergence.append((at, why, took))
                say("convergence", {"t": at, "why": why, "seconds": took})

            async def play() -> None:
                for a in scenario.schedule:
                    wait = t0 + a.at - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    what = a.describe()
                    if a.action in STEPS:
                        check = await steps.apply(a.action, a.args, what)
                        mark = "ok" if check.passed else "FAILED"
                        what += f": {mark}" + (f", {check.detail}" if check.detail else "")
                    else:
                        await _apply(cluster, workload, a, forks)
                    now = time.monotonic() - t0
                    events.append(Event(now, what, a.action))
                    say("event", {"t": now, "text": what})
                    if a.action in ("heal", "restart", "restore"):
                        task = asyncio.create_task(measure(now, a.describe()))
                        checks.add(task)

            async def attack(h: HostileNode) -> None:
                at = h.spec.start
                what = f"hostile {h.index} starts: {h.spec.describe()}"
                events.append(Event(at, what, "hostile"))
                say("event", {"t": at, "text": events[-1].what})
                await h.run(t0, scenario.duration)
                now = time.monotonic() - t0
                sent = sum(h.stats.sent.values())
                what = (
                    f"hostile {h.index} stopped: {sent} messages and connections sent, "
                    f"its links cut {h.stats.links_closed} times, "
                    f"{len(h.dials)} dials of its poisoned URLs so far"
                )
                events.append(Event(now, what, "hostile"))
                say("event", {"t": now, "text": what})

            async with asyncio.TaskGroup() as tg:
                tg.create_task(play())
                tg.create_task(workload.run(scenario.duration, t0))
                for h in hostiles:
                    tg.create_task(attack(h))
            for task in checks:
                await task
            # The end: everything restored, every node up, then wait for agreement.
            cluster.heal()
            cluster.shape(clear=True)
            for n in cluster.nodes:
                if not n.alive:
                    await cluster.restart(n.index)
            end = time.monotonic() - t0
            events.append(Event(end, "end: links restored, every node up", "end"))
            say("event", {"t": end, "text": "end: links restored, every node up"})
            say("phase", {"text": "waiting for convergence"})
            try:
                final: float | None = await cluster.converged(timeout=scenario.settle)
            except TimeoutError:
                final = None
            say("convergence", {"t": end, "why": "end", "seconds": final})
            await observer.sample()
        events.sort(key=lambda e: e.t)  # a hostile node's start is logged ahead of time
        equivocations = await _equivocations(cluster)
        result = RunResult(
            scenario,
            cluster,
            workload,
            observer,
            events,
            convergence,
            final,
            equivocations,
            forks,
            setup,
            time.monotonic() - started,
            steps.checks,
            hostiles,
        )
    except BaseException:
        await close()
        raise
    return result, close


async def _apply(cluster: Cluster, workload: Workload, a: Action, forks: list[list[str]]) -> None:
    args = a.args
    if a.action == "partition":
        cluster.partition(*(set(g) for g in args["groups"]))
    elif a.action == "heal":
        cluster.heal()
    elif a.action == "kill":
        await cluster.kill(args["node"])
    elif a.action == "restart":
        await cluster.restart(args["node"], clock_skew=args.get("clock_skew"))
    elif a.action == "shape":
        faults = {k: args[k] for k in ("delay", "jitter", "bandwidth", "drop", "loss") if k in args}
        cluster.shape(args.get("links"), **faults)
    elif a.action == "clear":
        cluster.shape(args.get("links"), clear=True)
    elif a.action == "cut":
        cluster.cut(args["links"])
    elif a.action == "restore":
        cluster.restore(args["links"])
    elif a.action == "sever":
        cluster.sever(args.get("links"))
    elif a.action == "equivocate":
        acct = workload.accounts[args["account"]]
        forks.append(await cluster.equivocate(acct.home, acct.did, args["nodes"]))
    elif a.action == "forge":
        acct = workload.accounts[args["account"]]
        await cluster.forge(acct.home, acct.did, args["node"])
    else:  # pragma: no cover - parse_scenario refuses other actions
        raise ScenarioError(f"unknown action {a.action}")


async def _equivocations(cluster: Cluster) -> list[dict[str, Any]]:
    out = []
    for i in cluster.alive():
        got = await cluster.call(i, "skyfed.sync.listEquivocations", limit=500)
        for e in got.get("equivocations", []):
            out.append({"node": i, **e})
    return out
