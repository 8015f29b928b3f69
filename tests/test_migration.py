"""Moving an account between nodes, with its old node's help and without it.

The DID does not change, so follows, likes and replies that name it keep working;
the new node imports the repo, an identity op points the account at it with its new
signing key, and its next commit (a higher rev) is signed by that key. The old node,
on seeing the op, stops writing for the account, and nobody accepts what it still
signs with the old key.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, MigrationError, XrpcError, migrate_account
from node.wiring import Node
from protocol.car import read_car
from protocol.commit import Commit
from protocol.identity import IdentityOp, IdentityState, resolve_log
from protocol.keys import SigningKey
from protocol.moderation import ModerationPrefs
from protocol.serviceauth import make_service_token

from .test_federation import PASSWORD, FakePeer, all_agree, link, start_nodes, until
from .test_rotation import _identity_push, push_refused, signed_by

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def new_key() -> SigningKey:
    return SigningKey.from_seed(secrets.token_bytes(32))


async def state_at(node: Node, did: str) -> IdentityState:
    return resolve_log(did, await node.storage.identity_ops(did)).state


async def points_at(nodes: list[Node], did: str, home: Node) -> bool:
    for n in nodes:
        ops = await n.storage.identity_ops(did)
        if not ops or resolve_log(did, ops).state.endpoint != home.url:
            return False
    return True


async def has_post(client: Client, uri: str, *, timeline: bool = True) -> bool:
    page = await (client.timeline() if timeline else client.latest())
    return any(item["post"]["uri"] == uri for item in page["feed"])


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path, 3)
    try:
        await link(nodes, [(1, 0), (2, 1), (2, 0)])
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_migration_with_the_old_nodes_help(three: list[Node]) -> None:
    a, b, c = three
    async with (
        Client(a.url) as alice,
        Client(b.url) as moved,
        Client(c.url) as bob,
        aiohttp.ClientSession() as http,
    ):
        # No rotation key of her own: the old node signs the op.
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        did = alice.did
        await bob.follow(did)
        first = await alice.post("posted at a")
        await until(lambda: all_agree(three, 2))
        row = await a.storage.account_by_did(did)
        assert row is not None
        a_rotation = SigningKey.from_str(row.rotation_key)
        old_signing = (await state_at(a, did)).signing_key

        session = await migrate_account(moved, did, PASSWORD, old=alice)
        assert session.did == did

        await until(lambda: points_at(three, did, b))
        state = await state_at(c, did)
        assert state.handle == "alice.skyfed.test"
        assert state.signing_key != old_signing
        assert a_rotation.did_key() not in state.rotation_keys
        # The old node stopped writing for her.
        with pytest.raises(XrpcError) as err:
            await alice.post("still at a?")
        assert err.value.error == "AccountDeactivated"
        assert (await alice.account_status())["activated"] is False
        # The new node writes, under its own key, with a higher rev.
        second = await moved.post("posted at b")
        roots, blocks = read_car(await moved.export_repo(did))
        head = Commit.from_bytes(blocks[roots[0]])
        assert signed_by(head, state.signing_key)
        await until(lambda: has_post(bob, second.uri))
        assert await has_post(bob, first.uri)
        for n in three:
            async with Client(n.url) as anyone:
                assert await anyone.resolve_handle("alice.skyfed.test") == did
        assert (await bob.verify_record(first.uri)).cid == first.cid

        # The old node's rotation key was dropped: an op it signs to take the account
        # back is not signed by a current rotation key, directly or by gossip.
        back = IdentityOp.update(state, a_rotation, endpoint=a.url, signing_key=old_signing)
        with pytest.raises(XrpcError) as err:
            await bob.submit_identity_op(did, back.to_bytes())
        assert err.value.error == "InvalidSignature"
        ops = await c.storage.identity_ops(did)
        await push_refused(http, c, did, [*ops, back.to_bytes()], back.cid.to_bytes())
        assert await c.storage.identity_ops(did) == ops
        assert (await state_at(c, did)).endpoint == b.url

        # And back home, with B's help this time: A takes its old row over.
        async with Client(a.url) as home:
            await migrate_account(
                home, did, "a new password here", old=moved, old_password=PASSWORD
            )
            await until(lambda: points_at(three, did, a))
            third = await home.post("home again")
            with pytest.raises(XrpcError) as err:
                await moved.post("still at b?")
            assert err.value.error == "AccountDeactivated"
            await until(lambda: has_post(bob, third.uri))
            with pytest.raises(XrpcError) as err:
                await alice.post("with the old session")  # revoked when the row was retaken
            assert err.value.error == "InvalidToken"


async def test_migration_without_the_old_node_keeps_the_conversation(
    three: list[Node],
) -> None:
    """A stopped; alice moves to B with her own rotation key; followers on B and C see
    her new post next to the old ones, likes and replies; what A signs afterwards with
    the old key is refused by B and C."""
    a, b, c = three
    key = new_key()
    async with (
        Client(a.url) as alice,
        Client(b.url) as bob,
        Client(c.url) as carol,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await carol.create_account("carol.skyfed.test", PASSWORD)
        did = alice.did
        await bob.follow(did)
        await carol.follow(did)
        first = await alice.post("before the move")
        await until(lambda: all_agree(three, 3))
        await bob.like(first)
        reply = await carol.post("a reply from c", reply_to=first)
        await until(lambda: all_agree(three, 3))
        old_signing = (await state_at(a, did)).signing_key

        await a.stop()
        async with Client(b.url) as moved:
            await migrate_account(moved, did, PASSWORD, rotation_key=key)
            await until(lambda: points_at([b, c], did, b))
            new_signing = (await state_at(b, did)).signing_key
            assert new_signing != old_signing
            assert (await state_at(b, did)).rotation_keys[0] == key.did_key()
            second = await moved.post("after the move, from b")

        for follower in (bob, carol):
            await until(lambda f=follower: has_post(f, second.uri))  # type: ignore[misc]
            assert await has_post(follower, first.uri)
        thread = await carol.thread(first.uri)
        assert [r["post"]["uri"] for r in thread["thread"]["replies"]] == [reply.uri]
        assert thread["thread"]["post"]["likeCount"] == 1
        likes = await bob.likes(first.uri)
        assert [like["actor"]["did"] for like in likes["likes"]] == [bob.did]
        for reader in (bob, carol):
            assert await reader.resolve_handle("alice.skyfed.test") == did
            profile = await reader.profile("alice.skyfed.test")
            assert profile["did"] == did
            assert profile["followersCount"] == 2
            assert (await reader.verify_record(second.uri)).cid == second.cid

        # A comes back, not knowing: it still signs for alice with the old key.
        a2 = Node(a.config)
        await a2.start()
        try:
            async with Client(a2.url) as stale:
                await stale.login("alice.skyfed.test", PASSWORD)
                rogue = await stale.post("signed by the old key at a")
                held = {n.node_did: await n.storage.get_head(did) for n in (b, c)}
                rejected = [n.federation.rejected for n in (b, c)]
                await link([a2, b, c], [(0, 1), (0, 2)])

                async def a_learned() -> bool:
                    return (await a2.portability.deactivation(did)) is not None

                async def refused() -> bool:
                    pairs = zip((b, c), rejected, strict=True)
                    return all(n.federation.rejected > r for n, r in pairs)

                await until(a_learned)
                await until(refused)
                with pytest.raises(XrpcError) as err:
                    await stale.post("again")
                assert err.value.error == "AccountDeactivated"
            for n in (b, c):
                assert await n.storage.get_head(did) == held[n.node_did]
                rkey = rogue.uri.rsplit("/", 1)[1]
                assert await n.storage.get_record(did, "app.bsky.feed.post", rkey) is None
                assert (await state_at(n, did)).signing_key == new_signing
        finally:
            await a2.stop()


async def test_migration_while_the_old_node_refuses(three: list[Node]) -> None:
    """A keeps running but is not asked (or would refuse): the user's rotation key and
    an export made earlier suffice, and A stops writing for the account when the op
    reaches it."""
    a, b, _c = three
    key = new_key()
    async with Client(a.url) as alice, Client(b.url) as moved:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        did = alice.did
        car = await alice.export_repo()  # an export made earlier, kept by the user
        await alice.post("made after the export")
        await until(lambda: all_agree(three, 1))
        await migrate_account(moved, did, PASSWORD, rotation_key=key, car=car)
        await until(lambda: points_at(three, did, b))

        async def a_stopped_writing() -> bool:
            return (await a.portability.deactivation(did)) is not None

        await until(a_stopped_writing)
        with pytest.raises(XrpcError) as err:
            await alice.post("at a")
        assert err.value.error == "AccountDeactivated"
        # B kept its newer replica over the older export: nothing was lost.
        got = await moved.list_records(did, "app.bsky.feed.post")
        assert [r["value"]["text"] for r in got["records"]] == ["made after the export"]
        await moved.post("at b")
        await until(lambda: all_agree(three, 1))


async def test_migration_needs_proof_of_control(three: list[Node]) -> None:
    a, b, _c = three
    async with Client(a.url) as alice, Client(b.url) as thief:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        did = alice.did
        await until(lambda: all_agree(three, 1))
        # No local rotation key and no old node: nothing to sign with.
        with pytest.raises(MigrationError):
            await migrate_account(thief, did, PASSWORD)
        # A token signed by a stranger's key does not open the account at B.
        stranger = new_key()
        token = make_service_token(
            did=did,
            aud=b.node_did,
            lxm="com.atproto.server.createAccount",
            key=stranger,
            now=int(time.time()),
            lifetime=60,
            jti="x",
        )
        with pytest.raises(XrpcError) as err:
            await thief.create_account("alice.skyfed.test", PASSWORD, did=did, service_token=token)
        assert err.value.error == "InvalidToken"
        assert err.value.status == 401
        # A token from alice's home for another node is refused too.
        other = await alice.service_auth(a.node_did, "com.atproto.server.createAccount")
        with pytest.raises(XrpcError) as err:
            await thief.create_account("alice.skyfed.test", PASSWORD, did=did, service_token=other)
        assert err.value.error == "InvalidToken"
        assert await b.storage.account_by_did(did) is None
        assert (await state_at(b, did)).endpoint == a.url


async def test_the_move_account_example_tells_the_story() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/move_account.py",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "node A stops." in text
    assert "alice moved to node B" in text
    for reader in ("bob", "carol"):
        section = text.split(f"{reader}'s timeline:")[1]
        assert "@alice.skyfed.test: Hello from node A!   (likes 1, replies 1)" in section
        assert "@alice.skyfed.test: Hello again, now from node B" in section
    assert "alice's old post still verifies" in text


async def test_a_moving_account_keeps_its_handle_whatever_the_new_nodes_domains(
    tmp_path: Path,
) -> None:
    (a,) = await start_nodes(tmp_path / "a", 1)
    (b,) = await start_nodes(tmp_path / "b", 1, handle_domains=(".b.test",))
    try:
        await link([a, b], [(1, 0)])
        async with Client(a.url) as alice, Client(b.url) as moved:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            with pytest.raises(XrpcError) as err:
                await moved.create_account("carol.skyfed.test", PASSWORD)
            assert err.value.error == "UnsupportedDomain"
            await until(lambda: all_agree([a, b], 1))
            await migrate_account(moved, alice.did, PASSWORD, old=alice)
            assert moved.session is not None
            assert moved.session.handle == "alice.skyfed.test"
            await moved.post("kept my handle")
            assert await moved.resolve_handle("alice.skyfed.test") == alice.did
            await until(lambda: points_at([a, b], alice.did, b))
            assert await alice.resolve_handle("alice.skyfed.test") == alice.did
    finally:
        await a.stop()
        await b.stop()


async def test_after_a_takedown_the_account_moves_without_the_nodes_help(tmp_path: Path) -> None:
    """The issue's story: A's operator takes alice down; her posts stay readable via B
    and C; she moves to B with her own rotation key (A refuses everything for her) and
    keeps posting; her followers on B and C see it; A still refuses her. Meanwhile a
    labeler on B labels a spam post; a reader on C who subscribes to that labeler no
    longer sees it, while carol (no subscription) still does."""
    token = "admin-token-for-the-story"
    nodes = await start_nodes(tmp_path, 3, admin_token=token)
    a, b, c = nodes
    key = new_key()
    try:
        await link(nodes, [(1, 0), (2, 1), (2, 0)])
        async with (
            Client(a.url) as alice,
            Client(a.url) as admin,
            Client(b.url) as bob,
            Client(c.url) as carol,
            Client(b.url) as labeler,
            Client(c.url) as spammer,
            Client(c.url) as dave,
        ):
            await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
            await bob.create_account("bob.skyfed.test", PASSWORD)
            await carol.create_account("carol.skyfed.test", PASSWORD)
            await labeler.create_account("labeler.skyfed.test", PASSWORD)
            await spammer.create_account("spammer.skyfed.test", PASSWORD)
            await dave.create_account("dave.skyfed.test", PASSWORD)
            did = alice.did
            await bob.follow(did)
            await carol.follow(did)
            await carol.follow(spammer.did)
            await dave.follow(spammer.did)
            first = await alice.post("before the takedown")
            spam = await spammer.post("BUY CHEAP FOLLOWERS NOW")
            await until(lambda: all_agree(nodes, 6))
            await admin.take_down(did, "policy (ticket 7)", admin_token=token)
            with pytest.raises(XrpcError):
                await alice.post("at a, taken down")
            with pytest.raises(XrpcError):
                await alice.service_auth(b.node_did, "com.atproto.server.createAccount")
            assert await has_post(bob, first.uri)

            async with Client(b.url) as moved:
                await migrate_account(moved, did, PASSWORD, rotation_key=key)
                second = await moved.post("after the move, from b")
            for follower in (bob, carol):
                await until(lambda f=follower: has_post(f, second.uri))  # type: ignore[misc]
                assert await has_post(follower, first.uri)
            await until(lambda: points_at([b, c], did, b))

            # The labeler on B labels the spam post; the label reaches C by gossip.
            await labeler.label(spam.uri, "spam")

            async def labelled_for_dave() -> bool:
                page = await dave.timeline()
                return any(i["post"]["labels"] for i in page["feed"])

            dave.moderation = ModerationPrefs().subscribe(labeler.did)
            await until(labelled_for_dave)
            dave_sees = [i["post"] for i in (await dave.timeline())["feed"]]
            assert [p["uri"] for p in dave_sees if not dave.moderate(p).hidden] == []
            assert [dave.moderate(p).hidden for p in dave_sees] == [True]
            carol_sees = [i["post"] for i in (await carol.timeline())["feed"]]
            assert spam.uri in [p["uri"] for p in carol_sees]
            assert not any(carol.moderate(p).hidden for p in carol_sees)
            async with Client(a.url) as reader_a:
                latest = [i["post"]["uri"] for i in (await reader_a.latest())["feed"]]
                assert second.uri not in latest
                assert first.uri not in latest
    finally:
        for node in nodes:
            await node.stop()


# -- the security review's findings (issue 7) -------------------------------------------


async def test_the_old_home_cannot_take_back_a_move_it_signed(
    three: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    """An account made without a user rotation key (as every SDK createAccount is)
    moves with A's help; A's operator then signs a competing child of the genesis op
    with the same key, its CID ground to sort first. Nodes that hold the log refuse
    it (first seen), directly and by gossip, and do not blame the peer that relays it."""
    a, b, c = three
    async with (
        Client(a.url) as alice,
        Client(b.url) as moved,
        Client(c.url) as at_c,
        aiohttp.ClientSession() as http,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD)
        did = alice.did
        await until(lambda: all_agree(three, 1))
        genesis_op = (await a.storage.identity_ops(did))[0]
        row = await a.storage.account_by_did(did)
        assert row is not None
        a_rotation = SigningKey.from_str(row.rotation_key)
        with caplog.at_level("WARNING", logger="node.client"):
            await migrate_account(moved, did, PASSWORD, old=alice)
        assert "no rotation key of its own" in caplog.text  # the user is told
        await until(lambda: points_at(three, did, b))
        ops = await c.storage.identity_ops(did)
        move_cid = resolve_log(did, ops).chain[1]
        g_state = resolve_log(did, [genesis_op]).state
        for i in range(128):
            evil = IdentityOp.update(g_state, a_rotation, handle=f"grind{i}.skyfed.test")
            if evil.cid.to_bytes() < move_cid.to_bytes():
                break
        assert resolve_log(did, [*ops, evil.to_bytes()]).state.endpoint == a.url  # by CID

        with pytest.raises(XrpcError) as err:
            await at_c.submit_identity_op(did, evil.to_bytes())
        assert err.value.error == "InvalidIdentity"
        assert "does not outrank" in err.value.message

        peer = await FakePeer.connect(http, c)
        try:
            push_id = evil.cid.to_bytes()
            await peer.ws.send_bytes(_identity_push(did, [genesis_op, evil.to_bytes()], push_id))

            async def judged() -> bool:
                return c.federation.plumtree.has_seen(push_id)

            await until(judged)
            link_ = c.federation.links[peer.key.did_key()]
            assert link_.score == 0  # a relayed fork is not a forgery
        finally:
            await peer.ws.close()
        # A whole log merged from a peer (a getident answer, reconciliation) is
        # filtered op by op: the fork stays out, the rest merges as before.
        assert not await c.federation.ingest_identity(did, [*ops, evil.to_bytes()])
        assert await c.storage.identity_ops(did) == ops
        assert (await state_at(c, did)).endpoint == b.url
        assert (did, evil.cid) in c.portability.refused_forks  # kept as evidence only


async def test_a_stolen_session_cannot_hand_the_did_away(three: list[Node]) -> None:
    a, _b, _c = three
    async with Client(a.url) as alice, Client(a.url) as thief:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        thief.session = alice.session  # only the access token was stolen
        stranger = new_key()
        services = {
            "atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://x.example"}
        }
        for password in (None, "not the password"):
            with pytest.raises(XrpcError) as err:
                await thief.sign_identity_op(
                    password=password, rotationKeys=[stranger.did_key()], services=services
                )
            assert err.value.error == "AuthenticationRequired"
            assert err.value.status == 401
            with pytest.raises(XrpcError):
                await thief.sign_identity_op(
                    password=password, verificationMethods={"atproto": stranger.did_key()}
                )
        # A rotation to a key the node reserved hands nothing away: no password needed.
        reserved = await thief.reserve_signing_key()
        op = await thief.sign_identity_op(verificationMethods={"atproto": reserved})
        assert IdentityOp.from_bytes(op).signing_key == reserved
        # The owner, who knows the password, may sign anything.
        op = await alice.sign_identity_op(password=PASSWORD, services=services)
        assert IdentityOp.from_bytes(op).endpoint == "https://x.example"
        state = await state_at(a, alice.did)
        assert state.endpoint == a.url  # nothing was submitted


async def test_a_service_token_cannot_be_replayed(three: list[Node]) -> None:
    a, b, _c = three
    async with Client(a.url) as alice, Client(b.url) as at_b, Client(b.url) as replayer:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        did = alice.did
        await until(lambda: all_agree(three, 1))
        token = await alice.service_auth(b.node_did, "com.atproto.server.createAccount")
        await at_b.create_account("alice.skyfed.test", PASSWORD, did=did, service_token=token)
        first = await b.storage.account_by_did(did)
        with pytest.raises(XrpcError) as err:
            await replayer.create_account(
                "alice.skyfed.test", "the replayer's password", did=did, service_token=token
            )
        assert err.value.error == "InvalidToken"
        assert "already used" in err.value.message
        assert await b.storage.account_by_did(did) == first


async def test_a_node_that_took_an_account_down_does_not_take_it_in(tmp_path: Path) -> None:
    token = "admin-token-for-the-review-0123456789"
    a, b = await start_nodes(tmp_path, 2, admin_token=token)
    try:
        await link([a, b], [(1, 0)])
        async with Client(b.url) as alice, Client(a.url) as admin, Client(a.url) as at_a:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await until(lambda: all_agree([a, b], 1))
            await admin.take_down(alice.did, "not welcome", admin_token=token, scopes=["host"])
            service = await alice.service_auth(a.node_did, "com.atproto.server.createAccount")
            with pytest.raises(XrpcError) as err:
                await at_a.create_account(
                    "alice.skyfed.test", PASSWORD, did=alice.did, service_token=service
                )
            assert err.value.error == "AccountTakedown"
            assert await a.storage.account_by_did(alice.did) is None
            assert at_a.session is None
    finally:
        await a.stop()
        await b.stop()


async def test_imports_are_bounded_one_at_a_time_and_rate_limited(tmp_path: Path) -> None:
    (n,) = await start_nodes(tmp_path, 1, max_import_bytes=1 << 16, imports_per_hour=2)
    n.portability.import_wait = 0.2
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"\0" * 1024
        await release.wait()

    try:
        async with (
            Client(n.url) as eve,
            Client(n.url) as bob,
            aiohttp.ClientSession() as http,
        ):
            await eve.create_account("eve.skyfed.test", PASSWORD)
            await bob.create_account("bob.skyfed.test", PASSWORD)
            assert eve.session is not None
            headers = {
                "Authorization": f"Bearer {eve.session.access_jwt}",
                "Content-Type": "application/vnd.ipld.car",
            }
            url = f"{n.url}/xrpc/com.atproto.repo.importRepo"
            # Over the cap: refused from its declared length, before it is read.
            with pytest.raises(XrpcError) as err:
                await bob.import_repo(b"\0" * ((1 << 16) + 1))
            assert err.value.status == 413

            # One import at a time: a second (any account's) waits briefly, then 429.
            async def slow_import() -> int:
                async with http.post(url, data=slow_body(), headers=headers) as r:
                    return r.status

            first = asyncio.create_task(slow_import())
            try:

                async def busy() -> bool:
                    return n.portability.import_slot.locked()

                await until(busy)
                with pytest.raises(XrpcError) as err:
                    await bob.import_repo(b"\0" * 16)
                assert (err.value.status, err.value.error) == (429, "RateLimitExceeded")
                assert "another repository import" in err.value.message
            finally:
                release.set()
                assert await first == 400  # garbage, judged once it arrived
            # And an account may start only so many per hour (eve: 2).
            with pytest.raises(XrpcError) as err:
                await eve.import_repo(b"\0" * 16)
            assert err.value.status == 400  # the second: judged
            with pytest.raises(XrpcError) as err:
                await eve.import_repo(b"\0" * 16)
            assert (err.value.status, err.value.error) == (429, "RateLimitExceeded")
    finally:
        await n.stop()
