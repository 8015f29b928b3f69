"""Cluster nodes as network hosts: one Linux network namespace per node.

With ``network="namespaces"`` the harness gives every node a namespace of its own,
with one interface (``eth0``) and one address, plugged into a Linux bridge through
a veth pair; the node binds that address, on a fixed port, and dials its peers at
theirs. The bridge lives in a "host" namespace of its own (``<prefix>h0``), so no
firewall of the machine sees the node traffic; the harness process (in the
machine's namespace) holds one more address on the bridge, through a veth
(``<prefix>hx``), so it reaches every node's API directly. There are no
proxies: faults are the kernel's, applied to real packets, so TCP sees real loss,
queues and retransmits.

- a **partition** (or ``cut``) is an nftables rule on the bridge that drops every
  packet between the two addresses; open connections stall (TCP retransmits), new
  ones time out, and both pick up again when the rule goes (``heal``/``restore``).
- **loss** is an nftables rule that drops that share of the packets at random
  (``numgen random``), each direction on its own.
- **bandwidth** (bytes per second each way) is an HTB class on the receiving node's
  veth, one class per sending peer; **delay** and **jitter** are a netem qdisc
  under that class. netem is a kernel module that some kernels lack
  (``CONFIG_NET_SCH_NETEM``): :func:`capabilities` finds out by trying, and the
  harness refuses a delay it cannot make, saying so.
- **sever** closes the TCP connections between two nodes (``ss -K``, which aborts
  them with a reset); redials go through at once.

Partitions and loss are applied where a packet leaves its sender's bridge; shaping
where it enters its receiver's namespace. Traffic between the harness and a node is
never touched (the harness is the observer, not part of the network).

**Hosts.** With ``hosts=N > 1`` the nodes are spread over N host namespaces, each
with its own bridge (as N machines would each have one); the bridges are joined by
VXLAN over an underlay network (a bridge in the machine's namespace, one veth per
host), so all nodes share one layer-2 subnet across the "hosts". This is the
two-machine set-up of docs/cluster-hosts.md built on one machine; the rules and
qdiscs live in each host's namespace.

**Names and clean-up.** Every namespace, interface and nftables table of a run is
named ``sky<4 hex>...`` (the run's prefix; a node's namespace is ``<prefix>n<i>``,
a host's ``<prefix>h<h>``, and only the harness's veth ``<prefix>hx`` and, with
several hosts, the underlay ``<prefix>ul``/``<prefix>u<h>`` are in the machine's
namespace; bridges, veths, qdiscs and nftables tables live in the host
namespaces and go with them). Before anything is made, the
run writes ``/run/skyfed-cluster/<prefix>.json`` with its pid; :meth:`close` removes
everything with the prefix and then the file. A run that was killed leaves its file
behind: the next run (and ``skyfed cluster down``) finds the owner dead and removes
that run's set (:func:`sweep`), after killing any node process left in its
namespaces. Nothing without a live-or-dead record of ours is ever touched.

Needs root (``ip netns add``); :func:`unavailable` says why it cannot run, by
trying. Address plan: one free ``10.X.0.0/16`` per run (X from 100 to 254, not in
use by a live run or any route of the machine): the harness is ``10.X.0.1``, node
``i`` is ``10.X.0.0 + 10 + i`` (in a /17), a host's underlay address is
``10.X.128.(1 + h)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "NODE_PORT",
    "Capabilities",
    "KernelFaults",
    "NamespaceNet",
    "NetnsError",
    "capabilities",
    "leftovers",
    "sweep",
    "unavailable",
]

#: Every node listens on this port of its own address (so a restart keeps its URL).
NODE_PORT = 2583
STATE_DIR = Path("/run/skyfed-cluster")
_PREFIX = re.compile(r"sky[0-9a-f]{4}")
#: Seconds one `ip`, `tc`, `nft` or `ss` command may take before the harness gives up.
_TIMEOUT = 60.0
#: Most hosts and nodes a namespace cluster may have (addresses and names fit).
MAX_NODES = 30_000
MAX_HOSTS = 100


class NetnsError(RuntimeError):
    """A command that sets up, changes or removes the namespaces failed."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this kernel can do to packets (found by trying, see :func:`capabilities`)."""

    #: netem (delay and jitter).
    netem: bool
    #: Aborting a namespace's TCP sockets (``ss -K``, ``CONFIG_INET_DIAG_DESTROY``).
    sever: bool


