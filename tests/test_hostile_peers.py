"""Attacks by peers and strangers on one node's shared budgets (security review of
issues 12 and 13): real nodes on 127.0.0.1, hand-driven fake peers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.hostile_memory import FakePeer as NeverReads
from node.client import Client
from node.wiring import Node
from protocol.identity import IdentityOp, did_for_genesis, resolve_log
from protocol.keys import SigningKey
from protocol.peerwire import decode_message, encode_message

from .test_federation import PASSWORD, start_nodes, until

pytestmark = pytest.mark.timeout(60)

MB = 1024 * 1024


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[Node]:
    (node,) = await start_nodes(tmp_path, 1, shared_networks=("127.0.0.0/8",))
    try:
        yield node
    finally:
        await node.stop()


async def _answer(peer: NeverReads, rid: int) -> dict[str, Any]:
    while True:
        msg = await peer.ws.receive()
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        decoded = decode_message(msg.data)
        if decoded.get("rid") == rid:
            return decoded


async def test_peers_that_never_read_their_getrepo_answers_hold_no_repo_slot(
    one: Node,
) -> None:
    """Three links ask for a 5.6 MB repo (four times each, the per-link most) and never
    read: their answers wait for room in their own send queues, not in the node-wide
    repo slots, so an honest peer's getrepo is answered at once."""
    async with Client(one.url) as owner, contextlib.AsyncExitStack() as stack:
        await owner.create_account("big.skyfed.test", PASSWORD)
        assert owner.did is not None
        for _ in range(7):
            data = base64.b64encode(os.urandom(600_000)).decode()
            await owner.create_record(
                "com.example.blob", {"$type": "com.example.blob", "data": data}
            )
        hostile = [await stack.enter_async_context(NeverReads.connect(one.url)) for _ in range(3)]
        for peer in hostile:
            for rid in range(1, 5):
                await peer.ws.send_bytes(
                    encode_message("getrepo", rid=rid, did=owner.did, since=None)
                )
        links = [one.federation.links[p.key.did_key()] for p in hostile]

        async def stuck() -> bool:
            # Every link has an answer queued that its peer does not take, or has been
            # answered (Busy, at once, when the slots were taken), or closed (the old
            # code let two of a link's answers past the room check together, and
            # closed the link for it, while its waiters kept their slots).
            return any(lk.queued_bytes for lk in links) and all(
                lk.queued_bytes or not lk.repo_requests or lk.closed.is_set() for lk in links
            )

        await until(stuck)
        honest = await stack.enter_async_context(NeverReads.connect(one.url))  # it reads
        # Answered at once: the repo, or Busy while a slot is in use (asked again,
        # a bounded number of times); on the old code, nothing for peer_send_timeout.
        answers = []
        async with asyncio.timeout(5):
            for rid in range(10, 60):
                await honest.ws.send_bytes(
                    encode_message("getrepo", rid=rid, did=owner.did, since=None)
                )
                answers.append(await _answer(honest, rid))
                if answers[-1]["t"] == "repo":
                    break
                await asyncio.sleep(0.05)  # poll: Busy, ask again shortly
        assert answers[-1]["t"] == "repo", answers[-1]
        assert all(a["t"] == "repo" or a["error"] == "Busy" for a in answers)
        # Their requests wait, slot-less, one per link; none was sent past its room.
        assert all(not lk.closed.is_set() for lk in links), [lk.close_reason for lk in links]


async def test_a_relay_cannot_poison_an_identity_op_by_cutting_its_log(tmp_path: Path) -> None:
    """A relay pushes an honest op (the owner's recovery-key update) with its genesis
    dropped: refused for lack of context, but not marked seen, so the honest full
    copy that follows is taken and passed on."""
    from .test_federation import FakePeer, link
    from .test_rotation import _identity_push

    home, b, c = await start_nodes(tmp_path, 3)
    try:
        await link([home, b, c], [(1, 2)])  # home is not linked: b learns by pushes only
        recovery = SigningKey.from_seed(os.urandom(32))
        async with Client(home.url) as alice, aiohttp.ClientSession() as http:
            await alice.create_account(
                "alice.skyfed.test", PASSWORD, recovery_key=recovery.did_key()
            )
            assert alice.did is not None
            log = await alice.identity_log()
            new_signing = SigningKey.from_seed(os.urandom(32)).did_key()
            op = IdentityOp.update(await alice.identity(), recovery, signing_key=new_signing)
            op_id = op.cid.to_bytes()
            relay, honest = await FakePeer.connect(http, b), await FakePeer.connect(http, b)
            before = b.federation.rejected
            await relay.ws.send_bytes(_identity_push(alice.did, [op.to_bytes()], op_id))

            async def refused() -> bool:
                return b.federation.rejected > before

            await until(refused)
            assert not b.federation.plumtree.has_seen(op_id)
            await honest.ws.send_bytes(_identity_push(alice.did, [*log, op.to_bytes()], op_id))

            async def everywhere() -> bool:
                for node in (b, c):
                    ops = await node.storage.identity_ops(alice.did)
                    if not ops or resolve_log(alice.did, ops).state.signing_key != new_signing:
                        return False
                return True

            await until(everywhere, limit=10.0)
    finally:
        for node in (home, b, c):
            await node.stop()


def _next_op(did: str, log: list[bytes], key: SigningKey, handle: str) -> bytes:
    state = resolve_log(did, log).state
    return IdentityOp.update(state, key, handle=handle).to_bytes()


def _new_identity(i: int, key: SigningKey) -> tuple[str, list[bytes], bytes]:
    """A self-made identity: its DID, its log (the genesis) and an op that follows."""
    genesis = IdentityOp.create(
        [key.did_key()], key.did_key(), f"new{i}.example.com", "https://pds.example.com", None, key
    )
    did = did_for_genesis(genesis)
    return did, [genesis.to_bytes()], _next_op(did, [genesis.to_bytes()], key, f"x{i}.example.com")


async def test_submit_op_has_a_node_wide_budget_for_new_identities(tmp_path: Path) -> None:
    """Strangers' submitOps may bring ``submit_new_identities`` new DIDs, then 429
    with nothing stored; ops for DIDs the node holds, and hosted accounts, still go."""
    from node.client import XrpcError

    (node,) = await start_nodes(tmp_path, 1, submit_new_identities=3)
    try:
        async with Client(node.url) as stranger:
            made, keys = [], []
            for i in range(5):
                key = SigningKey.from_seed(os.urandom(32))
                made.append(_new_identity(i, key))
                keys.append(key)
            for did, log, op in made[:3]:
                await stranger.submit_identity_op(did, op, log=log)
            for did, log, op in made[3:]:
                with pytest.raises(XrpcError) as err:
                    await stranger.submit_identity_op(did, op, log=log)
                assert err.value.error == "RateLimitExceeded"
                assert not await node.storage.identity_ops(did)
            # A DID it holds is not new: its next op is not charged.
            did, log, op = made[0]
            again = _next_op(did, [*log, op], keys[0], "again0.example.com")
            await stranger.submit_identity_op(did, again)
            assert len(await node.storage.identity_ops(did)) == 3
        async with Client(node.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            assert alice.did is not None
            assert await node.storage.identity_ops(alice.did)
    finally:
        await node.stop()
