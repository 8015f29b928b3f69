"""Peer links that lose messages: requests are asked again, negentropy sessions start
over, and one bad link holds up no other link's reconciliation."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.client import Client
from node.net.federation import PeerLink
from node.net.rtt import RttEstimator
from node.wiring import Node
from protocol.keys import SigningKey
from protocol.negentropy import Negentropy, NegentropyStorageVector
from protocol.peerwire import MAX_FRAME, auth_payload, decode_message, encode_message

from .test_federation import PASSWORD, link, start_nodes, until

# -- the estimator ------------------------------------------------------------------


def test_the_wait_starts_at_the_initial_value_within_its_bounds() -> None:
    assert RttEstimator(initial=2.0, floor=1.0, ceiling=30.0).timeout == 2.0
    assert RttEstimator(initial=0.1, floor=1.0, ceiling=30.0).timeout == 1.0
    assert RttEstimator(initial=99.0, floor=1.0, ceiling=30.0).timeout == 30.0


def test_the_wait_follows_the_round_trips_and_the_floor() -> None:
    est = RttEstimator(initial=2.0, floor=0.5, ceiling=30.0)
    est.sample(0.2)
    # RFC 6298's first sample: srtt = R, rttvar = R/2, so srtt + 4 rttvar = 3R.
    assert est.srtt == pytest.approx(0.2)
    assert est.timeout == pytest.approx(0.6)
    for _ in range(50):
        est.sample(0.2)
    # Steady round trips: the deviation decays and the floor holds the wait.
    assert est.timeout == 0.5
    for _ in range(50):
        est.sample(4.0)
    assert 4.0 <= est.timeout < 6.0  # a slow link (a big answer) gets a longer wait


def test_a_wait_that_runs_out_doubles_until_the_ceiling_then_a_sample_resets_it() -> None:
    est = RttEstimator(initial=2.0, floor=1.0, ceiling=10.0)
    est.backoff(now=100.0)
    assert est.timeout == 4.0
    est.backoff(now=104.0)
    est.backoff(now=112.0)
    assert est.timeout == 10.0
    est.sample(0.1)
    assert est.timeout == 1.0


def test_losses_at_about_the_same_time_double_the_wait_once_and_at_most_8_times() -> None:
    est = RttEstimator(initial=1.0, floor=1.0, ceiling=30.0)
    for lost_at in (10.0, 10.1, 10.5, 11.9):  # five requests sent together, all lost
        est.backoff(now=lost_at)
    assert est.timeout == 2.0
    now = 12.0
    for _ in range(10):  # one request lost again and again
        now += est.timeout
        est.backoff(now=now)
    assert est.timeout == 8.0  # not the 30 s ceiling: losses are not congestion here


@pytest.mark.parametrize(
    "kwargs",
    [{"floor": 0.0}, {"floor": 5.0, "ceiling": 1.0}],
    ids=["zero-floor", "floor-above-ceiling"],
)
def test_nonsense_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="floor <= ceiling"):
        RttEstimator(**kwargs)


def test_a_negative_round_trip_is_refused() -> None:
    est = RttEstimator()
    with pytest.raises(ValueError, match="negative"):
        est.sample(-0.1)


# -- a peer the node dials, driven by the test ---------------------------------------

Handler = Callable[[dict[str, Any]], list[bytes]]


class FakeServer:
    """A peer that a node dials: it does the handshake with its own node key, records
    every message, and answers what the test's handler says (nothing: the message
    was lost)."""

    def __init__(self, handler: Handler):
        self.key = SigningKey.from_seed(secrets.token_bytes(32))
        self.handler = handler
        self.received: list[dict[str, Any]] = []
        self.ws: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/xrpc/skyfed.peer.connect", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["t"] == t]

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        me = self.key.did_key()
        await ws.send_bytes(
            encode_message(
                "hello",
                v=1,
                node=me,
                url=None,
                challenge=secrets.token_bytes(32),
                caps=[],
                share=False,
            )
        )
        hello = decode_message((await ws.receive()).data)
        await ws.send_bytes(
            encode_message(
                "auth", sig=self.key.sign(auth_payload(hello["challenge"], me, hello["node"]))
            )
        )
        assert decode_message((await ws.receive()).data)["t"] == "auth"
        self.ws = ws
        async for frame in ws:
            msg = decode_message(frame.data)
            self.received.append(msg)
            for answer in self.handler(msg):
                await ws.send_bytes(answer)
        return ws


def _empty_server() -> Negentropy:
    vec = NegentropyStorageVector()
    vec.seal()
    return Negentropy(vec, 500_000)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    (n,) = await start_nodes(tmp_path, 1)
    try:
        yield n
    finally:
        await n.stop()


async def _dialled(node: Node, server: FakeServer) -> PeerLink:
    await server.start()
    node.federation.dial(server.url)
    did = server.key.did_key()

    async def linked() -> bool:
        return did in node.federation.links

    await until(linked)
    return node.federation.links[did]


async def test_a_swallowed_request_is_asked_again_and_answered_well_before_30s(
    node: Node,
) -> None:
    seen: list[int] = []

    def swallow_first(msg: dict[str, Any]) -> list[bytes]:
        if msg["t"] != "getident":
            return []
        seen.append(msg["rid"])
        if len(seen) == 1:
            return []  # lost on the way
        return [encode_message("ident", rid=msg["rid"], did=msg["did"], ops=[], handle=None)]

    server = FakeServer(swallow_first)
    try:
        peer = await _dialled(node, server)
        samples = peer.rtt.samples
        started = time.monotonic()
        async with asyncio.timeout(10):
            reply = await peer.request("getident", did="did:skyfed:" + "a" * 24)
        assert reply["t"] == "ident"
        assert time.monotonic() - started < 5  # the first wait is 2 s, not 30
        # Asked again under the same rid: whichever copy is answered will do.
        assert len(seen) == 2
        assert seen[0] == seen[1]
        assert peer.retries >= 1
        assert node.federation.retries >= 1
        # Karn's rule: an answer to a repeated request is no round-trip sample.
        assert peer.rtt.samples == samples
        # Operators see the retries: per link in listPeers, in all on /metrics.
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/xrpc/skyfed.node.listPeers") as resp:
                peers = await resp.json()
            async with http.get(node.url + "/metrics") as resp:
                metrics = await resp.text()
        assert peers["retries"] == node.federation.retries
        assert [p["retries"] for p in peers["peers"]] == [peer.retries]
        assert f"skyfed_peer_request_retries {float(node.federation.retries)}" in metrics
    finally:
        await server.stop()


async def test_a_request_nobody_answers_is_given_up_after_the_budget(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.net.federation as federation

    monkeypatch.setattr(federation, "_REQUEST_TIMEOUT", 3.5)
    asked: list[int] = []

    def black_hole(msg: dict[str, Any]) -> list[bytes]:
        if msg["t"] == "getident":
            asked.append(msg["rid"])
        return []

    server = FakeServer(black_hole)
    try:
        peer = await _dialled(node, server)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await peer.request("getident", did="did:skyfed:" + "a" * 24)
        assert 3.4 < time.monotonic() - started < 5
        assert len(asked) >= 2  # asked again within the budget (2 s, then 4 s wait)
        assert not peer.pending
    finally:
        await server.stop()


async def test_a_lost_negentropy_answer_restarts_the_session_and_a_late_one_is_ignored(
    node: Node,
) -> None:
    sessions: dict[int, Negentropy] = {}
    first: list[tuple[int, bytes]] = []

    def lose_the_first_session(msg: dict[str, Any]) -> list[bytes]:
        if msg["t"] == "getident":
            return [encode_message("ident", rid=msg["rid"], did=msg["did"], ops=[], handle=None)]
        if msg["t"] != "neg":
            return []
        sid = msg["sid"]
        server = sessions.setdefault(sid, _empty_server())
        answer = server.reconcile(msg["msg"])
        if not first or first[0][0] == sid:
            first.append((sid, answer))
            return []  # every answer in the first session is lost
        return [encode_message("neg", sid=sid, msg=answer)]

    server = FakeServer(lose_the_first_session)
    try:
        peer = await _dialled(node, server)
        # The node's own connect-time round hits the lost answer; wait for it to start
        # over with a new session and finish.
        async with asyncio.timeout(10):
            while len(sessions) < 2 or any(k < 0 for k in peer.neg_sessions):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll
        lost_sid = first[0][0]
        assert lost_sid in peer.abandoned
        assert peer.retries >= 1
        # The answer that was "lost" turns up late: it is not a session the peer opens.
        before = len(server.of_type("neg"))
        await server.send(encode_message("neg", sid=lost_sid, msg=first[0][1]))
        # A round trip later (a request answered after the stale neg) nothing came back.
        probe = await peer.request("getident", did="did:skyfed:" + "b" * 24)
        assert probe is not None
        assert lost_sid not in peer.neg_sessions
        assert [m for m in server.of_type("neg")[before:] if m["sid"] == lost_sid] == []
        assert peer.score == 0
    finally:
        await server.stop()


async def test_a_link_that_loses_everything_holds_up_no_other_links_rounds(
    tmp_path: Path,
) -> None:
    """b dials a black hole first, then a real node a; a's writes are not gossiped, so
    only b's periodic rounds with a can bring them. They must not wait on the black hole."""
    a, b = await start_nodes(tmp_path, 2)
    server = FakeServer(lambda msg: [])
    try:
        hole = await _dialled(b, server)
        async with Client(a.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await link([b, a], [(0, 1)])
            a.repos.on_commit = None  # no gossip from a from now on: rounds only

            async def holds_alice() -> bool:
                return await b.storage.get_head(alice.did) is not None

            await until(holds_alice)
            # The black hole's round is stuck waiting (restarting sessions) meanwhile.
            ref = await alice.post("found by reconciliation alone")
            rkey = ref.uri.rsplit("/", 1)[1]

            async def arrived() -> bool:
                row = await b.storage.get_record(alice.did, "app.bsky.feed.post", rkey)
                return row is not None

            await until(arrived, limit=10)
            assert any(k < 0 for k in hole.neg_sessions)  # still waiting on the hole
    finally:
        for n in (a, b):
            await n.stop()
        await server.stop()