@dataclass(frozen=True, slots=True)
class KernelFaults:
    """What the kernel does to one direction of one node pair."""

    cut: bool = False
    delay: float = 0.0
    jitter: float = 0.0
    #: Bytes per second; None is unlimited.
    bandwidth: float | None = None
    #: Share of packets lost (0..1).
    loss: float = 0.0

    @property
    def shaped(self) -> bool:
        return bool(self.delay or self.jitter or self.bandwidth)


def _run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        out = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{' '.join(argv)}: {e}") from e
    if check and out.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def unavailable() -> str | None:
    """Why namespace mode cannot run here, or None when it can (found by making and
    removing a namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root (this process is not)"
    for tool in ("ip", "tc", "nft", "ss"):
        if shutil.which(tool) is None:
            hint = " (scripts/ensure-nftables.sh installs it)" if tool == "nft" else ""
            return f"the {tool!r} command is not installed{hint}"
    probe = f"skyprobe{os.getpid()}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    try:
        table = _run(
            ["ip", "netns", "exec", probe, "nft", "add table bridge skyprobe"], check=False
        )
        if table.returncode != 0:
            return f"nftables does not work here: {table.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def capabilities() -> Capabilities:
    """Try netem and socket aborts in a scratch namespace."""
    probe = f"skyprobe{os.getpid()}"
    _run(["ip", "netns", "add", probe])
    try:
        _run(["ip", "-n", probe, "link", "add", "name", "x0", "type", "veth", "peer", "name", "x1"])
        netem = _run(
            ["tc", "-n", probe, "qdisc", "add", "dev", "x0", "root", "netem", "delay", "1ms"],
            check=False,
        )
        sever = _run(
            ["ip", "netns", "exec", probe, "ss", "-K", "-t", "dst", "10.0.0.1"], check=False
        )
        return Capabilities(netem=netem.returncode == 0, sever=sever.returncode == 0)
    finally:
        _run(["ip", "netns", "del", probe], check=False)


# -- records of runs, and the sweep of dead ones ---------------------------------------


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _records() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(STATE_DIR.glob("sky*.json")):
        if not _PREFIX.fullmatch(path.stem):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        out.append((path, record if isinstance(record, dict) else {}))
    return out


def _alive(record: Mapping[str, Any]) -> bool:
    """Is the process that made this run still the one running under its pid?"""
    try:
        proc = psutil.Process(int(record["pid"]))
        return abs(proc.create_time() - float(record["created"])) < 1.0
    except (KeyError, ValueError, TypeError, psutil.Error):
        return False


def sweep() -> list[str]:
    """Remove the namespaces, links and tables of every run whose owner is dead;
    the prefixes removed."""
    # A probe of unavailable()/capabilities() cut short leaves an empty namespace.
    for ns in _names("netns", "skyprobe"):
        with contextlib.suppress(ValueError, psutil.Error):
            if not psutil.pid_exists(int(ns.removeprefix("skyprobe"))):
                _run(["ip", "netns", "del", ns], check=False)
    if not STATE_DIR.is_dir():
        return []
    with _locked():
        gone = []
        for path, record in _records():
            if _alive(record):
                continue
            _remove(path.stem, kill=True)
            path.unlink(missing_ok=True)
            gone.append(path.stem)
        return gone


def _names(kind: str, prefix: str) -> list[str]:
    if kind == "netns":
        out = _run(["ip", "netns", "list"], check=False).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
    else:
        out = _run(["ip", "-o", "link", "show"], check=False).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [n for n in names if n.startswith(prefix)]


def _remove(prefix: str, *, kill: bool) -> None:
    """Everything named ``prefix...``: node processes (with ``kill``), namespaces,
    the machine-side interfaces and the nftables tables."""
    if not _PREFIX.fullmatch(prefix):  # never anything that is not ours
        raise ValueError(f"not a run prefix: {prefix!r}")
    spaces = _names("netns", prefix)
    if kill:
        for ns in spaces:
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    # The machine-side ends first: deleting one end of a veth deletes both at once,
    # while a namespace's own interfaces go only when the kernel gets round to it.
    lines = [f"link del {name}" for name in _names("link", prefix)]
    lines += [f"netns del {ns}" for ns in spaces]
    if lines:
        _run(["ip", "-force", "-batch", "-"], stdin="\n".join(lines) + "\n", check=False)
    tables = _run(["nft", "list", "tables", "bridge"], check=False).stdout.split()
    for name in tables:
        if name.startswith(prefix):
            _run(["nft", "delete", "table", "bridge", name], check=False)


def leftovers(prefix: str) -> list[str]:
    """Whatever of run ``prefix`` still exists (namespaces, links, tables): for tests."""
    tables = _run(["nft", "list", "tables", "bridge"], check=False).stdout.split()
    return (
        [f"netns {n}" for n in _names("netns", prefix)]
        + [f"link {n}" for n in _names("link", prefix)]
        + [f"table {t}" for t in tables if t.startswith(prefix)]
    )


def _routes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination in the machine's routing tables (local ones too)."""
    out = _run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout
    nets = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in ("broadcast", "local", "unreachable", "blackhole", "prohibit"):
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):
            nets.append(ipaddress.IPv4Network(words[0], strict=False))
    return nets


