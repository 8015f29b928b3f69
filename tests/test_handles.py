"""Handles resolve only when their authority confirms them (issue 13, findings 1-2).

Each test plays an attacker against real nodes on 127.0.0.1: an identity anyone can
make, claiming a handle that is not theirs, handed to a node by ``submitOp``, by
``createAccount`` with a self-signed service token, or gossiped by a hostile peer.
The node's answers must keep naming the real owner, and a refused request must
leave nothing behind.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, XrpcError
from node.config import NodeConfig
from node.wiring import Node
from protocol.encoding import encode
from protocol.handles import HandleConfirmation
from protocol.identity import IdentityOp, did_for_genesis, resolve_log
from protocol.keys import SigningKey
from protocol.peerwire import encode_message
from protocol.serviceauth import make_service_token

from .test_cli import _env, new_account, ok, skyfed
from .test_federation import FakePeer, link, start_nodes, until

PASSWORD = "correct horse battery"
TOKEN = "handles-admin-token"
pytestmark = pytest.mark.timeout(120)


def new_key() -> SigningKey:
    return SigningKey.from_seed(secrets.token_bytes(32))


class Forger:
    """A self-made identity: a genesis op claiming ``handle`` and one update (so
    that ``submitOp`` has an op to judge against the genesis)."""

    def __init__(self, handle: str, *, below: str | None = None, endpoint: str = ""):
        # Ground until the DID sorts before ``below`` (the old tie break was the
        # lowest DID), within a bounded number of tries.
        for _ in range(500):
            self.rotation, self.signing = new_key(), new_key()
            self.genesis = IdentityOp.create(
                rotation_keys=[self.rotation.did_key()],
                signing_key=self.signing.did_key(),
                handle=handle,
                endpoint=endpoint or "https://forger.example",
                prev=None,
                signer=self.rotation,
            )
            self.did = did_for_genesis(self.genesis)
            if below is None or self.did < below:
                break
        else:  # pragma: no cover - 2^-500
            raise AssertionError("no DID below the target")
        state = resolve_log(self.did, [self.genesis.to_bytes()]).state
        self.update = IdentityOp.update(state, self.rotation, signing_key=new_key().did_key())

    @property
    def log(self) -> list[bytes]:
        return [self.genesis.to_bytes(), self.update.to_bytes()]

    def service_token(self, aud: str) -> str:
        return make_service_token(
            did=self.did,
            aud=aud,
            lxm="com.atproto.server.createAccount",
            key=self.rotation,
            now=int(time.time()),
            lifetime=120,
            jti=secrets.token_hex(16),
        )


async def snapshot(node: Node) -> tuple[object, ...]:
    """What a refused request must not change."""
    return (
        await node.storage.account_count(),
        await node.storage.seq_bounds(),
        await node.storage.read(lambda c: c.execute("SELECT COUNT(*) FROM identities").fetchone()),
        await node.storage.read(lambda c: c.execute("SELECT did, handle FROM accounts").fetchall()),
    )


@pytest.fixture
async def admin_node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(NodeConfig(data_dir=tmp_path / "node", port=0, admin_token=TOKEN))
    await node.start()
    yield node
    await node.stop()


async def test_a_self_made_identity_cannot_take_over_a_handle(admin_node: Node) -> None:
    node = admin_node
    async with Client(node.url) as alice, Client(node.url) as anyone:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.call(
            "com.atproto.repo.putRecord",
            data={
                "repo": alice.did,
                "collection": "app.bsky.actor.profile",
                "rkey": "self",
                "record": {"$type": "app.bsky.actor.profile", "displayName": "Real Alice"},
            },
        )
        forger = Forger("alice.skyfed.test", below=alice.did)
        assert forger.did < alice.did
        # The node takes the identity in (anyone may publish one) ...
        await anyone.submit_identity_op(
            forger.did, forger.update.to_bytes(), log=[forger.genesis.to_bytes()]
        )
        assert await node.storage.identity(forger.did) is not None

        # ... but every path that reads a handle still names alice.
        assert await anyone.resolve_handle("alice.skyfed.test") == alice.did
        profile = await anyone.profile("alice.skyfed.test")
        assert profile["did"] == alice.did
        assert profile["displayName"] == "Real Alice"
        assert (await anyone.profile(forger.did))["handle"] == "handle.invalid"
        described = await anyone.call(
            "com.atproto.repo.describeRepo", params={"repo": alice.did}, auth=None
        )
        assert (described["handle"], described["handleIsCorrect"]) == ("alice.skyfed.test", True)
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/profile/alice.skyfed.test") as resp:
                page = await resp.text()
            assert resp.status == 200
            assert alice.did in page
            assert forger.did not in page
            async with http.get(node.url + "/profile/" + forger.did) as resp:
                forged_page = await resp.text()
            assert "@handle.invalid" in forged_page
            assert "@alice.skyfed.test" not in forged_page

        # alice writes with repo = her handle.
        out = await alice.call(
            "com.atproto.repo.createRecord",
            data={
                "repo": "alice.skyfed.test",
                "collection": "app.bsky.feed.post",
                "record": {
                    "$type": "app.bsky.feed.post",
                    "text": "still mine",
                    "createdAt": "2026-12-01T00:00:00Z",
                },
            },
        )
        assert out["uri"].startswith(f"at://{alice.did}/")

        # The admin's takedown by handle lands on alice, not on the forger.
        down = await anyone.take_down("alice.skyfed.test", "test", admin_token=TOKEN)
        assert down["did"] == alice.did


async def test_admin_takedown_by_handle_from_the_shell_acts_on_the_owner(
    admin_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = admin_node
    spammer = await new_account(tmp_path, node, "spammer")
    owner = await node.storage.resolve_handle("spammer.skyfed.test")
    assert owner is not None
    forger = Forger("spammer.skyfed.test", below=owner)
    async with Client(node.url) as anyone:
        await anyone.submit_identity_op(
            forger.did, forger.update.to_bytes(), log=[forger.genesis.to_bytes()]
        )
    monkeypatch.setenv("SKYFED_ADMIN_TOKEN", TOKEN)
    ok(await skyfed(spammer, "admin", "takedown", "spammer.skyfed.test", "--reason", "spam"))
    listing = await node.storage.read(
        lambda c: c.execute("SELECT did FROM takedowns WHERE reversed_at IS NULL").fetchall()
    )
    assert listing == [(owner,)]


@pytest.mark.parametrize(
    ("handle", "error"),
    [
        ("support.skyfed.test", "HandleNotAvailable"),
        ("admin.skyfed.test", "HandleNotAvailable"),
        ("bsky.app", "UnsupportedDomain"),
        ("a.b.skyfed.test", "InvalidHandle"),
    ],
    ids=["support", "admin", "foreign", "two-labels"],
)
async def test_create_account_refuses_reserved_and_foreign_handles(
    node: Node, handle: str, error: str
) -> None:
    before = await snapshot(node)
    async with Client(node.url) as c:
        with pytest.raises(XrpcError) as err:
            await c.create_account(handle, PASSWORD)
    assert err.value.error == error
    assert await snapshot(node) == before


@pytest.mark.parametrize(
    ("handle", "error"),
    [("support.skyfed.test", "HandleNotAvailable"), ("bsky.app", "InvalidHandle")],
    ids=["support", "foreign"],
)
async def test_a_self_made_identity_with_a_self_signed_token_cannot_name_a_hosted_account(
    node: Node, handle: str, error: str
) -> None:
    forger = Forger(handle)
    before = await snapshot(node)
    async with Client(node.url) as c:
        with pytest.raises(XrpcError) as err:
            await c.create_account(
                handle,
                PASSWORD,
                did=forger.did,
                service_token=forger.service_token(node.node_did),
                identity_log=forger.log,
            )
    assert err.value.error == error
    assert await snapshot(node) == before
    assert await node.storage.identity_ops(forger.did) == []


async def test_a_refused_create_account_stores_nothing(node: Node) -> None:
    forger = Forger("mallory.skyfed.test")
    before = await snapshot(node)
    async with Client(node.url) as c:
        for token in (None, "not-a-token", Forger("x.skyfed.test").service_token(node.node_did)):
            with pytest.raises(XrpcError):
                await c.create_account(
                    "mallory.skyfed.test",
                    PASSWORD,
                    did=forger.did,
                    service_token=token,
                    identity_log=forger.log,
                )
            assert await node.storage.identity_ops(forger.did) == []
            assert await node.storage.identity(forger.did) is None
            assert await snapshot(node) == before
        # And an op that is refused does not leave the log it came with either.
        stranger = new_key()
        state = resolve_log(forger.did, [forger.genesis.to_bytes()]).state
        forged = IdentityOp.update(state, stranger, signing_key=stranger.did_key())
        with pytest.raises(XrpcError) as err:
            await c.submit_identity_op(
                forger.did, forged.to_bytes(), log=[forger.genesis.to_bytes()]
            )
        assert err.value.error == "InvalidSignature"
        assert await node.storage.identity_ops(forger.did) == []
        assert await snapshot(node) == before


async def test_the_same_request_with_the_real_token_is_accepted(node: Node) -> None:
    """The refusals above are about the handle and the token, not about moving in:
    a self-made identity with a free handle under the node's domain may move here."""
    forger = Forger("mallory.skyfed.test")
    async with Client(node.url) as c:
        session = await c.create_account(
            "mallory.skyfed.test",
            PASSWORD,
            did=forger.did,
            service_token=forger.service_token(node.node_did),
            identity_log=forger.log,
        )
        assert session.handle == "mallory.skyfed.test"
        assert await c.resolve_handle("mallory.skyfed.test") == forger.did


