"""Key rotation: an identity op signed by a rotation key replaces the signing key.

The repo continues under the new key (its head is re-signed at once, history keeps
verifying), and every node refuses commits signed by the old key afterwards, even
from the account's own old node. Forged and replayed ops are refused, whether handed
to a node directly or gossiped.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, XrpcError, rotate_signing_key
from node.config import NodeConfig
from node.wiring import Node
from protocol.car import read_car
from protocol.commit import Commit
from protocol.encoding import encode
from protocol.errors import InvalidSignature
from protocol.identity import IdentityOp, IdentityState, resolve_log
from protocol.keys import SigningKey, verify_key
from protocol.repo import Write
from protocol.syntax import TidClock

from .pg import RawDb
from .test_federation import PASSWORD, FakePeer, all_agree, link, start_nodes, until

pytestmark = pytest.mark.timeout(90)


def new_key() -> SigningKey:
    return SigningKey.from_seed(secrets.token_bytes(32))


async def head_commit(client: Client, did: str) -> Commit:
    roots, blocks = read_car(await client.export_repo(did))
    return Commit.from_bytes(blocks[roots[0]])


def signed_by(commit: Commit, did_key: str) -> bool:
    try:
        commit.verify(verify_key(did_key))
    except InvalidSignature:
        return False
    return True


async def state_at(node: Node, did: str) -> IdentityState:
    return resolve_log(did, await node.storage.identity_ops(did)).state


def post_write(text: str) -> Write:
    rkey = TidClock(7).next(1_800_000_000_000_000 + secrets.randbelow(10**9))
    record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-23T00:00:00Z"}
    return Write("create", "app.bsky.feed.post", rkey, record)


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path, 3)
    try:
        await link(nodes, [(1, 0), (2, 1), (2, 0)])
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


@pytest.mark.parametrize("user_key", [True, False], ids=["user-rotation-key", "node-signs"])
async def test_rotation_re_signs_the_head_and_history_still_verifies(
    node: Node, client: Client, user_key: bool
) -> None:
    key = new_key() if user_key else None
    await client.create_account(
        "alice.skyfed.test", PASSWORD, recovery_key=key.did_key() if key else None
    )
    first = await client.post("before the rotation")
    before = await client.identity()
    old_head = await head_commit(client, client.did)

    new_signing = await rotate_signing_key(client, key)

    after = await client.identity()
    assert after.signing_key == new_signing != before.signing_key
    assert after.rotation_keys == before.rotation_keys
    assert after.endpoint == before.endpoint
    assert after.handle == before.handle
    # The node re-signed the head at once: a higher rev, the same tree, the new key.
    head = await head_commit(client, client.did)
    assert head.rev > old_head.rev
    assert head.data == old_head.data
    assert signed_by(head, new_signing)
    assert not signed_by(head, before.signing_key)
    # History verifies against the current identity; the repo goes on under the new key.
    assert (await client.verify_record(first.uri)).cid == first.cid
    second = await client.post("after the rotation")
    assert (await client.verify_record(second.uri)).cid == second.cid
    assert signed_by(await head_commit(client, client.did), new_signing)
    assert (await client.account_status())["activated"] is True


async def test_every_node_rejects_the_old_key_after_a_rotation(three: list[Node]) -> None:
    a, b, c = three
    key = new_key()
    async with Client(a.url) as alice, Client(c.url) as reader:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        did = alice.did
        await alice.post("one")
        await until(lambda: all_agree(three, 1))
        row = await a.storage.account_by_did(did)
        assert row is not None
        old_key = SigningKey.from_str(row.signing_key)

        new_signing = await rotate_signing_key(alice, key)

        async def everyone_rotated() -> bool:
            for n in three:
                if (await state_at(n, did)).signing_key != new_signing:
                    return False
            return await all_agree(three, 1)

        await until(everyone_rotated)

        # The repo continues: a post under the new key reaches every node.
        later = await alice.post("two, under the new key")
        await until(lambda: all_agree(three, 1))
        assert (await reader.verify_record(later.uri)).cid == later.cid

        # A commit signed by the old key, built on the current head, is refused.
        for n in (b, c):
            repo = await n.repos.head(did)
            forged = repo.apply_writes(
                [post_write("old key")],
                old_key,
                rev=TidClock(3).next(int(time.time() * 1e6) + 10**6),
                time="t",
            )
            with pytest.raises(InvalidSignature):
                await n.federation.ingest_event(forged.event, None)

        # The old node itself, still signing with the old key (as if it had never
        # seen the op), is refused by its peers and scored down.
        held = {n.node_did: (await n.storage.get_head(did)) for n in (b, c)}
        rejected = [n.federation.rejected for n in (b, c)]
        rogue = await a.repos.write(did, [post_write("rogue")], old_key)

        async def refused() -> bool:
            return all(n.federation.rejected > r for n, r in zip((b, c), rejected, strict=True))

        await until(refused)
        for n in (b, c):
            head = await n.storage.get_head(did)
            assert head == held[n.node_did]
            assert head is not None
            assert head.head != rogue.result.commit_cid
            rkey = rogue.result.ops[0].path.split("/")[1]
            assert await n.storage.get_record(did, "app.bsky.feed.post", rkey) is None


async def test_forged_rotation_is_refused_directly_and_by_gossip(three: list[Node]) -> None:
    a, b, _c = three
    key = new_key()
    async with Client(a.url) as alice, Client(b.url) as other, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        did = alice.did
        await until(lambda: all_agree(three, 1))
        state = await state_at(b, did)
        ops = await b.storage.identity_ops(did)
        row = await a.storage.account_by_did(did)
        assert row is not None
        signing = SigningKey.from_str(row.signing_key)
        attacker = new_key()
        # Signed by a stranger's key, and by the account's signing key (which is not a
        # rotation key): neither may rotate.
        for signer in (attacker, signing):
            forged = IdentityOp.update(state, signer, signing_key=attacker.did_key())
            with pytest.raises(XrpcError) as err:
                await other.submit_identity_op(did, forged.to_bytes())
            assert err.value.error == "InvalidSignature"
            assert err.value.status == 400
        assert await b.storage.identity_ops(did) == ops

        forged = IdentityOp.update(state, attacker, signing_key=attacker.did_key())
        await push_refused(http, b, did, [*ops, forged.to_bytes()], forged.cid.to_bytes())
        assert await b.storage.identity_ops(did) == ops
        assert (await state_at(b, did)).signing_key == state.signing_key


async def test_replayed_op_is_refused_directly_and_by_gossip(
    three: list[Node], tmp_path: Path
) -> None:
    a, b, c = three
    key = new_key()
    async with Client(a.url) as alice, Client(b.url) as other, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        did = alice.did
        first = await rotate_signing_key(alice, key)
        first_op = (await a.storage.identity_ops(did))[-1]
        second = await rotate_signing_key(alice, key)
        assert first != second

        async def rotated_twice() -> bool:
            return all([(await state_at(n, did)).signing_key == second for n in three])

        await until(rotated_twice)
        ops = await b.storage.identity_ops(did)
        with pytest.raises(XrpcError) as err:
            await other.submit_identity_op(did, first_op)
        assert err.value.error == "InvalidIdentity"
        assert "replay" in err.value.message
        assert (await state_at(b, did)).signing_key == second

        # A node that learned the log by reconciliation has never seen the old op's
        # gossip id; a peer pushing the log as it was then changes nothing there.
        (d,) = await start_nodes(tmp_path / "late", 1)
        try:
            await link([c, d], [(1, 0)])
            await until(lambda: all_agree([c, d], 1))
            await until(lambda: _has_key(d, did, second))
            peer = await FakePeer.connect(http, d)
            try:
                old_id = resolve_log(did, [ops[0], first_op]).state.head.to_bytes()
                assert not d.federation.plumtree.has_seen(old_id)
                await peer.ws.send_bytes(_identity_push(did, [ops[0], first_op], old_id))

                async def judged() -> bool:
                    return d.federation.plumtree.has_seen(old_id)

                await until(judged)
            finally:
                await peer.ws.close()
            assert (await state_at(d, did)).signing_key == second
            assert await d.federation._signing_key(did, None) == second
        finally:
            await d.stop()


async def _has_key(node: Node, did: str, signing_key: str) -> bool:
    ops = await node.storage.identity_ops(did)
    return bool(ops) and resolve_log(did, ops).state.signing_key == signing_key


async def push_refused(
    http: aiohttp.ClientSession, node: Node, did: str, ops: list[bytes], msg_id: bytes
) -> None:
    """Push ``did``'s log as ``ops`` to ``node`` from a fake peer; wait until refused."""
    before = node.federation.rejected
    peer = await FakePeer.connect(http, node)
    try:
        await peer.ws.send_bytes(_identity_push(did, ops, msg_id))

        async def refused() -> bool:
            return node.federation.rejected > before

        await until(refused)
    finally:
        await peer.ws.close()


