"""What a run showed: measurements, the verdict, a JSON report and PNG plots.

The verdict has three parts, each checked against the live nodes after the run:

- **converged**: every node holds the same head for every repo.
- **complete**: every acknowledged write is in its repo at that head (and every
  acknowledged delete removed its record). The head's commit is fetched with
  ``getRepo`` and its signature checked against the author's key from the identity
  log; with every head identical, one node's copy speaks for all.
- **no forgery**: every head verifies under its author's key, and no commit the
  harness forged (signed by a wrong key) is any node's head.

An equivocation scenario also needs *evidence*: some node recorded the two
conflicting commits (``skyfed.sync.listEquivocations``). A scenario with story steps
(:mod:`.steps`) also needs every step's **check** to pass: each expectation about who
sees what held, each step did what it said.

A node whose operator took an account down from serving or carrying owes no copy of
it: for that (node, repo) pair "converged" asks nothing, and the repo's head is read
from a node that owes it.

With hostile nodes (:mod:`.hostile`) the same three checks cover what they attack:
"no forgery" also asks that no honest node's firehose ever showed a commit a hostile
node forged (a bad signature, or a first commit whose tree does not exist), and that
every head's whole tree can be fetched. Two more checks, each reported on its own:

- **no poisoned dials**: the poison listeners saw no connection from an honest node
  that carried a poisoned URL as given (its path, query or userinfo), none from a
  node the hostile node never linked to (the URL was passed on), and no node dialled
  one poisoned address more often than the scenario's ``max_dials`` (default 0:
  never dialled).
- **under the memory ceiling**: each honest node's peak RSS (psutil, sampled every
  half second) stayed under the scenario's ``memory_ceiling_mb``. It is the harness's
  own threshold, independent of any ceiling the node's config states.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from protocol.car import read_car
from protocol.commit import Commit
from protocol.errors import SkyfedError
from protocol.identity import resolve_log
from protocol.keys import verify_key
from protocol.mst import MST, MemoryBlockStore

from .scenario import RunResult

__all__ = [
    "Report",
    "Verdict",
    "build_report",
    "convergence_figure",
    "latency_figure",
    "latency_ticks",
    "place_span_labels",
    "plot",
    "write_json",
]


@dataclass(slots=True)
class Verdict:
    converged: bool
    complete: bool
    no_forgery: bool
    #: None when the scenario had no equivocation.
    equivocation_detected: bool | None
    problems: list[str] = field(default_factory=list)
    #: None when the scenario had no story steps.
    checks_passed: bool | None = None
    #: None when no hostile node poisoned peer URLs.
    no_poisoned_dials: bool | None = None
    #: None when the scenario sets no memory_ceiling_mb.
    under_memory_ceiling: bool | None = None

    def parts(self) -> dict[str, bool | None]:
        """Each check by name (None: not asked by this scenario)."""
        return {
            "converged": self.converged,
            "complete": self.complete,
            "no_forgery": self.no_forgery,
            "equivocation_detected": self.equivocation_detected,
            "checks_passed": self.checks_passed,
            "no_poisoned_dials": self.no_poisoned_dials,
            "under_memory_ceiling": self.under_memory_ceiling,
        }

    @property
    def passed(self) -> bool:
        return all(v is not False for v in self.parts().values())


@dataclass(slots=True)
class Report:
    scenario: str
    description: str
    nodes: int
    topology: str
    edges: int
    seed: int
    duration: float
    setup_seconds: float
    wall_seconds: float
    writes_acked: int
    writes_failed: int
    failures: dict[str, int]
    writes_by_kind: dict[str, int]
    #: Seconds from acknowledgement to arrival, over every (write, other node).
    latency: dict[str, float | None]
    latencies: list[float]
    not_seen: int
    convergence: list[dict[str, Any]]
    final_convergence: float | None
    links: list[dict[str, Any]]
    per_node: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    events: list[dict[str, Any]]
    equivocations: list[dict[str, Any]]
    verdict: Verdict
    #: The story steps' checks, in the order they ran.
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: What each hostile node did and saw (:meth:`HostileNode.to_json`).
    hostile: list[dict[str, Any]] = field(default_factory=list)
    memory_ceiling_mb: float | None = None
    #: How the nodes were wired: "proxy", or "namespaces" (with the run's subnet,
    #: hosts and whether the kernel had netem: ``network_detail``).
    network: str = "proxy"
    network_detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"]["passed"] = self.verdict.passed
        return out


def _pct(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


async def build_report(r: RunResult) -> Report:
    c, w, o, s = r.cluster, r.workload, r.observer, r.scenario
    # -- propagation ---------------------------------------------------------------
    latencies: list[float] = []
    not_seen = 0
    for rec in w.acked:
        for n in c.nodes:
            if n.index == rec.home:
                continue
            seen = o.first_seen(n.index, rec.did, rec.rev)
            if seen is None and not c.owes(n.index, rec.did):
                continue  # the node refuses the account by policy
            if seen is None:
                not_seen += 1
            else:
                latencies.append(max(0.0, seen - rec.at))
    latencies.sort()
    latency = {
        "p50": _pct(latencies, 0.5),
        "p90": _pct(latencies, 0.9),
        "p99": _pct(latencies, 0.99),
        "max": latencies[-1] if latencies else None,
        "mean": statistics.fmean(latencies) if latencies else None,
    }
    kinds: dict[str, int] = {}
    for rec in w.acked:
        kinds[rec.kind] = kinds.get(rec.kind, 0) + 1

    # -- links and nodes -----------------------------------------------------------
    links = await asyncio.to_thread(c.link_traffic)  # namespaces: asks nft
    per_node = []
    for n in c.nodes:
        cpu = [smp.cpu[n.index] for smp in o.samples if n.index in smp.cpu]
        rss = [smp.rss[n.index] for smp in o.samples if n.index in smp.rss]
        g = o.gossip.get(n.index, {})
        delivered = g.get("delivered", 0)
        per_node.append(
            {
                "node": n.index,
                "restarts": n.restarts,
                "clock_skew": n.clock_skew,
                "cpu_mean_pct": round(statistics.fmean(cpu), 1) if cpu else None,
                "cpu_max_pct": round(max(cpu), 1) if cpu else None,
                "rss_max_mb": round(max(rss) / 2**20, 1) if rss else None,
                "gossip_delivered": delivered,
                "gossip_duplicates": g.get("duplicates", 0),
                "duplicates_per_write": (
                    round(g.get("duplicates", 0) / delivered, 3) if delivered else None
                ),
                "rejected": g.get("rejected", 0),
                "firehose_frames": o.frames.get(n.index, 0),
            }
        )

    # -- verdict -------------------------------------------------------------------
    verdict = await _verdict(r)
    return Report(
        scenario=s.name,
        description=s.description,
        nodes=len(c.nodes),
        topology=c.topology,
        edges=len(c.edges),
        seed=s.seed,
        duration=s.duration,
        setup_seconds=round(r.setup_seconds, 2),
        wall_seconds=round(r.wall_seconds, 2),
        writes_acked=len(w.acked),
        writes_failed=w.failed,
        failures=dict(w.failures),
        writes_by_kind=kinds,
        latency=latency,
        latencies=[round(x, 4) for x in latencies],
        not_seen=not_seen,
        convergence=[
            {"t": round(t, 2), "after": why, "seconds": None if x is None else round(x, 3)}
            for t, why, x in sorted(r.convergence, key=lambda m: m[0])  # by event time
        ],
        final_convergence=None if r.final_convergence is None else round(r.final_convergence, 3),
        links=links,
        per_node=per_node,
        timeline=[
            {"t": round(smp.t, 2), "agreement": round(smp.agreement, 4), "alive": smp.alive}
            for smp in o.samples
        ],
        events=[{"t": round(e.t, 2), "what": e.what, "action": e.action} for e in r.events],
        equivocations=r.equivocations,
        verdict=verdict,
        network=c.network,
        network_detail=c.net.describe() if c.net is not None else {},
        checks=[check.to_json() for check in r.checks],
        hostile=[h.to_json() for h in r.hostiles],
        memory_ceiling_mb=s.memory_ceiling_mb,
    )


async def _verdict(r: RunResult) -> Verdict:
    c = r.cluster
    problems: list[str] = []
    views = await c.all_heads()
    differing = c.disagreements(views)
    converged = len(views) == len(c.nodes) and bool(views) and not differing
    if not converged:
        down = [n.index for n in c.nodes if n.index not in views]
        shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        problems.append(
            f"heads differ on {len(differing)} repos ({shown})"
            + (f"; nodes {down} are down" if down else "")
        )
    # Each repo's head, from a node that owes it (the same on all of them if converged).
    heads: dict[str, str] = {}
    holder: dict[str, int] = {}
    for i, view in views.items():
        for did, head in (view or {}).items():
            if did not in heads and c.owes(i, did):
                heads[did], holder[did] = head, i
    # Verify every head once and read its tree.
    trees: dict[str, MST] = {}
    forged_heads = 0
    for did, head in sorted(heads.items()):
        if head in c.forged:
            forged_heads += 1
            problems.append(f"{did}: a forged commit {head} is the head")
        reader = c.client(holder[did])
        try:
            log = await reader.call("skyfed.identity.getLog", params={"did": did})
            ops = [base64.b64decode(op) for op in log["ops"]]
            key = verify_key(resolve_log(did, ops).state.signing_key)
            car = await reader.call("com.atproto.sync.getRepo", params={"did": did})
            roots, blocks = read_car(car)
            commit = Commit.from_bytes(blocks[roots[0]])
            commit.verify(key)
            if commit.did != did:
                raise SkyfedError("the commit names another repo")
            trees[did] = MST.load(MemoryBlockStore(blocks), commit.data)
            if r.hostiles:
                # A hostile node's "first commit" may name a tree that never existed.
                trees[did].verify_structure()
        except (SkyfedError, KeyError, IndexError, ValueError, aiohttp.ClientError) as e:
            forged_heads += 1
            problems.append(f"{did}: head {head} does not verify: {e}")
    for i, seen in sorted(r.observer.commits.items()):
        taken = sorted(seen & c.forged)
        if taken:
            forged_heads += 1
            problems.append(
                f"node {i} took {len(taken)} forged commits (on its firehose): {taken[0]} ..."
            )
    missing = 0
    for rec in r.workload.acked:
        tree = trees.get(rec.did)
        if tree is None:
            missing += 1
            continue
        got = tree.get(rec.path)
        if rec.cid is None or rec.deleted:
            if got is not None and rec.cid is None:
                missing += 1  # an acknowledged delete that did not stick
            continue
        if got is None or str(got) != rec.cid:
            missing += 1
    if missing:
        problems.append(f"{missing} acknowledged writes missing or changed")
    detected: bool | None = None
    if r.forks:
        forked = set()
        for acct_forks in r.forks:
            forked |= set(acct_forks)
        seen = {e["kept"] for e in r.equivocations} | {e["dropped"] for e in r.equivocations}
        detected = bool(forked & seen)
        if not detected:
            problems.append("no node recorded the equivocation")
    checks: bool | None = None
    if r.checks:
        failed = [check for check in r.checks if not check.passed]
        checks = not failed
        for check in failed:
            problems.append(f"t={check.t:.1f}s {check.what}: {check.detail or 'failed'}")
    dials = _dials_verdict(r, problems)
    memory = _memory_verdict(r, problems)
    return Verdict(
        converged,
        missing == 0 and bool(heads),
        forged_heads == 0,
        detected,
        problems,
        checks,
        dials,
        memory,
    )


def _dials_verdict(r: RunResult, problems: list[str]) -> bool | None:
    poisoners = [h for h in r.hostiles if h.spec.poison is not None]
    if not poisoners:
        return None
    ok = True
    for h in poisoners:
        assert h.spec.poison is not None
        dials = h.dials
        given = [d for d in dials if d.as_given]
        onward = [d.node for d in dials if d.node is not None and d.node not in h.linked]
        nodes = sorted({d.node for d in dials if d.node is not None})
        forms = sorted({d.form for d in dials})
        if given:
            ok = False
            d = min(given, key=lambda d: d.credentials)  # a forged path if there is one
            how = " with its userinfo as an Authorization header" if d.credentials else ""
            problems.append(
                f"hostile {h.index}: {len(given)} dials carried a poisoned URL as given "
                f"(e.g. node {d.node} asked {d.target!r} of the {d.form} address{how})"
            )
        if onward:
            ok = False
            problems.append(
                f"hostile {h.index}: nodes {sorted(set(onward))} never linked to it yet "
                f"dialled its poisoned URLs ({len(onward)} dials): they were passed on"
            )
        per_address = Counter((d.node, d.form) for d in dials)
        over = {k: n for k, n in per_address.items() if n > h.spec.poison.max_dials}
        if over:
            ok = False
            problems.append(
                f"hostile {h.index}: its poisoned addresses were dialled {len(dials)} times "
                f"by nodes {nodes}, forms {', '.join(forms)}; "
                f"{len(over)} address(es) more than {h.spec.poison.max_dials} time(s) by one node"
            )
    return ok


def _memory_verdict(r: RunResult, problems: list[str]) -> bool | None:
    ceiling = r.scenario.memory_ceiling_mb
    if ceiling is None:
        return None
    ok = True
    for n in r.cluster.nodes:
        rss = [smp.rss[n.index] for smp in r.observer.samples if n.index in smp.rss]
        if not rss:
            continue
        peak = max(rss) / 2**20
        if peak > ceiling:
            ok = False
            problems.append(
                f"node {n.index}: peak RSS {peak:.0f} MB over the {ceiling:g} MB ceiling"
            )
    return ok


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")


# -- plots ---------------------------------------------------------------------------


def _spans(events: Sequence[dict[str, Any]], end: float) -> list[tuple[float, float, str]]:
    """(start, end, label) of each fault period from the event list."""
    spans: list[tuple[float, float, str]] = []
    partition_at: float | None = None
    down: dict[str, float] = {}
    shaped_at: float | None = None
    for e in events:
        a, t, what = e["action"], e["t"], e["what"]
        if a == "partition" and partition_at is None:
            partition_at = t
        elif a in ("heal", "end") and partition_at is not None:
            spans.append((partition_at, t, "partition"))
            partition_at = None
        if a == "kill":
            down[what.split()[-1]] = t
        elif a == "restart" and what.split()[-1] in down:
            spans.append((down.pop(what.split()[-1]), t, f"node {what.split()[-1]} down"))
        if a == "shape" and shaped_at is None:
            shaped_at = t
        elif a in ("clear", "end") and shaped_at is not None:
            spans.append((shaped_at, t, "links shaped"))
            shaped_at = None
        if a == "end":
            for node, t0 in down.items():
                spans.append((t0, t, f"node {node} down"))
            down.clear()
    if partition_at is not None:
        spans.append((partition_at, end, "partition"))
    return spans


_COLORS = {"partition": "tab:red", "links shaped": "tab:orange"}

#: The latency axis is linear up to this many milliseconds and logarithmic above
#: (symlog): arrivals on one machine take a few ms, across a bad link seconds.
LATENCY_LINEAR_MS = 10.0


def latency_ticks(max_ms: float) -> tuple[list[float], list[str]]:
    """Tick positions and labels for the symlog latency axis: 0, 5, 10 on its linear
    part, then every power of ten up to ``max_ms``, so the ticks show where it
    switches (equal gaps below 10 ms are 5 ms apart; above, each is ten times more)."""
    ticks = [0.0, LATENCY_LINEAR_MS / 2, LATENCY_LINEAR_MS]
    value = LATENCY_LINEAR_MS
    while value < max_ms:
        value *= 10
        ticks.append(value)
    labels = [f"{t / 1000:g} s" if t >= 1000 else f"{t:g}" for t in ticks]
    return ticks, labels


def place_span_labels(ax: Any, labels: Sequence[tuple[float, str]], top: float = 99.0) -> list[Any]:
    """Write each ``(x, text)`` label at the top of the chart at ``x``, moving it down a
    row when it would overprint one already placed (two nodes going down close
    together). Measured in the drawn figure, so it holds whatever the text and scale."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    row_height = 7.0  # % of the y axis: one line of 8-point text and a gap
    placed: list[Any] = []
    boxes: list[Any] = []
    for x, text in sorted(labels):
        row = 0
        while True:
            ann = ax.annotate(
                text,
                (x, top - row * row_height),
                xytext=(2, 0),
                textcoords="offset points",
                fontsize=8,
                va="top",
            )
            box = ann.get_window_extent(renderer)
            if row >= 8 or not any(box.overlaps(b) for b in boxes):
                break
            ann.remove()
            row += 1
        placed.append(ann)
        boxes.append(box)
    return placed