def _identity_push(did: str, ops: list[bytes], handle: bytes | None) -> bytes:
    body: dict[str, object] = {"did": did, "ops": ops}
    if handle is not None:
        body["handle"] = handle
    return encode_message(
        "push",
        id=IdentityOp.from_bytes(ops[-1]).cid.to_bytes(),
        kind="identity",
        data=encode(body),  # type: ignore[arg-type]
        round=0,
    )


async def dial_by_name(node: Node, target: Node) -> None:
    """``node`` dials ``target`` at ``http://localhost:<port>`` (a host name that
    names 127.0.0.1 without DNS) and completes the handshake there: ``target`` is
    then the node verified as serving handle domain ``.localhost`` for ``node``."""
    node.federation.dial(f"http://localhost:{target.port}")

    async def verified() -> bool:
        return target.node_did in node.federation.verified_node_keys("localhost")

    await until(verified)


async def test_a_gossiped_claim_on_another_nodes_domain_is_invalid_on_a_third_node(
    tmp_path: Path,
) -> None:
    a, b, c = [
        (await start_nodes(tmp_path / name, 1, handle_domains=(domain,)))[0]
        for name, domain in (("a", ".a.test"), ("b", ".localhost"), ("c", ".c.test"))
    ]
    try:
        # A and C each dialled B at the host of its handle domain.
        await dial_by_name(a, b)
        await dial_by_name(c, b)
        async with (
            Client(b.url) as bob,
            Client(a.url) as at_a,
            Client(c.url) as at_c,
            aiohttp.ClientSession() as http,
        ):
            await bob.create_account("bob.localhost", PASSWORD)

            async def everywhere() -> bool:
                found = [await n.storage.resolve_handle("bob.localhost") for n in (a, c)]
                return found == [bob.did, bob.did]

            await until(everywhere)  # a confirmed handle resolves across the network
            assert (await at_c.profile(bob.did))["handle"] == "bob.localhost"

            # A hostile peer of C gossips two identities claiming handles under B's
            # domain, one with a confirmation signed by its own key.
            peer_key = new_key()
            takeover = Forger("bob.localhost", below=bob.did)
            squat = Forger("support.localhost")
            peer = await FakePeer.connect(http, c, peer_key)
            try:
                for forger, handle in ((takeover, None), (squat, "support.localhost")):
                    conf = None
                    if handle is not None:
                        conf = HandleConfirmation.issue(handle, forger.did, peer_key).to_bytes()
                    await peer.ws.send_bytes(_identity_push(forger.did, forger.log, conf))

                    async def stored(did: str = forger.did) -> bool:
                        return await c.storage.identity(did) is not None

                    await until(stored)
                    assert await at_c.resolve_handle("bob.localhost") == bob.did
            finally:
                await peer.ws.close()
            assert await at_c.resolve_handle("bob.localhost") == bob.did
            with pytest.raises(XrpcError) as err:
                await at_c.resolve_handle("support.localhost")
            assert err.value.error == "HandleNotFound"
            for f in (takeover, squat):
                assert (await at_c.profile(f.did))["handle"] == "handle.invalid"
            assert (await at_a.profile(bob.did))["handle"] == "bob.localhost"
    finally:
        for n in (a, b, c):
            await n.stop()