def _identity_push(did: str, ops: list[bytes], msg_id: bytes) -> bytes:
    from protocol.peerwire import encode_message

    data = encode({"did": did, "ops": list(ops)})
    return encode_message("push", id=msg_id, kind="identity", data=data, round=0)


async def test_submit_teaches_a_node_a_log_it_does_not_hold(tmp_path: Path) -> None:
    home, stranger = await start_nodes(tmp_path, 2)  # not linked
    try:
        key = new_key()
        async with Client(home.url) as alice, Client(stranger.url) as other:
            await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
            log = await alice.identity_log()
            op = IdentityOp.update(await alice.identity(), key, signing_key=new_key().did_key())
            with pytest.raises(XrpcError) as err:
                await other.submit_identity_op(alice.did, op.to_bytes())
            assert err.value.error == "InvalidIdentity"
            assert "'log'" in err.value.message
            # The log may hold the op itself: it is still judged on its own, once.
            out = await other.submit_identity_op(
                alice.did, op.to_bytes(), log=[*log, op.to_bytes()]
            )
            assert out["head"] == str(op.cid)
            assert (await state_at(stranger, alice.did)).head == op.cid
    finally:
        await home.stop()
        await stranger.stop()


async def test_v5_database_gains_the_identity_tables(
    tmp_path: Path, raw_db: Callable[[NodeConfig], RawDb]
) -> None:
    from node.store.sqlite import SCHEMA_VERSION

    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    key = new_key()
    async with Node(config) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
        first = await alice.post("written before rotation existed")

    db = raw_db(config)
    db.drop("reserved_keys")
    db.drop("account_deactivations")
    db.set_version(5)

    # (The node comes back on another port, so a rotation now would rightly find
    # the identity naming another home: only the tables are exercised here.)
    async with Node(config) as node, Client(node.url) as alice:
        await alice.login("alice.skyfed.test", PASSWORD)
        assert (await alice.account_status())["activated"] is True
        await alice.post("written after the upgrade")
        reserved = await alice.reserve_signing_key()
        assert (await node.portability.reserved_key(alice.did)) is not None
        assert reserved != (await alice.identity()).signing_key
        assert (await alice.verify_record(first.uri)).cid == first.cid
    assert db.version() == SCHEMA_VERSION
