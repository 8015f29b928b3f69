"""atproto commits, Sync 1.1 commit-event verification, frames and CAR files.

The events are built the way a PDS builds them (``build_commit_event``) and then
attacked one field or one byte at a time: every forgery must be refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocol.atproto import dagcbor
from protocol.atproto.car import read_car, varint, write_car
from protocol.atproto.cid import CID, cid_for_dag_cbor, cid_for_raw
from protocol.atproto.commit import (
    ChainStatus,
    Commit,
    build_commit_event,
    chain_status,
    verify_commit_event,
    verify_repo,
    verify_sync_event,
)
from protocol.atproto.crypto import SigningKey
from protocol.atproto.firehose import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    IdentityEvent,
    InfoEvent,
    RepoOp,
    SyncEvent,
    UnknownEvent,
    decode_frame,
    encode_frame,
)
from protocol.atproto.mst import MST
from protocol.errors import DecodeError, InvalidCommit, InvalidSignature, RemoteProtocolError

from .atproto_vectors import example_keys

KEY = SigningKey.from_seed("k256", b"alice")
OTHER = SigningKey.from_seed("k256", b"mallory")
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TIME = "2026-12-02T12:00:00.000Z"
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def record(i: int) -> bytes:
    return dagcbor.encode({"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": TIME})


def path(i: int) -> str:
    return f"app.bsky.feed.post/3k{i:011d}"


@pytest.fixture(scope="module")
def base() -> tuple[MST, CommitEvent]:
    """A repo of 120 posts (made by one first commit)."""
    event, tree = build_commit_event(
        key=KEY,
        did=DID,
        old_tree=MST.empty(),
        ops=[("create", path(i), record(i)) for i in range(120)],
        rev="3kaaaaaaaaaaa",
        since=None,
        seq=1,
        time=TIME,
    )
    return tree, event


def next_event(
    base: tuple[MST, CommitEvent], ops: list[tuple[str, str, bytes | None]]
) -> CommitEvent:
    tree, first = base
    event, _ = build_commit_event(
        key=KEY,
        did=DID,
        old_tree=tree,
        ops=ops,
        rev="3kaaaaaaaaaab",
        since=first.rev,
        seq=2,
        time=TIME,
    )
    return event


MIXED = [
    ("delete", path(5), None),
    ("update", path(7), record(1000)),
    ("create", "app.bsky.feed.like/3k00000000001", record(5000)),
    ("create", path(500), record(500)),
]


@pytest.fixture(scope="module")
def mixed(base: tuple[MST, CommitEvent]) -> CommitEvent:
    return next_event(base, MIXED)


def test_first_commit_verifies(base: tuple[MST, CommitEvent]) -> None:
    tree, event = base
    assert event.prev_data == MST.empty().root_cid()
    done = verify_commit_event(decode_frame(encode_frame(event)), KEY.public)
    assert len(done.records) == 120
    assert done.commit.data == tree.root_cid()
    assert done.commit.did == DID


def test_mixed_commit_verifies(mixed: CommitEvent, base: tuple[MST, CommitEvent]) -> None:
    decoded = decode_frame(encode_frame(mixed))
    assert decoded == mixed
    done = verify_commit_event(decoded, KEY.public)
    assert set(done.records) == {path(7), "app.bsky.feed.like/3k00000000001", path(500)}
    assert done.records[path(7)] == record(1000)
    assert done.tree.get(path(5)) is None
    assert mixed.prev_data == base[0].root_cid()
    # Only the proof travels: far fewer blocks than the whole tree.
    assert len(read_car(mixed.blocks).blocks) < len(base[0].blocks())


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_both_curves(curve: Any) -> None:
    key = SigningKey.from_seed(curve, b"c")
    event, _ = build_commit_event(
        key=key,
        did=DID,
        old_tree=MST.empty(),
        ops=[("create", path(1), record(1))],
        rev="3kaaaaaaaaaaa",
        since=None,
        seq=1,
        time=TIME,
    )
    verify_commit_event(event, key.public)
    with pytest.raises(InvalidSignature):
        verify_commit_event(event, SigningKey.from_seed(curve, b"d").public)


# -- forgeries ------------------------------------------------------------------------


def _car_parts(event: CommitEvent) -> tuple[list[CID], dict[CID, bytes]]:
    car = read_car(event.blocks)
    return list(car.roots), dict(car.blocks)


def _with_commit(event: CommitEvent, commit: Commit) -> CommitEvent:
    _, blocks = _car_parts(event)
    blocks.pop(event.commit)
    block = commit.to_bytes()
    cid = cid_for_dag_cbor(block)
    car = write_car([cid], [(cid, block), *blocks.items()])
    return dataclasses.replace(event, commit=cid, blocks=car)


def _commit_of(event: CommitEvent) -> Commit:
    return Commit.from_bytes(read_car(event.blocks).blocks[event.commit])


def test_tampered_byte_anywhere_in_blocks_is_refused(mixed: CommitEvent) -> None:
    blocks = mixed.blocks
    # Every 7th byte (and the last) of the CAR: header, CIDs, commit, nodes, records.
    for i in [*range(0, len(blocks), 7), len(blocks) - 1]:
        forged = bytearray(blocks)
        forged[i] ^= 0x01
        with pytest.raises((DecodeError, InvalidCommit, InvalidSignature)):
            verify_commit_event(dataclasses.replace(mixed, blocks=bytes(forged)), KEY.public)


def test_resigned_by_another_key(mixed: CommitEvent) -> None:
    forged = _with_commit(mixed, _commit_of(mixed).signed(OTHER))
    with pytest.raises(InvalidSignature):
        verify_commit_event(forged, KEY.public)
    verify_commit_event(forged, OTHER.public)  # the forgery is otherwise well-formed


def test_high_s_commit_signature_refused(mixed: CommitEvent) -> None:
    commit = _commit_of(mixed)
    s = int.from_bytes(commit.sig[32:], "big")
    high = dataclasses.replace(commit, sig=commit.sig[:32] + (N - s).to_bytes(32, "big"))
    with pytest.raises(InvalidSignature, match="high-S"):
        verify_commit_event(_with_commit(mixed, high), KEY.public)


def test_commit_for_other_did_or_rev(mixed: CommitEvent) -> None:
    commit = _commit_of(mixed)
    other_did = dataclasses.replace(commit, did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").signed(KEY)
    with pytest.raises(InvalidCommit, match="DID"):
        verify_commit_event(_with_commit(mixed, other_did), KEY.public)
    other_rev = dataclasses.replace(commit, rev="3kaaaaaaaaaac").signed(KEY)
    with pytest.raises(InvalidCommit, match="rev"):
        verify_commit_event(_with_commit(mixed, other_rev), KEY.public)


def test_wrong_prev_data(mixed: CommitEvent) -> None:
    forged = dataclasses.replace(mixed, prev_data=cid_for_dag_cbor(b"\xa0"))
    with pytest.raises(InvalidCommit, match="prevData"):
        verify_commit_event(forged, KEY.public)


def test_undeclared_change_is_caught(base: tuple[MST, CommitEvent]) -> None:
    """The PDS changes two records but declares one: the undo misses the other."""
    event = next_event(base, [("create", path(600), record(600)), ("delete", path(9), None)])
    forged = dataclasses.replace(event, ops=event.ops[:1])
    with pytest.raises(InvalidCommit):
        verify_commit_event(forged, KEY.public)


def test_op_cid_disagrees_with_tree(mixed: CommitEvent) -> None:
    ops = list(mixed.ops)
    ops[1] = dataclasses.replace(ops[1], cid=cid_for_dag_cbor(record(1)))
    with pytest.raises(InvalidCommit, match="disagrees"):
        verify_commit_event(dataclasses.replace(mixed, ops=tuple(ops)), KEY.public)


def test_wrong_prev_on_update_or_delete(mixed: CommitEvent) -> None:
    for i in (0, 1):
        ops = list(mixed.ops)
        ops[i] = dataclasses.replace(ops[i], prev=cid_for_dag_cbor(record(99999)))
        with pytest.raises(InvalidCommit, match="prevData"):
            verify_commit_event(dataclasses.replace(mixed, ops=tuple(ops)), KEY.public)


@pytest.mark.parametrize(
    "change",
    [
        lambda op: dataclasses.replace(op, prev=op.cid),  # create with prev
        lambda op: dataclasses.replace(op, cid=None),  # create without cid
        lambda op: RepoOp("delete", op.path, op.cid, op.cid),  # delete with cid
        lambda op: RepoOp("update", op.path, op.cid, None),  # update without prev
    ],
    ids=["create-with-prev", "create-without-cid", "delete-with-cid", "update-without-prev"],
)
def test_malformed_ops(mixed: CommitEvent, change: Any) -> None:
    ops = list(mixed.ops)
    ops[2] = change(ops[2])
    with pytest.raises(InvalidCommit):
        verify_commit_event(dataclasses.replace(mixed, ops=tuple(ops)), KEY.public)


def test_duplicate_op(mixed: CommitEvent) -> None:
    forged = dataclasses.replace(mixed, ops=(*mixed.ops, mixed.ops[0]))
    with pytest.raises(InvalidCommit, match="two ops"):
        verify_commit_event(forged, KEY.public)


def test_missing_proof_node(mixed: CommitEvent) -> None:
    roots, blocks = _car_parts(mixed)
    commit = _commit_of(mixed)
    records = {cid_for_dag_cbor(record(i)) for i in (1000, 5000, 500)}
    nodes = [c for c in blocks if c not in records and c != mixed.commit]
    assert commit.data in nodes
    for node in nodes:
        kept = {c: b for c, b in blocks.items() if c != node}
        forged = dataclasses.replace(mixed, blocks=write_car(roots, kept.items()))
        with pytest.raises(InvalidCommit, match="proof is incomplete"):
            verify_commit_event(forged, KEY.public)


def test_missing_record_block(mixed: CommitEvent) -> None:
    roots, blocks = _car_parts(mixed)
    blocks.pop(cid_for_dag_cbor(record(500)))
    forged = dataclasses.replace(mixed, blocks=write_car(roots, blocks.items()))
    with pytest.raises(InvalidCommit, match="record block"):
        verify_commit_event(forged, KEY.public)


def test_car_root_or_commit_missing(mixed: CommitEvent) -> None:
    roots, blocks = _car_parts(mixed)
    other_root = write_car([cid_for_dag_cbor(b"\xa0")], blocks.items())
    with pytest.raises(InvalidCommit, match="root"):
        verify_commit_event(dataclasses.replace(mixed, blocks=other_root), KEY.public)
    blocks.pop(mixed.commit)
    no_commit = write_car(roots, blocks.items())
    with pytest.raises(InvalidCommit, match="commit block"):
        verify_commit_event(dataclasses.replace(mixed, blocks=no_commit), KEY.public)


def test_retired_flags_and_rev_order(mixed: CommitEvent) -> None:
    for forged in (
        dataclasses.replace(mixed, too_big=True),
        dataclasses.replace(mixed, rebase=True),
        dataclasses.replace(mixed, since=mixed.rev),
        dataclasses.replace(mixed, prev_data=None),
    ):
        with pytest.raises(InvalidCommit):
            verify_commit_event(forged, KEY.public)


def test_noop_update_refused(mixed: CommitEvent) -> None:
    """An update whose cid is its prev changes nothing, so the proof cannot catch a
    relay that adds one for any record: refused."""
    fake = RepoOp("update", path(8), cid_for_dag_cbor(record(8)), cid_for_dag_cbor(record(8)))
    with pytest.raises(InvalidCommit, match="equals prev"):
        verify_commit_event(dataclasses.replace(mixed, ops=(*mixed.ops, fake)), KEY.public)


def test_first_commit_without_prev_data_is_proved_against_empty_tree(
    base: tuple[MST, CommitEvent],
) -> None:
    _, first = base
    verify_commit_event(dataclasses.replace(first, prev_data=None), KEY.public)
    # Leaving out one create no longer builds the tree from nothing.
    short = dataclasses.replace(first, prev_data=None, ops=first.ops[1:])
    with pytest.raises(InvalidCommit, match="prevData"):
        verify_commit_event(short, KEY.public)


def test_legacy_event_without_prev_data(mixed: CommitEvent) -> None:
    legacy = dataclasses.replace(mixed, prev_data=None)
    done = verify_commit_event(legacy, KEY.public, require_proof=False)
    assert done.commit.rev == mixed.rev


def test_chain_status(mixed: CommitEvent, base: tuple[MST, CommitEvent]) -> None:
    tree, first = base
    assert chain_status(mixed, None, None) is ChainStatus.NEXT
    assert chain_status(mixed, first.rev, tree.root_cid()) is ChainStatus.NEXT
    assert chain_status(mixed, mixed.rev, tree.root_cid()) is ChainStatus.STALE
    assert chain_status(mixed, "3kaaaaaaaaaa2", tree.root_cid()) is ChainStatus.GAP
    assert chain_status(mixed, first.rev, cid_for_dag_cbor(b"\xa0")) is ChainStatus.GAP


def test_sync_event_and_repo_export(base: tuple[MST, CommitEvent]) -> None:
    tree, first = base
    commit = _commit_of(first)
    block = commit.to_bytes()
    cid = cid_for_dag_cbor(block)
    sync = SyncEvent(3, DID, write_car([cid], [(cid, block)]), commit.rev, TIME)
    decoded = decode_frame(encode_frame(sync))
    assert decoded == sync
    assert isinstance(decoded, SyncEvent)
    assert verify_sync_event(decoded, KEY.public) == commit
    with pytest.raises(InvalidSignature):
        verify_sync_event(sync, OTHER.public)
    with pytest.raises(InvalidCommit):
        verify_sync_event(dataclasses.replace(sync, rev="3kaaaaaaaaaaz"), KEY.public)

    records = {cid_for_dag_cbor(record(i)): record(i) for i in range(120)}
    export = write_car([cid], [(cid, block), *tree.blocks().items(), *records.items()])
    got_commit, got = verify_repo(export, DID, KEY.public)
    assert got_commit == commit
    assert got == {path(i): (cid_for_dag_cbor(record(i)), record(i)) for i in range(120)}
    short = write_car([cid], [(cid, block), *tree.blocks().items()])
    with pytest.raises(InvalidCommit, match="missing"):
        verify_repo(short, DID, KEY.public)
    with pytest.raises(InvalidCommit):
        verify_repo(export, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", KEY.public)


def test_commit_block_strictness() -> None:
    commit = Commit(DID, cid_for_dag_cbor(b"\xa0"), "3kaaaaaaaaaaa", None).signed(KEY)
    assert Commit.from_bytes(commit.to_bytes()) == commit
    good: dict[str, Any] = dagcbor.decode(commit.to_bytes())  # type: ignore[assignment]
    bad = {
        "version-2": {**good, "version": 2},
        "no-prev": {k: v for k, v in good.items() if k != "prev"},
        "extra": {**good, "x": 1},
        "data-raw-codec": {**good, "data": cid_for_raw(b"x")},
        "did-bad": {**good, "did": "not a did"},
        "rev-bad": {**good, "rev": "notatid"},
        "sig-text": {**good, "sig": "abc"},
    }
    for name, value in bad.items():
        with pytest.raises(InvalidCommit):
            Commit.from_bytes(dagcbor.encode(value))
        assert name


# -- frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        IdentityEvent(5, DID, TIME, "alice.example.com"),
        IdentityEvent(5, DID, TIME),
        AccountEvent(6, DID, TIME, False, "takendown"),
        AccountEvent(6, DID, TIME, True),
        InfoEvent("OutdatedCursor", "cursor is too old"),
        ErrorFrame("FutureCursor", "cursor in the future"),
        ErrorFrame("ConsumerTooSlow"),
        ErrorFrame("OutdatedCursor"),
        UnknownEvent("#labels"),
    ],
    ids=lambda f: type(f).__name__,
)
def test_frame_roundtrip(frame: Any) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def _frame(header: Any, body: Any) -> bytes:
    return dagcbor.encode(header) + dagcbor.encode(body)


BODY_IDENTITY = {"seq": 1, "did": DID, "time": TIME}
BAD_FRAMES = {
    "op-2": _frame({"op": 2, "t": "#identity"}, BODY_IDENTITY),
    "op-true": _frame({"op": True, "t": "#identity"}, BODY_IDENTITY),
    "no-t": _frame({"op": 1}, BODY_IDENTITY),
    "header-extra": _frame({"op": 1, "t": "#identity", "x": 1}, BODY_IDENTITY),
    "header-list": _frame([1], BODY_IDENTITY),
    "body-list": _frame({"op": 1, "t": "#identity"}, []),
    "third-object": _frame({"op": 1, "t": "#identity"}, BODY_IDENTITY) + b"\x00",
    "header-only": dagcbor.encode({"op": 1, "t": "#identity"}),
    "seq-negative": _frame({"op": 1, "t": "#identity"}, {**BODY_IDENTITY, "seq": -1}),
    "seq-text": _frame({"op": 1, "t": "#identity"}, {**BODY_IDENTITY, "seq": "1"}),
    "did-bad": _frame({"op": 1, "t": "#identity"}, {**BODY_IDENTITY, "did": "alice"}),
    "time-bad": _frame({"op": 1, "t": "#identity"}, {**BODY_IDENTITY, "time": "yesterday"}),
    "handle-bad": _frame({"op": 1, "t": "#identity"}, {**BODY_IDENTITY, "handle": "no spaces"}),
    "account-active-int": _frame({"op": 1, "t": "#account"}, {**BODY_IDENTITY, "active": 1}),
    "error-no-name": _frame({"op": -1}, {"message": "x"}),
    "body-truncated": _frame({"op": 1, "t": "#info"}, {"name": "x"})[:-1],
    "float-in-body": dagcbor.encode({"op": 1, "t": "#info"})
    + bytes.fromhex("a1616efb3ff8000000000000"),
}


@pytest.mark.parametrize("data", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_bad_frames(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(data)


def _commit_body(event: CommitEvent) -> dict[str, Any]:
    header, body = dagcbor.decode_many(encode_frame(event), 2, max_size=10**7)
    assert header == {"op": 1, "t": "#commit"}
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    "change",
    [
        {"ops": [{"action": "upsert", "path": "a.b/c", "cid": None}]},
        {"ops": [{"action": "create", "path": "no-slash", "cid": None}]},
        {"ops": [{"action": ["create"], "path": "a.b/c", "cid": None}]},
        {"ops": [{"action": "create", "path": "a.b/c", "cid": "bafy"}]},
        {"ops": [{"action": "delete", "path": "a.b/c", "cid": None, "prev": b"x"}]},
        {"ops": [{"action": "create", "path": "a.b/c", "cid": None}] * 201},
        {"commit": "bafyrei"},
        {"rev": "not-a-tid"},
        {"since": 5},
        {"blocks": "text"},
        {"tooBig": 0},
        {"prevData": b"\x01"},
    ],
    ids=[
        "action",
        "path",
        "action-list",
        "cid-text",
        "prev-bytes",
        "too-many-ops",
        "commit-text",
        "rev",
        "since",
        "blocks",
        "tooBig",
        "prevData",
    ],
)
def test_bad_commit_bodies(mixed: CommitEvent, change: dict[str, Any]) -> None:
    body = {**_commit_body(mixed), **change}
    with pytest.raises(DecodeError):
        decode_frame(_frame({"op": 1, "t": "#commit"}, body))


def test_oversize_frame_and_blocks(mixed: CommitEvent) -> None:
    raw = encode_frame(mixed)
    with pytest.raises(DecodeError, match="over"):
        decode_frame(raw, max_size=len(raw) - 1)
    body = {**_commit_body(mixed), "blocks": b"\x00" * 2_000_001}
    with pytest.raises(DecodeError):
        decode_frame(_frame({"op": 1, "t": "#commit"}, body))


# -- CAR ------------------------------------------------------------------------------

BLOCK = dagcbor.encode({"a": 1})
BCID = cid_for_dag_cbor(BLOCK)


def _header(value: Any) -> bytes:
    h = dagcbor.encode(value)
    return varint(len(h)) + h


def _section(cid: CID, block: bytes) -> bytes:
    return varint(36 + len(block)) + cid.to_bytes() + block


BAD_CARS = {
    "empty": b"",
    "header-version-2": _header({"roots": [BCID], "version": 2}),
    "header-version-true": _header({"roots": [BCID], "version": True}),
    "header-no-roots": _header({"roots": [], "version": 1}),
    "header-root-bytes": _header({"roots": [BCID.to_bytes()], "version": 1}),
    "header-extra": _header({"roots": [BCID], "version": 1, "x": 1}),
    "header-length-zero": b"\x00",
    "header-truncated": _header({"roots": [BCID], "version": 1})[:-1],
    "block-wrong-hash": _header({"roots": [BCID], "version": 1})
    + _section(BCID, dagcbor.encode({"a": 2})),
    "block-truncated": _header({"roots": [BCID], "version": 1}) + _section(BCID, BLOCK)[:-1],
    "block-short-section": _header({"roots": [BCID], "version": 1}) + b"\x05abcde",
    "varint-not-minimal": _header({"roots": [BCID], "version": 1}) + b"\xaa\x80\x00",
    "varint-too-long": _header({"roots": [BCID], "version": 1}) + b"\xff" * 10,
    "cid-v0": _header({"roots": [BCID], "version": 1})
    + varint(34 + len(BLOCK))
    + b"\x12\x20"
    + BCID.digest
    + BLOCK,
}


@pytest.mark.parametrize("data", list(BAD_CARS.values()), ids=list(BAD_CARS))
def test_bad_cars(data: bytes) -> None:
    with pytest.raises(DecodeError):
        read_car(data)


def test_car_bounds() -> None:
    blocks = [(cid_for_dag_cbor(dagcbor.encode(i)), dagcbor.encode(i)) for i in range(20)]
    car = write_car([blocks[0][0]], blocks)
    assert len(read_car(car).blocks) == 20
    with pytest.raises(DecodeError, match="blocks"):
        read_car(car, max_blocks=19)
    with pytest.raises(DecodeError, match="over"):
        read_car(car, max_total=len(car) - 1)
    big = dagcbor.encode(b"x" * 5000)
    with pytest.raises(DecodeError, match="over-size"):
        read_car(write_car([BCID], [(cid_for_dag_cbor(big), big)]), max_block=4999)
    # The same block twice is the same bytes: kept once, counted twice.
    twice = write_car([BCID], [(BCID, BLOCK), (BCID, BLOCK)])
    assert read_car(twice).blocks == {BCID: BLOCK}
    with pytest.raises(DecodeError):
        read_car(twice, max_blocks=1)


def test_keys_fixture_paths_are_valid_op_paths() -> None:
    # The interop MST keys (e.g. "A0/374913") pass the op path check too.
    keys = example_keys()[:5]
    ops = [{"action": "create", "path": k, "cid": BCID} for k in keys]
    body = {
        "seq": 1,
        "repo": DID,
        "commit": BCID,
        "rev": "3kaaaaaaaaaaa",
        "since": None,
        "blocks": b"",
        "ops": ops,
        "blobs": [],
        "time": TIME,
        "tooBig": False,
        "rebase": False,
    }
    event = decode_frame(_frame({"op": 1, "t": "#commit"}, body))
    assert isinstance(event, CommitEvent)
    assert [op.path for op in event.ops] == keys


def test_every_flipped_or_cut_frame_fails_cleanly(mixed: CommitEvent) -> None:
    """Whatever a byte flip or a truncation does to a frame, decoding and verifying
    raise only our remote-error family, or accept a frame whose signed part is
    intact (a flip in ``time`` or ``seq`` can leave a valid frame)."""
    raw = encode_frame(mixed)
    accepted = 0
    variants = [raw[:n] for n in range(0, len(raw), 3)]
    for i in range(0, len(raw), 2):
        flipped = bytearray(raw)
        flipped[i] ^= 0x20
        variants.append(bytes(flipped))
    for data in variants:
        try:
            frame = decode_frame(data)
            if isinstance(frame, CommitEvent):
                done = verify_commit_event(frame, KEY.public)
                assert done.commit == _commit_of(mixed)
                accepted += 1
        except RemoteProtocolError:
            continue
    assert accepted < len(variants) // 10
