"""Feeds and the views around them over HTTP: getFeed of each built-in feed,
getSuggestions, getActorLikes and getQuotes latency on a populated node.

    python bench/feeds.py [--accounts 1000] [--posts 100000] [--follows 200]
                          [--viewers 100] [--requests 100] [--data-dir DIR]

The data set is bench/views.py's (built the same way, reused from ``--data-dir``
when it was built with the same sizes): posts over 30 days by skewed authors,
replies, quotes, about one like per post, the first ``--viewers`` accounts each
following ``--follows`` others. The node runs as its own process; the first viewer
declares the three built-in feeds (``app.bsky.feed.generator`` records naming the
node), every viewer logs in, and one client (one request at a time) measures, after
a warm-up pass, ``--requests`` requests of each method spread over the viewers:

* ``getFeed`` (limit 30, as Bluesky's app asks) of ``quiet-posters``,
  ``follows-popular`` and ``mutuals``, first pages;
* ``getSuggestions`` (limit 25), ``getActorLikes`` (the viewer's own, limit 50),
  ``getQuotes`` of posts that were quoted (limit 50);
* ``/xrpc/_health`` and ``getTimeline`` (limit 30): same-run yardsticks (the
  timeline is the view bench/views.py holds to the same target).

Prints p50/p99/max. Target (as for timelines): p50 <= 10 ms and p99 <= 50 ms for
every method (exit status 1 when missed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_writes import PASSWORD, node_log_summary, node_process
from views import MANIFEST, Bench, Samples, build, percentile, sizes

TARGET_P50 = 0.010
TARGET_P99 = 0.050
FEEDS = ("quiet-posters", "follows-popular", "mutuals")


def _quoted(db: Path, n: int) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT quote FROM posts WHERE quote IS NOT NULL GROUP BY quote"
            " ORDER BY COUNT(*) DESC LIMIT ?",
            (n,),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


async def measure(workdir: Path, manifest: dict[str, Any], args: argparse.Namespace) -> bool:
    viewers = [d for d, _ in manifest["viewers"]]
    handles = dict(manifest["viewers"])
    quoted = _quoted(workdir / "data" / "node.sqlite3", args.requests)
    async with node_process(workdir) as (_, url):
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            tokens: dict[str, str] = {}
            for did in viewers:
                async with http.post(
                    f"{url}/xrpc/com.atproto.server.createSession",
                    json={"identifier": handles[did], "password": PASSWORD},
                ) as resp:
                    tokens[did] = (await resp.json())["accessJwt"]
            async with http.get(f"{url}/xrpc/com.atproto.server.describeServer") as resp:
                node_did = (await resp.json())["did"]
            owner = viewers[0]
            feeds = {}
            for name in FEEDS:
                record = {
                    "$type": "app.bsky.feed.generator",
                    "did": node_did,
                    "displayName": name,
                    "createdAt": datetime.datetime.now(datetime.UTC).isoformat(),
                }
                async with http.post(
                    f"{url}/xrpc/com.atproto.repo.putRecord",
                    json={
                        "repo": owner,
                        "collection": "app.bsky.feed.generator",
                        "rkey": name,
                        "record": record,
                    },
                    headers={"Authorization": f"Bearer {tokens[owner]}"},
                ) as resp:
                    feeds[name] = (await resp.json())["uri"]
            b = Bench(http, url, tokens)

            def plan() -> list[tuple[str, str, dict[str, Any], str]]:
                out: list[tuple[str, str, dict[str, Any], str]] = []
                for i in range(args.requests):
                    v = viewers[i % len(viewers)]
                    # The same-run yardstick: a timeline page of the same size.
                    out.append(
                        ("getTimeline (yardstick)", "app.bsky.feed.getTimeline", {"limit": 30}, v)
                    )
                    for name, uri in feeds.items():
                        out.append(
                            (
                                f"getFeed {name}",
                                "app.bsky.feed.getFeed",
                                {"feed": uri, "limit": 30},
                                v,
                            )
                        )
                    out.append(
                        ("getSuggestions", "app.bsky.actor.getSuggestions", {"limit": 25}, v)
                    )
                    out.append(
                        (
                            "getActorLikes",
                            "app.bsky.feed.getActorLikes",
                            {"actor": v, "limit": 50},
                            v,
                        )
                    )
                    if quoted:
                        out.append(
                            (
                                "getQuotes",
                                "app.bsky.feed.getQuotes",
                                {"uri": quoted[i % len(quoted)], "limit": 50},
                                v,
                            )
                        )
                return out

            samples: dict[str, Samples] = {}
            items: dict[str, list[int]] = {}
            for phase in ("warm-up", "measured"):
                for name, nsid, params, v in plan():
                    s = samples.setdefault(name, Samples()) if phase == "measured" else Samples()
                    try:
                        dt, body = await b.get(nsid, params, tokens[v])
                    except (RuntimeError, aiohttp.ClientError) as e:
                        s.errors += 1
                        print(f"  {name}: {e}"[:200])
                        continue
                    s.latencies.append(dt)
                    if phase == "measured":
                        value = json.loads(body)
                        n = len(
                            value.get("feed") or value.get("actors") or value.get("posts") or []
                        )
                        items.setdefault(name, []).append(n)
            health = Samples()
            for _ in range(200):
                await b.health(health)
    print("\none client, one request at a time:")
    print(health.line("  _health (baseline)", rate=False))
    met = True
    for name, s in samples.items():
        if name.startswith("getTimeline"):
            print(s.line(f"  {name}", rate=False))
            continue
        mean_items = statistics.mean(items.get(name, [0]))
        print(s.line(f"  {name}", rate=False) + f"  ({mean_items:.0f} items/answer)")
        if s.errors or not s.latencies:
            met = False
            continue
        p50 = statistics.median(s.latencies)
        if p50 > TARGET_P50 or percentile(s.latencies, 0.99) > TARGET_P99:
            met = False
    print(node_log_summary(workdir))
    print(
        f"target p50 <= {TARGET_P50 * 1e3:.0f} ms, p99 <= {TARGET_P99 * 1e3:.0f} ms:",
        "met" if met else "MISSED",
    )
    return met


async def run(args: argparse.Namespace) -> bool:
    keep = Path(args.data_dir) if args.data_dir else None
    with tempfile.TemporaryDirectory(prefix="skyfed-feeds-") as tmp:
        workdir = keep or Path(tmp)
        data = workdir / "data"
        manifest_path = workdir / MANIFEST
        manifest = None
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("sizes") != sizes(args):
                manifest = None
        if manifest is None:
            if data.exists():
                shutil.rmtree(data)
            data.mkdir(parents=True)
            print(f"building: {args.accounts:,} accounts, {args.posts:,} posts", flush=True)
            t0 = time.perf_counter()
            manifest = await build(data, args)
            manifest_path.write_text(json.dumps(manifest))
            print(f"  built in {time.perf_counter() - t0:.1f} s")
        else:
            print(f"reusing the data set in {workdir}: {manifest['counts']}")
        return await measure(workdir, manifest, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--follows", type=int, default=200, help="follows per viewer")
    parser.add_argument("--viewers", type=int, default=100, help="accounts that log in and read")
    parser.add_argument("--likes-per-post", type=float, default=1.0)
    parser.add_argument("--reposts-per-post", type=float, default=0.1)
    parser.add_argument("--reply-share", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="per method")
    parser.add_argument("--data-dir", help="keep (and reuse) the built data set here")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()