def _free_x(taken: set[int]) -> int | None:
    """A second octet X whose 10.X.0.0/16 no live run and no route uses."""
    routes = _routes()
    for x in range(100, 255):
        net = ipaddress.IPv4Network(f"10.{x}.0.0/16")
        if x not in taken and not any(r.overlaps(net) for r in routes):
            return x
    return None


# -- one run ------------------------------------------------------------------------


class NamespaceNet:
    """The namespaces, bridge(s) and rules of one cluster run (see the module doc)."""

    def __init__(self, nodes: int, *, hosts: int = 1):
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"a namespace cluster has 1 to {MAX_NODES} nodes")
        if not 1 <= hosts <= min(nodes, MAX_HOSTS):
            raise ValueError(f"hosts must be between 1 and {min(nodes, MAX_HOSTS)} (one node each)")
        self.nodes = nodes
        self.hosts = hosts
        self.prefix = ""
        self.base = ipaddress.IPv4Address("10.0.0.0")
        self.caps = Capabilities(netem=False, sever=False)
        self._record: Path | None = None
        #: The faults in force: (sender, receiver) -> faults.
        self._faults: dict[tuple[int, int], KernelFaults] = {}
        #: Per receiving veth, the shaping it has now (to change only what changed).
        self._shaping: dict[int, dict[int, KernelFaults]] = {}
        self._counted: list[tuple[int, int]] = []

    # -- addresses and names ----------------------------------------------------
    @property
    def subnet(self) -> str:
        return f"{self.base}/16"

    @property
    def harness_address(self) -> str:
        return str(self.base + 1)

    def address(self, i: int) -> str:
        return str(self.base + 10 + i)

    def url(self, i: int) -> str:
        return f"http://{self.address(i)}:{NODE_PORT}"

    def namespace(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def host_of(self, i: int) -> int:
        """Nodes are dealt to hosts round robin."""
        return i % self.hosts

    def _host_ns(self, h: int) -> str:
        return f"{self.prefix}h{h}"

    def _veth(self, i: int) -> str:
        """Node ``i``'s bridge-side interface (in its host's namespace)."""
        return f"v{i}"

    def _table(self) -> str:
        return self.prefix

    def _in_host(self, h: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self._host_ns(h), *argv]

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program in node ``i``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(i)]

    # -- life cycle -------------------------------------------------------------
    def create(self) -> None:
        """Sweep dead runs, take a prefix and a subnet, record them, then build."""
        reason = unavailable()
        if reason is not None:
            raise NetnsError(f"namespace mode cannot run here: {reason}")
        sweep()
        with _locked():
            records = _records()
            taken = {int(r.get("x", -1)) for _, r in records}
            used = {p.stem for p, _ in records}
            prefix = f"sky{secrets.token_hex(2)}"
            while prefix in used or _names("netns", prefix) or _names("link", prefix):
                prefix = f"sky{secrets.token_hex(2)}"
            x = _free_x(taken)
            if x is None:
                raise NetnsError("no free 10.X.0.0/16 for the cluster (X in 100..254)")
            self.prefix = prefix
            self.base = ipaddress.IPv4Address(f"10.{x}.0.0")
            self._record = STATE_DIR / f"{prefix}.json"
            me = psutil.Process()
            record = {
                "pid": me.pid,
                "created": me.create_time(),
                "x": x,
                "nodes": self.nodes,
                "hosts": self.hosts,
            }
            self._record.write_text(json.dumps(record) + "\n")
        try:
            self.caps = capabilities()
            self._build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove everything this run made (idempotent)."""
        if self._record is None:
            return
        _remove(self.prefix, kill=True)
        self._record.unlink(missing_ok=True)
        self._record = None

    def _batch(self, lines: Iterable[str], netns: str | None = None) -> None:
        text = "\n".join(lines) + "\n"
        argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
        _run(argv, stdin=text)

    def _build(self) -> None:
        p = self.prefix
        # Even one host is a namespace of its own: the node traffic crosses a bridge
        # there, so no firewall of the machine's (say a FORWARD policy of DROP with
        # bridge-nf-call-iptables) sees it, and nothing of ours but a few links with
        # the run's prefix is in the machine's namespace.
        root = [f"netns add {self._host_ns(h)}" for h in range(self.hosts)]
        # The harness's leg into host 0's bridge: its address on the cluster subnet.
        root += [
            f"link add {p}hx type veth peer name hx netns {p}h0",
            f"addr add {self.harness_address}/17 dev {p}hx",
            f"link set {p}hx up",
        ]
        if self.hosts > 1:
            # The underlay: one bridge here, a veth to each host; VXLAN over it.
            root += [f"link add {p}ul type bridge", f"link set {p}ul up"]
            for h in range(self.hosts):
                root += [
                    f"link add {p}u{h} mtu 1600 type veth peer name ul0 netns {p}h{h} mtu 1600",
                    f"link set {p}u{h} master {p}ul up",
                ]
        for i in range(self.nodes):
            root.append(f"netns add {self.namespace(i)}")
        self._batch(root)
        for h in range(self.hosts):
            lines = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
            if h == 0:
                lines.append("link set hx master br0 up")
            if self.hosts > 1:
                under = str(self.base + (128 << 8) + 1 + h)
                lines += [
                    f"addr add {under}/24 dev ul0",
                    "link set ul0 up",
                    f"link add vx0 type vxlan id 42 local {under} dev ul0 dstport 4789 learning",
                    "link set vx0 master br0 up",
                ]
            self._batch(lines, self._host_ns(h))
            if self.hosts > 1:
                # Head-end replication: floods go to every other host's VTEP.
                fdb = [
                    f"fdb append 00:00:00:00:00:00 dev vx0 dst {self.base + (128 << 8) + 1 + o}"
                    for o in range(self.hosts)
                    if o != h
                ]
                _run(["bridge", "-n", f"{p}h{h}", "-batch", "-"], stdin="\n".join(fdb) + "\n")
        # Each node's veth: made in its host's namespace, the far end moved into the
        # node's own namespace as eth0.
        per_host: dict[int, list[str]] = {}
        for i in range(self.nodes):
            v = self._veth(i)
            per_host.setdefault(self.host_of(i), []).extend(
                [
                    f"link add {v} type veth peer name eth0 netns {self.namespace(i)}",
                    f"link set {v} master br0 up",
                ]
            )
        for h, lines in per_host.items():
            self._batch(lines, self._host_ns(h))
        for i in range(self.nodes):
            self._batch(
                [
                    "link set lo up",
                    f"addr add {self.address(i)}/17 dev eth0",
                    "link set eth0 up",
                ],
                self.namespace(i),
            )
        self._apply_rules()

    # -- faults -----------------------------------------------------------------
    def count(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Count bytes on these directed pairs (see :meth:`counters`)."""
        self._counted = sorted(set(pairs))
        self._apply_counters()

    def set_faults(self, faults: Mapping[tuple[int, int], KernelFaults]) -> None:
        """Make ``faults`` (sender, receiver) -> what to do the faults in force, all
        others cleared; only what changed is touched."""
        for f in faults.values():
            if (f.delay or f.jitter) and not self.caps.netem:
                raise NetnsError(
                    "delay and jitter need the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), "
                    'which this kernel does not have; use network = "proxy" for them'
                )
        old = self._faults
        self._faults = {k: v for k, v in faults.items() if v != KernelFaults()}
        drops = {k: (v.cut, v.loss) for k, v in self._faults.items() if v.cut or v.loss}
        if drops != {k: (v.cut, v.loss) for k, v in old.items() if v.cut or v.loss}:
            self._apply_rules()
        for receiver in range(self.nodes):
            want = {a: f for (a, b), f in self._faults.items() if b == receiver and f.shaped}
            if want != self._shaping.get(receiver, {}):
                self._shape(receiver, want)

    def _rules(self, h: int) -> str:
        """Host ``h``'s fault table: drops for the pairs whose sender lives there."""
        mine = {k: f for k, f in self._faults.items() if self.host_of(k[0]) == h}
        cut = [k for k, f in mine.items() if f.cut]
        lossy: dict[int, list[tuple[int, int]]] = {}
        for k, f in mine.items():
            if f.loss and not f.cut:
                lossy.setdefault(round(f.loss * 1_000_000), []).append(k)
        t = f"{self._table()}f"

        def pairs(ks: list[tuple[int, int]]) -> str:
            if not ks:
                return ""
            body = ", ".join(f"{self.address(a)} . {self.address(b)}" for a, b in sorted(ks))
            return f" elements = {{ {body} }};"

        lines = [f"table bridge {t} {{}}", f"delete table bridge {t}", f"table bridge {t} {{"]
        lines.append(f"  set cut {{ type ipv4_addr . ipv4_addr;{pairs(cut)} }}")
        for share, ks in sorted(lossy.items()):
            lines.append(f"  set loss{share} {{ type ipv4_addr . ipv4_addr;{pairs(ks)} }}")
        lines.append("  chain forward { type filter hook forward priority 0; policy accept;")
        lines.append("    ip saddr . ip daddr @cut drop")
        for share in sorted(lossy):
            lines.append(
                f"    ip saddr . ip daddr @loss{share} numgen random mod 1000000 < {share} drop"
            )
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _apply_rules(self) -> None:
        for h in range(self.hosts):
            _run(self._in_host(h, ["nft", "-f", "-"]), stdin=self._rules(h))

    def _apply_counters(self) -> None:
        t = f"{self._table()}c"
        for h in range(self.hosts):
            mine = [k for k in self._counted if self.host_of(k[0]) == h]
            body = ", ".join(f"{self.address(a)} . {self.address(b)}" for a, b in mine)
            elements = f" elements = {{ {body} }};" if mine else ""
            text = (
                f"table bridge {t} {{}}\ndelete table bridge {t}\ntable bridge {t} {{\n"
                f"  set pairs {{ type ipv4_addr . ipv4_addr; counter;{elements} }}\n"
                "  chain forward { type filter hook forward priority -10; policy accept;\n"
                "    ip saddr . ip daddr @pairs\n  }\n}\n"
            )
            _run(self._in_host(h, ["nft", "-f", "-"]), stdin=text)

    def counters(self) -> dict[tuple[int, int], int]:
        """Bytes sent so far on each counted (sender, receiver) pair."""
        index = {self.address(i): i for i in range(self.nodes)}
        out: dict[tuple[int, int], int] = {}
        for h in range(self.hosts):
            argv = self._in_host(
                h, ["nft", "-j", "list", "set", "bridge", f"{self.prefix}c", "pairs"]
            )
            got = _run(argv, check=False)
            if got.returncode != 0:
                continue
            try:
                items = json.loads(got.stdout)["nftables"]
            except (ValueError, KeyError):
                continue
            for item in items:
                for elem in item.get("set", {}).get("elem", []):
                    e = elem.get("elem", {})
                    a, b = e.get("val", {}).get("concat", ["", ""])
                    if a in index and b in index:
                        out[(index[a], index[b])] = int(e.get("counter", {}).get("bytes", 0))
        return out

    def _shape(self, receiver: int, want: Mapping[int, KernelFaults]) -> None:
        v = self._veth(receiver)
        lines = []
        if self._shaping.get(receiver):
            lines.append(f"qdisc del dev {v} root")
        if want:
            lines.append(f"qdisc add dev {v} root handle 1: htb default 0")
            for k, (sender, f) in enumerate(sorted(want.items()), start=1):
                rate = f"{max(8, int(f.bandwidth * 8))}bit" if f.bandwidth else "10gbit"
                lines.append(
                    f"class add dev {v} parent 1: classid 1:{k:x} htb rate {rate} ceil {rate}"
                )
                if f.delay or f.jitter:
                    netem = f"netem delay {f.delay * 1000:.3f}ms"
                    if f.jitter:
                        netem += f" {f.jitter * 1000:.3f}ms"
                    lines.append(f"qdisc add dev {v} parent 1:{k:x} handle {k:x}: {netem}")
                lines.append(
                    f"filter add dev {v} parent 1: protocol ip prio 1 u32 "
                    f"match ip src {self.address(sender)}/32 flowid 1:{k:x}"
                )
        argv = ["tc", "-n", self._host_ns(self.host_of(receiver)), "-batch", "-"]
        _run(argv, stdin="\n".join(lines) + "\n")
        self._shaping[receiver] = dict(want)

    def sever(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Abort the TCP connections between each pair (at both ends)."""
        if not self.caps.sever:
            raise NetnsError(
                "sever needs socket aborts (`ss -K`, CONFIG_INET_DIAG_DESTROY), which this "
                "kernel does not have"
            )
        far: dict[int, set[int]] = {}
        for a, b in pairs:
            far.setdefault(a, set()).add(b)
            far.setdefault(b, set()).add(a)
        for i, others in sorted(far.items()):
            expr = " or ".join(f"dst {self.address(o)}" for o in sorted(others))
            argv = [
                *self.exec_prefix(i),
                "ss",
                "-K",
                "-t",
                "-n",
                "state",
                "connected",
                f"( {expr} )",
            ]
            _run(argv)

    def describe(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "subnet": self.subnet,
            "harness": self.harness_address,
            "hosts": self.hosts,
            "netem": self.caps.netem,
        }