async def test_a_hostile_peers_own_confirmation_names_nothing_and_pins_nothing(
    tmp_path: Path,
) -> None:
    """The attack of the review (issue 13 finding 1): a hostile peer gossips
    identities claiming ``bsky.app`` (a domain no node confirms), a handle under
    the domain of a node A has verified (``.localhost``, B), and one under a domain
    A has met no node of yet (``.c.test``), each with a confirmation signed by its
    own node key. None resolves, none pins the peer for its domain, and
    ``createAccount`` with the ``bsky.app`` identity and a self-signed token is
    refused and stores nothing. B's own user, confirmed by B, still resolves."""
    a, b = [
        (await start_nodes(tmp_path / name, 1, handle_domains=(domain,)))[0]
        for name, domain in (("a", ".a.test"), ("b", ".localhost"))
    ]
    try:
        await dial_by_name(a, b)
        async with (
            Client(b.url) as bob,
            Client(a.url) as at_a,
            aiohttp.ClientSession() as http,
        ):
            await bob.create_account("bob.localhost", PASSWORD)

            async def known() -> bool:
                return await a.storage.resolve_handle("bob.localhost") == bob.did

            await until(known)  # confirmed by the node A dialled at "localhost"

            peer_key = new_key()
            forgers = {h: Forger(h) for h in ("bsky.app", "alice.localhost", "carol.c.test")}
            peer = await FakePeer.connect(http, a, peer_key)
            try:
                for handle, forger in forgers.items():
                    conf = HandleConfirmation.issue(handle, forger.did, peer_key).to_bytes()
                    await peer.ws.send_bytes(_identity_push(forger.did, forger.log, conf))

                    async def stored(did: str = forger.did) -> bool:
                        return await a.storage.identity(did) is not None

                    await until(stored)
            finally:
                await peer.ws.close()
            for handle, forger in forgers.items():
                with pytest.raises(XrpcError) as err:
                    await at_a.resolve_handle(handle)
                assert err.value.error == "HandleNotFound", handle
                assert (await at_a.profile(forger.did))["handle"] == "handle.invalid"
                assert await a.storage.confirmed_handle(forger.did) is None

            # Nothing was pinned: a second stranger's confirmation for a handle under
            # the same domains is not believed either.
            other_key = new_key()
            later = Forger("dave.c.test")
            peer = await FakePeer.connect(http, a, other_key)
            try:
                conf = HandleConfirmation.issue("dave.c.test", later.did, other_key).to_bytes()
                await peer.ws.send_bytes(_identity_push(later.did, later.log, conf))

                async def later_stored() -> bool:
                    return await a.storage.identity(later.did) is not None

                await until(later_stored)
            finally:
                await peer.ws.close()
            assert (await at_a.profile(later.did))["handle"] == "handle.invalid"

            # The gossiped identity cannot become a hosted account named bsky.app.
            forger = forgers["bsky.app"]
            before = await snapshot(a)
            with pytest.raises(XrpcError) as err:
                await at_a.create_account(
                    "bsky.app",
                    PASSWORD,
                    did=forger.did,
                    service_token=forger.service_token(a.node_did),
                    identity_log=forger.log,
                )
            assert err.value.error == "InvalidHandle"
            assert await snapshot(a) == before
            assert await a.storage.account_by_did(forger.did) is None
            assert await at_a.resolve_handle("bob.localhost") == bob.did
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_shared_domain_keeps_the_first_confirmed_owner(tmp_path: Path) -> None:
    """Nodes that share a handle domain (the harness default) each confirm what they
    registered; a second node cannot register a handle the first one holds."""
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(1, 0)])
        async with Client(a.url) as alice, Client(b.url) as other:
            await alice.create_account("alice.skyfed.test", PASSWORD)

            async def known() -> bool:
                return await b.storage.resolve_handle("alice.skyfed.test") == alice.did

            await until(known)
            with pytest.raises(XrpcError) as err:
                await other.create_account("alice.skyfed.test", PASSWORD)
            assert err.value.error == "HandleNotAvailable"
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_handle_changed_by_the_owners_op_is_registered_and_travels(
    tmp_path: Path,
) -> None:
    a, b = [
        (await start_nodes(tmp_path / name, 1, handle_domains=(domain,)))[0]
        for name, domain in (("a", ".localhost"), ("b", ".b.test"))
    ]
    key = new_key()
    try:
        await dial_by_name(b, a)
        async with Client(a.url) as alice, Client(b.url) as at_b:
            await alice.create_account("alice.localhost", PASSWORD, recovery_key=key.did_key())

            async def resolves(handle: str, did: str | None) -> bool:
                found = [await n.storage.resolve_handle(handle) for n in (a, b)]
                return found == [did, did]

            await until(lambda: resolves("alice.localhost", alice.did))
            state = resolve_log(alice.did, await a.storage.identity_ops(alice.did)).state
            renamed = IdentityOp.update(state, key, handle="alice2.localhost")
            await alice.submit_identity_op(alice.did, renamed.to_bytes())
            await until(lambda: resolves("alice2.localhost", alice.did))
            assert await a.storage.resolve_handle("alice.localhost") is None
            assert (await at_b.profile(alice.did))["handle"] == "alice2.localhost"

            # A reserved name is not registered: the handle shows as invalid.
            state = resolve_log(alice.did, await a.storage.identity_ops(alice.did)).state
            support = IdentityOp.update(state, key, handle="support.localhost")
            await alice.submit_identity_op(alice.did, support.to_bytes())

            async def invalid() -> bool:
                profiles = [await c.profile(alice.did) for c in (alice, at_b)]
                return [p["handle"] for p in profiles] == ["handle.invalid"] * 2

            await until(invalid)
            assert await a.storage.resolve_handle("support.localhost") is None
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_pinned_issuer_is_believed_and_a_stranger_is_not(tmp_path: Path) -> None:
    """A node that pins B's key for ``.b.test`` ignores a stranger's confirmation for
    a handle under it even when the stranger is the first to send one."""
    (b,) = await start_nodes(tmp_path / "b", 1, handle_domains=(".b.test",))
    (c,) = await start_nodes(
        tmp_path / "c",
        1,
        handle_domains=(".c.test",),
        pinned_handle_issuers=(f"b.test={b.node_did}",),
    )
    try:
        async with Client(b.url) as bob, Client(c.url) as at_c, aiohttp.ClientSession() as http:
            await bob.create_account("bob.b.test", PASSWORD)
            peer_key = new_key()
            first = Forger("carol.b.test")
            conf = HandleConfirmation.issue("carol.b.test", first.did, peer_key).to_bytes()
            peer = await FakePeer.connect(http, c, peer_key)
            try:
                await peer.ws.send_bytes(_identity_push(first.did, first.log, conf))

                async def stored() -> bool:
                    return await c.storage.identity(first.did) is not None

                await until(stored)
            finally:
                await peer.ws.close()
            assert (await at_c.profile(first.did))["handle"] == "handle.invalid"

            await link([b, c], [(1, 0)])

            async def known() -> bool:
                return await c.storage.resolve_handle("bob.b.test") == bob.did

            await until(known)
            assert await c.storage.resolve_handle("carol.b.test") is None
    finally:
        for n in (b, c):
            await n.stop()


