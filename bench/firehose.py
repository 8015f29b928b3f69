"""Firehose fan-out: one writer, many WebSocket subscribers, stepped commit rates.

    python bench/firehose.py [--subscribers 100] [--procs 2] [--rates 50,100,200,...]
                             [--seconds 5] [--accounts 32] [--compress]

The node runs as its own process (the CLI, with write and login limits lifted). The
subscribers run in ``--procs`` separate processes (multiprocessing, spawn), each an
asyncio loop holding its share of live ``subscribeRepos`` connections, so the
measuring side neither shares the node's GIL nor the writer's. The writer (this
process) offers createRecord commits at a fixed rate, open loop, spread over
``--accounts`` accounts (the node serialises writes per repo).

For each offered rate it prints: commits/s achieved, frames/s delivered to all
subscribers together, the slowest subscriber's lag (in seqs behind the node's newest
event, and in seconds between the commit's own timestamp and its arrival), how long
the slowest took to reach the head after the writer stopped, and ConsumerTooSlow
drops. A rate is *kept up with* when the writer achieved >= 95% of it, no subscriber
was dropped, and the slowest subscriber stayed within 1 s of the head and drained
within 1 s. After the listed rates it bisects between the highest rate kept up with
and the lowest one missed. Last, as a fan-out figure without the write path, all
subscribers reconnect with cursor 1 and replay the stored window. Target: 100
subscribers keep up with 500 commits/s (50,000 frames/s).

Subscribers read ``seq`` and ``time`` straight from the frame bytes (the body is a
canonical msgpack map with sorted keys, so they are its last fields); every 1000th
frame is fully decoded to check that reading.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import multiprocessing as mp
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_writes import (
    PASSWORD,
    node_cpu_seconds,
    node_log_summary,
    node_process,
    start_profiler,
    summarize_profile,
)

from node.client import Client

ERROR_HEADER = msgpack.packb({"op": -1})
KEEP_UP_ACHIEVED = 0.95
KEEP_UP_LAG_S = 1.0


# -- subscriber processes ----------------------------------------------------------


def _read_uint(buf: bytes, pos: int) -> int:
    tag = buf[pos]
    if tag < 0x80:
        return tag
    fmt = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q"}[tag]
    return int(struct.unpack_from(fmt, buf, pos + 1)[0])


def _read_str(buf: bytes, pos: int) -> str:
    tag = buf[pos]
    if 0xA0 <= tag <= 0xBF:
        n, pos = tag & 0x1F, pos + 1
    elif tag == 0xD9:
        n, pos = buf[pos + 1], pos + 2
    else:
        raise ValueError(f"unexpected msgpack tag {tag:#x} for a short string")
    return buf[pos : pos + n].decode()


def seq_and_time(frame: bytes) -> tuple[int, float]:
    """The ``seq`` and ``time`` of a #commit frame without decoding its blocks.

    Canonical maps sort their keys, so ``seq``, ``since`` and ``time`` come last and
    nothing after the last ``seq`` key can be a block's bytes."""
    i = frame.rindex(b"\xa3seq")
    seq = _read_uint(frame, i + 4)
    j = frame.rindex(b"\xa4time")
    stamp = _read_str(frame, j + 5)
    return seq, datetime.datetime.fromisoformat(stamp).timestamp()


@dataclass
class _Sub:
    last_seq: int = 0
    frames: int = 0
    max_lag: float = 0.0
    too_slow: bool = False
    closed: bool = False
    checked: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


async def _subscribe(
    url: str, sub: _Sub, ready: asyncio.Event, compress: bool, cursor: int | None
) -> None:
    ws_url = url.replace("http", "ws", 1) + "/xrpc/com.atproto.sync.subscribeRepos"
    params = {} if cursor is None else {"cursor": str(cursor)}
    compression = 15 if compress else 0
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, params=params, compress=compression, max_msg_size=0) as ws,
    ):
        ready.set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            data: bytes = msg.data
            if data.startswith(ERROR_HEADER):
                sub.too_slow = True
                break
            seq, stamp = seq_and_time(data)
            now = time.time()
            if not sub.first_at:
                sub.first_at = now
            sub.last_at = now
            lag = now - stamp
            if lag > sub.max_lag:
                sub.max_lag = lag
            if seq <= sub.last_seq:
                raise AssertionError(f"seq went from {sub.last_seq} to {seq}")
            sub.last_seq = seq
            sub.frames += 1
            if sub.frames % 1000 == 1:
                unpacker = msgpack.Unpacker(raw=False)
                unpacker.feed(data)
                next(unpacker)
                assert next(unpacker)["seq"] == seq
                sub.checked += 1
    sub.closed = True


