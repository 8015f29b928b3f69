"""The terminal side of a run: live progress while it runs, a summary at the end.

On a terminal: a progress bar with events logged above it. Piped or redirected
(not a TTY): plain lines, one per phase and event and a status line every
``PLAIN_STATUS_EVERY`` seconds, never wrapped, so a log file or a CI job shows the
run as it goes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .report import Report

__all__ = ["PLAIN_STATUS_EVERY", "RunDisplay", "make_console", "print_summary"]

#: Seconds between status lines when the output is not a terminal.
PLAIN_STATUS_EVERY = 5.0

#: What a failed write's error name means, for the summary.
_FAILURE_MEANING = {
    "ClientConnectorError": "could not connect: the home node was down",
    "ServerDisconnectedError": "the home node went away mid-request",
    "ClientOSError": "the connection broke",
    "TimeoutError": "no answer in time",
    "RateLimitExceeded": "refused by the home node's rate limit",
    "AccountTakedown": "the account was taken down",
}


def make_console() -> Console:
    """A console for a run: on a terminal as usual; otherwise one that never wraps
    (rich would wrap at 80 columns) and writes no control codes."""
    probe = Console()
    if probe.is_terminal:
        return Console(log_path=False)
    return Console(log_path=False, width=10_000, soft_wrap=True, highlight=False)


class RunDisplay:
    """A progress bar over the scenario's duration, with events logged above it."""

    def __init__(self, console: Console, duration: float):
        self.console = console
        self.duration = duration
        #: Plain lines instead of a live bar (the output is not a terminal).
        self.plain = not console.is_terminal
        self.phase = "starting"
        self.started = time.monotonic()
        self._last_status = self.started
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=max(duration, 0.001), status="")
        self.t0: float | None = None
        self.workload: Any = None
        self.cluster: Any = None

    def attach(self, cluster: Any, workload: Any) -> None:
        self.cluster = cluster
        self.workload = workload

    def __enter__(self) -> RunDisplay:
        if not self.plain:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.plain:
            self.progress.stop()

    def _line(self, text: str) -> None:
        if self.plain:
            self.console.print(text, markup=False)
            self.console.file.flush()
        else:
            self.console.log(escape(text))

    def __call__(self, kind: str, info: Mapping[str, Any]) -> None:
        if kind == "phase":
            if "t0" in info:
                self.t0 = float(info["t0"])
            self.phase = str(info["text"])
            self.progress.update(self.task, description=self.phase)
            if self.plain:
                self._line(f"{self._at()}  {self.phase}")
        elif kind == "event":
            self._line(f"t={info['t']:6.1f}s  {info['text']}")
        elif kind == "convergence":
            # Printed when the measurement ends, which can be after later events: the
            # line carries that time, and the time of what it measured in the text.
            secs = info["seconds"]
            text = "did not converge" if secs is None else f"converged in {secs:.2f}s"
            now = float(info["t"]) + secs if secs is not None else self.elapsed()
            self._line(f"t={now:6.1f}s  after {info['why']} (t={info['t']:.1f}s): {text}")
        self.tick()

    def elapsed(self) -> float:
        """Seconds since the workload started (0 before it has)."""
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def _at(self) -> str:
        """The time for a plain line: workload time once it runs (as event lines
        are), before that time into the set-up."""
        if self.t0 is None:
            return f"setup {time.monotonic() - self.started:4.1f}s"
        return f"t={self.elapsed():6.1f}s"

    def status(self) -> str:
        status = ""
        if self.workload is not None:
            status = f"{len(self.workload.acked)} writes, {self.workload.failed} failed"
        if self.cluster is not None:
            status += f", {len(self.cluster.alive())}/{len(self.cluster.nodes)} nodes up"
        return status.lstrip(", ")

    def tick(self) -> None:
        now = time.monotonic()
        if self.plain:
            if now - self._last_status >= PLAIN_STATUS_EVERY:
                self._last_status = now
                self._line(f"{self._at()}  {self.phase}: {self.status() or 'working'}")
            return
        if self.t0 is None:
            return
        elapsed = min(now - self.t0, self.duration)
        self.progress.update(self.task, completed=elapsed, status=self.status())


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def _s(x: float | None) -> str:
    return "did not converge" if x is None else f"{x:.2f} s"


def _network(report: Report) -> str:
    if report.network != "namespaces":
        return ""
    hosts = report.network_detail.get("hosts", 1)
    return "each node its own namespace" + (f" on {hosts} hosts" if hosts > 1 else "") + ", "


