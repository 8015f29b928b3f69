"""Read views over HTTP: getTimeline, getPostThread, listNotifications and searchPosts
latency on a populated node.

    python bench/views.py [--accounts 1000] [--posts 100000] [--follows 200]
                          [--viewers 100] [--clients 4] [--seconds 8]
                          [--data-dir DIR] [--profile OUT] [--node-cmd CMD]
                          [--storage sqlite|postgresql|URL] [--workers N]

Set-up (not measured): the data set is written in this process through the node's
own write path, ``RepoManager.create_account`` and ``RepoManager.write`` (commits of
up to 200 writes, ``validate=True``) on a ``SqliteStorage``, so every index row is
made by ``storage._apply_commit`` exactly as in production (only the build's
connections get a bigger page cache and no fsync, to build in ~2 minutes). Posts are spread over 30
days of ``createdAt``; authors are skewed (a few prolific accounts, many quiet ones);
about a third of posts are replies in threads 3-10 deep with some branching, a few
are quote posts, and there is about one like per post and one repost per ten posts.
The first ``--viewers`` accounts each follow ``--follows`` random others. Every
account has a profile record (display name).

Then the node runs as its own process (``python -m node.cli node start``, port 0,
on 127.0.0.1), the viewers log in (createSession), and this process measures, after
one warm-up pass:

* ``/xrpc/_health``: the same-run baseline (HTTP round trip, no database);
* ``getTimeline`` (limit 50) for each viewer: the first page and three cursor pages;
* ``getPostThread`` (default depth 6, parentHeight 80) of thread roots, posts in
  the middle or at the end of a thread, and plain posts;
* ``listNotifications`` (limit 50) for each viewer: the first page and three cursor
  pages (every account is hosted, so likes, reposts, replies, quotes and follows of
  their posts all notify them);
* ``searchPosts`` (limit 25) over a mix of queries: one word, two words, a phrase,
  ``from:`` an author, a ``since``/``until`` window, a word no post has, sort "top",
  and a cursor page of each.

Before the node starts, the same first notification page is also read straight from
SQLite both ways: from the ``notifications`` table written at index time, and derived
by query from likes, reposts, replies, quotes and follows (no mentions: they are not
indexed otherwise), to compare the two designs on the same data.

First with one client (one request at a time), then with ``--clients`` concurrent
clients for ``--seconds`` each. Prints p50/p99/max, requests/s, node CPU (and its worker
processes' CPU beside it, when they render views) and CPU per request. Target:
timeline, listNotifications and searchPosts p50 <= 10 ms, p99 <= 50 ms with one
client (exit status 1 when missed).

``--data-dir DIR`` keeps the built data set in DIR and reuses it on the next run if
it was built with the same sizes (the default set is ~230k records, ~430 MB).
``--profile OUT`` samples the node with py-spy during the concurrent timeline phase.
``--storage postgresql`` (or a ``postgresql://`` URL) builds and serves the data set
on PostgreSQL; there searchPosts and the SQLite-direct notification comparison are
skipped (search is SQLite FTS5 only, docs/postgresql.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import unittest.mock
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_writes import (
    PASSWORD,
    node_cpu_seconds,
    node_log_summary,
    node_process,
    start_profiler,
    summarize_profile,
)

from node.server.auth import hash_password
from node.store.postgres import PostgresStorage
from node.store.repos import RepoManager
from node.store.sqlite import SqliteStorage
from node.store.sqlite import _connect as _node_connect
from protocol.cid import cid_for_msgpack
from protocol.encoding import encode
from protocol.keys import SigningKey
from protocol.repo import Write
from protocol.syntax import tid_from_parts
from tests.pg import bench_storage

DAY = 86_400.0
_TEXT = (
    "the a of to and in is it you that was for on are with as be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your "
    "how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come "
    "did number sound no most people my over know water than call first who may down "
    "side been now find node feed post thread relay repo graph protocol sky federated"
)
WORDS = _TEXT.split()
TIMELINE_TARGET_P50 = 0.010
TIMELINE_TARGET_P99 = 0.050
MANIFEST = "bench-views.json"


# -- the data set ------------------------------------------------------------------


def iso(t: float) -> str:
    d = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


@dataclass
class _Thread:
    root: tuple[str, str]  # (uri, cid)
    chain: list[tuple[str, str]]  # the deepest branch, root first
    target: int  # depth at which the thread stops growing


@dataclass
class Plan:
    """Every record to write, per account, in time order."""

    writes: dict[str, list[Write]] = field(default_factory=dict)
    thread_roots: list[str] = field(default_factory=list)
    thread_inner: list[str] = field(default_factory=list)  # replies, not roots
    plain: list[str] = field(default_factory=list)  # top-level posts without replies
    counts: dict[str, int] = field(default_factory=dict)


def make_plan(
    rng: random.Random, dids: list[str], clock_ids: dict[str, int], args: argparse.Namespace
) -> Plan:
    plan = Plan(writes={d: [] for d in dids})
    n_posts = args.posts
    n_likes = int(n_posts * args.likes_per_post)
    n_reposts = int(n_posts * args.reposts_per_post)
    n_follows = args.viewers * args.follows
    total = n_posts + n_likes + n_reposts + n_follows + len(dids)
    end = time.time() - 3600  # createdAt before indexedAt: sort_at is createdAt
    start: float = end - 30 * DAY
    step: float = (end - start) / total
    k = 0

    def next_time() -> float:
        nonlocal k
        k += 1
        return start + k * step

    def add(did: str, collection: str, t: float, record: dict[str, Any]) -> str:
        rkey = tid_from_parts(int(t * 1_000_000), clock_ids[did])
        plan.writes[did].append(Write("create", collection, rkey, record))
        return f"at://{did}/{collection}/{rkey}"

    for i, did in enumerate(dids):
        profile = {"$type": "app.bsky.actor.profile", "displayName": f"Bench User {i}"}
        plan.writes[did].append(Write("create", "app.bsky.actor.profile", "self", profile))
    # Viewers follow before anything is posted (follows are not in timelines).
    viewers = dids[: args.viewers]
    for v in viewers:
        others = [d for d in dids if d != v]
        for followed in rng.sample(others, min(args.follows, len(others))):
            t = next_time()
            follow = {"$type": "app.bsky.graph.follow", "subject": followed, "createdAt": iso(t)}
            add(v, "app.bsky.graph.follow", t, follow)

    # Skewed authorship: Pareto weights (a few prolific accounts, many quiet ones).
    weights = list(itertools.accumulate(rng.paretovariate(1.2) for _ in dids))
    posts: list[tuple[str, str]] = []  # (uri, cid) in time order
    open_threads: list[_Thread] = []
    replied: set[str] = set()
    acted: set[tuple[str, str, str]] = set()
    per_post_extra = (n_likes + n_reposts) / max(n_posts, 1)
    n_quotes = 0
    for _ in range(n_posts):
        author = rng.choices(dids, cum_weights=weights)[0]
        t = next_time()
        words = rng.randint(4, 40)
        text = " ".join(rng.choices(WORDS, k=words))[:300]
        record: dict[str, Any] = {
            "$type": "app.bsky.feed.post",
            "text": text,
            "createdAt": iso(t),
            "langs": ["en"],
        }
        thread: _Thread | None = None
        depth_at = 0
        if open_threads and rng.random() < args.reply_share:
            thread = rng.choice(open_threads)
            if rng.random() < 0.75:
                parent_at = len(thread.chain) - 1  # carry the conversation on
            else:
                parent_at = rng.randrange(len(thread.chain))  # a side branch
            parent = thread.chain[parent_at]
            depth_at = parent_at + 1
            record["reply"] = {
                "root": {"uri": thread.root[0], "cid": thread.root[1]},
                "parent": {"uri": parent[0], "cid": parent[1]},
            }
            replied.add(parent[0])
        elif posts and rng.random() < 0.03:
            quoted = posts[max(0, len(posts) - 1 - int(rng.expovariate(1 / 300)))]
            record["embed"] = {
                "$type": "app.bsky.embed.record",
                "record": {"uri": quoted[0], "cid": quoted[1]},
            }
            n_quotes += 1
        uri = add(author, "app.bsky.feed.post", t, record)
        ref = (uri, str(cid_for_msgpack(encode(record))))
        posts.append(ref)
        if thread is not None:
            plan.thread_inner.append(uri)
            if depth_at == len(thread.chain):
                thread.chain.append(ref)
            if len(thread.chain) > thread.target:
                open_threads.remove(thread)
        elif rng.random() < 0.06:
            thread = _Thread(ref, [ref], rng.randint(3, 10))
            open_threads.append(thread)
            plan.thread_roots.append(uri)
            if len(open_threads) > 200:
                open_threads.pop(0)
        # Likes and reposts of recent posts (by anyone), interleaved in time.
        extra = int(per_post_extra) + (rng.random() < per_post_extra % 1)
        for _ in range(extra):
            subject = posts[max(0, len(posts) - 1 - int(rng.expovariate(1 / 200)))]
            who = rng.choice(dids)
            t = next_time()
            if rng.random() < n_likes / max(n_likes + n_reposts, 1):
                collection = "app.bsky.feed.like"
            else:
                collection = "app.bsky.feed.repost"
            rec = {
                "$type": collection,
                "subject": {"uri": subject[0], "cid": subject[1]},
                "createdAt": iso(t),
            }
            if (who, collection, subject[0]) in acted:
                continue  # one like (repost) per account and post
            acted.add((who, collection, subject[0]))
            add(who, collection, t, rec)
    busy = replied | set(plan.thread_roots) | set(plan.thread_inner)
    plan.plain = [u for u, _ in posts if u not in busy]
    by_kind = collections.Counter(w.collection for ws in plan.writes.values() for w in ws)
    plan.counts = {
        "posts": n_posts,
        "replies": len(plan.thread_inner),
        "quotes": n_quotes,
        "threads": len(plan.thread_roots),
        "likes": by_kind["app.bsky.feed.like"],
        "reposts": by_kind["app.bsky.feed.repost"],
        "follows": by_kind["app.bsky.graph.follow"],
    }
    return plan


def _build_connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    """The node's own connection settings, plus a big page cache and no fsync: the
    data set is scratch until built, and a 2 MB cache over a 400 MB database made the
    build spend most of its time re-reading index pages. What is written is the same."""
    conn = _node_connect(path, readonly=readonly)
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
    conn.execute("PRAGMA synchronous=OFF")
    return conn


async def build(data_dir: Path, args: argparse.Namespace, storage: str) -> dict[str, Any]:
    """Write the data set through RepoManager into ``data_dir`` (or the PostgreSQL
    database ``storage`` names); returns the manifest."""
    if storage != "sqlite":
        return await _build(PostgresStorage(storage), args)
    with unittest.mock.patch("node.store.sqlite._connect", _build_connect):
        return await _build(SqliteStorage(data_dir / "node.sqlite3"), args)


async def _build(storage: SqliteStorage, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    await storage.open()
    try:
        repos = RepoManager(storage, clock_id=rng.randrange(1024))
        password_hash = await hash_password(PASSWORD)  # one hash: argon2 is ~40 ms
        keys: dict[str, SigningKey] = {}
        handles: dict[str, str] = {}
        sem = asyncio.Semaphore(64)

        async def create(i: int) -> None:
            signing = SigningKey.from_seed(rng.randbytes(32))
            rotation = SigningKey.from_seed(rng.randbytes(32))
            handle = f"user{i}.skyfed.test"
            async with sem:
                did, _ = await repos.create_account(
                    handle=handle,
                    email=None,
                    password_hash=password_hash,
                    signing_key=signing,
                    rotation_key=rotation,
                    user_rotation_key=None,
                    endpoint="http://127.0.0.1",
                )
            keys[did] = signing
            handles[did] = handle

        t0 = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(args.accounts)))
        dids = sorted(handles, key=lambda d: int(handles[d][4:].split(".")[0]))
        clock_ids = {d: rng.randrange(1024) for d in dids}
        t1 = time.perf_counter()
        print(f"  {len(dids):,} accounts created in {t1 - t0:.1f} s", flush=True)
        plan = make_plan(rng, dids, clock_ids, args)
        t2 = time.perf_counter()
        n_records = sum(len(ws) for ws in plan.writes.values())
        print(f"  planned {n_records:,} records in {t2 - t1:.1f} s: {plan.counts}", flush=True)

        done = [0, 0]

        async def write_all(did: str) -> None:
            ws = plan.writes[did]
            for i in range(0, len(ws), 200):
                async with sem:
                    await repos.write(did, ws[i : i + 200], keys[did], validate=True)
                done[0] += len(ws[i : i + 200])
                done[1] += 1

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                rate = done[0] / (time.perf_counter() - t2)
                print(f"  ... {done[0]:,} records, {done[1]:,} commits ({rate:,.0f}/s)", flush=True)

        ticker = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(write_all(d) for d in dids))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        t3 = time.perf_counter()
        print(
            f"  wrote {done[0]:,} records in {done[1]:,} commits in {t3 - t2:.1f} s "
            f"({done[0] / (t3 - t2):,.0f} records/s)",
            flush=True,
        )
    finally:
        await storage.close()
    return {
        "sizes": sizes(args),
        "viewers": [(d, handles[d]) for d in dids[: args.viewers]],
        "thread_roots": plan.thread_roots[:2000],
        "thread_inner": plan.thread_inner[:4000],
        "plain": plan.plain[:2000],
        "counts": plan.counts,
    }


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "accounts",
        "posts",
        "follows",
        "viewers",
        "likes_per_post",
        "reposts_per_post",
        "reply_share",
        "seed",
    )
    return {k: getattr(args, k) for k in keys}


# -- measuring ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (p99 of 400 samples is the 4th largest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # node CPU seconds during the phase
    workers_cpu: float = 0.0  # CPU seconds of the node's worker processes, same phase

    def line(self, name: str, *, rate: bool = True) -> str:
        n = len(self.latencies)
        if not n:
            return f"{name:34s} no samples ({self.errors} errors)"
        out = (
            f"{name:34s} n={n:6,d}  p50 {1e3 * statistics.median(self.latencies):7.2f} ms"
            f"  p99 {1e3 * percentile(self.latencies, 0.99):7.2f} ms"
            f"  max {1e3 * max(self.latencies):7.1f} ms"
        )
        if rate and self.elapsed:
            out += f"  {n / self.elapsed:6,.0f} req/s  node {self.cpu / self.elapsed:4.2f} cores"
            if self.workers_cpu:
                out += f" + workers {self.workers_cpu / self.elapsed:4.2f}"
            out += f"  ({1e3 * (self.cpu + self.workers_cpu) / n:5.2f} ms CPU/req)"
        return out + (f"  ERRORS {self.errors}" if self.errors else "")


class Bench:
    def __init__(self, http: aiohttp.ClientSession, url: str, tokens: dict[str, str]):
        self.http = http
        self.url = url
        self.tokens = tokens
        self.bytes = 0

    async def get(
        self, nsid: str, params: dict[str, Any], token: str | None
    ) -> tuple[float, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        t0 = time.perf_counter()
        async with self.http.get(f"{self.url}/xrpc/{nsid}", params=params, headers=headers) as resp:
            body = await resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"{nsid} {params}: {resp.status} {body[:200]!r}")
        self.bytes += len(body)
        return dt, body

    async def timeline_pages(self, viewer: str, pages: int, first: Samples, later: Samples) -> None:
        cursor = None
        for page in range(pages):
            params: dict[str, Any] = {"limit": 50}
            if cursor:
                params["cursor"] = cursor
            try:
                dt, body = await self.get("app.bsky.feed.getTimeline", params, self.tokens[viewer])
            except (RuntimeError, aiohttp.ClientError):
                (first if page == 0 else later).errors += 1
                return
            (first if page == 0 else later).latencies.append(dt)
            cursor = json.loads(body).get("cursor")
            if not cursor:
                return

    async def thread(self, uri: str, viewer: str, out: Samples) -> None:
        try:
            dt, _ = await self.get("app.bsky.feed.getPostThread", {"uri": uri}, self.tokens[viewer])
        except (RuntimeError, aiohttp.ClientError):
            out.errors += 1
            return
        out.latencies.append(dt)

    async def notification_pages(
        self, viewer: str, pages: int, first: Samples, later: Samples
    ) -> None:
        cursor = None
        for page in range(pages):
            params: dict[str, Any] = {"limit": 50}
            if cursor:
                params["cursor"] = cursor
            try:
                dt, body = await self.get(
                    "app.bsky.notification.listNotifications", params, self.tokens[viewer]
                )
            except (RuntimeError, aiohttp.ClientError):
                (first if page == 0 else later).errors += 1
                return
            (first if page == 0 else later).latencies.append(dt)
            cursor = json.loads(body).get("cursor")
            if not cursor:
                return

    async def search(self, params: dict[str, Any], viewer: str, out: Samples) -> int:
        """One searchPosts page and, if there is one, the next; returns the hits."""
        hits = 0
        query = dict(params)
        for _ in range(2):
            try:
                dt, body = await self.get("app.bsky.feed.searchPosts", query, self.tokens[viewer])
            except (RuntimeError, aiohttp.ClientError):
                out.errors += 1
                return hits
            out.latencies.append(dt)
            page = json.loads(body)
            hits += len(page["posts"])
            if not page.get("cursor"):
                break
            query["cursor"] = page["cursor"]
        return hits

    async def health(self, out: Samples) -> None:
        try:
            dt, _ = await self.get("_health", {}, None)
        except (RuntimeError, aiohttp.ClientError):
            out.errors += 1
            return
        out.latencies.append(dt)


def workers_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each process the node started (its worker processes), by pid."""
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, children.read_text().split()):
                    with contextlib.suppress(OSError, IndexError):
                        out[child] = node_cpu_seconds(child)
                        todo.append(child)
    return out


