"""Durable writes through a real node: createRecord over HTTP on loopback.

    python bench/node_writes.py [--clients 32] [--seconds 10] [--writes N]
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
    workdir: Path, node_cmd: str = "", storage: str = "sqlite", name: str = ""
) -> AsyncIterator[tuple[int, str]]:
    """Start a node with the bench settings on ``workdir/data<name>`` (its log:
    ``node<name>.log``); yields (pid, url); SIGTERM then SIGKILL on exit."""
    settings: dict[str, object] = dict(BENCH_SETTINGS)
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
            pid = pids[0]
            connector = aiohttp.TCPConnector(limit=0)
            http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            clients = [Client(urls[i % len(urls)], session=http) for i in range(args.clients)]
            # Accounts: argon2 hashing is deliberately slow; a few at a time.
            sem = asyncio.Semaphore(4)

            async def make(n: int, c: Client) -> None:
                async with sem:
                    await c.create_account(f"bench{n}.skyfed.test", PASSWORD)

            await asyncio.gather(*(make(n, c) for n, c in enumerate(clients)))
            # Warm up: one write each (fills the node's repo cache, opens sockets).
            await asyncio.gather(*(c.post("warm up") for c in clients))
            commits_before = sum([await node_metric(http, url, "skyfed_commits") for url in urls])

            latencies: list[float] = []
            deadline = time.perf_counter() + args.seconds
            remaining = [args.writes if args.writes else -1]

            async def loop(c: Client) -> None:
                i = 0
                while time.perf_counter() < deadline and remaining[0] != 0:
                    remaining[0] -= 1
                    t0 = time.perf_counter()
                    await c.post(f"bench post {i}: the quick brown fox jumps over the dog")
                    latencies.append(time.perf_counter() - t0)
                    i += 1

            profiler = None
            if args.profile:
                profiler = start_profiler(pid, Path(args.profile), args.seconds, args.profile_mode)
            cpu0 = sum(node_cpu_seconds(p) for p in pids)
            gen0 = time.process_time()
            start = time.perf_counter()
            await asyncio.gather(*(loop(c) for c in clients))
            elapsed = time.perf_counter() - start
            cpu1 = sum(node_cpu_seconds(p) for p in pids)
            gen1 = time.process_time()
            commits_after = sum([await node_metric(http, url, "skyfed_commits") for url in urls])
            if profiler is not None:
                _, err = await asyncio.to_thread(profiler.communicate)
                if profiler.returncode != 0:
                    print(f"py-spy failed: {err.decode().strip()}")
        log_summary = node_log_summary(Path(tmp))

    n = len(latencies)
    latencies.sort()
    rate = n / elapsed
    print(f"storage                              {args.storage:>12}")
    print(f"node processes                       {args.processes:12d}")
    print(f"clients (one account each)           {args.clients:12d}")
    print(f"durable writes acknowledged          {n:12,d}  in {elapsed:.2f} s")
    print(f"node commits counted (/metrics)      {commits_after - commits_before:12,.0f}")
    print(f"durable writes/s                     {rate:12,.0f}   (target >= 1,000)")
    print(f"latency p50                          {1e3 * statistics.median(latencies):9.1f} ms")
    print(f"latency p99                          {1e3 * latencies[int(0.99 * (n - 1))]:9.1f} ms")
    print(f"latency max                          {1e3 * latencies[-1]:9.1f} ms")
    print(f"node CPU while measuring             {(cpu1 - cpu0) / elapsed:12.2f} cores")
    print(f"node CPU per write                   {1e6 * (cpu1 - cpu0) / max(n, 1):9.0f} µs")
    # The clients share one interpreter: near 1.00 here, they, not the node, set the pace.
    print(f"load generator CPU (this process)    {(gen1 - gen0) / elapsed:12.2f} cores")
    print(f"  ratio writes/s : signs/s           {rate / signs:12.3f}")
    print(f"  target met                         {'yes' if rate >= 1000 else 'NO':>12}")
    print(log_summary)
    if args.profile:
        summarize_profile(Path(args.profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients/accounts")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    parser.add_argument("--writes", type=int, default=0, help="stop after N writes (0: no cap)")
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
