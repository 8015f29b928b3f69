"""The harness's namespace mode: each node a network host in its own Linux network
namespace, faults done by the kernel (node/cluster/netns.py).

The tests that make namespaces need root and a kernel that lets ``ip netns add``
work; they skip, saying which, where the machine forbids it (found by trying). The
refusals of what a mode cannot do need neither and always run. Every test that
makes a run checks that nothing of it is left afterwards: no namespace, interface
or nftables table with its prefix, also after a failure, a Ctrl-C or a kill.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cluster import netns
from node.cluster.harness import Cluster
from node.cluster.netns import NamespaceNet, leftovers
from node.cluster.process import NodeStartError
from node.cluster.report import build_report
from node.cluster.scenario import (
    ScenarioError,
    check_machine,
    load_scenario,
    parse_scenario,
    run_scenario,
    with_network,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def machine() -> None:
    """Skip unless this machine lets us make network namespaces (by trying)."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"namespace mode cannot run on this machine: {reason}")


async def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """A command's output (in a thread: the nodes' event loops are elsewhere, but the
    harness's HTTP session is on this one)."""
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)


async def retransmits(c: Cluster) -> int:
    """TCP segments the nodes have sent again, all namespaces together (RetransSegs
    of /proc/net/snmp, which counts per namespace and outlives the sockets): what
    the kernel's loss and partitions made TCP do."""
    assert c.net is not None
    return sum([await tcp_retransmits(c.net, i) for i in range(len(c.nodes))])


async def tcp_retransmits(net: NamespaceNet, i: int) -> int:
    """RetransSegs of node ``i``'s namespace."""
    snmp = (await run(*net.exec_prefix(i), "cat", "/proc/net/snmp")).stdout
    head, values = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    return int(values[head.index("RetransSegs")])


# -- what each mode refuses (no root needed) -------------------------------------------


def test_a_scenario_says_which_faults_need_which_mode() -> None:
    loss = load_scenario(SCENARIOS / "packet-loss.toml")
    assert loss.cluster.network == "namespaces"
    with pytest.raises(ScenarioError, match=r'loss \(of packets\) needs network = "namespaces"'):
        with_network(loss, "proxy")
    lossy = load_scenario(SCENARIOS / "lossy-links.toml")
    with pytest.raises(ScenarioError, match=r'drop .* needs network = "proxy"'):
        with_network(lossy, "namespaces")
    hostile = load_scenario(SCENARIOS / "hostile-nodes.toml")
    with pytest.raises(ScenarioError, match='hostile nodes need network = "proxy"'):
        with_network(hostile, "namespaces")
    # The plain scenarios run in both modes.
    for name in ("partition-heal", "churn", "equivocation", "takedown-and-move"):
        s = load_scenario(SCENARIOS / f"{name}.toml")
        assert with_network(s, "namespaces").cluster.network == "namespaces"
        assert with_network(s, "proxy").cluster.network == "proxy"
    two = load_scenario(SCENARIOS / "two-hosts.toml")
    assert two.cluster.hosts == 2
    with pytest.raises(ScenarioError, match="hosts needs network"):
        with_network(two, "proxy")
    base = '[cluster]\nnodes = 3\nnetwork = "{net}"\n{more}\n'
    with pytest.raises(ScenarioError, match=r"cluster\.network must be one of proxy, namespaces"):
        parse_scenario(base.format(net="tunnels", more=""))
    with pytest.raises(ScenarioError, match=r"cluster\.hosts must be at most 3"):
        parse_scenario(base.format(net="namespaces", more="hosts = 4"))
    # With share_peers the nodes link directly: the proxy has nothing to cut, the
    # kernel cuts addresses whatever links the nodes made.
    shared = base + 'share_peers = true\n[[schedule]]\nat = 1\naction = "partition"\n'
    shared += "groups = [[0], [1, 2]]\n"
    assert parse_scenario(shared.format(net="namespaces", more="")).cluster.share_peers
    with pytest.raises(ScenarioError, match="needs the link proxies"):
        parse_scenario(shared.format(net="proxy", more=""))
    shape = '[[schedule]]\nat = 1\naction = "shape"\nloss = 1.5\n'
    with pytest.raises(ScenarioError, match="loss is a share of packets"):
        parse_scenario(base.format(net="namespaces", more="") + shape)


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the namespace tests' skip reason is made of, on machines that forbid it."""
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.unavailable() == "network namespaces need root (this process is not)"
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "nft" else tool)
    reason = netns.unavailable()
    assert reason is not None
    assert "'nft' command is not installed" in reason
    assert "scripts/ensure-nftables.sh" in reason


