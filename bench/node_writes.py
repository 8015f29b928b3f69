"""Durable writes through a real node: createRecord over HTTP on loopback.

    python bench/node_writes.py [--clients 32] [--seconds 10] [--writes N]
                                [--history N [--rounds 2]]
                                [--profile OUT] [--profile-mode gil|active]
                                [--storage sqlite|postgresql|URL] [--processes N]

The node runs as its own process (``python -m node.cli node start``), so the load
generator does not share its GIL, with a TOML config that lifts the write-point and
login limits (a benchmark must not measure the throttle). Each client is its own
account (one DID per client: the node serialises writes per repo, so clients sharing
an account would queue on its lock), and loops createRecord with a small post. Every
acknowledged write is a signed commit that the node has fsynced (group commit).

Prints: durable writes/s, p50/p99/max latency, and raw ed25519 signs/s measured in
this run (the floor cost of a commit) with the ratio of writes/s to it. Target:
>= 1,000 durable writes/s on a 2-core machine.

``--history N`` (issue #16: write cost must not grow with an account's history)
measures the accounts once, writes N more commits into the same accounts, then
measures them again, alternating rounds with as many fresh accounts made on the same
node after the history (same database, same run). It prints the rate before and
after and the ratio "writes/s after history : writes/s on fresh accounts" (target
>= 0.9). With ``--profile OUT`` the first round of each side is sampled into
``OUT.after`` and ``OUT.fresh``.

``--storage`` picks the node's database: ``sqlite`` (default), ``postgresql`` (a
throwaway server started from the machine's packages, tests/pg.py) or a
``postgresql://`` URL of a database you made. ``--processes N`` (PostgreSQL only)
starts N node processes on the one database, the clients spread over them.

``--profile OUT`` samples the node with py-spy for the measured period (``--format
raw``: collapsed stacks, one line per stack with its sample count) and prints
the top functions by self and inclusive share of samples. ``--profile-mode gil``
(default) counts only the thread holding the GIL, which is what bounds a CPython
server; ``active`` counts every non-idle thread.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.client import Client
from node.cluster.process import node_process as cluster_node
from protocol.keys import SigningKey
from tests.pg import bench_storage

PASSWORD = "correct horse battery staple"
# bench: lift the per-account write points and the login limiter
BENCH_SETTINGS = {
    "points_per_hour": 1_000_000_000,
    "points_per_day": 1_000_000_000,
    "auth_rate": 100_000.0,
    "auth_burst": 100_000,
    # bench/firehose.py: its 100 subscribers all connect from 127.0.0.1 (default 16)
    "max_subscribers_per_addr": 1_000,
}


def signs_per_second(seconds: float = 1.0) -> float:
    """Raw ed25519 signatures of a commit-sized message, on this process's core."""
    key = SigningKey.from_seed(bytes(range(32)))
    message = b"x" * 150  # an unsigned commit encodes to about this size
    done = 0
    start = time.perf_counter()
    while True:
        for _ in range(500):
            key.sign(message)
        done += 500
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


@contextlib.asynccontextmanager
async def node_process(
    workdir: Path,
    node_cmd: str = "",
    storage: str = "sqlite",
    name: str = "",
    extra: dict[str, object] | None = None,
) -> AsyncIterator[tuple[int, str]]:
    """Start a node with the bench settings (and ``extra`` ones) on
    ``workdir/data<name>`` (its log: ``node<name>.log``); yields (pid, url); SIGTERM
    then SIGKILL on exit."""
    settings: dict[str, object] = {**BENCH_SETTINGS, **(extra or {})}
    if storage != "sqlite":
        settings["storage"] = storage
    async with cluster_node(
        workdir / f"data{name}",
        settings=settings,
        log_path=workdir / f"node{name}.log",
        command=node_cmd,
    ) as node:
        yield node.pid, node.url


def node_log_summary(workdir: Path) -> str:
    """How much the nodes wrote to stderr (errors, tracebacks) during the run."""
    text = "".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*.log")))
    errors = text.count("ERROR")
    tracebacks = text.count("Traceback")
    last = next((ln for ln in reversed(text.splitlines()) if "Error" in ln), "")
    out = f"node stderr: {len(text.splitlines())} lines, {errors} ERROR, {tracebacks} tracebacks"
    return out + (f" (last: {last.strip()[:120]})" if last else "")


