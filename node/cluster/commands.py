"""``skyfed cluster``: run a scenario, or hold a cluster up for interactive use.

    skyfed cluster run SCENARIO.toml [--out DIR] [--workdir DIR]
                       [--net proxy|namespaces] [--hosts N]
    skyfed cluster up [--nodes N] [--topology full|ring|star|random] [--degree K]
                      [--seed S] [--dir DIR] [--net proxy|namespaces] [--hosts N]
    skyfed cluster down [--dir DIR]

``--net namespaces`` (root) makes each node a network host in its own Linux
network namespace, with the kernel doing the faults (node/cluster/netns.py); the
default ``proxy`` wires them through the harness's relays on 127.0.0.1. ``down``
also removes the namespaces, interfaces and rules of any namespace run whose
process is gone (a run that was killed).

``run`` exits 0 when the verdict passes, 1 when it fails (and 2 for a bad file, 130
on Ctrl-C, after stopping every node it started and saying so).
``up`` starts the nodes, prints their URLs, writes ``DIR/cluster.json`` and stays in
the foreground until Ctrl-C or ``skyfed cluster down`` (which signals it). ``DIR``
defaults to ``cluster`` in the user's state directory (platformdirs), not the
current directory, so a run from a source tree leaves nothing in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "default_cluster_dir", "run_command"]


def default_cluster_dir() -> Path:
    """Where ``cluster up`` keeps its nodes and ``cluster.json`` unless told."""
    import platformdirs

    return Path(platformdirs.user_state_dir("skyfed", appauthor=False)) / "cluster"


#: ``--dir``'s default as argparse holds it: turned into :func:`default_cluster_dir` by
#: :func:`_cluster_dir` only when a cluster command is parsed (argparse converts a
#: string default with the option's ``type``), so ``node start`` never loads
#: platformdirs.
_DEFAULT_DIR = "(the user's state dir)/skyfed/cluster"


def _cluster_dir(text: str) -> Path:
    return default_cluster_dir() if text == _DEFAULT_DIR else Path(text)


def add_commands(sub: Any) -> None:
    """Add ``cluster`` to the top-level subparsers ``sub``."""
    cluster = sub.add_parser(
        "cluster",
        help="start a cluster of nodes, break it, measure it",
        description="Study the network: real node processes behind fault-injecting proxies.",
    )
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="play a scenario file and report",
        description="Play a scenario (TOML); write report.json and PNG plots to --out.",
    )
    run.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    run.add_argument("--out", type=Path, help="where report.json and the plots go")
    run.add_argument("--workdir", type=Path, help="keep the nodes' data dirs here")
    _network_options(run, default=None)
    up = actions.add_parser(
        "up",
        help="start a cluster and keep it up until Ctrl-C or `cluster down`",
        description="Start N nodes wired per a topology, print their URLs, and wait.",
    )
    up.add_argument("--nodes", type=int, default=5, help="how many nodes (default 5)")
    up.add_argument(
        "--topology",
        default="full",
        choices=("full", "ring", "star", "random"),
        help="how they link (default full)",
    )
    up.add_argument("--degree", type=int, default=3, help="links per node for random")
    up.add_argument("--seed", type=int, default=0, help="seed for the random topology")
    _network_options(up, default="proxy")
    up.add_argument(
        "--dir",
        type=_cluster_dir,
        default=_DEFAULT_DIR,
        help="the nodes' data and cluster.json (default %(default)s)",
    )
    replay = actions.add_parser(
        "atproto-replay",
        help="serve a captured atproto firehose to nodes (--atproto-source its URL)",
        description="Serve a capture file as com.atproto.sync.subscribeRepos, at a speed.",
    )
    replay.add_argument("file", type=Path, metavar="FRAMES")
    replay.add_argument(
        "--speed", type=float, default=1.0, help="times real time (default 1; 0: at once)"
    )
    replay.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    cap = actions.add_parser(
        "atproto-capture",
        help="record a PDS's or relay's firehose into a file for atproto-replay",
        description="Append COUNT frames of URL's subscribeRepos to FRAMES.",
    )
    cap.add_argument("url", metavar="URL")
    cap.add_argument("--out", type=Path, required=True, metavar="FRAMES")
    cap.add_argument("--count", type=int, default=1000, help="frames (default 1000)")
    cap.add_argument("--cursor", type=int, help="start at this seq (default: live)")
    cap.add_argument(
        "--dial-policy",
        default="public",
        choices=("public", "private", "loopback"),
        help="which addresses may be dialled (default public)",
    )
    down = actions.add_parser(
        "down", help="stop a cluster started with `cluster up`", description="Stop it."
    )
    down.add_argument(
        "--dir",
        type=_cluster_dir,
        default=_DEFAULT_DIR,
        help="as given to up (default %(default)s)",
    )


def _network_options(parser: Any, *, default: str | None) -> None:
    parser.add_argument(
        "--net",
        choices=("proxy", "namespaces"),
        default=default,
        help="proxy: relays on 127.0.0.1 (default"
        + (", or the scenario's cluster.network" if default is None else "")
        + "); namespaces: each node its own network host, kernel faults (root)",
    )
    parser.add_argument(
        "--hosts",
        type=int,
        default=None,
        help="namespaces: spread the nodes over N host namespaces joined by VXLAN",
    )


def run_command(args: argparse.Namespace) -> int:
    from .netns import NetnsError
    from .scenario import ScenarioError

    try:
        if args.cluster_command == "run":
            return asyncio.run(_run(args))
        if args.cluster_command == "up":
            return asyncio.run(_up(args))
        if args.cluster_command == "atproto-replay":
            return asyncio.run(_replay(args))
        if args.cluster_command == "atproto-capture":
            return asyncio.run(_capture(args))
        return _down(args)
    except ScenarioError as e:
        print(f"skyfed: error: {e}", file=sys.stderr)
        return 2
    except NetnsError as e:  # the machine refused a namespace, link or rule
        print(f"skyfed: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM (see _run)
        return 143


async def _replay(args: argparse.Namespace) -> int:
    from .atproto_replay import ReplayServer, read_frames

    try:
        frames = read_frames(args.file)
    except (OSError, ValueError) as e:
        print(f"skyfed: error: {e}", file=sys.stderr)
        return 2
    server = ReplayServer(frames, speed=args.speed)
    url = await server.start(args.port)
    print(f"replaying {len(frames)} frames at {url} (speed {args.speed}); Ctrl-C stops", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
    return 0


async def _capture(args: argparse.Namespace) -> int:
    from ..net.netpolicy import DialPolicy
    from .atproto_replay import capture

    async with DialPolicy.from_settings(args.dial_policy).session() as session:
        n = await capture(session, args.url, args.out, count=args.count, cursor=args.cursor)
    print(f"wrote {n} frames to {args.out}")
    return 0


async def _run(args: argparse.Namespace) -> int:
    from .console import RunDisplay, make_console, print_summary
    from .report import build_report
    from .scenario import load_scenario, run_scenario, with_network

    scenario = with_network(load_scenario(args.scenario), args.net, args.hosts)
    main = asyncio.current_task()
    if main is not None:  # SIGTERM stops the run as Ctrl-C does (nodes, namespaces)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    console = make_console()
    out: Path = args.out or Path(f"cluster-{scenario.name}")
    display = RunDisplay(console, scenario.duration)
    try:
        with display:
            ticker = asyncio.create_task(_tick(display))
            try:
                result, close = await run_scenario(
                    scenario, workdir=args.workdir, progress=display, on_start=display.attach
                )
            finally:
                ticker.cancel()
        try:
            display.phase = "building the report"
            report = await build_report(result)
        finally:
            await close()
    except asyncio.CancelledError:
        # Ctrl-C: run_scenario has stopped the nodes on its way out; say so.
        print(_interrupted(display, args.workdir), file=sys.stderr, flush=True)
        raise
    await asyncio.to_thread(_save, report, out)
    print_summary(console, report, str(out))
    return 0 if report.verdict.passed else 1


def _interrupted(display: Any, workdir: Path | None) -> str:
    """What Ctrl-C stopped, and where what is left of the run is."""
    at = f" at t={display.elapsed():.1f}s" if display.t0 is not None else ""
    lines = [f"interrupted during {display.phase}{at}; no report was written"]
    cluster = display.cluster
    if cluster is None:
        lines.append("stopped the nodes being started")
    else:
        pids = [n.process.pid for n in cluster.nodes if n.process is not None]
        running = [n.index for n in cluster.nodes if n.process is not None and n.process.running]
        lines.append(
            f"stopped {len(pids)} node processes (pids {', '.join(map(str, pids))})"
            + (f"; still running: nodes {running}" if running else "")
        )
        if display.workload is not None:
            lines.append(f"so far: {display.status()}")
    net = getattr(cluster, "net", None)
    if net is not None and net.prefix:
        lines.append(f"removed the nodes' namespaces, interfaces and rules ({net.prefix}*)")
    if workdir is not None:
        lines.append(f"the nodes' data dirs and logs are kept in {workdir}")
    else:
        lines.append("the nodes' data was in a temporary dir, now removed (--workdir DIR keeps it)")
    return "\n".join(lines)


def _save(report: Any, out: Path) -> None:
    from .report import plot, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    plot(report, out)


async def _tick(display: Any) -> None:
    while True:
        display.tick()
        await asyncio.sleep(0.25)


async def _up(args: argparse.Namespace) -> int:
    from .harness import Cluster
    from .netns import NetnsError, unavailable

    if args.net == "namespaces":
        reason = await asyncio.to_thread(unavailable)
        if reason is not None:
            print(f"skyfed: error: --net namespaces cannot run here: {reason}", file=sys.stderr)
            return 2
    elif args.hosts is not None:
        print("skyfed: error: --hosts needs --net namespaces", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        cluster = Cluster(
            args.nodes,
            args.topology,
            degree=args.degree,
            seed=args.seed,
            workdir=args.dir.resolve(),
            network=args.net,
            hosts=args.hosts or 1,
        )
    except ValueError as e:
        print(f"skyfed: error: {e}", file=sys.stderr)
        return 2
    try:
        await cluster.start()
    except BaseException as e:
        await cluster.close()
        if isinstance(e, NetnsError):
            print(f"skyfed: error: {e}", file=sys.stderr)
            return 1
        raise
    try:
        links: list[dict[str, Any]] = [
            {"link": f"{a}->{b}", "proxy": p.url} for (a, b), p in cluster.links.items()
        ]
        if cluster.net is not None:
            links = [{"link": f"{a}->{b}"} for a, b in cluster.edges]
        state = {
            "pid": os.getpid(),
            "started": time.time(),
            "network": cluster.network,
            "nodes": [{"index": n.index, "url": n.url, "pid": n.pid} for n in cluster.nodes],
            "links": links,
            "admin_token": cluster.admin_token,
        }
        if cluster.net is not None:
            state["namespaces"] = cluster.net.describe()
        (args.dir / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")
        for n in cluster.nodes:
            print(f"node {n.index}: {n.url}  (pid {n.pid}, data {n.data_dir})", flush=True)
        if cluster.net is not None:
            d = cluster.net.describe()
            print(
                f"namespaces {d['prefix']}n0..; the harness is {d['harness']} on {d['subnet']}; "
                f"`ip netns exec {cluster.net.namespace(0)} ...` runs a command beside node 0"
            )
        print(f"{len(cluster.edges)} links, {args.topology}; Ctrl-C or `skyfed cluster down` stops")
        config = args.dir / "nodeN" / "node.toml"
        print(f"node policy: skyfed admin ... --node-config {config} (its admin_token)")
        await stop.wait()
        print("stopping the cluster", flush=True)
    finally:
        await cluster.close()
    (args.dir / "cluster.json").unlink(missing_ok=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    path = args.dir / "cluster.json"
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError) as e:
        swept = _sweep()
        if swept:
            return 0
        print(f"skyfed: error: no running cluster recorded in {path} ({e})", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        print(f"the cluster (pid {pid}) was not running; forgot {path}")
        _sweep()
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stopped the cluster (pid {pid})")
            _sweep()
            return 0
        time.sleep(0.2)  # poll: another process, no handle to wait on
    print(f"skyfed: error: the cluster (pid {pid}) is still running after 30 s", file=sys.stderr)
    return 1


def _sweep() -> list[str]:
    """Remove what namespace runs whose process is gone left behind; say so."""
    from .netns import NetnsError, sweep

    if os.geteuid() != 0:
        return []
    try:
        swept = sweep()
    except (NetnsError, OSError) as e:
        print(f"skyfed: error: removing stale namespaces: {e}", file=sys.stderr)
        return []
    for prefix in swept:
        print(f"removed the namespaces, interfaces and rules of a dead run ({prefix}*)")
    return swept
