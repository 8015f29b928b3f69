"""The harness's parts without a cluster: the link proxy, topologies, scenario files,
and the node's clock_skew hook."""

from __future__ import annotations

import asyncio
import random
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from node.client import Client
from node.cluster.harness import Cluster
from node.cluster.hostile import (
    PEER_PATH,
    POISON_FORMS,
    FloodSpec,
    ForgeSpec,
    HoldSpec,
    HostileNode,
    HostileSpec,
    PoisonSpec,
    read_ws_frame,
    source_address,
    ws_frame,
)
from node.cluster.observer import Observer
from node.cluster.proxy import FrameSplitter, LinkProxy
from node.cluster.scenario import ScenarioError, load_scenario, parse_scenario
from node.cluster.topology import is_connected, make_topology
from node.config import NodeConfig
from node.wiring import Node
from protocol.syntax import tid_to_parts

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))

# -- the proxy -----------------------------------------------------------------------


def frame(payload: bytes, *, opcode: int = 0x2, fin: bool = True, mask: bytes = b"") -> bytes:
    """One RFC 6455 frame (masked when ``mask`` is given)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def test_splitter_finds_frames_of_every_length_byte_by_byte() -> None:
    head = b"GET /x HTTP/1.1\r\nSec-WebSocket-Extensions: permessage-deflate\r\nHost: h\r\n\r\n"
    frames = [
        frame(b"hello"),
        frame(b"auth"),
        frame(b"a" * 300, mask=b"\x01\x02\x03\x04"),
        frame(b"b" * 70_000),
        frame(b"", opcode=0x9),  # ping
        frame(b"part one", fin=False),
        frame(b"part two", opcode=0x0),
        frame(b"last"),
    ]
    stream = head + b"".join(frames)
    s = FrameSplitter(strip_extensions=True)
    units: list[tuple[bytes, bool]] = []
    for i in range(len(stream)):  # the worst case: one byte at a time
        units += s.feed(stream[i : i + 1])
    assert units[0][0] == b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    assert [u for u, _ in units[1:]] == frames
    # The handshake (two messages), control frames and fragments are never droppable.
    assert [d for _, d in units[1:]] == [False, False, True, True, False, False, False, True]


def test_splitter_refuses_an_endless_head() -> None:
    with pytest.raises(ValueError, match="too long"):
        FrameSplitter().feed(b"G" * 70_000)


class Echo:
    """A WebSocket server that records what it receives and, on ``go``, sends 200
    numbered messages once ``release`` is set, then ``done`` once ``finish`` is."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.release = asyncio.Event()
        self.all_sent = asyncio.Event()
        self.finish = asyncio.Event()
        self.port = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            await self.received.put(msg.data)
            if msg.data == b"go":
                await self.release.wait()
                for i in range(200):
                    data = f"message {i} ".encode() * (1 + i % 50)
                    self.sent.append(data)
                    await ws.send_bytes(data)
                self.all_sent.set()
                await self.finish.wait()
                await ws.send_bytes(b"done")
        return ws


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    app = web.Application()
    app.router.add_get("/ws", server.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


async def wait_for(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # poll: the proxy's counters


@pytest.mark.timeout(30)
async def test_dropping_frames_keeps_a_valid_stream_both_ways(echo: Echo) -> None:
    proxy = LinkProxy("test", echo.port, rng=random.Random(1))
    await proxy.start()
    try:
        proxy.shape(drop=0.5)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{proxy.url}/ws", heartbeat=None)
            # The first two messages (the peer handshake) always pass; half the rest.
            ups = [f"up {i}".encode() for i in range(100)]
            for data in (b"hello", b"auth", *ups):
                await ws.send_bytes(data)
            await wait_for(lambda: proxy.up.frames + proxy.up.dropped_frames >= 103)
            proxy.shape(drop=0.0)
            await ws.send_bytes(b"go")
            got_up: list[bytes] = []
            async with asyncio.timeout(10):
                while (data := await echo.received.get()) != b"go":
                    got_up.append(data)
            # Server to client, half dropped: every message that arrives is whole.
            proxy.shape(drop=0.5)
            echo.release.set()
            await echo.all_sent.wait()
            await wait_for(lambda: proxy.down.frames + proxy.down.dropped_frames >= 201)
            proxy.shape(drop=0.0)
            echo.finish.set()
            got_down: list[bytes] = []
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    if msg.data == b"done":
                        break
                    got_down.append(msg.data)
            # Still a valid stream: a ping round trip, a message, a clean close.
            await ws.ping()
            await ws.send_bytes(b"after")
            async with asyncio.timeout(5):
                assert await echo.received.get() == b"after"
            await ws.close()
    finally:
        await proxy.close()
    assert got_up[:2] == [b"hello", b"auth"]
    assert got_up[2:] == [u for u in ups if u in got_up]  # whole, in order
    assert 20 < len(got_up) - 2 < 80
    assert got_down == [m for m in echo.sent if m in got_down]
    assert 50 < len(got_down) < 150
    assert proxy.up.dropped_frames == 100 - (len(got_up) - 2)
    assert proxy.down.dropped_frames == 200 - len(got_down)


@pytest.mark.timeout(30)
async def test_cut_holds_connections_until_restore_and_delay_delays(echo: Echo) -> None:
    received = echo.received
    proxy = LinkProxy("test", echo.port)
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{proxy.url}/ws")
            proxy.cut()  # severs what is open
            async with asyncio.timeout(5):
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            dial = asyncio.create_task(http.ws_connect(f"{proxy.url}/ws"))
            done, _ = await asyncio.wait({dial}, timeout=0.5)
            assert not done, "a dial during a cut is held, not answered"
            proxy.shape(delay=0.3)
            proxy.restore()
            async with asyncio.timeout(5):
                ws = await dial
            start = time.monotonic()
            await ws.send_bytes(b"late")
            async with asyncio.timeout(5):
                assert await received.get() == b"late"
            assert time.monotonic() - start >= 0.29
            await ws.close()
    finally:
        await proxy.close()
    assert proxy.up.bytes > 0
    assert proxy.down.bytes > 0


# -- topologies ----------------------------------------------------------------------


def degrees(n: int, edges: list[tuple[int, int]]) -> list[int]:
    d = [0] * n
    for a, b in edges:
        d[a] += 1
        d[b] += 1
    return d


def test_topologies() -> None:
    assert len(make_topology("full", 5)) == 10
    assert make_topology("ring", 4) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert make_topology("star", 4) == [(0, 1), (0, 2), (0, 3)]
    assert make_topology("edges", 3, edges=[[2, 1], [0, 1]]) == [(0, 1), (1, 2)]
    assert make_topology("ring", 1) == []


@pytest.mark.parametrize(("n", "k"), [(10, 3), (50, 4), (7, 3), (20, 2)])
def test_random_topology_is_seeded_connected_and_about_degree_k(n: int, k: int) -> None:
    edges = make_topology("random", n, degree=k, seed=5)
    assert edges == make_topology("random", n, degree=k, seed=5)
    assert edges != make_topology("random", n, degree=k, seed=6)
    assert is_connected(n, edges)
    assert all(a < b for a, b in edges)
    if n * k % 2 == 0:
        assert degrees(n, edges) == [k] * n
    else:
        assert len(edges) == n * k // 2


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("edges", {"edges": [[0, 0]]}, "itself"),
        ("edges", {"edges": [[0, 9]]}, "outside"),
        ("edges", {"edges": [[0, 1]]}, "not connected"),
        ("random", {"degree": 9}, "degree"),
        ("mesh", {}, "unknown topology"),
    ],
)
def test_bad_topologies(kind: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_topology(kind, 4, **kwargs)  # type: ignore[arg-type]


# -- scenario files ------------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenarios_parse(path: Path) -> None:
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.description


def test_a_scenario_parses_into_values() -> None:
    s = parse_scenario(
        """
        seed = 3
        duration = 12
        [cluster]
        nodes = 4
        topology = "ring"
        clock_skew = { "2" = 90 }
        [workload]
        accounts = 3
        rate = 2.5
        mix = { post = 1 }
        [[workload.burst]]
        at = 2
        duration = 1
        rate = 40
        [[schedule]]
        at = 5
        action = "heal"
        [[schedule]]
        at = 1
        action = "shape"
        links = [[0, 1]]
        delay = 0.05
        drop = 0.1
        """,
        source="x.toml",
    )
    assert s.name == "x"
    assert s.seed == 3
    assert s.duration == 12
    assert s.cluster.nodes == 4
    assert s.cluster.clock_skew == {2: 90.0}
    assert s.workload.rate == 2.5
    assert s.workload.bursts[0].rate == 40
    assert [a.action for a in s.schedule] == ["shape", "heal"]  # sorted by time
    assert s.schedule[0].args == {"links": [(0, 1)], "delay": 0.05, "drop": 0.1}


STORY_HEAD = """
[cluster]
nodes = 3
[workload]
accounts = 4
[[schedule]]
at = 1
action = "post"
account = 0
name = "hello"
"""

BAD_STEPS = [
    ('[[schedule]]\nat = 2\naction = "takedown"\nnode = 0\naccount = 1', "reason is required"),
    (
        '[[schedule]]\nat = 2\naction = "takedown"\nnode = 3\naccount = 1\nreason = "x"',
        "schedule[1].node must be a node number in 0..2",
    ),
    (
        '[[schedule]]\nat = 2\naction = "takedown"\nnode = 0\naccount = 4\nreason = "x"',
        "schedule[1].account must be an account number in 0..3",
    ),
    (
        '[[schedule]]\nat = 2\naction = "takedown"\nnode = 0\naccount = 1\nreason = " "',
        "schedule[1].reason must not be empty",
    ),
    (
        '[[schedule]]\nat = 2\naction = "takedown"\nnode = 0\naccount = 1\nreason = "x"\n'
        'scopes = ["host", "everything"]',
        "scopes must be a list of some of: host, serve, carry",
    ),
    ('[[schedule]]\nat = 2\naction = "migrate"\naccount = 1\nto = 7', "to must be a node number"),
    (
        '[[schedule]]\nat = 2\naction = "migrate"\naccount = 1\nto = 1',
        "to: account 1 already lives on node 1 then",
    ),
    (
        '[[schedule]]\nat = 2\naction = "migrate"\naccount = 0\nto = 2\n'
        '[[schedule]]\nat = 3\naction = "migrate"\naccount = 0\nto = 2',
        "schedule[2].to: account 0 already lives on node 2 then",
    ),
    (
        '[[schedule]]\nat = 2\naction = "migrate"\naccount = 0\nto = 2\nwith_old_node = 1',
        "with_old_node must be true or false",
    ),
    ('[[schedule]]\nat = 2\naction = "label"\nlabeler = 1\nvalue = "spam"', "exactly one"),
    (
        '[[schedule]]\nat = 2\naction = "label"\nlabeler = 1\nvalue = "spam"\n'
        'post = "hello"\naccount = 0',
        "a label needs exactly one subject",
    ),
    (
        '[[schedule]]\nat = 2\naction = "label"\nlabeler = 1\npost = "hello"\n'
        f'value = "{"x" * 129}"',
        "value is longer than 128 bytes",
    ),
    (
        '[[schedule]]\nat = 2\naction = "label"\nlabeler = 1\nvalue = "spam"\npost = "nope"',
        "schedule[1].post 'nope' names no post made before it",
    ),
    (
        '[[schedule]]\nat = 0.5\naction = "expect"\npost = "hello"\nvisible = true\nnodes = [0]',
        "schedule[1].post 'hello' names no post made before it",
    ),
    (
        '[[schedule]]\nat = 2\naction = "post"\naccount = 1\nname = "hello"',
        "schedule[1].name 'hello' is used twice",
    ),
    (
        '[[schedule]]\nat = 2\naction = "post"\naccount = 1\nname = "x"\nrefused = true',
        "a refused post makes no record",
    ),
    (f'[[schedule]]\nat = 2\naction = "post"\naccount = 1\ntext = "{"y" * 301}"', "longer"),
    ('[[schedule]]\nat = 2\naction = "follow"\naccount = 1\nsubject = 1', "the account itself"),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = "yes"\nnodes = [0]',
        "visible must be true or false",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true',
        "an expect names either readers",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\n'
        "nodes = [0]\nreaders = [1]",
        "not both",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\n'
        'nodes = [0]\nview = "timeline"',
        "timeline needs readers",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\n'
        'nodes = [0]\nview = "home"',
        "view must be one of posts, thread, author, latest, timeline",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\nreaders = []',
        "readers must be a list of account numbers in 0..3",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\n'
        "nodes = [0]\nlabelers = [9]",
        "labelers must be a list of account numbers",
    ),
    (
        '[[schedule]]\nat = 2\naction = "expect"\npost = "hello"\nvisible = true\n'
        "nodes = [0]\nwithin = -1",
        "within must be at least 0",
    ),
    (
        '[[schedule]]\nat = 2\naction = "equivocate"\naccount = 1\nnodes = [0]',
        "nodes must be two or more node numbers",
    ),
]