def node_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def node_metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def start_profiler(pid: int, out: Path, seconds: float, mode: str) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(out)]
    cmd += ["--duration", str(max(1, round(seconds))), "--rate", "250", "--nonblocking"]
    if mode == "gil":
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize_profile(path: Path, top: int = 20) -> None:
    """Self and inclusive shares of samples per function, from collapsed stacks."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [_short(f) for f in stack.split(";")]
        # py-spy puts the thread ("process"/"thread") as the first frame(s)
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl_counts[f] += count
    if not total:
        print("profile: no samples")
        return
    print(f"\nprofile: {total} samples")
    print("  top self time:")
    for name, n in self_counts.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print("  top inclusive time (project code):")
    shown = 0
    for name, n in incl_counts.most_common():
        if "/protocol/" in name or "/node/" in name:
            print(f"    {100 * n / total:5.1f}%  {name}")
            shown += 1
            if shown == top:
                break


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" keeping the package dir
    m = re.match(r"(.*) \((.*?):?(\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.group(1), m.group(2)
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    if "site-packages" in path:
        short = "site-packages/" + "/".join(parts[parts.index("site-packages") + 1 :][:2])
    return f"{func} (/{short})"


@dataclass(slots=True)
class Measured:
    """One measured period: acknowledged writes, their latencies, node CPU."""

    writes: int
    elapsed: float
    latencies: list[float]
    node_cpu: float
    gen_cpu: float

    @property
    def rate(self) -> float:
        return self.writes / self.elapsed


async def make_clients(
    http: aiohttp.ClientSession, urls: list[str], n: int, prefix: str
) -> list[Client]:
    """``n`` accounts spread over the nodes at ``urls``, each with one warm-up post
    (fills the node's repo cache)."""
    clients = [Client(urls[i % len(urls)], session=http) for i in range(n)]
    # Accounts: argon2 hashing is deliberately slow; a few at a time.
    sem = asyncio.Semaphore(4)

    async def make(i: int, c: Client) -> None:
        async with sem:
            await c.create_account(f"{prefix}{i}.skyfed.test", PASSWORD)

    await asyncio.gather(*(make(i, c) for i, c in enumerate(clients)))
    await asyncio.gather(*(c.post("warm up") for c in clients))
    return clients


async def measure(
    pids: list[int], clients: list[Client], seconds: float, writes: int = 0, label: str = "bench"
) -> Measured:
    """Every client loops createRecord until ``seconds`` pass (or ``writes`` are done)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    remaining = [writes if writes else -1]

    async def loop(c: Client) -> None:
        i = 0
        while time.perf_counter() < deadline and remaining[0] != 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            await c.post(f"{label} post {i}: the quick brown fox jumps over the dog")
            latencies.append(time.perf_counter() - t0)
            i += 1

    cpu0 = sum(node_cpu_seconds(pid) for pid in pids)
    gen0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - start
    return Measured(
        len(latencies),
        elapsed,
        latencies,
        sum(node_cpu_seconds(pid) for pid in pids) - cpu0,
        time.process_time() - gen0,
    )


async def profiled(
    args: argparse.Namespace, pids: list[int], clients: list[Client], out: str | None
) -> Measured:
    """:func:`measure` for ``args.seconds``, the first node sampled by py-spy into
    ``out`` if given."""
    profiler = start_profiler(pids[0], Path(out), args.seconds, args.profile_mode) if out else None
    m = await measure(pids, clients, args.seconds, args.writes)
    if profiler is not None:
        _, err = await asyncio.to_thread(profiler.communicate)
        if profiler.returncode != 0:
            print(f"py-spy failed: {err.decode().strip()}")
    return m


async def run(args: argparse.Namespace) -> None:
    signs = signs_per_second()
    print(f"raw ed25519 signs/s (this run)       {signs:12,.0f}")
    if args.processes > 1 and args.storage == "sqlite":
        raise SystemExit("--processes needs --storage postgresql (SQLite is one process's)")
    with (
        tempfile.TemporaryDirectory(prefix="skyfed-bench-") as tmp,
        bench_storage(args.storage) as storage,
    ):
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    node_process(Path(tmp), args.node_cmd, storage, str(i) if i else "")
                )
                for i in range(args.processes)
            ]
            pids = [pid for pid, _ in nodes]
            urls = [url for _, url in nodes]
            connector = aiohttp.TCPConnector(limit=0)
            http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            clients = await make_clients(http, urls, args.clients, "bench")
            if args.history:
                await run_history(args, pids, http, urls, clients, signs)
                print(node_log_summary(Path(tmp)))
                return
            commits_before = sum([await node_metric(http, u, "skyfed_commits") for u in urls])
            m = await profiled(args, pids, clients, args.profile)
            commits_after = sum([await node_metric(http, u, "skyfed_commits") for u in urls])
        log_summary = node_log_summary(Path(tmp))

    print(f"storage                              {args.storage:>12}")
    print(f"node processes                       {args.processes:12d}")
    report(m, args.clients, signs)
    print(f"node commits counted (/metrics)      {commits_after - commits_before:12,.0f}")
    print(f"  target met                         {'yes' if m.rate >= 1000 else 'NO':>12}")
    print(log_summary)
    if args.profile:
        summarize_profile(Path(args.profile))


def report(m: Measured, clients: int, signs: float, label: str = "") -> None:
    n = m.writes
    lat = sorted(m.latencies)
    if label:
        print(f"-- {label}")
    print(f"clients (one account each)           {clients:12d}")
    print(f"durable writes acknowledged          {n:12,d}  in {m.elapsed:.2f} s")
    print(f"durable writes/s                     {m.rate:12,.0f}   (target >= 1,000)")
    print(f"latency p50                          {1e3 * statistics.median(lat):9.1f} ms")
    print(f"latency p99                          {1e3 * lat[int(0.99 * (n - 1))]:9.1f} ms")
    print(f"latency max                          {1e3 * lat[-1]:9.1f} ms")
    print(f"node CPU while measuring             {m.node_cpu / m.elapsed:12.2f} cores")
    print(f"node CPU per write                   {1e6 * m.node_cpu / max(n, 1):9.0f} µs")
    # The clients share one interpreter: near 1.00 here, they, not the node, set the pace.
    print(f"load generator CPU (this process)    {m.gen_cpu / m.elapsed:12.2f} cores")
    print(f"  ratio writes/s : signs/s           {m.rate / signs:12.3f}")


async def run_history(
    args: argparse.Namespace,
    pids: list[int],
    http: aiohttp.ClientSession,
    urls: list[str],
    clients: list[Client],
    signs: float,
) -> None:
    """--history N: the same accounts before and after N commits, against fresh
    accounts on the same node (same database size), alternating in rounds so load on
    the machine falls on both sides alike."""
    before = await measure(pids, clients, args.seconds, label="before")
    report(before, args.clients, signs, "history accounts, before history")
    t0 = time.perf_counter()
    filled = await measure(pids, clients, 1e9, writes=args.history, label="history")
    fill_s = time.perf_counter() - t0
    print(
        f"-- wrote {filled.writes:,} commits into the same {args.clients} accounts in"
        f" {fill_s:.1f} s ({filled.rate:,.0f}/s, {filled.writes / args.clients:,.0f} each)"
    )
    fresh_clients = await make_clients(http, urls, args.clients, "fresh")
    after: list[Measured] = []
    fresh: list[Measured] = []
    for r in range(args.rounds):
        out = f"{args.profile}.after" if args.profile and r == 0 else None
        after.append(await profiled(args, pids, clients, out))
        out = f"{args.profile}.fresh" if args.profile and r == 0 else None
        fresh.append(await profiled(args, pids, fresh_clients, out))
        print(
            f"   round {r + 1}: after history {after[-1].rate:8,.0f}/s"
            f"   fresh accounts {fresh[-1].rate:8,.0f}/s"
        )
    a, f = _merge(after), _merge(fresh)
    report(a, args.clients, signs, f"history accounts, after {args.history:,} commits")
    report(f, args.clients, signs, "fresh accounts, same node, same run")
    ratio = a.rate / f.rate
    print(f"writes/s after history : fresh       {ratio:12.2f}   (target >= 0.9)")
    print(f"writes/s after history : before      {a.rate / before.rate:12.2f}")
    # The same ratio from the node's CPU per write: on a machine shared with other
    # work, wall-clock rates swing with the load, CPU per write much less.
    cost_a, cost_f = (m.node_cpu / max(m.writes, 1) for m in (a, f))
    print(f"node CPU/write fresh : after history {cost_f / cost_a:12.2f}   (1.0: no growth)")
    print(f"  target met                         {'yes' if ratio >= 0.9 else 'NO':>12}")
    if args.profile:
        print("\n== profile: history accounts, after history (round 1)")
        summarize_profile(Path(f"{args.profile}.after"))
        print("\n== profile: fresh accounts (round 1)")
        summarize_profile(Path(f"{args.profile}.fresh"))


def _merge(ms: list[Measured]) -> Measured:
    return Measured(
        sum(m.writes for m in ms),
        sum(m.elapsed for m in ms),
        [x for m in ms for x in m.latencies],
        sum(m.node_cpu for m in ms),
        sum(m.gen_cpu for m in ms),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients/accounts")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    parser.add_argument("--writes", type=int, default=0, help="stop after N writes (0: no cap)")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="first write N commits into the accounts; compare with fresh accounts",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --history: after/fresh rounds, alternating"
    )
    parser.add_argument("--profile", help="py-spy collapsed-stack output file for the node")
    parser.add_argument("--profile-mode", choices=("gil", "active"), default="gil")
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="sqlite, postgresql (a throwaway server), or a postgresql:// URL",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="node processes on one database (PostgreSQL)"
    )
    parser.add_argument(
        "--node-cmd", default="", help="run the node with this instead of 'python -m node.cli'"
    )
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