async def _subscriber_main(
    url: str, n: int, conn: Connection, compress: bool, cursor: int | None
) -> None:
    subs = [_Sub() for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[object] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_subscribe(url, s, r, compress, cursor))
            for s, r in zip(subs, readies, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        conn.send(("ready", n))
        while True:
            cmd = await commands.get()
            report = {
                "min_seq": min(s.last_seq for s in subs),
                "max_lag": max(s.max_lag for s in subs),
                "frames": sum(s.frames for s in subs),
                "too_slow": sum(s.too_slow for s in subs),
                "closed": sum(s.closed for s in subs),
                "checked": sum(s.checked for s in subs),
                "cpu": time.process_time(),
                "first_at": min((s.first_at for s in subs if s.first_at), default=0.0),
                "last_at": max(s.last_at for s in subs),
            }
            for s in subs:
                s.max_lag = 0.0
            conn.send(report)
            if cmd == "stop":
                for t in tasks:
                    t.cancel()
                break
    loop.remove_reader(conn.fileno())


def subscriber_process(
    url: str, n: int, conn: Connection, compress: bool, cursor: int | None
) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_subscriber_main(url, n, conn, compress, cursor))


class Subscribers:
    """The subscriber processes, asked for reports over pipes."""

    def __init__(self, url: str, total: int, procs: int, compress: bool, cursor: int | None = None):
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for i in range(procs):
            n = total // procs + (1 if i < total % procs else 0)
            parent, child = ctx.Pipe()
            p = ctx.Process(target=subscriber_process, args=(url, n, child, compress, cursor))
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    async def ready(self) -> int:
        answers = await asyncio.gather(*(asyncio.to_thread(c.recv) for c in self.conns))
        return sum(n for _, n in answers)

    async def report(self, cmd: str = "report") -> dict[str, float]:
        for c in self.conns:
            c.send(cmd)
        parts = await asyncio.gather(*(asyncio.to_thread(c.recv) for c in self.conns))
        return {
            "min_seq": min(p["min_seq"] for p in parts),
            "max_lag": max(p["max_lag"] for p in parts),
            "frames": sum(p["frames"] for p in parts),
            "too_slow": sum(p["too_slow"] for p in parts),
            "closed": sum(p["closed"] for p in parts),
            "checked": sum(p["checked"] for p in parts),
            "cpu": sum(p["cpu"] for p in parts),
            "first_at": min((p["first_at"] for p in parts if p["first_at"]), default=0.0),
            "last_at": max(p["last_at"] for p in parts),
        }

    async def close(self) -> dict[str, float] | None:
        final = None
        with contextlib.suppress(Exception):
            final = await asyncio.wait_for(self.report("stop"), 10)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        return final


# -- the writer and the steps ------------------------------------------------------


@dataclass
class Step:
    offered: int
    achieved: float = 0.0
    frames_per_s: float = 0.0
    max_seq_lag: int = 0
    max_time_lag: float = 0.0
    drain_s: float = 0.0
    too_slow: int = 0
    closed: int = 0
    node_cores: float = 0.0
    subs_cores: float = 0.0
    writer_cores: float = 0.0
    lags: list[int] = field(default_factory=list)

    @property
    def subs_kept_up(self) -> bool:
        """Every subscriber kept up with what was committed, whatever the rate."""
        return (
            self.too_slow == 0
            and self.closed == 0
            and self.max_time_lag <= KEEP_UP_LAG_S
            and self.drain_s <= KEEP_UP_LAG_S
        )

    @property
    def kept_up(self) -> bool:
        """The offered rate was committed and every subscriber kept up with it."""
        return self.achieved >= KEEP_UP_ACHIEVED * self.offered and self.subs_kept_up


async def last_seq(client: Client) -> int:
    info = await client.call("skyfed.node.getInfo")
    return int(info["firehose"]["lastSeq"])