async def test_the_api_refuses_the_other_modes_faults(tmp_path: Path) -> None:
    plain = Cluster(nodes=2, topology="ring", workdir=tmp_path)
    with pytest.raises(ValueError, match=r"loss .* needs network='namespaces'"):
        plain.shape("all", loss=0.1)
    with pytest.raises(ValueError, match=r"hosts .* needs network='namespaces'"):
        Cluster(nodes=2, hosts=2)
    with pytest.raises(ValueError, match="network must be one of"):
        Cluster(nodes=2, network="vlan")
    kernel = Cluster(nodes=2, topology="ring", network="namespaces", workdir=tmp_path)
    with pytest.raises(ValueError, match=r"drop .* needs network='proxy'"):
        kernel.shape("all", drop=0.1)
    with pytest.raises(ValueError, match="no link proxies"):
        kernel.select("all")


# -- namespaces (root) ---------------------------------------------------------------

SMALL = """
name = "small-namespaces"
seed = 2
duration = 14
settle = 30

[cluster]
nodes = 3
topology = "full"
network = "namespaces"
reconcile_interval = 0.5

[workload]
accounts = 3
rate = 5.0

[[schedule]]
at = 1
action = "shape"
links = "all"
loss = 0.1
bandwidth = 65536

[[schedule]]
at = 4
action = "partition"
groups = [[0], [1, 2]]

[[schedule]]
at = 8
action = "heal"

[[schedule]]
at = 10
action = "kill"
node = 2

[[schedule]]
at = 11
action = "restart"
node = 2
"""


@pytest.mark.timeout(120)
async def test_namespace_scenario_passes_the_verdict(machine: None, tmp_path: Path) -> None:
    """Three nodes, each its own host: packet loss and a bandwidth cap the kernel
    makes, a partition and a heal, a node killed and restarted (on its own address);
    every node converges, every acknowledged write is everywhere, and nothing of the
    run is left on the machine."""
    scenario = parse_scenario(SMALL, source="small-namespaces.toml")
    result, close = await run_scenario(scenario, workdir=tmp_path / "nodes")
    net = result.cluster.net
    assert net is not None
    try:
        report = await build_report(result)
        # While it runs: every node in its own namespace, on its own address.
        ours = set((await run("ip", "netns", "list")).stdout.split())
        assert {net.namespace(i) for i in range(3)} <= ours
        assert [n.url for n in result.cluster.nodes] == [net.url(i) for i in range(3)]
        # TCP saw real loss and sent segments again.
        assert await retransmits(result.cluster) > 0, "no TCP retransmissions"
    finally:
        await close()
    v = report.verdict
    assert v.passed, v.problems
    assert v.converged
    assert v.complete
    assert report.network == "namespaces"
    assert report.writes_acked > 20, report.writes_acked
    sides = {rec.home for rec in result.workload.acked if 4 <= rec.at < 8}
    assert sides & {0}, sides
    assert sides & {1, 2}, sides
    # In the order they happened (a heal's measure can end after the restart's: the
    # kernel's partition leaves TCP backing off, see bench/RESULTS.md).
    after = [c["after"] for c in sorted(report.convergence, key=lambda c: c["t"])]
    assert after == ["heal", "restart node 2"]
    assert all(c["seconds"] is not None for c in report.convergence), report.convergence
    # Bytes per link, counted by the kernel on the bridge.
    assert len(report.links) == 3
    assert all(lk["bytes_up"] > 0 and lk["bytes_down"] > 0 for lk in report.links), report.links
    assert leftovers(net.prefix) == []


@pytest.mark.timeout(90)
async def test_partition_is_the_kernels_and_heals(machine: None, tmp_path: Path) -> None:
    async with Cluster(
        nodes=3, topology="ring", workdir=tmp_path, network="namespaces", reconcile_interval=0.5
    ) as c:
        assert c.net is not None
        prefix = c.net.prefix
        alice = c.client(0)
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await c.converged(timeout=20)
        assert c.partition({0}, {1, 2}) == [(0, 1), (0, 2)]
        await alice.post("only node 0 has this")
        # No packet crosses: node 1 cannot even open a connection to node 0.
        connect = f"import socket; socket.create_connection(({c.net.address(0)!r}, 2583), 1)"
        probe = await run(*c.net.exec_prefix(1), sys.executable, "-c", connect)
        assert probe.returncode != 0
        assert "timed out" in probe.stderr
        assert not await c.agree()
        c.heal()
        await c.converged(timeout=30)
        # Sever aborts the connections (both ends get a reset); the nodes redial.
        c.sever()
        await alice.post("after the sever")
        await c.converged(timeout=30)
    assert leftovers(prefix) == []


