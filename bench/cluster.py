"""Fifty node processes: idle memory, and convergence after a partition heals.

    python bench/cluster.py [--nodes 50] [--degree 4] [--writes 1000] [--seed 1]
                            [--net proxy|namespaces] [--hold S] [--sever-at-heal]
                            [--json OUT]

Starts ``--nodes`` real node processes (``skyfed node start``) wired as a seeded
random graph of degree ``--degree`` through the harness's link proxies (or, with
``--net namespaces``, as root, each in its own network namespace with the kernel
cutting the links: node/cluster/netns.py), then:

1. idle memory: after every link is up and the nodes have sat idle a few seconds,
   each node's RSS (and USS, the memory only it uses: RSS also counts the pages of
   shared libraries, which the kernel keeps once for all fifty). Target: RSS <= 50 MB
   (issue 16; it was < 60 MB before).
2. a partition: the nodes split into two halves (every link between them cut);
   ``--writes`` posts are written, half on each side, by one account per node; each
   connected part agrees within itself (half of a random graph may fall into several
   parts); then the partition heals and the time until every node
   holds the same heads for every repo is measured. Target: < 10 s.

Prints the figures (and writes them as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.client import Client
from node.cluster.harness import Cluster
from node.cluster.topology import components

PASSWORD = "correct horse battery staple"


def memory(cluster: Cluster) -> tuple[list[float], list[float]]:
    rss, uss = [], []
    for n in cluster.nodes:
        if n.pid is None:
            continue
        info = psutil.Process(n.pid).memory_full_info()
        rss.append(info.rss / 2**20)
        uss.append(info.uss / 2**20)
    return rss, uss


def describe(xs: list[float]) -> str:
    xs = sorted(xs)
    return (
        f"median {statistics.median(xs):.1f} MB, max {xs[-1]:.1f} MB, "
        f"mean {statistics.fmean(xs):.1f} MB"
    )


def bfs_order(n: int, edges: list[tuple[int, int]]) -> list[int]:
    adjacent: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    order, seen = [0], {0}
    for i in order:
        for m in sorted(adjacent[i]):
            if m not in seen:
                seen.add(m)
                order.append(m)
    return order


async def parts_agree(cluster: Cluster, parts: list[list[int]]) -> bool:
    for part in parts:
        views = [await cluster.heads(i) for i in part]
        if not all(v == views[0] for v in views):
            return False
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "nodes": args.nodes,
        "degree": args.degree,
        "writes": args.writes,
        "network": args.net,
        "sever_at_heal": args.sever_at_heal,
    }
    t = time.monotonic()
    cluster = Cluster(
        args.nodes,
        "random",
        degree=args.degree,
        seed=args.seed,
        reconcile_interval=args.reconcile_interval,
        start_concurrency=4,
        network=args.net,
    )
    async with cluster:
        out["start_seconds"] = round(time.monotonic() - t, 1)
        out["links"] = len(cluster.edges)
        print(f"{args.nodes} nodes, {len(cluster.edges)} links up in {out['start_seconds']} s")
        await asyncio.sleep(args.idle)  # let start-up garbage settle: this is the idle figure
        rss, uss = memory(cluster)
        out["idle_rss_mb"] = {"median": statistics.median(rss), "max": max(rss)}
        out["idle_uss_mb"] = {"median": statistics.median(uss), "max": max(uss)}
        print(f"idle RSS per node: {describe(rss)}   (target <= 50 MB)")
        print(f"idle USS per node: {describe(uss)}   (memory no other process shares)")

        # One account per node; each writes on its own side of the partition.
        t = time.monotonic()
        slots = asyncio.Semaphore(4)
        clients: list[Client] = [cluster.client(i) for i in range(args.nodes)]

        async def make(i: int) -> None:
            async with slots:
                await clients[i].create_account(f"bench{i}.skyfed.test", PASSWORD)

        await asyncio.gather(*(make(i) for i in range(args.nodes)))
        await cluster.converged(timeout=120)
        print(f"{args.nodes} accounts created and everywhere in {time.monotonic() - t:.1f} s")

        # The left half is the first nodes a breadth-first walk from node 0 meets, so
        # it is connected; the right half is the rest.
        order = bfs_order(args.nodes, cluster.edges)
        left, right = sorted(order[: args.nodes // 2]), sorted(order[args.nodes // 2 :])
        cut = cluster.partition(set(left), set(right))
        cut_at = time.monotonic()
        # A half of a random graph need not be connected itself: wait for each part.
        parts = components(args.nodes, [e for e in cluster.edges if e not in cut])
        out["parts"] = len(parts)
        print(
            f"partition {len(left)} | {len(right)} nodes ({len(cut)} links cut; "
            f"{len(parts)} connected parts: sizes {sorted(len(p) for p in parts)})"
        )
        t = time.monotonic()
        writes = asyncio.Semaphore(32)

        async def write(k: int) -> None:
            async with writes:
                await clients[k % args.nodes].post(f"divergent write {k}")

        await asyncio.gather(*(write(k) for k in range(args.writes)))
        out["write_seconds"] = round(time.monotonic() - t, 1)
        print(f"{args.writes} writes acknowledged in {out['write_seconds']} s")
        t = time.monotonic()
        async with asyncio.timeout(300):
            while not await parts_agree(cluster, parts):  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # poll: fifty processes
        print(f"each part agrees within itself after {time.monotonic() - t:.1f} s more")
        held = time.monotonic() - cut_at
        if held < args.hold:
            await asyncio.sleep(args.hold - held)  # the partition lasts --hold seconds
        out["partition_seconds"] = round(time.monotonic() - cut_at, 1)
        views = [v for v in (await cluster.all_heads()).values() if v is not None]
        dids = set().union(*views)
        differ = sum(1 for did in dids if len({v.get(did) for v in views}) > 1)
        out["repos_differing_at_heal"] = differ
        cluster.heal()
        if args.sever_at_heal:
            cluster.sever()  # the proxy closes connections when it cuts; do the same
        took = await cluster.converged(timeout=300, interval=0.1)
        out["converge_after_heal_seconds"] = round(took, 2)
        print(
            f"heal: {differ} repos differed; every node agreed {took:.2f} s later   (target < 10 s)"
        )
        rss, uss = memory(cluster)
        out["after_rss_mb"] = {"median": statistics.median(rss), "max": max(rss)}
        print(f"RSS per node after the run: {describe(rss)}")
        total = sum(lk["bytes_up"] + lk["bytes_down"] for lk in cluster.link_traffic())
        out["peer_bytes"] = total
        print(f"peer traffic over the whole run: {total / 1e6:.1f} MB")
        peers = [await cluster.call(i, "skyfed.node.listPeers") for i in range(args.nodes)]
        retries = sum(p["retries"] for p in peers)
        gossip = [p["gossip"] for p in peers]
        out["request_retries"] = retries
        out["gossip_delivered"] = sum(g["delivered"] for g in gossip)
        out["gossip_duplicates"] = sum(g["duplicates"] for g in gossip)
        print(
            f"peer requests sent again: {retries}; gossip delivered "
            f"{out['gossip_delivered']}, redundant copies {out['gossip_duplicates']}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--degree", type=int, default=4)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument("--reconcile-interval", type=float, default=2.0)
    parser.add_argument("--net", choices=("proxy", "namespaces"), default="proxy")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="keep the partition at least this long (s)"
    )
    parser.add_argument(
        "--sever-at-heal",
        action="store_true",
        help="abort every peer connection at the heal (namespaces: TCP's back-off is gone)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