async def run_step(
    rate: int,
    seconds: float,
    writers: list[Client],
    probe: Client,
    subs: Subscribers,
    pid: int,
    profile: str | None = None,
) -> Step:
    step = Step(rate)
    tickets: asyncio.Queue[None] = asyncio.Queue()
    done = [0]

    async def worker(c: Client) -> None:
        while True:
            await tickets.get()
            await c.post("firehose bench: the quick brown fox jumps over the lazy dog")
            done[0] += 1

    async def produce(end: float) -> None:
        start = time.perf_counter()
        issued = 0
        while (now := time.perf_counter()) < end:
            due = int((now - start) * rate)
            for _ in range(due - issued):
                tickets.put_nowait(None)
            issued = max(issued, due)
            await asyncio.sleep(0.002)

    before = await subs.report()
    profiler = start_profiler(pid, Path(profile), seconds, "gil") if profile else None
    cpu0 = node_cpu_seconds(pid)
    self0 = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker(c)) for c in writers]
        producer = tg.create_task(produce(end))
        while time.perf_counter() < end:
            await asyncio.sleep(0.25)
            head = await last_seq(probe)
            r = await subs.report()
            step.lags.append(max(0, head - int(r["min_seq"])))
            step.max_time_lag = max(step.max_time_lag, r["max_lag"])
        await producer
        elapsed = time.perf_counter() - start
        step.achieved = done[0] / elapsed
        for w in workers:
            w.cancel()
    # The writer has stopped: how long until the slowest subscriber has everything?
    head = await last_seq(probe)
    stop = time.perf_counter()
    while True:
        r = await subs.report()
        step.max_time_lag = max(step.max_time_lag, r["max_lag"])
        if r["min_seq"] >= head or r["too_slow"] or r["closed"]:
            break
        if time.perf_counter() - stop > 30:
            break
        await asyncio.sleep(0.05)
    step.drain_s = time.perf_counter() - stop
    wall = time.perf_counter() - start
    step.node_cores = (node_cpu_seconds(pid) - cpu0) / wall
    step.subs_cores = (r["cpu"] - before["cpu"]) / wall
    step.writer_cores = (time.process_time() - self0) / wall
    step.frames_per_s = (r["frames"] - before["frames"]) / wall
    step.max_seq_lag = max(step.lags, default=0)
    if profiler is not None:
        await asyncio.to_thread(profiler.wait)
    step.too_slow = int(r["too_slow"])
    step.closed = int(r["closed"])
    return step


async def measure_replay(
    url: str, probe: Client, args: argparse.Namespace, pid: int
) -> tuple[int, int, float, float, float]:
    """Fan-out without the write path: every subscriber replays the stored window."""
    head = await last_seq(probe)
    cpu0 = node_cpu_seconds(pid)
    subs = Subscribers(url, args.subscribers, args.procs, args.compress, cursor=1)
    try:
        await asyncio.wait_for(subs.ready(), 60)
        base = await subs.report()  # the subscribers' own start-up CPU, not replay
        while True:
            r = await subs.report()
            if r["min_seq"] >= head or r["too_slow"] or r["closed"]:
                break
            await asyncio.sleep(0.02)
        cpu1 = node_cpu_seconds(pid)
    finally:
        await subs.close()
    # From the first frame anyone received to the last frame of the slowest one.
    seconds = r["last_at"] - r["first_at"]
    return (
        head,
        args.subscribers,
        seconds,
        (cpu1 - cpu0) / seconds,
        (r["cpu"] - base["cpu"]) / seconds,
    )