async def timed(pid: int, samples: list[Samples], work: Callable[[], Awaitable[None]]) -> None:
    cpu0 = node_cpu_seconds(pid)
    workers0 = workers_cpu_seconds(pid)
    t0 = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - t0
    cpu = node_cpu_seconds(pid) - cpu0
    workers = workers_cpu_seconds(pid)
    workers_cpu = sum(t - workers0.get(p, 0.0) for p, t in workers.items())
    for s in samples:
        s.elapsed = elapsed
        s.cpu = cpu
        s.workers_cpu = workers_cpu


async def concurrently(
    clients: int, seconds: float, step: Callable[[random.Random], Awaitable[None]], seed: int
) -> None:
    deadline = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.perf_counter() < deadline:
            await step(rng)

    await asyncio.gather(*(loop(i) for i in range(clients)))


def search_queries(rng: random.Random, handles: list[str], n: int) -> list[dict[str, Any]]:
    """``n`` searchPosts parameter sets, a mix of the kinds a client sends."""
    end = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 7
        w = rng.sample(WORDS, 2)
        if kind == 0:
            out.append({"q": w[0]})
        elif kind == 1:
            out.append({"q": f"{w[0]} {w[1]}"})
        elif kind == 2:
            out.append({"q": f'"{w[0]} {w[1]}"'})
        elif kind == 3:
            out.append({"q": f"{w[0]} from:{rng.choice(handles)}"})
        elif kind == 4:
            day = end - datetime.timedelta(days=rng.randint(1, 29))
            out.append({"q": w[0], "since": day.date().isoformat(), "until": day.isoformat()})
        elif kind == 5:
            out.append({"q": f"zz{rng.randrange(10**6)}nothing"})
        else:
            out.append({"q": w[0], "sort": "top"})
    return out