def plot(report: Report, out_dir: Path) -> list[Path]:
    """propagation-cdf.png and convergence.png in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in (
        ("propagation-cdf.png", latency_figure(report)),
        ("convergence.png", convergence_figure(report)),
    ):
        p = out_dir / name
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


def _title(report: Report) -> str:
    return f"{report.scenario}: {report.nodes} nodes, {report.topology}"


def latency_figure(report: Report) -> Any:
    """The propagation latency CDF (a matplotlib Figure; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    xs = [x * 1000 for x in report.latencies]
    if xs:
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", color="tab:blue", linewidth=2)
        for q, style in (("p50", ":"), ("p99", "--")):
            v = report.latency[q]
            if v is not None:
                ax.axvline(v * 1000, color="grey", linestyle=style, linewidth=1)
                ax.annotate(
                    f"{q} {v * 1000:.0f} ms",
                    (v * 1000, 0.05 if q == "p50" else 0.15),
                    xytext=(4, 0) if q == "p50" else (-4, 0),
                    textcoords="offset points",
                    ha="left" if q == "p50" else "right",
                    fontsize=9,
                )
        ax.set_xscale("symlog", linthresh=LATENCY_LINEAR_MS)
        ticks, labels = latency_ticks(max(xs))
        ax.set_xticks(ticks, labels)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlim(0, ticks[-1])
        ax.axvline(LATENCY_LINEAR_MS, color="grey", linewidth=0.8, alpha=0.5)
        ax.text(
            0.01,
            0.98,
            f"x axis: linear from 0 to {LATENCY_LINEAR_MS:g} ms, logarithmic above",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=8,
            color="dimgrey",
        )
    ax.set_xlabel(
        "time from acknowledgement to arrival at another node "
        f"(ms; linear to {LATENCY_LINEAR_MS:g}, log above)"
    )
    ax.set_ylabel("share of (write, node) pairs")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Propagation latency CDF: {_title(report)}\n{report.writes_acked} writes")
    fig.tight_layout()
    return fig


def convergence_figure(report: Report) -> Any:
    """Agreement over time with the faults shaded (a Figure; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ts = [s["t"] for s in report.timeline]
    ys2 = [100 * s["agreement"] for s in report.timeline]
    end = max(ts) if ts else report.duration
    labelled: set[str] = set()
    down_labels: list[tuple[float, str]] = []
    for start, stop, label in _spans(report.events, end):
        key = label if label in _COLORS else "node down"
        color = _COLORS.get(label, "tab:purple")
        ax.axvspan(start, stop, color=color, alpha=0.15, label=None if key in labelled else key)
        labelled.add(key)
        if key == "node down":
            down_labels.append((start, label))
    for e in report.events:
        if e["action"] in ("equivocate", "forge", "end", "hostile"):
            ax.axvline(e["t"], color="black", linestyle=":", linewidth=1)
            ax.annotate(e["action"], (e["t"], 3), xytext=(3, 0), textcoords="offset points")
        elif e["action"] in ("takedown", "reverse", "migrate", "label"):
            # Story steps, at the top: the legend sits bottom left.
            ax.axvline(e["t"], color="tab:brown", linestyle=":", linewidth=1)
            ax.annotate(
                e["action"], (e["t"], 90), xytext=(3, 0), textcoords="offset points", fontsize=8
            )
    ax.plot(ts, ys2, color="tab:green", linewidth=2, label="nodes holding the newest head")
    ax.set_xlabel("seconds since the workload started")
    ax.set_ylabel("agreement (% of node x repo pairs)")
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    ax.set_title(f"Convergence over time: {_title(report)}")
    fig.tight_layout()
    # After the layout, so the overlap test measures the text where it will be drawn.
    place_span_labels(ax, down_labels)
    return fig