def print_summary(console: Console, report: Report, out_dir: str | None = None) -> None:
    v = report.verdict
    if console.is_terminal:
        console.rule(f"[bold]{report.scenario}[/bold]")
    else:
        console.print(f"== {report.scenario} ==", markup=False)
    if report.description:
        console.print(" ".join(report.description.split()))
    console.print(
        f"{report.nodes} nodes, {report.topology} topology ({report.edges} links), "
        + _network(report)
        + f"seed {report.seed}, {report.duration:.0f} s of workload "
        f"(setup {report.setup_seconds:.1f} s, wall {report.wall_seconds:.1f} s)"
    )
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.writes_by_kind.items()))
    console.print(
        f"writes: {report.writes_acked} acknowledged ({kinds}); {report.writes_failed} failed"
        + (":" if report.failures else "")
    )
    for line in failure_lines(report.failures):
        console.print(f"  {line}", markup=False)
    lat = report.latency
    console.print(
        f"propagation to other nodes: p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, "
        f"p99 {_ms(lat['p99'])}, max {_ms(lat['max'])}"
        + (f" ({report.not_seen} never seen on a firehose)" if report.not_seen else "")
    )
    for conv in sorted(report.convergence, key=lambda c: c["t"]):
        console.print(f"  t={conv['t']:.1f}s after {conv['after']}: {_s(conv['seconds'])}")
    console.print(f"  final convergence after the end: {_s(report.final_convergence)}")
    total = sum(lk["bytes_up"] + lk["bytes_down"] for lk in report.links)
    dropped = sum(lk["dropped_frames"] for lk in report.links)
    console.print(
        f"peer traffic: {total / 1e6:.2f} MB over {len(report.links)} links"
        + (f", {dropped} frames dropped by the proxies" if dropped else "")
    )
    table = Table(
        "node", "cpu mean / max", "rss max", "delivered", "dup/write", "rejected", "restarts"
    )
    for n in report.per_node:
        table.add_row(
            str(n["node"]),
            "-"
            if n["cpu_mean_pct"] is None
            else f"{n['cpu_mean_pct']:.0f}% / {n['cpu_max_pct']:.0f}%",
            "-" if n["rss_max_mb"] is None else f"{n['rss_max_mb']:.0f} MB",
            str(n["gossip_delivered"]),
            "-" if n["duplicates_per_write"] is None else f"{n['duplicates_per_write']:.2f}",
            str(n["rejected"]),
            str(n["restarts"]),
        )
    if len(report.per_node) <= 12:
        console.print(table)
    if report.equivocations:
        nodes = sorted({e["node"] for e in report.equivocations})
        console.print(f"equivocation evidence recorded on nodes {nodes}")

    for h in report.hostile:
        sent = ", ".join(f"{n} {k}" for k, n in h["sent"].items())
        console.print(
            f"hostile {h['hostile']} ({', '.join(h['behaviours'])}) -> nodes {h['links_to']}: "
            f"{escape(sent)}"
        )
        cut = "" if h["first_cut"] is None else f", first at t={h['first_cut']:.1f}s"
        console.print(
            f"  its links cut by the nodes {h['links_cut_by_nodes']} times{cut}; "
            f"{h['handshakes_refused']} handshakes refused; forged {h['forged']}; "
            f"held connections closed by the nodes: {h['held_closed_by_nodes']}"
        )
        dialled = {f: p["dials"] for f, p in h["poison"].items() if p["dials"]}
        if h["poison"]:
            console.print(f"  poisoned URLs dialled: {dialled or 'none'}")

    def mark(ok: bool | None) -> str:
        return "[green]yes[/green]" if ok else "[red]NO[/red]"

    if report.checks:
        console.print("story checks:")
    for check in report.checks:
        ok = "[green]ok[/green]" if check["passed"] else "[red]FAILED[/red]"
        detail = f" ({escape(check['detail'])})" if check["detail"] else ""
        console.print(
            f"  t={check['t']:.1f}s {ok} {escape(check['what'])}{detail} "
            f"[dim]{check['seconds']:.2f} s[/dim]"
        )
    console.print(
        f"verdict: converged {mark(v.converged)}, every acknowledged write everywhere "
        f"{mark(v.complete)}, nothing forged accepted {mark(v.no_forgery)}"
        + (
            ""
            if v.equivocation_detected is None
            else f", equivocation detected {mark(v.equivocation_detected)}"
        )
        + ("" if v.checks_passed is None else f", story checks pass {mark(v.checks_passed)}")
        + (
            ""
            if v.no_poisoned_dials is None
            else f", no poisoned URL dialled {mark(v.no_poisoned_dials)}"
        )
        + (
            ""
            if v.under_memory_ceiling is None
            else f", under the {report.memory_ceiling_mb:g} MB memory ceiling "
            f"{mark(v.under_memory_ceiling)}"
        )
    )
    for p in v.problems:
        console.print(f"  [red]{escape(p)}[/red]")
    console.print("[bold green]PASS[/bold green]" if v.passed else "[bold red]FAIL[/bold red]")
    if out_dir:
        console.print(f"report and plots in {out_dir}")


def failure_lines(failures: Mapping[str, int]) -> list[str]:
    """One readable line per kind of failed write, most common first."""
    out = []
    for name, count in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0])):
        meaning = _FAILURE_MEANING.get(name)
        out.append(f"{count} x {name}" + (f" ({meaning})" if meaning else ""))
    return out
