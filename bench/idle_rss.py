"""Idle memory of node processes: RSS and USS of nodes that started and wait.

    python bench/idle_rss.py [--nodes 5] [--idle 8] [--tree DIR ...] [--rounds 2]
                             [--json OUT]

Each round starts ``--nodes`` real node processes (``python -m node.cli node init``,
then ``node start --port 0`` on 127.0.0.1, each with its own data dir), waits until
every one answers ``/xrpc/_health``, lets them sit ``--idle`` seconds, reads each
one's RSS and USS (psutil: USS is the memory no other process shares; RSS also
counts the pages of shared libraries and of the interpreter) and stops them.

``--tree`` names a checkout whose code the nodes run (default: this one); given more
than once, the rounds alternate between them, so a before/after comparison is made
under the same load, and the ratio of medians is printed. Target (issue 16): an idle
node's RSS <= 50 MB. Every wait is bounded; traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a node may take to print its URL and answer /xrpc/_health.
START_TIMEOUT = 60.0
#: Seconds a node may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def _start(tree: Path, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = _env(tree)
    subprocess.run(
        [sys.executable, "-m", "node.cli", "node", "init", "--data-dir", str(data_dir)],
        env=env,
        cwd=data_dir.parent,
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT,
    )
    start = ["node", "start", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", *start],
        env=env,
        cwd=data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # the node prints its URL once it listens
        if not line:
            break
        if line.startswith("listening on "):
            return proc, line.split()[-1]
    proc.kill()
    raise RuntimeError(f"node in {data_dir} did not start (exit {proc.wait()})")


def _healthy(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url + "/xrpc/_health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)  # a poll of another process, bounded by the deadline


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure(tree: Path, nodes: int, idle: float) -> tuple[list[float], list[float]]:
    """RSS and USS (MB) of ``nodes`` idle node processes running ``tree``'s code."""
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="idle-rss-") as tmp:
        try:
            for i in range(nodes):
                proc, url = _start(tree, Path(tmp) / f"node{i}")
                procs.append(proc)
                _healthy(url)
            time.sleep(idle)  # the point of the bench: the nodes sit idle
            rss, uss = [], []
            for p in procs:
                info = psutil.Process(p.pid).memory_full_info()
                rss.append(info.rss / 2**20)
                uss.append(info.uss / 2**20)
            return rss, uss
        finally:
            _stop(procs)


def _describe(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.1f} MB, max {max(xs):.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="node processes per round")
    parser.add_argument("--idle", type=float, default=8.0, help="seconds idle before reading")
    parser.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="a checkout whose code the nodes run (repeat to alternate between them)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per tree")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    results: dict[str, dict[str, list[float]]] = {str(t): {"rss": [], "uss": []} for t in trees}
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[:3]}")
    for r in range(args.rounds):
        for tree in trees:
            rss, uss = measure(tree, args.nodes, args.idle)
            results[str(tree)]["rss"] += rss
            results[str(tree)]["uss"] += uss
            print(f"round {r + 1} {tree}: RSS {_describe(rss)}; USS {_describe(uss)}", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average at end: {f.read().split()[:3]}")
    for tree, got in results.items():
        print(f"{tree}: idle RSS per node {_describe(got['rss'])}   (target <= 50 MB)")
        print(f"{tree}: idle USS per node {_describe(got['uss'])}")
    if len(trees) > 1:
        first = statistics.median(results[str(trees[0])]["rss"])
        for tree in trees[1:]:
            ratio = statistics.median(results[str(tree)]["rss"]) / first
            print(f"RSS median {tree} / {trees[0]}: {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