def print_step(s: Step) -> None:
    print(
        f"{s.offered:8d} {s.achieved:9.0f} {s.frames_per_s:11,.0f} {s.max_seq_lag:8d}"
        f" {s.max_time_lag:8.2f} {s.drain_s:7.2f} {s.too_slow:5d}"
        f" {s.node_cores:6.2f} {s.subs_cores:5.2f} {s.writer_cores:5.2f}"
        f"   {'yes' if s.subs_kept_up else 'no':>4}  {'yes' if s.kept_up else 'no':>4}",
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="skyfed-firehose-") as tmp:
        async with node_process(Path(tmp), args.node_cmd) as (pid, url):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                writers = [Client(url, session=http) for _ in range(args.accounts)]
                sem = asyncio.Semaphore(4)

                async def make(n: int, c: Client) -> None:
                    async with sem:
                        await c.create_account(f"fh{n}.skyfed.test", PASSWORD)

                await asyncio.gather(*(make(n, c) for n, c in enumerate(writers)))
                await asyncio.gather(*(c.post("warm up") for c in writers))
                probe = Client(url, session=http)
                subs = Subscribers(url, args.subscribers, args.procs, args.compress)
                try:
                    connected = await asyncio.wait_for(subs.ready(), 60)
                    print(
                        f"{connected} subscribers in {args.procs} processes"
                        f" (permessage-deflate {'offered' if args.compress else 'off'}),"
                        f" {args.accounts} writer accounts, {args.seconds:g} s per step"
                    )
                    print(
                        "                                                            "
                        "   CPU cores      subs  both"
                    )
                    print(
                        "  offered  achieved  frames/s   seqlag   lag(s)  drain"
                        "  slow   node  subs  writer kept  kept"
                    )
                    steps: list[Step] = []
                    for rate in rates:
                        profile = args.profile if rate == args.profile_rate else None
                        steps.append(
                            await run_step(rate, args.seconds, writers, probe, subs, pid, profile)
                        )
                        print_step(steps[-1])
                        if steps[-1].too_slow or steps[-1].closed:
                            break
                    lo = max((s.offered for s in steps if s.kept_up), default=0)
                    hi = min((s.offered for s in steps if not s.kept_up), default=0)
                    for _ in range(args.bisect):
                        if not hi or hi - lo <= max(10, lo // 20):
                            break
                        mid = (lo + hi) // 2
                        steps.append(await run_step(mid, args.seconds, writers, probe, subs, pid))
                        print_step(steps[-1])
                        if steps[-1].kept_up:
                            lo = mid
                        else:
                            hi = mid
                        if steps[-1].too_slow or steps[-1].closed:
                            break
                finally:
                    final = await subs.close()
                replay = await measure_replay(url, probe, args, pid) if args.replay else None
        log_summary = node_log_summary(Path(tmp))
    best = max((s for s in steps if s.kept_up), key=lambda s: s.offered, default=None)
    print()
    if best is None:
        print("kept up with none of the offered rates")
    else:
        print(
            f"highest rate kept up with: {best.offered} commits/s"
            f" ({best.frames_per_s:,.0f} frames/s delivered to {connected} subscribers)"
        )
    fastest = max((s for s in steps if s.subs_kept_up), key=lambda s: s.achieved, default=None)
    if fastest is not None:
        print(
            f"highest commit rate achieved with every subscriber keeping up:"
            f" {fastest.achieved:.0f} commits/s ({fastest.frames_per_s:,.0f} frames/s)"
        )
    if replay is not None:
        events, subscribers, seconds, node_cores, subs_cores = replay
        print(
            f"replay fan-out: {subscribers} subscribers from cursor 1 took {seconds:.2f} s"
            f" for {events:,} events each: {events * subscribers / seconds:,.0f} frames/s"
            f" (node {node_cores:.2f} cores, subscribers {subs_cores:.2f} cores)"
        )
    target = next((s for s in steps if s.offered == 500), None)
    if target is not None:
        print(
            f"target (500 commits/s to 100 subscribers): {'met' if target.kept_up else 'NOT met'}"
        )
    print(log_summary)
    if args.profile and args.profile_rate in rates:
        print(f"node profile during the {args.profile_rate} commits/s step (GIL samples):")
        summarize_profile(Path(args.profile))
    if final is not None:
        print(
            f"frames checked by full decode: {final['checked']:.0f};"
            f" ConsumerTooSlow: {final['too_slow']:.0f}; closed early: {final['closed']:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2, help="subscriber processes")
    parser.add_argument("--rates", default="50,100,200,300,400,500", help="commits/s to offer")
    parser.add_argument("--bisect", type=int, default=3, help="extra steps to narrow the limit")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--accounts", type=int, default=32, help="writer accounts")
    parser.add_argument(
        "--compress", action="store_true", help="subscribers offer permessage-deflate"
    )
    parser.add_argument("--profile", help="py-spy collapsed-stack output for one step")
    parser.add_argument(
        "--node-cmd", default="", help="run the node with this instead of 'python -m node.cli'"
    )
    parser.add_argument("--profile-rate", type=int, default=200, help="the step to profile")
    parser.add_argument(
        "--no-replay",
        dest="replay",
        action="store_false",
        help="skip the replay fan-out figure (all subscribers from cursor 1)",
    )
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