@pytest.mark.timeout(90)
async def test_two_hosts_joined_by_a_tunnel_converge(machine: None, tmp_path: Path) -> None:
    """Four nodes on two "hosts" (namespaces with a bridge each, joined by VXLAN):
    every link of the ring crosses the tunnel; cutting the hosts apart and healing
    ends with every node, on either host, agreeing."""
    async with Cluster(
        nodes=4,
        topology="ring",
        workdir=tmp_path,
        network="namespaces",
        hosts=2,
        reconcile_interval=0.5,
    ) as c:
        assert c.net is not None
        prefix = c.net.prefix
        spaces = (await run("ip", "netns", "list")).stdout
        assert f"{prefix}h0" in spaces
        assert f"{prefix}h1" in spaces
        assert [c.net.host_of(i) for i in range(4)] == [0, 1, 0, 1]
        # Node 1's interface hangs off host 1's bridge; the tunnel is there too.
        links = (await run("ip", "-n", f"{prefix}h1", "-o", "link")).stdout
        assert "v1@" in links
        assert "vx0" in links
        alice, bob = c.client(0), c.client(1)
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await c.converged(timeout=30)
        c.partition({0, 2}, {1, 3})
        await alice.post("on host 0")
        await bob.post("on host 1")
        assert not await c.agree()
        c.heal()
        await c.converged(timeout=30)
        heads = await c.all_heads()
        assert heads[0] == heads[1] == heads[2] == heads[3]
        assert len(heads[0] or {}) == 2
    assert leftovers(prefix) == []


SEND = """
import socket, sys
server = socket.create_server((sys.argv[1], 9000))
conn, _ = server.accept()
conn.sendall(b"x" * int(sys.argv[2]))
conn.close()
"""
RECEIVE = """
import socket, sys, time
deadline = time.monotonic() + 30
while True:  # until the sender listens
    try:
        conn = socket.create_connection((sys.argv[1], 9000), timeout=90)
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)  # poll: until the sender listens
start, got = time.monotonic(), 0
while chunk := conn.recv(65536):
    got += len(chunk)
print(got, time.monotonic() - start)
"""


async def transfer(net: NamespaceNet, size: int) -> tuple[int, float]:
    """``size`` bytes from node 0 to node 1 over TCP: (bytes received, seconds)."""
    send = await asyncio.create_subprocess_exec(
        *net.exec_prefix(0), sys.executable, "-c", SEND, net.address(0), str(size)
    )
    receive = await run(*net.exec_prefix(1), sys.executable, "-c", RECEIVE, net.address(0))
    await asyncio.wait_for(send.wait(), 90)
    assert receive.returncode == 0, receive.stderr
    got, seconds = receive.stdout.split()
    return int(got), float(seconds)


@pytest.mark.timeout(120)
async def test_bandwidth_and_loss_are_the_kernels(machine: None) -> None:
    """Without nodes: a TCP transfer between two namespaces is fast on a clean link,
    held to the HTB rate on a shaped one, and arrives whole over a lossy one, with
    the sender's TCP retransmitting."""
    net = NamespaceNet(2)
    await asyncio.to_thread(net.create)
    try:
        size = 300_000
        got, clean = await transfer(net, size)
        assert got == size
        net.set_faults({(0, 1): netns.KernelFaults(bandwidth=100_000)})
        got, shaped = await transfer(net, size)
        assert got == size
        # 3 s at 100 KB/s, less the first burst; a clean link takes milliseconds
        # (a loaded machine may stretch them, not to seconds).
        assert clean < 2.0 < shaped, (clean, shaped)
        before = await tcp_retransmits(net, 0)
        # 20% each way. Segmentation offload makes 300 KB only a few dozen packets on
        # the veth, so fewer bytes or less loss can pass without a drop; TCP's
        # back-off under this loss once stalled a transfer past 30 s on a loaded
        # machine, so the receiver waits up to 90 s (the test's own bound is 120 s).
        lossy = netns.KernelFaults(loss=0.2)
        net.set_faults({(0, 1): lossy, (1, 0): lossy})
        got, _ = await transfer(net, size)
        assert got == size
        assert await tcp_retransmits(net, 0) > before
    finally:
        await asyncio.to_thread(net.close)
    assert leftovers(net.prefix) == []


@pytest.mark.timeout(60)
async def test_delay_without_netem_is_refused_clearly(machine: None) -> None:
    text = SMALL.replace("loss = 0.1", "delay = 0.05")
    scenario = parse_scenario(text, source="delay.toml")
    if netns.capabilities().netem:
        check_machine(scenario)  # the kernel can: nothing to refuse
        return
    with pytest.raises(ScenarioError, match="CONFIG_NET_SCH_NETEM"):
        await run_scenario(scenario)


