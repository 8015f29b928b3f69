"""A low-rank rotation key cannot lock an account's owner out of it (issue 12, 1).

The holder of rotation key #1 (here the home node's key, as a thief would hold it)
signs hundreds of ops and hands them to real nodes in one batch, by gossip and by
``skyfed.identity.submitOp``. Before the fix every node stored them all, and then
refused every later op for the DID ("identity log has more than 1000 ops"),
including the owner's index-0 recovery op. Now nodes keep only the canonical chain
(bounded) and a little evidence, and the owner's recovery wins on every node.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest

from node.client import Client, XrpcError
from node.wiring import Node
from protocol.encoding import encode
from protocol.identity import MAX_CHAIN_OPS, MAX_LOG_OPS, IdentityOp, resolve_log
from protocol.keys import SigningKey
from protocol.peerwire import encode_message

from .test_federation import PASSWORD, FakePeer, link, start_nodes, until

pytestmark = pytest.mark.timeout(120)


async def _head(node: Node, did: str) -> str | None:
    ops = await node.storage.identity_ops(did)
    return str(resolve_log(did, ops).state.head) if ops else None


async def _setup(tmp_path: Path) -> tuple[list[Node], SigningKey]:
    nodes = await start_nodes(tmp_path, 2)
    await link(nodes, [(1, 0)])
    return nodes, SigningKey.from_seed(secrets.token_bytes(32))


async def _node_key(node: Node, did: str) -> SigningKey:
    row = await node.storage.account_by_did(did)
    assert row is not None
    return SigningKey.from_str(row.rotation_key)


async def test_a_flood_of_forks_by_the_node_key_cannot_lock_the_owner_out(
    tmp_path: Path,
) -> None:
    (home, other), owner = await _setup(tmp_path)
    try:
        async with Client(home.url) as alice, aiohttp.ClientSession() as http:
            await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=owner.did_key())
            did = alice.did
            before = await alice.identity()
            stolen = await _node_key(home, did)
            assert before.rotation_keys == (owner.did_key(), stolen.did_key())
            log = await alice.identity_log()

            async def other_holds_it() -> bool:
                return await _head(other, did) == str(before.head)

            await until(other_holds_it)
            # 999 different ops on the head, each by key #1, pushed in one batch.
            flood = [
                IdentityOp.update(before, stolen, handle=f"flood{i}.skyfed.test").to_bytes()
                for i in range(MAX_LOG_OPS - len(log))
            ]
            peer = await FakePeer.connect(http, other)
            try:
                data = encode({"did": did, "ops": [*log, *flood]})
                msg_id = IdentityOp.from_bytes(flood[0]).cid.to_bytes()
                await peer.ws.send_bytes(
                    encode_message("push", id=msg_id, kind="identity", data=data, round=0)
                )

                async def flooded() -> bool:
                    return all([await _head(n, did) != str(before.head) for n in (home, other)])

                await until(flooded)
            finally:
                await peer.ws.close()
            for node in (home, other):
                # The chain and one op of evidence: not 998 nullified siblings.
                assert len(await node.storage.identity_ops(did)) <= len(log) + 2

            # The owner's index-0 op, on the state the flood forked from, wins.
            recovery = IdentityOp.update(before, owner, rotation_keys=[owner.did_key()])
            out = await alice.submit_identity_op(did, recovery.to_bytes())
            assert out["head"] == str(recovery.cid)

            async def recovered() -> bool:
                return all([await _head(n, did) == str(recovery.cid) for n in (home, other)])

            await until(recovered)
            state = await alice.identity()
            assert state.rotation_keys == (owner.did_key(),)
            assert state.handle == "alice.skyfed.test"
    finally:
        for node in (home, other):
            await node.stop()


async def test_a_long_chain_by_the_node_key_cannot_lock_the_owner_out(tmp_path: Path) -> None:
    (home, other), owner = await _setup(tmp_path)
    try:
        async with Client(home.url) as alice, Client(other.url) as elsewhere:
            await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=owner.did_key())
            did = alice.did
            before = await alice.identity()
            stolen = await _node_key(home, did)
            log = await alice.identity_log()
            # A chain of 999 ops by key #1, handed to the home node in one submitOp.
            chain = [IdentityOp.update(before, stolen, handle="evil0.skyfed.test")]
            while len(log) + len(chain) < MAX_LOG_OPS:
                chain.append(
                    IdentityOp.create(
                        before.rotation_keys,
                        before.signing_key,
                        f"evil{len(chain)}.skyfed.test",
                        before.endpoint,
                        chain[-1].cid,
                        stolen,
                    )
                )
            with pytest.raises(XrpcError) as err:
                await alice.submit_identity_op(
                    did, chain[-1].to_bytes(), log=[*log, *(op.to_bytes() for op in chain[:-1])]
                )
            # Its prev lies past the bound of the chain: rejected, and a refused request
            # changes nothing (the log sent with it is not stored either).
            assert err.value.error == "InvalidIdentity"
            assert "does not chain" in err.value.message
            assert await home.storage.identity_ops(did) == log
            # The same chain cut at its bound is a valid submission: stored whole.
            last = MAX_CHAIN_OPS - len(log) - 1
            await alice.submit_identity_op(
                did, chain[last].to_bytes(), log=[*log, *(op.to_bytes() for op in chain[:last])]
            )
            held = await home.storage.identity_ops(did)
            assert len(held) == MAX_CHAIN_OPS
            full = resolve_log(did, held)

            async def other_has_it() -> bool:
                return await _head(other, did) == str(full.state.head)

            await until(other_has_it)  # by reconciliation
            # The owner recovers at the other node; the home node hears it by gossip.
            recovery = IdentityOp.update(before, owner, rotation_keys=[owner.did_key()])
            out = await elsewhere.submit_identity_op(did, recovery.to_bytes())
            assert out["head"] == str(recovery.cid)

            async def recovered() -> bool:
                return all([await _head(n, did) == str(recovery.cid) for n in (home, other)])

            await until(recovered)
            for node in (home, other):
                # The nullified chain is not kept beyond its first op (evidence).
                assert len(await node.storage.identity_ops(did)) == len(log) + 2
    finally:
        for node in (home, other):
            await node.stop()
