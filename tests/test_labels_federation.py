"""Labels travel like commits: pushed by gossip, and found by negentropy (one item
per labeler's label set) when a push was missed."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.client import Client, XrpcError
from node.config import NodeConfig
from node.wiring import Node
from protocol.errors import DecodeError
from protocol.heads import label_set_digest, labels_item
from protocol.keys import SigningKey
from protocol.labels import Label
from protocol.peerwire import MAX_LABELS_PER_ANSWER, decode_message, encode_message
from tests.test_federation import PASSWORD, FakePeer, _has_link, all_agree, start_nodes, until


async def _labels_on(node: Node, pattern: str) -> list[dict[str, Any]]:
    async with Client(node.url) as reader:
        out: list[dict[str, Any]] = (
            await reader.call("com.atproto.label.queryLabels", params={"uriPatterns": [pattern]})
        )["labels"]
        return out


async def _create(client: Client, *labels: dict[str, Any]) -> list[dict[str, Any]]:
    out = await client.call("skyfed.label.createLabels", data={"labels": list(labels)})
    return out["labels"]  # type: ignore[no-any-return]


def test_label_set_digest_is_a_function_of_the_set() -> None:
    cids = [
        Label(
            src="did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa",
            uri="did:skyfed:bbbbbbbbbbbbbbbbbbbbbbbb",
            val=f"v{i}",
            cts="2026-01-01T00:00:00.000Z",
        ).label_cid
        for i in range(3)
    ]
    assert label_set_digest(cids) == label_set_digest(reversed(cids))
    assert label_set_digest(cids) == label_set_digest([*cids, cids[0]])
    assert label_set_digest(cids) != label_set_digest(cids[:2])
    ts, item_id = labels_item("did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa", label_set_digest(cids))
    assert ts == 0
    assert len(item_id) == 32


def test_labels_answer_is_bounded() -> None:
    fields = {"rid": 1, "src": "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"}
    ok = encode_message("labels", **fields, labels=[b""] * MAX_LABELS_PER_ANSWER)
    assert len(decode_message(ok)["labels"]) == MAX_LABELS_PER_ANSWER
    with pytest.raises(DecodeError):
        decode_message(
            encode_message("labels", **fields, labels=[b""] * (MAX_LABELS_PER_ANSWER + 1))
        )
    with pytest.raises(DecodeError):
        decode_message(encode_message("labels", **fields, labels=["not bytes"]))


async def test_a_label_made_on_a_reaches_c_by_gossip(tmp_path: Path) -> None:
    # Reconciliation every 60 s: within the test's wait only gossip can carry it.
    nodes = [
        Node(NodeConfig(data_dir=tmp_path / f"node{i}", port=0, reconcile_interval=60))
        for i in range(3)
    ]
    a, b, c = nodes
    try:
        for node in nodes:
            await node.start()
        for x, y in ((1, 0), (2, 1)):
            nodes[x].federation.dial(nodes[y].url)

        async def linked() -> bool:
            return a.node_did in b.federation.links and c.node_did in b.federation.links

        await until(linked)
        async with Client(a.url) as mod, Client(a.url) as alice:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            await alice.create_account("alice.skyfed.test", PASSWORD)
            ref = await alice.post("a post to label")
            await until(lambda: all_agree(nodes, 2))
            made = await _create(mod, {"uri": ref.uri, "cid": ref.cid, "val": "!warn"})
            assert made[0]["src"] == mod.did
            assert made[0]["uri"] == ref.uri
            assert "sig" in made[0]

            async def on_c() -> bool:
                return bool(await _labels_on(c, ref.uri))

            await until(on_c)
            got = await _labels_on(c, ref.uri)
            assert got == made
            label = Label.from_json(got[0])
            label.verify(SigningKey.from_str(await _account(a, mod.did)).public)
            # Every node holds the same label set for the labeler.
            digests = {await n.storage.label_digest(mod.did) for n in nodes}
            assert len(digests) == 1
    finally:
        for node in nodes:
            await node.stop()


async def _account(node: Node, did: str) -> str:
    row = await node.storage.account_by_did(did)
    assert row is not None
    return row.signing_key


async def test_a_node_that_was_down_catches_up_on_labels_by_negentropy(tmp_path: Path) -> None:
    a = Node(NodeConfig(data_dir=tmp_path / "a", port=0, reconcile_interval=60))
    await a.start()
    try:
        async with Client(a.url) as mod:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            subject = f"at://{mod.did}/app.bsky.feed.post/3mbd354z2m22b"
            await _create(mod, {"uri": subject, "val": "spam"}, {"uri": mod.did, "val": "bot"})
            await _create(mod, {"uri": subject, "val": "spam", "neg": True})
            # b starts later and dials a: nothing is pushed to it, it must reconcile.
            b = Node(
                NodeConfig(data_dir=tmp_path / "b", port=0, peers=(a.url,), reconcile_interval=60)
            )
            await b.start()
            try:

                async def caught_up() -> bool:
                    return await b.storage.label_digest(mod.did) == (
                        await a.storage.label_digest(mod.did)
                    )

                await until(caught_up)
                assert len(await b.storage.labels_for(mod.did)) == 3
                assert len(await _labels_on(b, subject)) == 2
            finally:
                await b.stop()
    finally:
        await a.stop()


async def test_a_label_with_a_bad_signature_is_rejected(tmp_path: Path) -> None:
    (a,) = await start_nodes(tmp_path, 1)
    try:
        async with Client(a.url) as mod, aiohttp.ClientSession() as http:
            await mod.create_account("mod.skyfed.test", PASSWORD)
            impostor = SigningKey.from_seed(secrets.token_bytes(32))
            forged = Label(
                src=mod.did,
                uri=mod.did,
                val="!takedown",
                cts="2026-01-01T00:00:00.000Z",
            ).sign(impostor)
            peer = await FakePeer.connect(http, a)
            await until(lambda: _has_link(a, peer.key.did_key()))
            await peer.ws.send_bytes(
                encode_message(
                    "push",
                    id=forged.label_cid.to_bytes(),
                    kind="label",
                    data=forged.to_bytes(),
                    round=0,
                )
            )

            async def rejected() -> bool:
                return a.federation.rejected >= 1

            await until(rejected)
            assert await a.storage.labels_for(mod.did) == []
            assert await _labels_on(a, mod.did) == []
            link = a.federation.links.get(peer.key.did_key())
            assert link is None or link.score < 0
    finally:
        await a.stop()


async def test_query_labels_filters_by_pattern_and_source(tmp_path: Path) -> None:
    (a,) = await start_nodes(tmp_path, 1)
    try:
        async with Client(a.url) as one, Client(a.url) as two, Client(a.url) as reader:
            await one.create_account("one.skyfed.test", PASSWORD)
            await two.create_account("two.skyfed.test", PASSWORD)
            post = f"at://{one.did}/app.bsky.feed.post/3mbd354z2m22b"
            other = f"at://{one.did}/app.bsky.feed.post/3mbd354z2m33c"
            upper = f"at://{one.did}/app.bsky.feed.post/3MBD354Z2M22B"
            await _create(one, {"uri": post, "val": "a"}, {"uri": other, "val": "b"})
            await _create(two, {"uri": post, "val": "c"}, {"uri": two.did, "val": "d"})

            async def vals(**params: Any) -> list[str]:
                out = await reader.call("com.atproto.label.queryLabels", params=params)
                return sorted(label["val"] for label in out["labels"])

            assert await vals(uriPatterns=[post]) == ["a", "c"]
            assert await vals(uriPatterns=[f"at://{one.did}/*"]) == ["a", "b", "c"]
            assert await vals(uriPatterns=[f"at://{one.did}/*"], sources=[two.did]) == ["c"]
            assert await vals(uriPatterns=[post, two.did]) == ["a", "c", "d"]
            assert await vals(uriPatterns=["*"]) == ["a", "b", "c", "d"]
            assert await vals(uriPatterns=["*"], sources=[one.did, two.did]) == [
                "a",
                "b",
                "c",
                "d",
            ]
            # Prefixes are case-sensitive, like the subjects.
            assert await vals(uriPatterns=[upper[:-3] + "*"]) == []
            # Pages: a cursor continues where the last page ended.
            first = await reader.call(
                "com.atproto.label.queryLabels", params={"uriPatterns": ["*"], "limit": 3}
            )
            assert len(first["labels"]) == 3
            rest = await reader.call(
                "com.atproto.label.queryLabels",
                params={"uriPatterns": ["*"], "limit": 3, "cursor": first["cursor"]},
            )
            assert len(rest["labels"]) == 1
            assert "cursor" not in rest
            for bad in (
                {"uriPatterns": ["at://x*/y"]},
                {},
                {"uriPatterns": ["*"], "sources": ["x"]},
            ):
                with pytest.raises(XrpcError) as info:
                    await reader.call("com.atproto.label.queryLabels", params=bad)
                assert info.value.status == 400
            # Only an authenticated account labels, as itself.
            with pytest.raises(XrpcError) as info:
                await reader.call(
                    "skyfed.label.createLabels", data={"labels": [{"uri": post, "val": "x"}]}
                )
            assert info.value.status == 401
            with pytest.raises(XrpcError) as info:
                await _create(one, {"uri": post, "val": ""})
            assert info.value.status == 400
    finally:
        await a.stop()