@pytest.mark.timeout(60)
async def test_nothing_is_left_after_a_failure(machine: None, tmp_path: Path) -> None:
    # A node that cannot start: the start fails, and everything made so far goes.
    broken = Cluster(
        nodes=2, workdir=tmp_path / "a", network="namespaces", settings={"no_such_setting": 1}
    )
    with pytest.raises(NodeStartError):
        async with broken:
            pass
    assert broken.net is not None
    assert broken.net.prefix
    assert leftovers(broken.net.prefix) == []
    # An error inside the block.
    c = Cluster(nodes=2, workdir=tmp_path / "b", network="namespaces")
    with pytest.raises(RuntimeError, match="boom"):
        async with c:
            raise RuntimeError("boom")
    assert c.net is not None
    assert leftovers(c.net.prefix) == []


@pytest.mark.timeout(60)
async def test_ctrl_c_during_start_cleans_up(machine: None, tmp_path: Path) -> None:
    c = Cluster(nodes=3, workdir=tmp_path, network="namespaces")
    start = asyncio.create_task(c.start())
    assert c.net is not None
    async with asyncio.timeout(30):
        while not (c.net.prefix and leftovers(c.net.prefix)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # poll: another thread makes them
    start.cancel()  # what asyncio.run does to the main task on Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await start
    await c.close()
    assert leftovers(c.net.prefix) == []


KILLED_RUN = """
import sys, time
from node.cluster.netns import NamespaceNet
net = NamespaceNet(2)
net.create()
print(net.prefix, flush=True)
time.sleep(60)  # poll: held until the test kills this process
"""


@pytest.mark.timeout(60)
async def test_a_killed_runs_set_is_swept_by_the_next_and_by_down(
    machine: None, tmp_path: Path
) -> None:
    # A run of our own stays: its owner is alive.
    mine = NamespaceNet(1)
    await asyncio.to_thread(mine.create)
    try:
        for sweeper in ("next run", "cluster down"):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", KILLED_RUN, stdout=asyncio.subprocess.PIPE, cwd=ROOT
            )
            assert child.stdout is not None
            prefix = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
            assert leftovers(prefix)
            child.kill()  # SIGKILL: no clean-up of its own
            await child.wait()
            assert leftovers(prefix)
            if sweeper == "next run":
                swept = await asyncio.to_thread(netns.sweep)
                assert prefix in swept
            else:
                down = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "node.cli",
                    "cluster",
                    "down",
                    "--dir",
                    str(tmp_path / "none"),
                    stdout=asyncio.subprocess.PIPE,
                    cwd=ROOT,
                )
                out, _ = await asyncio.wait_for(down.communicate(), 30)
                assert down.returncode == 0
                assert f"dead run ({prefix}*)".encode() in out
            assert leftovers(prefix) == []
            assert leftovers(mine.prefix)
    finally:
        await asyncio.to_thread(mine.close)
    assert leftovers(mine.prefix) == []


@pytest.mark.timeout(90)
async def test_cluster_up_and_down_in_namespaces(machine: None, tmp_path: Path) -> None:
    """`skyfed cluster up --net namespaces --hosts 2` prints the nodes' own
    addresses; `skyfed cluster down` stops it, and nothing of it is left."""
    state = tmp_path / "c" / "cluster.json"
    up = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "node.cli", "cluster", "up", "--nodes", "2"),
        *("--net", "namespaces", "--hosts", "2", "--dir", str(tmp_path / "c")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        assert up.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not lines or "links," not in lines[-1]:
                line = (await up.stdout.readline()).decode()
                assert line, f"cluster up exited: {lines}"
                lines.append(line)
        saved = json.loads(state.read_text())
        prefix = saved["namespaces"]["prefix"]
        assert saved["network"] == "namespaces"
        assert [n["url"] for n in saved["nodes"]] == [
            f"http://{saved['namespaces']['subnet'].split('.0.0/')[0]}.0.{10 + i}:2583"
            for i in range(2)
        ]
        assert lines[0].startswith(f"node 0: {saved['nodes'][0]['url']}")
        assert f"{prefix}h1" in (await run("ip", "netns", "list")).stdout
        down = await run(
            sys.executable, "-m", "node.cli", "cluster", "down", "--dir", str(tmp_path / "c")
        )
        assert down.returncode == 0, down.stderr
        assert "stopped the cluster" in down.stdout
        assert await asyncio.wait_for(up.wait(), 30) == 0
        assert leftovers(prefix) == []
        assert not state.exists()
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
