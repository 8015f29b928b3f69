"""Bad input: labels signed by the wrong key never reach a view, however they come."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest

from node.client import Client
from node.wiring import Node
from protocol.errors import InvalidSignature
from protocol.keys import SigningKey
from protocol.labels import Label
from protocol.moderation import ModerationPrefs
from protocol.peerwire import encode_message
from tests.test_federation import PASSWORD, FakePeer, _has_link, start_nodes, until

pytestmark = pytest.mark.timeout(60)


async def test_labels_signed_by_the_wrong_key_are_rejected_everywhere(tmp_path: Path) -> None:
    (a,) = await start_nodes(tmp_path, 1)
    try:
        async with Client(a.url) as mod, Client(a.url) as author, aiohttp.ClientSession() as http:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            await author.create_account("author.skyfed.test", PASSWORD)
            post = await author.post("a post someone wants hidden")
            impostor = SigningKey.from_seed(secrets.token_bytes(32))
            forged = Label(
                src=mod.did, uri=post.uri, val="!hide", cts="2026-01-01T00:00:00.000Z"
            ).sign(impostor)

            # Handed to ingest directly (as reconciliation would): refused, nothing kept.
            with pytest.raises(InvalidSignature):
                await a.federation.ingest_labels([forged], None)
            assert await a.storage.labels_for(mod.did) == []

            # Pushed by a peer through gossip: refused, and the peer loses standing.
            rejected = a.federation.rejected
            peer = await _push_label(http, a, forged)

            async def refused() -> bool:
                return a.federation.rejected > rejected

            await until(refused)
            await peer.ws.close()
            assert await a.storage.labels_for(mod.did) == []

            # A label whose signature is fine but whose src is someone else's DID is
            # the same forgery: the signature is checked against src's key.
            stolen = Label(
                src=author.did, uri=post.uri, val="!hide", cts="2026-01-01T00:00:00.000Z"
            ).sign(impostor)
            with pytest.raises(InvalidSignature):
                await a.federation.ingest_labels([stolen], None)

            # So a reader who names the labeler sees no label at all.
            async with Client(a.url, moderation=ModerationPrefs().subscribe(mod.did)) as reader:
                view = (await reader.posts([post.uri]))["posts"][0]
                assert view["labels"] == []
                assert reader.moderate(view).action == "show"
    finally:
        await a.stop()


async def test_labels_made_before_a_rotation_still_travel(tmp_path: Path) -> None:
    """A labeler's labels outlive its signing key: a node that learns one after the
    labeler rotated (or moved) accepts it, one bad label in a batch does not sink the
    good ones, and a peer relaying an old label is not blamed for it."""
    from node.client import rotate_signing_key

    (a,) = await start_nodes(tmp_path, 1)
    try:
        async with Client(a.url) as mod, Client(a.url) as author, aiohttp.ClientSession() as http:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            await author.create_account("author.skyfed.test", PASSWORD)
            post = await author.post("spam")
            row = await a.storage.account_by_did(mod.did)
            assert row is not None
            old_key = SigningKey.from_str(row.signing_key)

            def made_with(key: SigningKey, val: str) -> Label:
                return Label(
                    src=mod.did, uri=post.uri, val=val, cts="2026-01-01T00:00:00.000Z"
                ).sign(key)

            early, pushed = made_with(old_key, "spam"), made_with(old_key, "!warn")
            await rotate_signing_key(mod)
            await mod.label(post.uri, "nudity")  # under the new key
            (current,) = [
                Label.from_bytes(raw)
                for raw in await a.storage.labels_for(mod.did)
                if Label.from_bytes(raw).val == "nudity"
            ]
            forged = made_with(SigningKey.from_seed(secrets.token_bytes(32)), "!hide")

            with pytest.raises(InvalidSignature, match="1 of 3"):
                await a.federation.ingest_labels([early, forged, current], None)
            held = {Label.from_bytes(raw).val for raw in await a.storage.labels_for(mod.did)}
            assert held == {"spam", "nudity"}  # the good ones kept, the forgery not

            rejected = a.federation.rejected
            peer = await _push_label(http, a, pushed)

            async def stored() -> bool:
                vals = {Label.from_bytes(raw).val for raw in await a.storage.labels_for(mod.did)}
                return "!warn" in vals

            await until(stored)
            assert a.federation.rejected == rejected
            assert a.federation.links[peer.key.did_key()].score == 0
    finally:
        await a.stop()


async def _push_label(http: aiohttp.ClientSession, node: Node, label: Label) -> FakePeer:
    """Gossip ``label`` to ``node`` from a new fake peer, once the link is up."""
    peer = await FakePeer.connect(http, node)
    await until(lambda: _has_link(node, peer.key.did_key()))
    data = label.to_bytes()
    await peer.ws.send_bytes(
        encode_message("push", id=label.label_cid.to_bytes(), kind="label", data=data, round=0)
    )
    return peer


async def test_a_leaked_old_key_cannot_plant_a_takedown_that_outlasts_retraction(
    tmp_path: Path,
) -> None:
    """Issue 12, finding 5: a label dated far ahead is dropped on receipt, and one
    dated inside the clock window is retracted at once by the labeler's current key
    (its negation ties the planted cts and wins the tie)."""
    from node.client import rotate_signing_key
    from node.store.repos import iso_now

    (a,) = await start_nodes(tmp_path, 1)
    try:
        async with Client(a.url) as mod, Client(a.url) as author:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            await author.create_account("author.skyfed.test", PASSWORD)
            post = await author.post("a post a thief wants taken down")
            row = await a.storage.account_by_did(mod.did)
            assert row is not None
            leaked = SigningKey.from_str(row.signing_key)
            await rotate_signing_key(mod)  # the leaked key is an old key now

            def planted(cts: str) -> Label:
                return Label(src=mod.did, uri=post.uri, val="!takedown", cts=cts).sign(leaked)

            # Dated in the year 9999: nothing could ever be later. Dropped, not stored.
            far = planted("9999-12-31T23:59:59.999Z")
            assert await a.federation.ingest_labels([far], None) == 0
            assert await a.storage.labels_for(mod.did) == []
            # By gossip too, and the peer that passed it on is not blamed. (Pushes from
            # one link are judged in order: once the second is stored, the first was.)
            rejected = a.federation.rejected
            async with aiohttp.ClientSession() as http:
                peer = await _push_label(http, a, far)
                fine = planted(iso_now(a.wall_clock()))
                push = encode_message(
                    "push",
                    id=fine.label_cid.to_bytes(),
                    kind="label",
                    data=fine.to_bytes(),
                    round=0,
                )
                await peer.ws.send_bytes(push)

                async def stored() -> bool:
                    return len(await a.storage.labels_for(mod.did)) > 0

                await until(stored)
                assert await a.storage.labels_for(mod.did) == [fine.to_bytes()]
                assert a.federation.rejected == rejected
                assert a.federation.links[peer.key.did_key()].score == 0
                await peer.ws.close()

            # Dated at the edge of the window: accepted (a label made under an old key
            # still counts), and in force for readers of this labeler.
            edge = planted(iso_now(a.wall_clock() + 240))
            assert await a.federation.ingest_labels([edge], None) == 1
            prefs = ModerationPrefs().subscribe(mod.did)
            async with Client(a.url, moderation=prefs) as reader:
                view = (await reader.posts([post.uri]))["posts"][0]
                assert [lab["val"] for lab in view["labels"]] == ["!takedown"]

                # The labeler retracts now: its negation ties the planted cts and is
                # signed by its current key, so it wins at once.
                negation = await mod.label(post.uri, "!takedown", neg=True)
                assert negation["cts"] == edge.cts
                view = (await reader.posts([post.uri]))["posts"][0]
                assert view["labels"] == []
                assert reader.moderate(view).action == "show"
    finally:
        await a.stop()