def test_story_steps_parse_into_values() -> None:
    s = parse_scenario(
        STORY_HEAD
        + """
        [[schedule]]
        at = 2
        action = "takedown"
        node = 0
        account = 0
        reason = "ticket 7"
        scopes = ["carry", "serve"]
        [[schedule]]
        at = 3
        action = "migrate"
        account = 0
        to = 1
        [[schedule]]
        at = 4
        action = "label"
        labeler = 3
        post = "hello"
        value = "spam"
        [[schedule]]
        at = 5
        action = "expect"
        post = "hello"
        visible = false
        readers = [2]
        labelers = [3]
        view = "timeline"
        """,
        source="story.toml",
    )
    post, takedown, migrate, label, expect = s.schedule
    assert post.args == {"account": 0, "name": "hello"}
    assert takedown.args == {
        "node": 0,
        "account": 0,
        "reason": "ticket 7",
        "scopes": ["serve", "carry"],
    }
    assert takedown.describe() == "node 0 takes account 0 down (serve,carry)"
    assert migrate.args == {"account": 0, "to": 1}
    assert migrate.describe() == "account 0 moves to node 1 without its old node's help"
    assert label.describe() == "labeler 3 puts 'spam' on post 'hello'"
    assert expect.args == {
        "post": "hello",
        "visible": False,
        "readers": [2],
        "labelers": [3],
        "view": "timeline",
        "within": 15.0,
    }
    assert expect.describe() == "expect: accounts [2] (labelers [3]) do not see 'hello' in timeline"


