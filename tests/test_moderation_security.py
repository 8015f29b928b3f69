"""Bad input: labels signed by the wrong key never reach a view, however they come."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest

from node.client import Client
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
            peer = await FakePeer.connect(http, a)
            await until(lambda: _has_link(a, peer.key.did_key()))
            rejected = a.federation.rejected
            await peer.ws.send_bytes(
                encode_message(
                    "push",
                    id=forged.label_cid.to_bytes(),
                    kind="label",
                    data=forged.to_bytes(),
                    round=0,
                )
            )

            async def refused() -> bool:
                return a.federation.rejected > rejected

            await until(refused)
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