def test_a_bad_pin_is_refused_at_start() -> None:
    from node.accounts.handles import parse_pins

    key = new_key().did_key()
    assert parse_pins((f"b.test={key}", f".c.test = {key}")) == {".b.test": key, ".c.test": key}
    for bad in ("b.test", f"={key}", "b.test=did:web:b.test"):
        with pytest.raises(ValueError, match="pinned_handle_issuers"):
            parse_pins((bad,))


async def test_changed_handle_settings_rejudge_every_handle_at_start(tmp_path: Path) -> None:
    """A node that stops sharing its domain no longer resolves handles other nodes
    confirmed under it: the table is judged again under the new settings."""
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(1, 0)])
        async with Client(b.url) as bob:
            await bob.create_account("bob.skyfed.test", PASSWORD)

            async def known() -> bool:
                return await a.storage.resolve_handle("bob.skyfed.test") == bob.did

            await until(known)
        await a.stop()
        a = Node(a.config.replace(shared_handle_domains=()))
        await a.start()
        assert await a.storage.resolve_handle("bob.skyfed.test") is None
        async with Client(a.url) as anyone:
            assert (await anyone.profile(bob.did))["handle"] == "handle.invalid"
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_database_with_first_use_pins_drops_them_at_start(tmp_path: Path) -> None:
    """A database written before rule 2 holds issuers pinned on first use (a
    ``handle_issuers`` table) and handles bound through them: at start they are
    dropped and the handle is judged again (only operator pins count)."""
    (a,) = await start_nodes(tmp_path, 1, handle_domains=(".a.test",))
    forger = Forger("carol.c.test")
    peer_key = new_key()
    try:
        async with aiohttp.ClientSession() as http:
            peer = await FakePeer.connect(http, a, peer_key)
            try:
                conf = HandleConfirmation.issue("carol.c.test", forger.did, peer_key).to_bytes()
                await peer.ws.send_bytes(_identity_push(forger.did, forger.log, conf))

                async def stored() -> bool:
                    return await a.storage.identity(forger.did) is not None

                await until(stored)
            finally:
                await peer.ws.close()
        assert await a.storage.confirmed_handle(forger.did) is None
    finally:
        await a.stop()

    # What the old code left behind: the stranger pinned for .c.test, the handle
    # bound, and the old rule's fingerprint (without the rule version).
    old_print = b"\n".join(a.handles.fingerprint().split(b"\n")[:-1])
    db = sqlite3.connect(a.config.db_path)
    with db:
        db.execute("CREATE TABLE handle_issuers (domain TEXT PRIMARY KEY, issuer TEXT NOT NULL)")
        db.execute("INSERT INTO handle_issuers VALUES ('.c.test', ?)", (peer_key.did_key(),))
        db.execute(
            "INSERT OR REPLACE INTO handle_confirmations VALUES (?, ?, ?, ?)",
            (forger.did, "carol.c.test", peer_key.did_key(), conf),
        )
        db.execute("INSERT INTO handles VALUES ('carol.c.test', ?)", (forger.did,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'handle_rule'", (old_print,))
    db.close()

    a = Node(a.config)
    await a.start()
    try:
        assert await a.storage.resolve_handle("carol.c.test") is None
        tables = await a.storage.read(
            lambda c: c.execute(
                "SELECT name FROM sqlite_master WHERE name = 'handle_issuers'"
            ).fetchall()
        )
        assert tables == []
    finally:
        await a.stop()


async def test_tail_shows_only_a_handle_the_node_confirms(node: Node, tmp_path: Path) -> None:
    """Issue 13 finding 1 (low): ``skyfed tail`` named a commit's author by the handle
    its log claims. An account whose log now claims ``bsky.app`` (its owner's op;
    no node confirms it) shows as ``@handle.invalid``, not ``@bsky.app``."""
    key = new_key()
    async with Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        state = resolve_log(alice.did, await node.storage.identity_ops(alice.did)).state
        renamed = IdentityOp.update(state, key, handle="bsky.app")
        await alice.submit_identity_op(alice.did, renamed.to_bytes())

        async def invalid() -> bool:
            return (await alice.profile(alice.did))["handle"] == "handle.invalid"

        await until(invalid)
        cursor = node.firehose.last_seq
        await alice.post("who am I")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        "tail",
        "--cursor",
        str(cursor),
        "--node",
        node.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(tmp_path / "anon"),
    )
    assert proc.stdout is not None
    line = ""
    try:
        async with asyncio.timeout(20):
            while "#commit" not in line:
                line = (await proc.stdout.readline()).decode()
                assert line, "tail ended early"
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await proc.wait()
    assert "@handle.invalid" in line
    assert "bsky.app" not in line


async def test_a_failed_account_write_leaves_no_identity_behind(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """createAccount with ``did`` stores the identity log it brought, then the
    account. If the account write fails (here: made to fail; in life a concurrent
    createAccount taking the handle), the log of a DID the node did not hold must
    not stay behind."""
    forger = Forger("mallory.skyfed.test")
    real_rebind = node.handles.rebind

    def failing_rebind(conn: sqlite3.Connection, did: str) -> None:
        if (
            did == forger.did
            and conn.execute("SELECT 1 FROM accounts WHERE did = ?", (did,)).fetchone()
        ):
            raise sqlite3.IntegrityError("UNIQUE constraint failed: accounts.handle")
        real_rebind(conn, did)

    monkeypatch.setattr(node.handles, "rebind", failing_rebind)
    before = await node.storage.account_count()
    async with Client(node.url) as c:
        with pytest.raises(XrpcError):
            await c.create_account(
                "mallory.skyfed.test",
                PASSWORD,
                did=forger.did,
                service_token=forger.service_token(node.node_did),
                identity_log=forger.log,
            )
    assert await node.storage.account_count() == before
    assert await node.storage.identity(forger.did) is None
    assert await node.storage.identity_ops(forger.did) == []
    assert await node.storage.resolve_handle("mallory.skyfed.test") is None