HOSTILE_HEAD = """
duration = 10
[cluster]
nodes = 3
"""
BAD_HOSTILE = [
    ("[[hostile]]\nlinks_to = [0]", "hostile[0].behaviours is required"),
    ('[[hostile]]\nbehaviours = ["shout"]\nlinks_to = [0]', "behaviours must be a list of"),
    ("[[hostile]]\nbehaviours = []\nlinks_to = [0]", "behaviours must be a list of"),
    ('[[hostile]]\nbehaviours = ["flood", "flood"]\nlinks_to = [0]', "names a behaviour twice"),
    ('[[hostile]]\nbehaviours = ["flood"]', "hostile[0].links_to is required"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [3]', "node numbers in 0..2"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [1, 1]', "names a node twice"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\nstart = 10', "before the end"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\nstop = 0.5', "after start"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\nstop = 11', "at most the workload"),
    ('[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\ncolour = 1', "unknown field(s)"),
    (
        '[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\n[hostile.forge]\nrate = 1',
        "hostile[0].forge is given but 'forge' is not among behaviours",
    ),
    (
        '[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\n[hostile.flood]\nheads_items = 5000',
        "hostile[0].flood.heads_items must be at most 4096",
    ),
    (
        '[[hostile]]\nbehaviours = ["flood"]\nlinks_to = [0]\n[hostile.flood]\nrate = 0',
        "hostile[0].flood.rate must be at least 0.01",
    ),
    (
        '[[hostile]]\nbehaviours = ["hold"]\nlinks_to = [0]\n[hostile.hold]\nconnections = 1e6',
        "hostile[0].hold.connections must be a whole number",
    ),
    (
        '[[hostile]]\nbehaviours = ["forge"]\nlinks_to = [0]\n[hostile.forge]\nkinds = ["x"]',
        "hostile[0].forge.kinds must be a list of some of",
    ),
    (
        '[[hostile]]\nbehaviours = ["poison"]\nlinks_to = [0]\n[hostile.poison]\nwhen = 1',
        "unknown field(s) in hostile[0].poison",
    ),
]


def test_hostile_nodes_parse_into_values(tmp_path: Path) -> None:
    s = parse_scenario(
        """
        duration = 20
        memory_ceiling_mb = 300
        [cluster]
        nodes = 3
        share_peers = true
        max_peers = 16
        [[hostile]]
        behaviours = ["flood", "forge", "poison"]
        links_to = [0, 2]
        stop = 15
        [hostile.flood]
        rate = 2
        heads_items = 100
        [hostile.forge]
        kinds = ["no-tree"]
        [[hostile]]
        behaviours = ["hold"]
        links_to = [1]
        """,
        source="h.toml",
    )
    assert s.memory_ceiling_mb == 300.0
    assert s.cluster.share_peers is True
    assert s.cluster.max_peers == 16
    cluster = s.make_cluster(tmp_path)
    assert cluster.settings["share_peers"] is True
    assert cluster.settings["max_peers"] == 16
    assert cluster.direct
    first, second = s.hostile
    assert first.behaviours == ("flood", "forge", "poison")
    assert first.links_to == (0, 2)
    assert (first.start, first.stop) == (1.0, 15.0)
    assert first.flood == FloodSpec(rate=2.0, heads_items=100)
    assert first.forge == ForgeSpec(kinds=("no-tree",))
    assert first.poison == PoisonSpec()
    assert first.replay is None
    assert first.hold is None
    assert second.hold == HoldSpec()
    assert second.describe() == "hostile (hold) linked to nodes [1]"
    plain = parse_scenario("duration = 5", source="p.toml")
    assert plain.hostile == ()
    assert plain.memory_ceiling_mb is None
    assert not plain.make_cluster(tmp_path).direct


async def test_poison_listener_tells_a_peer_dial_from_a_forged_request(tmp_path: Path) -> None:
    """Each poisoned spelling is a listener of its own: a dial of the peer endpoint is
    counted, one that carries the poisoned path or userinfo is counted as given."""
    spec = HostileSpec(("poison",), (0,), poison=PoisonSpec())
    h = HostileNode(0, spec, Cluster(1, workdir=tmp_path), seed=1)
    await h.start()
    try:
        assert set(h.poison_urls) == set(POISON_FORMS)
        bare = h.poison_urls["never-a-peer"]
        path = h.poison_urls["path"]
        userinfo = h.poison_urls["userinfo"]
        async with aiohttp.ClientSession() as http:
            for url in (bare + PEER_PATH, path + PEER_PATH, userinfo + PEER_PATH):
                async with http.get(url) as r:
                    assert r.status == 404
        got = sorted((d.form, d.target, d.as_given) for d in h.dials)
        assert got == [
            ("never-a-peer", PEER_PATH, False),
            ("path", "/some/path" + PEER_PATH, True),
            ("userinfo", PEER_PATH, True),  # the password went along
        ]
        assert all(d.node is None for d in h.dials)  # no cluster node made them
    finally:
        await h.close()


async def test_a_hostile_node_connects_from_its_own_loopback_address(tmp_path: Path) -> None:
    """So per-address penalties can tell it from the honest nodes (all on 127.0.0.1)."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def note(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.put_nowait(w.get_extra_info("peername")[0])
        w.close()

    server = await asyncio.start_server(note, "127.0.0.1", 0)
    h = HostileNode(1, HostileSpec(("hold",), (0,)), Cluster(1, workdir=tmp_path))
    try:
        assert h.source == source_address(1)
        assert h.source in ("127.0.0.3", "127.0.0.1")  # .1 only where .3 cannot be bound
        await h._small_socket(server.sockets[0].getsockname()[1])
        assert await asyncio.wait_for(seen.get(), 5) == h.source
    finally:
        await h.close()
        server.close()
        await server.wait_closed()


async def test_hand_made_websocket_frames_read_back() -> None:
    for n in (0, 5, 125, 126, 70_000):
        payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
        reader = asyncio.StreamReader()
        reader.feed_data(frame(b"", opcode=0x9) + ws_frame(payload))  # a ping first
        assert await read_ws_frame(reader) == payload
    reader = asyncio.StreamReader()
    reader.feed_data(frame(b"x" * 200))
    with pytest.raises(ConnectionError, match="200 bytes"):
        await read_ws_frame(reader, limit=100)


async def test_agreement_leaves_out_what_a_node_refuses(tmp_path: Path) -> None:
    c = Cluster(3, workdir=tmp_path)
    try:
        alice, bob = "did:skyfed:alice", "did:skyfed:bob"
        views: dict[int, dict[str, str] | None] = {
            0: {alice: "old", bob: "b1"},
            1: {alice: "new", bob: "b1"},
            2: {alice: "new", bob: "b1"},
        }
        assert c.disagreements(views) == [alice]
        c.takedowns[(0, alice)] = frozenset({"host"})  # still serves and carries her
        assert c.disagreements(views) == [alice]
        c.takedowns[(0, alice)] = frozenset({"carry"})
        assert c.owes(0, bob)
        assert not c.owes(0, alice)
        assert c.disagreements(views) == []
        del views[0][alice]  # type: ignore[union-attr]
        assert c.disagreements(views) == []
        views[2] = {bob: "b1"}  # node 2 owes alice and lacks her
        assert c.disagreements(views) == [alice]
        views[2] = None
        assert c.disagreements(views) == ["node 2"]
        assert c.settings["admin_token"] == c.admin_token
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("duration = ", "not valid TOML"),
        ("colour = 1", "unknown field(s) in the top level: colour"),
        ("[cluster]\nnodes = 0", "cluster.nodes must be at least 1"),
        ('[cluster]\ntopology = "blob"', "cluster.topology must be one of"),
        ('[cluster]\ntopology = "edges"', "cluster.edges topology 'edges' needs"),
        ('[cluster]\nnodes = 3\nclock_skew = { "7" = 1 }', "not a node number in 0..2"),
        ("[workload]\nmix = { shout = 1 }", "unknown kind 'shout'"),
        ('[[schedule]]\nat = 1\naction = "explode"', "schedule[0].action unknown action"),
        ('[[schedule]]\naction = "heal"', "schedule[0].at is required"),
        ('[[schedule]]\nat = 1\naction = "kill"', "schedule[0].node is required for kill"),
        ('[[schedule]]\nat = 1\naction = "kill"\nnode = 5', "node must be a node number"),
        ('[[schedule]]\nat = 1\naction = "heal"\nnode = 1', "unknown field(s) in schedule[0]"),
        (
            '[[schedule]]\nat = 1\naction = "partition"\ngroups = [[0, 1], [1, 2]]',
            "a node is in two groups",
        ),
        ('[[schedule]]\nat = 1\naction = "shape"\ndrop = 1.5', "between 0 and 1"),
        ('[[schedule]]\nat = 1\naction = "shape"\nlinks = "some"', "list of [a, b] node pairs"),
        ('[[schedule]]\nat = "soon"\naction = "heal"', "schedule[0].at must be a number"),
        ("schedule = 3", "schedule must be an array of tables"),
        *[(STORY_HEAD + step, message) for step, message in BAD_STEPS],
        *[(HOSTILE_HEAD + table, message) for table, message in BAD_HOSTILE],
        ("memory_ceiling_mb = 1", "memory_ceiling_mb must be at least 16"),
        ("[cluster]\nshare_peers = 1", "cluster.share_peers must be true or false"),
        (
            '[cluster]\nshare_peers = true\n[[schedule]]\nat = 1\naction = "kill"\nnode = 1',
            "action kill needs the link proxies",
        ),
    ],
)
def test_bad_scenarios_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text, source="bad.toml")
    assert str(e.value).startswith("bad.toml: ")
    assert message in str(e.value)


def test_cli_reports_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[schedule]]\nat = 1\naction = "explode"\n')
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("skyfed: error: ")
    assert "explode" in out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "run", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


# -- the node's clock_skew hook ------------------------------------------------------


async def test_clock_skew_moves_the_revs_a_node_makes(tmp_path: Path) -> None:
    skew = 3600.0
    config = NodeConfig(data_dir=tmp_path / "node", port=0, clock_skew=skew)
    async with Node(config) as node, Client(node.url) as c:
        assert abs(node.wall_clock() - time.time() - skew) < 1
        await c.create_account("skew.skyfed.test", "correct horse battery staple")
        await c.post("from the future")
        latest = await c.call("com.atproto.sync.getLatestCommit", params={"did": c.did})
    micros, _ = tid_to_parts(latest["rev"])
    assert abs(micros / 1e6 - time.time() - skew) < 60


# -- measurements --------------------------------------------------------------------


def test_first_seen_is_the_first_arrival_at_or_above_a_rev() -> None:
    o = Observer(cast(Any, None))
    # Revs arrive mostly in order; a later #sync can jump ahead, an old one may lag.
    o.arrivals[(1, "did:a")] = [(1.0, "r1"), (2.0, "r3"), (3.0, "r2"), (4.0, "r5")]
    assert o.first_seen(1, "did:a", "r1") == 1.0
    assert o.first_seen(1, "did:a", "r2") == 2.0  # r3's head contains r2
    assert o.first_seen(1, "did:a", "r4") == 4.0
    assert o.first_seen(1, "did:a", "r6") is None
    assert o.first_seen(2, "did:a", "r1") is None
    o.arrivals[(1, "did:a")].append((5.0, "r6"))  # the cache follows new arrivals
    assert o.first_seen(1, "did:a", "r6") == 5.0
