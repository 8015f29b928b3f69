"""The node's log: structured lines (text or JSON) for links, reconciliation,
takedowns, refused peers and rate-limit hits, bounded where a remote party causes them."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, XrpcError
from node.cluster.process import node_process
from node.config import NodeConfig
from node.logs import DEFAULT_BURST, JsonFormatter, LogLimiter, TextFormatter, fields
from node.wiring import Node
from protocol.identity import IdentityOp, did_for_genesis, resolve_log
from protocol.keys import SigningKey

from .test_federation import link, start_nodes, until

PASSWORD = "correct horse battery staple"


def _record(msg: str, **values: object) -> logging.LogRecord:
    record = logging.LogRecord("skyfed.test", logging.INFO, __file__, 1, msg, (), None)
    for k, v in fields(**values).items():
        setattr(record, k, v)
    return record


def test_text_format_is_key_value_and_quotes_spaces() -> None:
    line = TextFormatter().format(_record("peer linked", peer="did:key:z6Mk", why="a b"))
    assert line.endswith(' INFO  skyfed.test peer linked peer=did:key:z6Mk why="a b"')
    # A peer's text cannot start a line of its own (forge a log entry).
    forged = TextFormatter().format(_record("peer refused", why="x\n2026 INFO fake"))
    assert "\n" not in forged
    assert forged.endswith('why="x\\n2026 INFO fake"')


def test_json_format_is_one_object_per_line() -> None:
    line = JsonFormatter().format(_record("reconciled", peer="did:key:z", offered=3))
    obj = json.loads(line)
    assert obj["msg"] == "reconciled"
    assert obj["level"] == "info"
    assert (obj["peer"], obj["offered"]) == ("did:key:z", 3)
    assert obj["ts"].endswith("Z")


def test_log_limiter_writes_a_burst_then_one_summary_per_interval() -> None:
    out = io.StringIO()
    logger = logging.getLogger("skyfed.test.limiter")
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    now = [0.0]
    limiter = LogLimiter(logger, burst=3, interval=60.0, clock=lambda: now[0])
    try:
        # A hostile peer: 10,000 refusals in one interval ...
        written = sum(
            limiter.log("refused", logging.WARNING, "peer refused", peer=f"did:key:{i}")
            for i in range(10_000)
        )
        assert written == 3
        # ... which do not silence another kind ...
        assert limiter.log("link", logging.INFO, "peer linked", peer="did:key:ok")
        # ... and the next one after the interval brings one summary line.
        now[0] = 61.0
        limiter.log("refused", logging.WARNING, "peer refused", peer="did:key:last")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 6
    assert lines[3]["msg"] == "peer linked"
    summary = lines[4]
    assert summary["msg"] == "suppressed 9997 log lines"
    assert (summary["kind"], summary["suppressed"]) == ("refused", 9997)
    assert lines[5]["peer"] == "did:key:last"


async def test_links_reconciliation_and_refusals_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skyfed")
    nodes = await start_nodes(tmp_path, 2)
    try:
        async with Client(nodes[0].url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await alice.post("hello")
            await link(nodes, [(1, 0)])

            def logged(msg: str, **want: object) -> bool:
                return any(
                    r.getMessage() == msg
                    and all(getattr(r, "skyfed_fields", {}).get(k) == v for k, v in want.items())
                    for r in caplog.records
                )

            async def linked_and_reconciled() -> bool:
                return logged("peer linked", peer=nodes[0].node_did, direction="out") and logged(
                    "reconciled", peer=nodes[0].node_did
                )

            await until(linked_and_reconciled)
            assert logged("peer linked", peer=nodes[1].node_did, direction="in")

            # A peer that keeps misbehaving: bounded lines, never one per message.
            fed = nodes[0].federation
            peer_link = fed.links[nodes[1].node_did]
            before = len(caplog.records)
            for _ in range(500):
                fed.penalize(peer_link, 0, "rejected commit: forged")
            refused = [r for r in caplog.records[before:] if r.getMessage() == "peer refused"]
            assert 0 < len(refused) <= DEFAULT_BURST

            await nodes[1].stop()

            async def unlinked() -> bool:
                return logged("peer unlinked", peer=nodes[1].node_did)

            await until(unlinked)
    finally:
        for node in nodes:
            await node.stop()


async def test_a_flood_of_refused_inbound_links_is_logged_in_bounded_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skyfed")
    (node,) = await start_nodes(tmp_path, 1)
    try:
        node.federation.max_inbound = 0  # every inbound link is refused
        flood = 3 * DEFAULT_BURST
        async with aiohttp.ClientSession() as http:
            for _ in range(flood):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await http.ws_connect(node.url + "/xrpc/skyfed.peer.connect")
                assert err.value.status == 429
        assert node.federation.links_refused == flood
        refused = [r for r in caplog.records if r.getMessage().startswith("inbound peer link")]
        assert 0 < len(refused) <= DEFAULT_BURST + 1
    finally:
        await node.stop()


async def test_json_log_of_a_node_process_has_links_takedowns_and_rate_limits(
    tmp_path: Path,
) -> None:
    admin = "t" * 40
    async with (
        node_process(
            tmp_path / "a",
            settings={"admin_token": admin, "auth_rate": 0.01, "auth_burst": 2},
            args=["--log-format", "json"],
        ) as a,
        node_process(tmp_path / "b", args=["--peer", a.url, "--log-format", "json"]) as b,
        Client(a.url) as client,
    ):
        await client.create_account("mallory.skyfed.test", PASSWORD)

        def lines() -> list[dict[str, object]]:
            return [json.loads(x) for x in a.log_path.read_text().splitlines() if x]

        async def linked() -> bool:
            return any(x["msg"] == "peer linked" for x in lines())

        await until(linked)
        did = client.did
        await client.call(
            "skyfed.admin.takedown",
            data={"did": did, "reason": "spam"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        # 30 failed logins from one address: rate-limited after the burst of 2.
        limited = 0
        for _ in range(30):
            try:
                await client.login("mallory.skyfed.test", "wrong")
            except XrpcError as e:
                limited += e.error == "RateLimitExceeded"
        assert limited > DEFAULT_BURST
        await b.stop()

        async def unlinked() -> bool:
            return any(x["msg"] == "peer unlinked" for x in lines())

        await until(unlinked)
    got = lines()
    assert all({"ts", "level", "logger", "msg"} <= set(x) for x in got)
    hits = [x for x in got if x["msg"] == "rate limited"]
    assert 0 < len(hits) <= DEFAULT_BURST
    assert hits[0]["nsid"] == "com.atproto.server.createSession"
    (takedown,) = [x for x in got if x["msg"] == "takedown"]
    assert (takedown["did"], takedown["reason"], takedown["level"]) == (did, "spam", "warning")


async def test_a_flood_of_refused_identity_forks_is_logged_in_bounded_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The peer chooses the forks it sends: one WARNING per refused fork would let it
    write the log at will."""
    caplog.set_level(logging.INFO, logger="skyfed")
    owner = SigningKey.from_seed(bytes(32))
    g = IdentityOp.create(
        [owner.did_key()], owner.did_key(), "a.example.com", "http://127.0.0.1:1", None, owner
    )
    did = did_for_genesis(g)
    first = resolve_log(did, [g.to_bytes()]).state
    held = [g.to_bytes(), IdentityOp.update(first, owner, handle="b.example.com").to_bytes()]
    # Siblings of the held second op, by a key of the same rank: each one refused.
    forks = [
        IdentityOp.update(first, owner, handle=f"fork{i}.example.com").to_bytes()
        for i in range(3 * DEFAULT_BURST)
    ]
    node = Node(NodeConfig(data_dir=tmp_path / "node", port=0))
    assert node.portability.admit(did, held, [*held, *forks]) == []
    assert len(node.portability.refused_forks) == len(forks)
    refused = [r for r in caplog.records if "refused an identity op" in r.getMessage()]
    assert 0 < len(refused) <= DEFAULT_BURST + 1
