"""End to end against Bluesky's reference PDS: a skyfed node follows a real atproto
PDS (``@atproto/dev-env``'s ``TestNetworkNoAppView``: PDS + in-memory PLC on
localhost, pinned in tests/atproto_pds/package-lock.json) and shows its posts.

tests/atproto_pds/driver.mjs keeps the PDS up and takes commands on stdin. The node
reads the PDS's firehose through a small proxy in this test, which can alter one
frame on the way (one byte of a record), to show that such a frame is refused and
logged, and that the next commit (a gap, for the node) is repaired from getRepo.

The npm packages are installed by scripts/ensure-npm-packages.sh when missing (it
builds better-sqlite3's native module from the source in its tarball). The test is
skipped, saying why, only where Node.js or npm is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.client import Client, RecordRef
from node.config import NodeConfig
from node.wiring import Node

PDS_DIR = Path(__file__).parent / "atproto_pds"
SCRIPT = Path(__file__).parent.parent / "scripts" / "ensure-npm-packages.sh"
INSTALL_SECONDS = 600
WAIT = 20.0


@pytest.fixture(scope="module")
def node_binary() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "Node.js or npm is not installed: the reference PDS needs both "
            "(scripts/ensure-npm-packages.sh installs Debian's; make test runs it)"
        )
    done = subprocess.run(
        ["bash", str(SCRIPT), "tests/atproto_pds"],
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"installing tests/atproto_pds failed:\n{done.stderr[-4000:]}"
    return node


class Driver:
    """The PDS driver process: one JSON command in, one JSON answer out."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        assert raw, "the PDS driver exited"
        out: dict[str, Any] = json.loads(raw)
        return out

    async def __call__(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        out = await self.line()
        assert "error" not in out, out
        return out


@contextlib.asynccontextmanager
async def pds(node_binary: str) -> AsyncIterator[tuple[Driver, dict[str, Any]]]:
    proc = await asyncio.create_subprocess_exec(
        node_binary,
        "driver.mjs",
        cwd=PDS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    driver = Driver(proc)
    try:
        urls = await driver.line()
        yield driver, urls
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class TamperProxy:
    """Forwards subscribeRepos from the PDS; alters a frame holding ``needle``."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.needle: bytes | None = None
        self.tampered = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        target = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(target, max_msg_size=0) as up,
        ):
            # Upstream first: once the node is connected, nothing posted is missed.
            await ws.prepare(request)
            async for msg in up:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                data: bytes = msg.data
                if self.needle is not None and self.needle in data:
                    i = data.index(self.needle)
                    data = data[:i] + self.needle.upper() + data[i + len(self.needle) :]
                    self.needle = None
                    self.tampered += 1
                await ws.send_bytes(data)
        await ws.close()
        return ws

    async def __aenter__(self) -> TamperProxy:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", self.stream)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (polling the node's API) until ``check`` holds, at most WAIT seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while not await check():  # noqa: ASYNC110 (a state in another process)
                await asyncio.sleep(0.1)  # poll
    except TimeoutError:
        raise AssertionError(f"not within {WAIT} s: {what}") from None


def texts(feed: dict[str, Any]) -> list[str]:
    return [str(item["post"]["record"].get("text")) for item in feed["feed"]]


@pytest.mark.timeout(INSTALL_SECONDS + 240)
async def test_a_node_follows_the_reference_pds(
    node_binary: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="skyfed")
    async with pds(node_binary) as (drive, urls), TamperProxy(urls["pds"]) as proxy:
        alice = (await drive("account", handle="alice.test"))["did"]
        bob = (await drive("account", handle="bob.test"))["did"]
        early = await drive("post", **{"as": alice, "text": "posted before the node came"})
        config = NodeConfig(
            data_dir=tmp_path / "node",
            port=0,
            dial_policy="loopback",
            atproto_sources=(proxy.url,),
            plc_directory=urls["plc"],
            atproto_reconnect_min=0.1,
            atproto_resync_interval=1.0,
        )
        async with Node(config) as node, Client(node.url) as sam:
            # Without a cursor a host sends only what happens from now on (as atproto
            # says): alice's first commit seen is then mid-history, so her whole repo
            # is fetched (getRepo) and the earlier post shows too.
            await asyncio.wait_for(node.atproto.connected[proxy.url].wait(), WAIT)
            hello = await drive("post", **{"as": alice, "text": "hello from atproto"})
            await sam.create_account("sam.skyfed.test", "pw-sam-123456")
            await sam.follow(alice)  # a did:plc subject is accepted

            async def in_timeline(text: str) -> bool:
                return text in texts(await sam.timeline())

            await until("alice's post in sam's timeline", lambda: in_timeline("hello from atproto"))
            assert await in_timeline(early["uri"] and "posted before the node came")
            assert node.atproto.stats.resyncs == 1
            feed = await sam.timeline()
            post = next(i["post"] for i in feed["feed"] if i["post"]["uri"] == hello["uri"])
            assert post["cid"] == hello["cid"]
            assert post["author"]["did"] == alice
            # alice.test cannot resolve back to alice's DID: never believed.
            assert post["author"]["handle"] == "handle.invalid"
            assert post["via"]["protocol"] == "atproto"

            # bob replies and likes over there; sam replies here: one mixed thread.
            ref = {"uri": hello["uri"], "cid": hello["cid"]}
            await drive("reply", **{"as": bob, "text": "bob replies", "root": ref, "parent": ref})
            await drive("like", **{"as": bob, "uri": hello["uri"], "cid": hello["cid"]})
            hello_ref = RecordRef(hello["uri"], hello["cid"])
            await sam.post("sam replies from skyfed", reply_to=hello_ref, root=hello_ref)

            async def thread_complete() -> bool:
                thread = (await sam.thread(hello["uri"]))["thread"]
                replies = {r["post"]["record"]["text"] for r in thread.get("replies", [])}
                liked = thread["post"]["likeCount"] == 1
                return liked and replies == {"bob replies", "sam replies from skyfed"}

            await until("the mixed thread", thread_complete)
            author = await sam.author_feed(alice)
            assert "hello from atproto" in texts(author)

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{node.url}/profile/{alice}") as resp:
                    page = await resp.text()
                assert resp.status == 200
                assert "hello from atproto" in page
                assert f"via atproto {urls['pds'].split('//', 1)[1]}" in page

            # A frame altered on the way is refused and logged; the next commit is a
            # gap for the node, repaired from getRepo (so both posts show, verified).
            refused = node.atproto.stats.refused
            proxy.needle = b"tampered"
            await drive("post", **{"as": alice, "text": "tampered"})
            await until(
                "the altered frame refused", _async(lambda: node.atproto.stats.refused > refused)
            )
            assert proxy.tampered == 1
            assert not await in_timeline("tampereD")
            assert any("refused an atproto frame" in r.getMessage() for r in caplog.records)
            resyncs = node.atproto.stats.resyncs
            await drive("post", **{"as": alice, "text": "after the gap"})
            await until("the gap repaired", lambda: in_timeline("after the gap"))
            assert node.atproto.stats.resyncs == resyncs + 1
            assert node.atproto.stats.refused == refused + 1
            assert await in_timeline("tampered")

            # A deletion there removes the post here.
            await drive("delete", **{"as": alice, "uri": hello["uri"]})

            async def gone() -> bool:
                return not await in_timeline("hello from atproto")

            await until("the deleted post gone", gone)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{node.url}/profile/{alice}") as resp,
            ):
                assert "hello from atproto" not in await resp.text()


def _async(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check
