"""Our atproto encoders against an implementation we did not write: the ``atproto``
SDK (MarshalX, a dev dependency) reads our frames, CARs and signatures, and our
verifier checks the same bytes. Builds nothing on the SDK: it only reads."""

from __future__ import annotations

import pytest

from protocol.atproto import dagcbor
from protocol.atproto.car import read_car
from protocol.atproto.commit import Commit, build_commit_event, verify_commit_event
from protocol.atproto.crypto import SigningKey
from protocol.atproto.firehose import decode_frame, encode_frame
from protocol.atproto.mst import MST

atproto_core_car = pytest.importorskip("atproto_core.car")
atproto_crypto_verify = pytest.importorskip("atproto_crypto.verify")
frames = pytest.importorskip("atproto_subscription.frames")
firehose = pytest.importorskip("atproto_firehose")

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TIME = "2026-12-02T12:00:00.000Z"


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_sdk_reads_our_commit_event(curve: str) -> None:
    key = SigningKey.from_seed(curve, b"interop")  # type: ignore[arg-type]
    ops: list[tuple[str, str, bytes | None]] = [
        ("create", f"app.bsky.feed.post/3k{i:011d}", dagcbor.encode({"text": f"p{i}"}))
        for i in range(30)
    ]
    first, tree = build_commit_event(
        key=key,
        did=DID,
        old_tree=MST.empty(),
        ops=ops,
        rev="3kaaaaaaaaaaa",
        since=None,
        seq=1,
        time=TIME,
    )
    event, _ = build_commit_event(
        key=key,
        did=DID,
        old_tree=tree,
        ops=[
            ("delete", "app.bsky.feed.post/3k00000000003", None),
            ("create", "app.bsky.feed.like/3k00000000001", dagcbor.encode({"x": 1})),
        ],
        rev="3kaaaaaaaaaab",
        since=first.rev,
        seq=2,
        time=TIME,
    )
    raw = encode_frame(event)
    message = firehose.parse_subscribe_repos_message(frames.Frame.from_bytes(raw))
    assert message.repo == DID
    assert message.rev == event.rev
    assert message.since == first.rev
    assert str(message.commit) == event.commit.to_str()
    assert [(op.action, op.path) for op in message.ops] == [
        (op.action, op.path) for op in event.ops
    ]
    sdk_car = atproto_core_car.CAR.from_bytes(message.blocks)
    ours = read_car(event.blocks)
    assert str(sdk_car.root) == ours.root.to_str()
    assert {str(c) for c in sdk_car.blocks} == {c.to_str() for c in ours.blocks}
    commit = Commit.from_bytes(ours.blocks[ours.root])
    assert atproto_crypto_verify.verify_signature(
        key.public.to_did_key(), commit.unsigned_bytes(), commit.sig
    )
    verify_commit_event(decode_frame(raw), key.public)
