"""The codecs' edge rules hold on every path (issue 12, findings 6, 8 and 10): a lone
surrogate in a record is the project's error, not Python's; no decoder takes an
integer outside the signed 64-bit range; ``True`` is not the integer 1; a block of
exactly 2 MiB fits in a block stream."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocol.car import MAX_BLOCK, read_car, write_car
from protocol.cid import cid_for_msgpack, cid_for_raw
from protocol.commit import Commit, CommitEvent
from protocol.encoding import decode_unchecked, encode
from protocol.errors import DecodeError, InvalidRecord, LocalProtocolError, RemoteProtocolError
from protocol.eventstream import decode_frame
from protocol.mst import MemoryBlockStore
from protocol.repo import Repo, Write

from .seeds import seeded_key

DID = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
TIME = "2026-11-23T12:00:00.000Z"


def _repo() -> Repo:
    return Repo.create(
        DID, seeded_key(1), rev="3kabcdefghijk", time=TIME, source=MemoryBlockStore()
    ).repo


# -- finding 6: lone surrogates ------------------------------------------------------------


@pytest.mark.parametrize(
    ("collection", "record"),
    [
        pytest.param(
            "com.example.thing", {"$type": "com.example.thing", "\ud800": 1}, id="map-key"
        ),
        pytest.param(
            "com.example.thing", {"$type": "com.example.thing", "a": "\udc00"}, id="unknown-value"
        ),
        pytest.param(
            "com.example.thing",
            {"$type": "com.example.thing", "a": [{"b": {"c": "x\udfff"}}]},
            id="nested",
        ),
        pytest.param(
            "app.bsky.feed.post",
            {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": TIME, "x\ud800": 1},
            id="post-extra-key",
        ),
    ],
)
@pytest.mark.parametrize("validate", [True, False])
def test_a_lone_surrogate_in_a_record_is_an_invalid_record(
    collection: str, record: dict[str, Any], validate: bool
) -> None:
    repo = _repo()
    with pytest.raises(RemoteProtocolError) as info:  # old code: UnicodeEncodeError
        repo.apply_writes(
            [Write("create", collection, "3kabcdefghijl", record)],
            seeded_key(1),
            rev="3kabcdefghijl",
            time=TIME,
            validate=validate,
        )
    assert isinstance(info.value, InvalidRecord)
    assert info.value.status == 400


def test_encode_refuses_a_lone_surrogate_with_its_own_error() -> None:
    for value in ({"a": "\ud800"}, {"\ud800": 1}, ["ok", {"k": ["\udc00"]}]):
        with pytest.raises(LocalProtocolError, match="lone surrogate"):
            encode(value)  # type: ignore[arg-type]


# -- finding 8: integers past the signed 64-bit range ----------------------------------


def _event_value() -> dict[str, Any]:
    result = _repo().apply_writes(
        [
            Write(
                "create",
                "app.bsky.feed.post",
                "3kabcdefghijl",
                {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": TIME},
            )
        ],
        seeded_key(1),
        rev="3kabcdefghijl",
        time=TIME,
    )
    return result.event.to_value()


@pytest.mark.parametrize("seq", [2**64 - 1, 2**63])
def test_an_event_with_seq_past_int64_is_refused(seq: int) -> None:
    value = {**_event_value(), "seq": seq}
    data: bytes = msgpack.packb(dict(sorted(value.items())))
    with pytest.raises(DecodeError):  # old code: accepted
        CommitEvent.from_bytes(data)
    with pytest.raises(DecodeError):
        CommitEvent.from_value(value)  # type: ignore[arg-type]


def test_an_event_with_seq_in_range_is_accepted() -> None:
    value = {**_event_value(), "seq": 2**63 - 1}
    data: bytes = msgpack.packb(dict(sorted(value.items())))
    assert CommitEvent.from_bytes(data).repo == DID
    with pytest.raises(DecodeError):
        CommitEvent.from_value({**value, "seq": -1})


def test_decode_unchecked_leaves_the_range_to_the_schemas_that_bound_theirs() -> None:
    # decode_unchecked takes a uint64 (its callers' schemas bound the integers they
    # admit: a second walk of every event cost about 5% of verification) ...
    assert decode_unchecked(msgpack.packb([2**64 - 1])) == [2**64 - 1]
    # ... and the commit's one integer, its version, is checked exactly.
    commit = msgpack.unpackb(bytes.fromhex(_commit_hex()))
    with pytest.raises(DecodeError, match="version"):
        Commit.from_bytes(msgpack.packb({**commit, "version": 2**64 - 1}))


def _commit_hex() -> str:
    event = CommitEvent.from_value(_event_value())
    return event.block_map()[event.commit].hex()


# -- finding 10: block streams -------------------------------------------------------------


def test_a_block_stream_header_with_version_true_is_refused() -> None:
    block = encode({"x": 1})
    cid = cid_for_msgpack(block)
    header = msgpack.packb({"roots": [cid.to_bytes()], "version": True})
    assert header is not None
    body = b"".join(write_car([cid], [(cid, block)]))
    good_header_len = body[0]
    forged = bytes([len(header)]) + header + body[1 + good_header_len :]
    with pytest.raises(DecodeError, match="version"):  # old code: accepted
        read_car(forged)
    assert read_car(body)[0] == [cid]


def test_a_block_of_exactly_two_mib_is_read_and_one_byte_more_is_not() -> None:
    blob = bytes(MAX_BLOCK)
    cid = cid_for_raw(blob)
    _roots, blocks = read_car(b"".join(write_car([cid], [(cid, blob)])))  # old: refused
    assert blocks[cid] == blob
    over = blob + b"\0"
    over_cid = cid_for_raw(over)
    with pytest.raises(DecodeError):
        read_car(b"".join(write_car([over_cid], [(over_cid, over)])))


def test_an_event_stream_frame_with_op_true_is_refused() -> None:
    body = encode({"a": 1})
    with pytest.raises(DecodeError):  # old code: taken for op 1
        decode_frame(msgpack.packb({"op": True, "t": "#commit"}) + body)
    with pytest.raises(DecodeError):
        decode_frame(msgpack.packb({"op": False}) + body)
    assert decode_frame(encode({"op": 1, "t": "#commit"}) + body)[0]["op"] == 1