def derived_vs_table(db: Path, viewers: list[str]) -> tuple[Samples, Samples]:
    """The first 50 notifications of each viewer, straight from SQLite: from the
    ``notifications`` table, and derived by query from the other indexes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    table, derived = Samples(), Samples()
    for did in viewers:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT sort_at, uri, reason FROM notifications WHERE recipient = ?"
            " ORDER BY sort_at DESC, uri DESC LIMIT 50",
            (did,),
        ).fetchall()
        table.latencies.append(time.perf_counter() - t0)
        lo, hi = f"at://{did}/app.bsky.feed.post/", f"at://{did}/app.bsky.feed.post0"
        t0 = time.perf_counter()
        conn.execute(
            "SELECT * FROM ("
            " SELECT min(created_at, indexed_at) AS t, uri, 'like' FROM likes"
            "  WHERE subject >= ? AND subject < ? AND did != ?"
            " UNION ALL SELECT min(created_at, indexed_at), uri, 'repost' FROM reposts"
            "  WHERE subject >= ? AND subject < ? AND did != ?"
            " UNION ALL SELECT sort_at, uri, 'reply' FROM posts"
            "  WHERE reply_parent >= ? AND reply_parent < ? AND did != ?"
            " UNION ALL SELECT sort_at, uri, 'quote' FROM posts"
            "  WHERE quote >= ? AND quote < ? AND did != ?"
            " UNION ALL SELECT created_at, uri, 'follow' FROM follows WHERE subject = ?"
            ") ORDER BY t DESC, uri DESC LIMIT 50",
            (lo, hi, did) * 4 + (did,),
        ).fetchall()
        derived.latencies.append(time.perf_counter() - t0)
    conn.close()
    return table, derived


async def measure(
    workdir: Path, manifest: dict[str, Any], args: argparse.Namespace, storage: str
) -> bool:
    viewers = [d for d, _ in manifest["viewers"]]
    handles = dict(manifest["viewers"])
    rng = random.Random(args.seed + 1)
    kinds = {
        "root": manifest["thread_roots"],
        "in thread": manifest["thread_inner"],
        "plain": manifest["plain"],
    }
    # Search is SQLite FTS5 (a PostgreSQL node answers MethodNotImplemented), and the
    # table-against-derived comparison reads the SQLite file directly.
    sqlite = storage == "sqlite"
    if sqlite:
        table, derived = derived_vs_table(workdir / "data" / "node.sqlite3", viewers)
        print("first notification page (50) straight from SQLite, per viewer:")
        print(table.line("  written at index time (table)", rate=False))
        print(derived.line("  derived by query (no mentions)", rate=False))
    extra = {} if args.workers is None else {"workers": args.workers}
    async with node_process(workdir, args.node_cmd, storage, extra=extra) as (pid, url):
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            tokens: dict[str, str] = {}
            sem = asyncio.Semaphore(4)  # argon2 verifies: a few at a time

            async def login(did: str) -> None:
                async with (
                    sem,
                    http.post(
                        f"{url}/xrpc/com.atproto.server.createSession",
                        json={"identifier": handles[did], "password": PASSWORD},
                    ) as resp,
                ):
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"createSession {handles[did]}: {body}")
                tokens[did] = body["accessJwt"]

            t0 = time.perf_counter()
            await asyncio.gather(*(login(d) for d in viewers))
            print(f"  {len(tokens)} viewers logged in in {time.perf_counter() - t0:.1f} s")
            b = Bench(http, url, tokens)

            # Warm-up (not counted): every viewer's first page, some threads.
            t0 = time.perf_counter()
            junk = Samples()
            for v in viewers:
                await b.timeline_pages(v, 1, junk, junk)
            for uris in kinds.values():
                for uri in uris[:50]:
                    await b.thread(uri, rng.choice(viewers), junk)
            for _ in range(100):
                await b.health(junk)
            print(
                f"  warm-up: {len(junk.latencies)} requests in {time.perf_counter() - t0:.1f} s"
                f" ({junk.errors} errors)"
            )

            print("\none client, one request at a time:")
            health1 = Samples()

            async def health_seq() -> None:
                for _ in range(args.health_requests):
                    await b.health(health1)

            await timed(pid, [health1], health_seq)
            print(health1.line("  _health (baseline)"), flush=True)

            tl1_first, tl1_later = Samples(), Samples()

            async def timeline_seq() -> None:
                for v in viewers:
                    await b.timeline_pages(v, 1 + args.cursor_pages, tl1_first, tl1_later)

            await timed(pid, [tl1_first, tl1_later], timeline_seq)
            all1 = Samples(
                tl1_first.latencies + tl1_later.latencies,
                elapsed=tl1_first.elapsed,
                cpu=tl1_first.cpu,
                workers_cpu=tl1_first.workers_cpu,
            )
            print(all1.line("  getTimeline all pages (limit 50)"))
            print(tl1_first.line("    of which page 1", rate=False))
            print(
                tl1_later.line(f"    of which pages 2-{1 + args.cursor_pages}", rate=False),
                flush=True,
            )

            for kind, uris in kinds.items():
                s = Samples()
                pick = rng.sample(uris, min(args.thread_requests, len(uris)))

                async def thread_seq(pick: list[str] = pick, s: Samples = s) -> None:
                    for uri in pick:
                        await b.thread(uri, rng.choice(viewers), s)

                await timed(pid, [s], thread_seq)
                print(s.line(f"  getPostThread ({kind})"), flush=True)

            nf1_first, nf1_later = Samples(), Samples()

            async def notifications_seq() -> None:
                for v in viewers:
                    await b.notification_pages(v, 1 + args.cursor_pages, nf1_first, nf1_later)

            await timed(pid, [nf1_first, nf1_later], notifications_seq)
            nf1 = Samples(
                nf1_first.latencies + nf1_later.latencies,
                elapsed=nf1_first.elapsed,
                cpu=nf1_first.cpu,
                workers_cpu=nf1_first.workers_cpu,
            )
            print(nf1.line("  listNotifications all pages (50)"))
            print(nf1_first.line("    of which page 1", rate=False))
            print(
                nf1_later.line(f"    of which pages 2-{1 + args.cursor_pages}", rate=False),
                flush=True,
            )

            sr1 = Samples()
            if sqlite:
                queries = search_queries(rng, list(handles.values()), args.search_requests)
                hits = [0]

                async def search_seq() -> None:
                    for params in queries:
                        hits[0] += await b.search(params, rng.choice(viewers), sr1)

                await timed(pid, [sr1], search_seq)
                print(sr1.line("  searchPosts (mix, 2 pages of 25)"))
                print(f"    {len(queries)} queries, {hits[0]:,} posts returned", flush=True)
            else:
                print("  searchPosts: not measured (SQLite FTS5 only)", flush=True)

            print(f"\n{args.clients} concurrent clients, {args.seconds:g} s each:")
            healthc = Samples()

            async def health_step(r: random.Random) -> None:
                await b.health(healthc)

            await timed(
                pid, [healthc], lambda: concurrently(args.clients, args.seconds, health_step, 1)
            )
            print(healthc.line("  _health (baseline)"), flush=True)

            tlc_first, tlc_later = Samples(), Samples()

            async def timeline_step(r: random.Random) -> None:
                await b.timeline_pages(
                    r.choice(viewers), 1 + args.cursor_pages, tlc_first, tlc_later
                )

            profiler = None
            if args.profile:
                profiler = start_profiler(pid, Path(args.profile), args.seconds, args.profile_mode)
            await timed(
                pid,
                [tlc_first, tlc_later],
                lambda: concurrently(args.clients, args.seconds, timeline_step, 2),
            )
            if profiler is not None:
                _, err = await asyncio.to_thread(profiler.communicate)
                if profiler.returncode != 0:
                    print(f"py-spy failed: {err.decode().strip()}")
            allc = Samples(
                tlc_first.latencies + tlc_later.latencies,
                elapsed=tlc_first.elapsed,
                cpu=tlc_first.cpu,
                workers_cpu=tlc_first.workers_cpu,
            )
            print(allc.line("  getTimeline all pages (limit 50)"))
            print(tlc_first.line("    of which page 1", rate=False))
            print(
                tlc_later.line(f"    of which pages 2-{1 + args.cursor_pages}", rate=False),
                flush=True,
            )

            thc = Samples()
            every = [u for uris in kinds.values() for u in uris]

            async def thread_step(r: random.Random) -> None:
                await b.thread(r.choice(every), r.choice(viewers), thc)

            await timed(
                pid, [thc], lambda: concurrently(args.clients, args.seconds, thread_step, 3)
            )
            print(thc.line("  getPostThread (mixed)"), flush=True)
            print(f"\nresponse bytes read: {b.bytes:,}")
    print(node_log_summary(workdir))

    met = True
    print("\ntarget: p50 <= 10 ms, p99 <= 50 ms (all pages)")
    for name, s in (
        ("getTimeline, one client", all1),
        (f"getTimeline, {args.clients} clients", allc),
        ("listNotifications, one client", nf1),
        *([("searchPosts, one client", sr1)] if sqlite else []),
    ):
        if not s.latencies:
            met = False
            continue
        p50, p99 = statistics.median(s.latencies), percentile(s.latencies, 0.99)
        ok = p50 <= TIMELINE_TARGET_P50 and p99 <= TIMELINE_TARGET_P99
        met = met and ok
        print(
            f"  {name:34s} p50 {1e3 * p50:7.2f} ms  p99 {1e3 * p99:7.2f} ms  "
            f"{'met' if ok else 'NOT met'}"
        )
    base = statistics.median(health1.latencies) if health1.latencies else float("nan")
    print(f"  same-run baseline: _health p50 {1e3 * base:.2f} ms (one client)")
    if args.profile:
        summarize_profile(Path(args.profile))
    return met


async def run(args: argparse.Namespace) -> bool:
    keep = Path(args.data_dir) if args.data_dir else None
    if keep is not None and args.storage != "sqlite":
        raise SystemExit("--data-dir keeps a SQLite data set only")
    with (
        tempfile.TemporaryDirectory(prefix="skyfed-views-") as tmp,
        bench_storage(args.storage) as storage,
    ):
        workdir = keep or Path(tmp)
        data = workdir / "data"
        manifest_path = workdir / MANIFEST
        manifest = None
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("sizes") != sizes(args):
                print(f"{workdir}: built with other sizes; rebuilding")
                manifest = None
        if manifest is None:
            if data.exists():
                shutil.rmtree(data)
            data.mkdir(parents=True)
            print(
                f"building: {args.accounts:,} accounts, {args.posts:,} posts, "
                f"{args.viewers} viewers x {args.follows} follows",
                flush=True,
            )
            t0 = time.perf_counter()
            manifest = await build(data, args, storage)
            manifest_path.write_text(json.dumps(manifest))
            print(f"  built in {time.perf_counter() - t0:.1f} s")
        else:
            print(f"reusing the data set in {workdir}: {manifest['counts']}")
        if storage == "sqlite":
            size = (data / "node.sqlite3").stat().st_size
            print(f"  database: {size / 1e6:,.0f} MB")
        else:
            print(f"  database: PostgreSQL ({args.storage})")
        return await measure(workdir, manifest, args, storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--follows", type=int, default=200, help="follows per viewer")
    parser.add_argument("--viewers", type=int, default=100, help="accounts that log in and read")
    parser.add_argument("--likes-per-post", type=float, default=1.0)
    parser.add_argument("--reposts-per-post", type=float, default=0.1)
    parser.add_argument(
        "--reply-share",
        type=float,
        default=0.35,
        help="share of posts that reply in an open thread",
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="the node's worker processes (default: its own, the core count; 0: none)",
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrent phase")
    parser.add_argument("--cursor-pages", type=int, default=3, help="pages after the first")
    parser.add_argument("--thread-requests", type=int, default=100, help="per kind, one client")
    parser.add_argument("--health-requests", type=int, default=500)
    parser.add_argument("--search-requests", type=int, default=350, help="searchPosts queries")
    parser.add_argument("--data-dir", help="keep (and reuse) the built data set here")
    parser.add_argument("--profile", help="py-spy collapsed-stack output file for the node")
    parser.add_argument("--profile-mode", choices=("gil", "active"), default="gil")
    parser.add_argument(
        "--node-cmd", default="", help="run the node with this instead of 'python -m node.cli'"
    )
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="sqlite, postgresql (a throwaway server), or a postgresql:// URL",
    )
    args = parser.parse_args()
    met = asyncio.run(run(args))
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
