"""The node half of the atproto bridge (node/atproto/) against a fake atproto host:
a PDS in this file that serves subscribeRepos, getRepo and a PLC directory on
127.0.0.1, with accounts whose commits are built and signed by protocol.atproto.

Covered: posts reach a follower's timeline; the cursor survives a restart; the
reader reconnects (after a close and after error frames: FutureCursor forgets the
cursor, ConsumerTooSlow keeps it); the DID cache is bounded (entries and TTL); a
tampered frame is refused, counted and logged; a gap resyncs from getRepo; #account
takedown hides and deletion removes; #identity re-resolves (a rotated key); a
commit from the future is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node.atproto.identity import DidResolver
from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.atproto import dagcbor
from protocol.atproto.car import write_car
from protocol.atproto.cid import cid_for_dag_cbor
from protocol.atproto.commit import Commit, build_commit_event
from protocol.atproto.crypto import SigningKey
from protocol.atproto.firehose import (
    AccountEvent,
    ErrorFrame,
    Frame,
    IdentityEvent,
    encode_frame,
)
from protocol.atproto.mst import MST
from protocol.syntax import tid_from_parts

WAIT = 15.0


def _did(n: int) -> str:
    return "did:plc:" + (("abcdefghijklmnopqrstuvwxyz234567"[n % 32]) * 24)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class Account:
    """One atproto account on the fake host: its key, tree and last commit."""

    def __init__(self, n: int, host: FakeHost):
        self.did = _did(n)
        self.key = SigningKey.from_seed("k256", b"acct%d" % n)
        self.host = host
        self.tree = MST.empty()
        self.rev: str | None = None
        self.records: dict[str, bytes] = {}
        self.commit_block = b""
        self.clock = 0

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.did,
            "alsoKnownAs": [f"at://user{self.did[-3:]}.test"],
            "verificationMethod": [
                {
                    "id": f"{self.did}#atproto",
                    "type": "Multikey",
                    "controller": self.did,
                    "publicKeyMultibase": self.key.public.to_multikey(),
                }
            ],
            "service": [
                {
                    "id": "#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": self.host.url,
                }
            ],
        }

    def next_rev(self, ahead: float = 0.0) -> str:
        self.clock += 1
        return tid_from_parts(int((time.time() + ahead) * 1e6) + self.clock, 7)

    def commit(
        self, ops: list[tuple[str, str, dict[str, Any] | None]], ahead: float = 0.0
    ) -> bytes:
        """Apply ops (action, path, record), returning the #commit frame (queued on
        the host as well)."""
        rev = self.next_rev(ahead)
        blocks = [(a, p, dagcbor.encode(r) if r is not None else None) for a, p, r in ops]
        event, self.tree = build_commit_event(
            key=self.key,
            did=self.did,
            old_tree=self.tree,
            ops=blocks,
            rev=rev,
            since=self.rev,
            seq=self.host.next_seq(),
            time=_now(),
        )
        self.rev = rev
        for _, path, block in blocks:
            if block is None:
                self.records.pop(path, None)
            else:
                self.records[path] = block
        frame = encode_frame(event)
        self.host.frames.append((event.seq, frame))
        return frame

    def post(self, rkey: str, text: str, ahead: float = 0.0) -> bytes:
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": _now()}
        return self.commit([("create", f"app.bsky.feed.post/{rkey}", record)], ahead)

    def repo_car(self) -> bytes:
        assert self.rev is not None
        commit = Commit(self.did, self.tree.root_cid(), self.rev, None).signed(self.key)
        block = commit.to_bytes()
        cid = cid_for_dag_cbor(block)
        records = [(cid_for_dag_cbor(b), b) for b in self.records.values()]
        return write_car([cid], [(cid, block), *self.tree.blocks().items(), *records])


class FakeHost:
    """subscribeRepos + getRepo + a PLC directory, all on one loopback server."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.accounts: dict[str, Account] = {}
        self.seq = 0
        self.cursors: list[str | None] = []
        self.first_frames: list[bytes] = []  # sent (once each) before anything else
        self.close_after_sending = False
        self.get_repos = 0
        self.doc_fetches = 0
        self.new_frame = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def account(self, n: int) -> Account:
        acct = Account(n, self)
        self.accounts[acct.did] = acct
        return acct

    def push(self, frame: Frame) -> None:
        seq = getattr(frame, "seq", self.seq)
        self.frames.append((seq, encode_frame(frame)))
        self.new_frame.set()

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        cursor = request.query.get("cursor")
        self.cursors.append(cursor)
        if self.first_frames:
            await ws.send_bytes(self.first_frames.pop(0))
            await ws.close()
            return ws
        sent = int(cursor) if cursor is not None else 0

        async def drain() -> None:
            async for _ in ws:  # a consumer sends nothing; this sees its close
                pass

        reader = asyncio.create_task(drain())
        try:
            while not reader.done():
                for seq, frame in list(self.frames):
                    if seq > sent:
                        await ws.send_bytes(frame)
                        sent = seq
                if self.close_after_sending:
                    break
                self.new_frame.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.new_frame.wait(), 0.2)
        except ConnectionError:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await ws.close()
        return ws

    async def get_repo(self, request: web.Request) -> web.Response:
        self.get_repos += 1
        acct = self.accounts.get(request.query.get("did", ""))
        if acct is None:
            return web.json_response({"error": "RepoNotFound"}, status=400)
        return web.Response(body=acct.repo_car(), content_type="application/vnd.ipld.car")

    async def plc(self, request: web.Request) -> web.Response:
        self.doc_fetches += 1
        acct = self.accounts.get(request.match_info["did"])
        if acct is None:
            return web.json_response({"message": "not found"}, status=404)
        return web.Response(text=json.dumps(acct.doc()), content_type="application/json")

    async def __aenter__(self) -> FakeHost:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", self.stream)
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", self.get_repo)
        app.router.add_get("/{did}", self.plc)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def config(tmp_path: Path, host: FakeHost, *, sources: bool = True) -> NodeConfig:
    return NodeConfig(
        data_dir=tmp_path / "node",
        port=0,
        dial_policy="loopback",
        atproto_sources=(host.url,) if sources else (),
        plc_directory=host.url,
        atproto_reconnect_min=0.05,
        atproto_reconnect_max=0.2,
    )


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll the node until ``check`` holds (its state moves in its own tasks)."""
    try:
        async with asyncio.timeout(WAIT):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll
    except TimeoutError:
        raise AssertionError(f"not within {WAIT} s: {what}") from None


def holds(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check


def texts(feed: dict[str, Any]) -> set[str]:
    return {str(item["post"]["record"].get("text")) for item in feed["feed"]}


@contextlib.asynccontextmanager
async def follower(node: Node, *dids: str) -> AsyncIterator[Client]:
    async with Client(node.url) as c:
        await c.create_account("sam.skyfed.test", "pw-sam-123456")
        for did in dids:
            await c.follow(did)
        yield c


async def test_posts_reach_a_follower_and_the_cursor_survives_a_restart(
    tmp_path: Path,
) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        alice.post("3kaaaaaaaaa22", "first")
        alice.post("3kaaaaaaaab22", "second")
        async with Node(config(tmp_path, host)) as node, follower(node, alice.did) as sam:

            async def both() -> bool:
                return texts(await sam.timeline()) >= {"first", "second"}

            await until("both posts in the timeline", both)
            post = (await sam.timeline())["feed"][0]["post"]
            assert post["via"] == {"protocol": "atproto", "host": host.url.split("//")[1]}
            assert post["author"]["handle"] == "handle.invalid"  # .test never resolves back
            assert node.atproto.stats.commits == 2
        assert host.cursors == [None]
        alice.post("3kaaaaaaaac22", "third")
        async with Node(config(tmp_path, host)) as node, Client(node.url) as c:
            await c.login("sam.skyfed.test", "pw-sam-123456")

            async def three() -> bool:
                return "third" in texts(await c.timeline())

            await until("the third post", three)
            assert host.cursors[1] == "2"  # resumed after the last event handled
            assert node.atproto.stats.commits == 1


async def test_reconnects_after_close_and_after_error_frames(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        alice.post("3kaaaaaaaaa22", "first")
        host.close_after_sending = True
        async with Node(config(tmp_path, host)) as node:
            await until("a reconnect with the cursor", holds(lambda: "1" in host.cursors))
            host.close_after_sending = False
            n = len(host.cursors)
            # ConsumerTooSlow: reconnect, cursor kept; FutureCursor: cursor forgotten.
            host.first_frames = [
                encode_frame(ErrorFrame("ConsumerTooSlow", "slow")),
                encode_frame(ErrorFrame("FutureCursor", "ahead")),
            ]
            await until("two error frames handled", holds(lambda: len(host.cursors) >= n + 3))
            assert host.cursors[n] == "1"  # the connection that got ConsumerTooSlow
            assert host.cursors[n + 1] == "1"  # the one that got FutureCursor
            assert host.cursors[n + 2] is None  # and after it: from the start
            assert node.atproto.stats.errors == {"ConsumerTooSlow": 1, "FutureCursor": 1}


async def test_did_cache_is_bounded_in_entries_and_time(tmp_path: Path) -> None:
    import aiohttp

    async with FakeHost() as host, aiohttp.ClientSession() as http:
        accounts = [host.account(i) for i in range(3)]
        now = [0.0]
        resolver = DidResolver(
            lambda: http, host.url, max_entries=2, ttl=10.0, clock=lambda: now[0]
        )
        for acct in accounts:
            got = await resolver.resolve(acct.did)
            assert got.ident.signing_key == acct.key.public
            assert got.handle is None
        assert len(resolver) == 2
        assert resolver.fetches == 3
        await resolver.resolve(accounts[2].did)  # cached
        assert resolver.fetches == 3
        now[0] = 11.0
        await resolver.resolve(accounts[2].did)  # expired
        assert resolver.fetches == 4


async def test_tampered_frame_is_refused_and_a_gap_resyncs_from_get_repo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="skyfed")
    async with FakeHost() as host:
        alice = host.account(1)
        first = alice.post("3kaaaaaaaaa22", "first")
        second = alice.post("3kaaaaaaaab22", "second")
        third = alice.post("3kaaaaaaaac22", "third")
        async with Node(config(tmp_path, host, sources=False)) as node:
            bridge = node.atproto
            async with follower(node, alice.did) as sam:
                await bridge.handle_message(host.url, first)
                i = second.index(b"second")
                await bridge.handle_message(host.url, second[:i] + b"SECOND" + second[i + 6 :])
                assert bridge.stats.refused == 1
                assert any("refused an atproto frame" in r.getMessage() for r in caplog.records)
                assert texts(await sam.timeline()) == {"first"}
                await bridge.handle_message(host.url, third)  # since = second's rev: a gap
                assert host.get_repos == 1
                assert bridge.stats.resyncs == 1
                assert texts(await sam.timeline()) == {"first", "second", "third"}
                # A deletion after the resync applies on the repaired chain.
                await bridge.handle_message(
                    host.url, alice.commit([("delete", "app.bsky.feed.post/3kaaaaaaaaa22", None)])
                )
                assert texts(await sam.timeline()) == {"second", "third"}


async def test_account_takedown_hides_and_deletion_removes(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        post = alice.post("3kaaaaaaaaa22", "hello")
        async with Node(config(tmp_path, host, sources=False)) as node:
            bridge = node.atproto
            async with follower(node, alice.did) as sam:
                await bridge.handle_message(host.url, post)
                assert texts(await sam.timeline()) == {"hello"}
                await bridge.handle_message(
                    host.url,
                    encode_frame(AccountEvent(2, alice.did, _now(), False, "takendown")),
                )
                assert texts(await sam.timeline()) == set()
                assert (await sam.author_feed(alice.did))["feed"] == []
                await bridge.handle_message(
                    host.url, encode_frame(AccountEvent(3, alice.did, _now(), True))
                )
                assert texts(await sam.timeline()) == {"hello"}
                await bridge.handle_message(
                    host.url, encode_frame(AccountEvent(4, alice.did, _now(), False, "deleted"))
                )
                assert texts(await sam.timeline()) == set()
                rows = await node.storage.read(
                    lambda c: c.execute("SELECT count(*) FROM atproto_records").fetchone()[0]
                )
                assert rows == 0


async def test_identity_event_picks_up_a_rotated_key(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        first = alice.post("3kaaaaaaaaa22", "before")
        async with Node(config(tmp_path, host, sources=False)) as node:
            bridge = node.atproto
            async with follower(node, alice.did) as sam:
                await bridge.handle_message(host.url, first)
                alice.key = SigningKey.from_seed("k256", b"rotated")
                fetches = host.doc_fetches
                await bridge.handle_message(
                    host.url, encode_frame(IdentityEvent(host.next_seq(), alice.did, _now()))
                )
                assert host.doc_fetches == fetches + 1
                await bridge.handle_message(host.url, alice.post("3kaaaaaaaab22", "after"))
                assert texts(await sam.timeline()) == {"before", "after"}
                assert bridge.stats.refused == 0


async def test_commit_from_the_future_is_refused(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        frame = alice.post("3kaaaaaaaaa22", "later", ahead=3600)
        async with Node(config(tmp_path, host, sources=False)) as node:
            await node.atproto.handle_message(host.url, frame)
            assert node.atproto.stats.refused == 1
            assert node.atproto.stats.commits == 0


def test_bridged_posts_are_marked_on_the_web_and_in_the_cli() -> None:
    import datetime
    import io

    from node.client.render import Renderer, make_console
    from node.server.web import render_post

    view: dict[str, Any] = {
        "uri": f"at://{_did(1)}/app.bsky.feed.post/3kaaaaaaaaa22",
        "cid": "bafyreib",
        "author": {"did": _did(1), "handle": "handle.invalid"},
        "record": {"text": "bridged", "createdAt": "2026-11-23T11:57:00Z"},
        "indexedAt": "2026-11-23T11:57:00Z",
        "via": {"protocol": "atproto", "host": "pds.example.com<b>"},
    }
    html = render_post(view, time.time())
    assert "via atproto pds.example.com&lt;b&gt;" in html
    out = io.StringIO()
    Renderer(make_console(out), now=datetime.datetime.now(datetime.UTC)).post(view)
    assert "via atproto pds.example.com<b>" in out.getvalue()
    del view["via"]
    assert "via atproto" not in render_post(view, time.time())


async def test_a_resync_asked_for_too_soon_runs_when_due(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice = host.account(1)
        cfg = config(tmp_path, host).replace(atproto_resync_interval=2.0)
        async with Node(cfg) as node, follower(node, alice.did) as sam:
            await asyncio.wait_for(node.atproto.connected[host.url].wait(), WAIT)

            async def shows(*want: str) -> bool:
                return texts(await sam.timeline()) >= set(want)

            alice.post("3kaaaaaaaaa22", "first")
            host.new_frame.set()
            await until("first", lambda: shows("first"))
            for n, (hidden, shown) in enumerate([("h1", "s1"), ("h2", "s2")]):
                alice.post(f"3kaaaaaaaab{n}2", hidden)
                host.frames.pop()  # never sent: the next commit is a gap
                alice.post(f"3kaaaaaaaac{n}2", shown)
                host.new_frame.set()
                began = time.monotonic()
                await until(f"{shown} after a gap", functools.partial(shows, shown, hidden))
            # The second gap came within the interval: repaired when it was over.
            assert time.monotonic() - began > 1.0
            assert node.atproto.stats.resyncs == 2
            assert host.get_repos == 2


async def test_accounts_followed_are_bounded(tmp_path: Path) -> None:
    async with FakeHost() as host:
        alice, bob, carol = host.account(1), host.account(2), host.account(3)
        cfg = config(tmp_path, host, sources=False).replace(atproto_max_accounts=1)
        async with Node(cfg) as node:
            bridge = node.atproto
            # An #identity for an account not followed does not take a place.
            await bridge.handle_message(
                host.url, encode_frame(IdentityEvent(host.next_seq(), carol.did, _now()))
            )
            await bridge.handle_message(host.url, alice.post("3kaaaaaaaaa22", "alice"))
            await bridge.handle_message(host.url, bob.post("3kaaaaaaaaa22", "bob"))
            assert (bridge.stats.commits, bridge.stats.ignored, bridge.stats.refused) == (1, 1, 0)
            dids = await node.storage.read(
                lambda c: [r[0] for r in c.execute("SELECT did FROM atproto_accounts")]
            )
            assert dids == [alice.did]


async def test_an_older_database_gains_the_bridge_tables(tmp_path: Path) -> None:
    import sqlite3

    from node.store.sqlite import SCHEMA_VERSION

    cfg = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(cfg):
        pass
    conn = sqlite3.connect(cfg.db_path)
    for table in ("atproto_cursors", "atproto_accounts", "atproto_records"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()
    async with Node(cfg) as node:
        assert await node.storage.read(lambda c: store_cursor(c)) is None
    conn = sqlite3.connect(cfg.db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def store_cursor(conn: Any) -> int | None:
    from node.atproto.store import get_cursor

    return get_cursor(conn, "https://pds.example")


async def test_a_captured_firehose_replays_to_a_node(tmp_path: Path) -> None:
    import aiohttp

    from node.cluster.atproto_replay import ReplayServer, capture, read_frames

    async with FakeHost() as host:
        alice = host.account(1)
        for i in range(5):
            alice.post(f"3kaaaaaaaa{i}22", f"replayed {i}")
        out = tmp_path / "frames.bin"
        async with aiohttp.ClientSession() as http:
            assert await capture(http, host.url, out, count=5, cursor=0) == 5
    frames = read_frames(out)
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    server = ReplayServer(frames, speed=0)
    url = await server.start()
    try:
        cfg = NodeConfig(
            data_dir=tmp_path / "node",
            port=0,
            dial_policy="loopback",
            atproto_sources=(url,),
            plc_directory=host.url,
        )
        # The host (its PLC directory) is gone: identities come from a second one.
        async with FakeHost() as plc:
            plc.accounts[alice.did] = alice
            cfg = cfg.replace(plc_directory=plc.url)
            async with Node(cfg) as node, follower(node, alice.did) as sam:

                async def all_five() -> bool:
                    return len(texts(await sam.timeline())) == 5

                await until("the replayed posts", all_five)
                assert node.atproto.stats.refused == 0
    finally:
        await server.stop()
    (tmp_path / "bad.bin").write_bytes(b"\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="truncated"):
        read_frames(tmp_path / "bad.bin")
