"""What the cluster harness shows a person: plots, console lines, Ctrl-C, where
`cluster up` keeps its state (issue 14, item 12)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from rich.console import Console

from node.cli import build_parser
from node.cluster.commands import default_cluster_dir
from node.cluster.console import RunDisplay, failure_lines, print_summary
from node.cluster.report import (
    Report,
    Verdict,
    convergence_figure,
    latency_figure,
    latency_ticks,
)

ROOT = Path(__file__).resolve().parent.parent


def _report(**changes: Any) -> Report:
    events = [
        {"t": 10.0, "what": "kill node 1", "action": "kill"},
        {"t": 10.4, "what": "kill node 4", "action": "kill"},
        {"t": 20.0, "what": "restart node 1", "action": "restart"},
        {"t": 22.0, "what": "restart node 4", "action": "restart"},
        {"t": 30.0, "what": "end: links restored, every node up", "action": "end"},
    ]
    values: dict[str, Any] = {
        "scenario": "churn",
        "description": "",
        "nodes": 5,
        "topology": "full",
        "edges": 10,
        "seed": 0,
        "duration": 30,
        "setup_seconds": 1.0,
        "wall_seconds": 40.0,
        "writes_acked": 100,
        "writes_failed": 3,
        "failures": {"ClientConnectorError": 2, "RateLimitExceeded": 1},
        "writes_by_kind": {"post": 100},
        "latency": {"p50": 0.02, "p90": 0.04, "p99": 2.5, "max": 2.5, "mean": 0.1},
        "latencies": [0.001 * k for k in range(1, 40)] + [0.05, 0.2, 0.9, 2.5],
        "not_seen": 0,
        # In the order the measurements ended: node 4's restart settled first.
        "convergence": [
            {"t": 22.0, "after": "restart node 4", "seconds": 0.5},
            {"t": 20.0, "after": "restart node 1", "seconds": 4.0},
        ],
        "final_convergence": 1.0,
        "links": [],
        "per_node": [
            {
                "node": i,
                "cpu_mean_pct": 12.0,
                "cpu_max_pct": 40.0,
                "rss_max_mb": 60.0,
                "gossip_delivered": 1234,
                "duplicates_per_write": 1.25,
                "rejected": 0,
                "restarts": 1,
            }
            for i in range(5)
        ],
        "timeline": [{"t": t * 0.5, "agreement": 0.9, "alive": 5} for t in range(61)],
        "events": events,
        "equivocations": [],
        "verdict": Verdict(True, True, True, None),
    }
    values.update(changes)
    return Report(**values)


def test_node_down_labels_do_not_overprint() -> None:
    fig = convergence_figure(_report())
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        texts = {t.get_text(): t for t in fig.axes[0].texts}
        one, four = texts["node 1 down"], texts["node 4 down"]
        a, b = one.get_window_extent(renderer), four.get_window_extent(renderer)
        assert not a.overlaps(b)
        assert one.xy[0] == 10.0  # each still starts where its node went down
        assert four.xy[0] == 10.4
    finally:
        plt.close(fig)


def test_latency_axis_ticks_show_linear_then_log() -> None:
    ticks, labels = latency_ticks(2500)
    assert labels == ["0", "5", "10", "100", "1 s", "10 s"]
    assert ticks == [0, 5, 10, 100, 1000, 10000]
    fig = latency_figure(_report())
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "symlog"
        assert [t.get_text() for t in ax.get_xticklabels()] == labels
        assert "linear from 0 to 10 ms, logarithmic above" in " ".join(
            t.get_text() for t in ax.texts
        )
    finally:
        plt.close(fig)


def test_failures_are_readable_lines() -> None:
    lines = failure_lines({"RateLimitExceeded": 1, "ClientConnectorError": 2})
    assert lines == [
        "2 x ClientConnectorError (could not connect: the home node was down)",
        "1 x RateLimitExceeded (refused by the home node's rate limit)",
    ]


def _plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    # What make_console gives when stdout is not a terminal.
    return Console(file=out, log_path=False, width=10_000, soft_wrap=True), out


def test_summary_when_piped_is_unwrapped_in_time_order_and_has_no_dict() -> None:
    console, out = _plain_console()
    print_summary(console, _report(nodes=5, description="word " * 40), "/tmp/x")
    text = out.getvalue()
    assert "{" not in text
    assert "2 x ClientConnectorError" in text
    assert text.index("t=20.0s after restart node 1") < text.index("t=22.0s after restart node 4")
    # The table's header and each row are one line each, however wide.
    header = next(line for line in text.splitlines() if "cpu mean / max" in line)
    assert "restarts" in header
    assert "\x1b[" not in text
    assert ("word " * 40).strip() in text


def test_progress_when_piped_is_plain_lines_as_they_happen() -> None:
    console, out = _plain_console()
    display = RunDisplay(console, duration=30)
    assert display.plain
    with display:
        display("phase", {"text": "starting 5 nodes"})
        assert "starting 5 nodes" in out.getvalue()  # at once, not after the run
        display("phase", {"text": "running", "t0": time.monotonic() - 21.0})
        display("event", {"t": 21.0, "text": "restart node 1"})
        display("convergence", {"t": 20.0, "why": "restart node 4", "seconds": 1.5})
        display._last_status -= 60  # as if a while passed
        display.tick()
    lines = out.getvalue().splitlines()
    assert lines[2] == "t=  21.0s  restart node 1"
    # The convergence line carries the time it ended, so lines stay in time order.
    assert lines[3] == "t=  21.5s  after restart node 4 (t=20.0s): converged in 1.50s"
    assert re.fullmatch(r"t= +21\.\ds  running: working", lines[4])


def test_cluster_up_keeps_its_state_out_of_the_current_dir() -> None:
    args = build_parser().parse_args(["cluster", "up"])
    assert args.dir == default_cluster_dir()
    assert args.dir.is_absolute()
    assert args.dir != Path("skyfed-cluster").resolve()
    down = build_parser().parse_args(["cluster", "down"])
    assert down.dir == args.dir


SCENARIO = """
name = "interrupted"
duration = 60
settle = 20
[cluster]
nodes = 2
topology = "full"
[workload]
accounts = 2
rate = 2.0
"""


async def test_ctrl_c_says_what_it_stopped_and_stops_the_nodes(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    workdir = tmp_path / "work"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "cluster", "run", str(scenario),
        "--workdir", str(workdir), "--out", str(tmp_path / "out"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        seen = []
        async with asyncio.timeout(40):
            while not any("running" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, f"the run ended early: {seen}"
                seen.append(line)
        assert seen[0].endswith("starting 2 nodes\n")  # plain lines from the start
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            err = (await proc.stderr.read()).decode()
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 130
    assert "interrupted during running at t=" in err
    assert f"kept in {workdir}" in err
    match = re.search(r"stopped 2 node processes \(pids (\d+), (\d+)\)", err)
    assert match, err
    for pid in map(int, match.groups()):
        async with asyncio.timeout(10):
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.05)  # poll: no handle on another's child
    assert "Traceback" not in err
