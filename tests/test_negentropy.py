"""Tests for protocol.negentropy.

The known-answer vectors under tests/vectors/negentropy/ were recorded from the
hoytech/negentropy reference harnesses (C++, and JS where it can represent the
timestamps); each one is replayed here byte for byte, from both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, NegentropyError
from protocol.negentropy import (
    ID_SIZE,
    INFINITY,
    PROTOCOL_VERSION,
    Bound,
    Message,
    Mode,
    Negentropy,
    NegentropyStorageVector,
    Range,
    decode_varint,
    encode_varint,
    fingerprint_of,
)

VECTOR_DIR = Path(__file__).parent / "vectors" / "negentropy"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))
HARNESS = Path(__file__).parent / "interop" / "negentropy_harness.py"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def storage_of(items: list[tuple[int, bytes]] | list[list[Any]]) -> NegentropyStorageVector:
    s = NegentropyStorageVector()
    for ts, id_ in items:
        s.insert(int(ts), bytes.fromhex(id_) if isinstance(id_, str) else id_)
    s.seal()
    return s


@dataclass(frozen=True, slots=True)
class Outcome:
    have: set[bytes]
    need: set[bytes]
    round_trips: int
    up: int
    down: int


def reconcile_pair(
    client: list[tuple[int, bytes]],
    server: list[tuple[int, bytes]],
    fsl_client: int = 0,
    fsl_server: int = 0,
) -> Outcome:
    """Run a whole reconciliation in memory (h11's ConnectionPair idea)."""
    c = Negentropy(storage_of(client), fsl_client)
    s = Negentropy(storage_of(server), fsl_server)
    have: set[bytes] = set()
    need: set[bytes] = set()
    msg: bytes | None = c.initiate()
    up = down = rounds = 0
    while msg is not None:
        assert not fsl_client or len(msg) <= fsl_client
        up += len(msg)
        answer = s.reconcile(msg)
        assert not fsl_server or len(answer) <= fsl_server
        down += len(answer)
        rounds += 1
        msg, h, n = c.reconcile_client(answer)
        have.update(h)
        need.update(n)
        assert rounds < 100, "reconciliation does not converge"
    return Outcome(have, need, rounds, up, down)


# ------------------------------------------------------------------ recorded vectors


def exchange_vectors() -> list[Path]:
    return [p for p in VECTORS if "client" in load(p)]


@pytest.mark.parametrize("path", exchange_vectors(), ids=lambda p: p.stem)
def test_vector_client_side(path: Path) -> None:
    vec = load(path)
    exchange = vec["exchange"]
    ne = Negentropy(storage_of(vec["client"]["items"]), vec["client"]["frame_size_limit"])
    assert ne.initiate().hex() == exchange[0]["msg"]
    have: list[bytes] = []
    need: list[bytes] = []
    for k, i in enumerate(range(1, len(exchange), 2)):
        assert exchange[i]["from"] == "server"
        step = ne.reconcile_client(bytes.fromhex(exchange[i]["msg"]))
        expected_next = exchange[i + 1]["msg"] if i + 1 < len(exchange) else None
        assert (step.next_message.hex() if step.next_message else None) == expected_next
        # The order of need ids is the reference's hash-set order; compare as sets.
        assert sorted(x.hex() for x in step.have_ids) == vec["rounds"][k]["have"]
        assert sorted(x.hex() for x in step.need_ids) == vec["rounds"][k]["need"]
        have += step.have_ids
        need += step.need_ids
    assert sorted(x.hex() for x in have) == vec["have"]
    assert sorted(x.hex() for x in need) == vec["need"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_server_side(path: Path) -> None:
    vec = load(path)
    ne = Negentropy(storage_of(vec["server"]["items"]), vec["server"]["frame_size_limit"])
    exchange = vec["exchange"]
    for i in range(0, len(exchange), 2):
        assert exchange[i]["from"] == "client"
        answer = ne.reconcile(bytes.fromhex(exchange[i]["msg"]))
        assert answer.hex() == exchange[i + 1]["msg"], f"server answer {i // 2}"


@pytest.mark.parametrize("path", exchange_vectors(), ids=lambda p: p.stem)
def test_vector_messages_round_trip_through_message(path: Path) -> None:
    for entry in load(path)["exchange"]:
        raw = bytes.fromhex(entry["msg"])
        assert Message.from_bytes(raw).to_bytes() == raw


def test_vectors_present() -> None:
    assert len(VECTORS) >= 10


# --------------------------------------------------------------------- wire details


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8100"),
        (16383, "ff7f"),
        (16384, "818000"),
        (2**64 - 1, "81ffffffffffffffff7f"),
    ],
    ids=lambda v: str(v),
)
def test_varint_known(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw + b"\x00", 0) == (value, len(raw))


@pytest.mark.parametrize(
    "raw",
    ["", "80", "ff", "8080", "8001", "82808080808080808000"],
    ids=["empty", "truncated", "truncated-ff", "non-minimal-trunc", "non-minimal", "over-64-bits"],
)
def test_varint_refused(raw: str) -> None:
    with pytest.raises(NegentropyError):
        decode_varint(bytes.fromhex(raw), 0)


def test_fingerprint_definition() -> None:
    ids = [hashlib.sha256(bytes([i])).digest() for i in range(40)]
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    expected = hashlib.sha256(total.to_bytes(32, "little") + encode_varint(40)).digest()[:16]
    s = storage_of([(7, i) for i in ids])
    assert s.fingerprint(0, 40) == expected == fingerprint_of(total + 5 * 2**256, 40)
    assert s.fingerprint(3, 3) == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]


def test_minimal_bounds_use_shortest_prefix() -> None:
    # 32 items on one timestamp whose ids share 3 leading bytes in pairs: every bucket
    # boundary must then carry a 4-byte prefix, or 0 bytes where timestamps differ.
    items = [(5, bytes([1, 2, 3, i]) + bytes(28)) for i in range(32)]
    msg = Message.from_bytes(Negentropy(storage_of(items)).initiate())
    bounds = [r.upper_bound for r in msg.ranges]
    assert all(r.mode == Mode.FINGERPRINT for r in msg.ranges)
    assert bounds[-1] == Bound(INFINITY)
    assert bounds[:-1] == [Bound(5, bytes([1, 2, 3, 2 * k])) for k in range(1, 16)]
    spread = [(k, bytes([k]) * 32) for k in range(32)]
    bounds = [
        r.upper_bound for r in Message.from_bytes(Negentropy(storage_of(spread)).initiate()).ranges
    ]
    assert bounds[:-1] == [Bound(2 * k) for k in range(1, 16)]


def test_initial_message_shapes() -> None:
    empty = Negentropy(storage_of([])).initiate()
    assert empty.hex() == "6100000200"  # infinity, no prefix, IdList of 0 ids
    few = [(i, bytes([i]) * 32) for i in range(31)]
    ranges = Message.from_bytes(Negentropy(storage_of(few)).initiate()).ranges
    assert [r.mode for r in ranges] == [Mode.ID_LIST]
    assert len(ranges[0].ids) == 31
    many = [(i, bytes([i]) * 32) for i in range(33)]
    ranges = Message.from_bytes(Negentropy(storage_of(many)).initiate()).ranges
    assert len(ranges) == 16
    assert all(r.mode == Mode.FINGERPRINT for r in ranges)


# ------------------------------------------------------------------ versions, errors


def test_server_answers_unknown_version_with_its_own() -> None:
    ne = Negentropy(storage_of([(12345, b"\xee" * 32)]))
    for version in (0x60, 0x62, 0x6F):
        assert ne.reconcile(bytes([version]) + b"\xaa\xbb") == bytes([PROTOCOL_VERSION])
    for version in (0x00, 0x5F, 0x70, 0xFF):
        with pytest.raises(NegentropyError):
            ne.reconcile(bytes([version]))


def test_client_refuses_other_versions() -> None:
    ne = Negentropy(storage_of([]))
    ne.initiate()
    for version in (0x60, 0x62, 0x70):
        with pytest.raises(NegentropyError):
            ne.reconcile_client(bytes([version]))


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "61" + "00",  # bound without prefix length
        "61" + "0021" + "00" * 33 + "00",  # prefix of 33 bytes
        "61" + "0001",  # prefix length without its byte
        "61" + "000003",  # unknown mode
        "61" + "0000" + "01" + "00" * 15,  # short fingerprint
        "61" + "0000" + "02" + "02" + "00" * 63,  # id list one byte short
        "61" + "0000" + "02" + "81ffffffffffffffff7f",  # absurd id count
        "61" + "0501ab00" + "0101aa00",  # same timestamp, prefix goes backwards
        "61" + "00000000" + "020000",  # past infinity: overflow
        "61" + "ffffffffffffffffffff7f0000",  # varint over 64 bits
    ],
    ids=[
        "empty",
        "truncated-bound",
        "prefix-too-long",
        "prefix-truncated",
        "unknown-mode",
        "short-fingerprint",
        "short-idlist",
        "huge-idlist-count",
        "bounds-backwards",
        "timestamp-overflow",
        "varint-overflow",
    ],
)
def test_malformed_messages_refused(raw: str) -> None:
    data = bytes.fromhex(raw)
    server = Negentropy(storage_of([(i, bytes([i]) * 32) for i in range(40)]))
    with pytest.raises(NegentropyError):
        server.reconcile(data)
    client = Negentropy(storage_of([(i, bytes([i]) * 32) for i in range(40)]))
    client.initiate()
    with pytest.raises(NegentropyError):
        client.reconcile_client(data)
    with pytest.raises(NegentropyError):
        Message.from_bytes(data)


def test_equal_infinity_bounds_accepted() -> None:
    # The reference closes a truncated frame with a second infinity range after one
    # that already reached infinity; that must parse.
    raw = bytes.fromhex("61" + "000002" + "00") + bytes.fromhex("000001") + bytes(16)
    assert len(Message.from_bytes(raw).ranges) == 2


def test_over_long_message_refused() -> None:
    ne = Negentropy(storage_of([]), max_message_size=4096)
    big = bytes([PROTOCOL_VERSION]) + bytes.fromhex("0000") + b"\x02" + encode_varint(128)
    big += bytes(32 * 128)
    with pytest.raises(NegentropyError):
        ne.reconcile(big)
    with pytest.raises(NegentropyError):
        Message.from_bytes(big, max_message_size=4096)


def test_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        Negentropy(storage_of([]), 4095)
    Negentropy(storage_of([]), 4096)
    ne = Negentropy(storage_of([]))
    with pytest.raises(LocalProtocolError):
        ne.reconcile_client(b"\x61")
    ne.initiate()
    with pytest.raises(LocalProtocolError):
        ne.initiate()
    with pytest.raises(LocalProtocolError):
        ne.reconcile(b"\x61")
    s = NegentropyStorageVector()
    with pytest.raises(LocalProtocolError):
        s.size()
    with pytest.raises(LocalProtocolError):
        s.insert(1, b"short")
    with pytest.raises(LocalProtocolError):
        s.insert(INFINITY, bytes(32))
    s.insert(1, bytes(32))
    s.insert(1, bytes(32))
    with pytest.raises(LocalProtocolError):
        s.seal()


def test_same_id_different_timestamps_is_two_items() -> None:
    # The reference only refuses exact (timestamp, id) duplicates.
    s = storage_of([(1, bytes(32)), (2, bytes(32))])
    assert s.size() == 2


# ----------------------------------------------------------------------- properties


def random_sets(
    seed: int, n: int, p_client: float, p_server: float, ts_span: int
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    rng = random.Random(seed)
    client: list[tuple[int, bytes]] = []
    server: list[tuple[int, bytes]] = []
    for _ in range(n):
        # Ids that often share a long prefix exercise the minimal-bound prefixes.
        id_ = bytes(rng.randrange(3)) + rng.randbytes(ID_SIZE)
        item = (rng.randrange(ts_span), id_[:ID_SIZE])
        r = rng.random()
        if r < p_client:
            client.append(item)
        elif r < p_client + p_server:
            server.append(item)
        else:
            client.append(item)
            server.append(item)
    return client, server


frame_limits = st.sampled_from([0, 4096, 5000])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 1500),
    p_client=st.floats(0, 0.5),
    p_server=st.floats(0, 0.5),
    ts_span=st.sampled_from([1, 3, 100, 10**6, 2**64 - 1]),
    fsl_client=frame_limits,
    fsl_server=frame_limits,
)
def test_reconciles_to_symmetric_difference(
    seed: int,
    n: int,
    p_client: float,
    p_server: float,
    ts_span: int,
    fsl_client: int,
    fsl_server: int,
) -> None:
    client, server = random_sets(seed, n, p_client, p_server, ts_span)
    out = reconcile_pair(client, server, fsl_client, fsl_server)
    c_ids = {i for _, i in client}
    s_ids = {i for _, i in server}
    assert out.have == c_ids - s_ids
    assert out.need == s_ids - c_ids


item_strategy = st.tuples(
    st.sampled_from([0, 1, 2, 1677970534, INFINITY - 1]),
    st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
)


@settings(max_examples=100, deadline=None)
@given(
    shared=st.lists(item_strategy, max_size=60, unique_by=lambda it: it[1]),
    only_client=st.lists(item_strategy, max_size=40, unique_by=lambda it: it[1]),
    only_server=st.lists(item_strategy, max_size=40, unique_by=lambda it: it[1]),
)
def test_reconciles_explicit_sets(
    shared: list[tuple[int, bytes]],
    only_client: list[tuple[int, bytes]],
    only_server: list[tuple[int, bytes]],
) -> None:
    shared_ids = {i for _, i in shared}
    only_client = [it for it in only_client if it[1] not in shared_ids]
    client_ids = shared_ids | {i for _, i in only_client}
    only_server = [it for it in only_server if it[1] not in client_ids]
    out = reconcile_pair(shared + only_client, shared + only_server)
    assert out.have == {i for _, i in only_client}
    assert out.need == {i for _, i in only_server}


def valid_messages() -> list[bytes]:
    client, server = random_sets(7, 400, 0.1, 0.1, 50)
    c = Negentropy(storage_of(client), 4096)
    s = Negentropy(storage_of(server), 4096)
    msgs = [c.initiate()]
    msgs.append(s.reconcile(msgs[-1]))
    nxt = c.reconcile_client(msgs[-1]).next_message
    assert nxt is not None
    msgs.append(nxt)
    return msgs


VALID_MESSAGES = tuple(valid_messages())


def feed_both_sides(data: bytes) -> None:
    """Give `data` to a server and a client; only NegentropyError may come out."""
    items = [(i // 3, hashlib.sha256(bytes([i])).digest()) for i in range(100)]
    server = Negentropy(storage_of(items), 4096)
    client = Negentropy(storage_of(items))
    client.initiate()
    for call in (server.reconcile, client.reconcile_client):
        with contextlib.suppress(NegentropyError):
            call(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_negentropy_error(data: bytes) -> None:
    feed_both_sides(data)
    feed_both_sides(b"\x61" + data)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(VALID_MESSAGES) - 1),
    pos=st.integers(0, 10**6),
    byte=st.integers(0, 255),
    cut=st.booleans(),
)
def test_mutated_messages_raise_only_negentropy_error(
    which: int, pos: int, byte: int, cut: bool
) -> None:
    msg = bytearray(VALID_MESSAGES[which])
    pos %= len(msg)
    if cut:
        del msg[pos:]
    else:
        msg[pos] = byte
    feed_both_sides(bytes(msg))


bound_steps = st.tuples(st.integers(0, 2**20), st.binary(max_size=ID_SIZE))


@given(
    st.lists(
        st.tuples(
            bound_steps,
            st.sampled_from(list(Mode)),
            st.binary(min_size=16, max_size=16),
            st.lists(st.binary(min_size=ID_SIZE, max_size=ID_SIZE), max_size=3),
        ),
        max_size=20,
    )
)
def test_message_round_trip(
    spec: list[tuple[tuple[int, bytes], Mode, bytes, list[bytes]]],
) -> None:
    ranges: list[Range] = []
    ts = 0
    for (step, prefix), mode, fp, ids in spec:
        # Strictly increasing timestamps keep the bounds in order whatever the prefix.
        ts += step + 1
        bound = Bound(ts, prefix)
        if mode == Mode.FINGERPRINT:
            ranges.append(Range(bound, mode, fingerprint=fp))
        elif mode == Mode.ID_LIST:
            ranges.append(Range(bound, mode, ids=tuple(ids)))
        else:
            ranges.append(Range(bound, mode))
    msg = Message(tuple(ranges))
    assert Message.from_bytes(msg.to_bytes()) == msg


# -------------------------------------------------------------------------- harness


def test_harness_pair_reconciles() -> None:
    """Two copies of the interop harness, driven like the reference's fuzz.pl."""
    client_items, server_items = random_sets(3, 300, 0.1, 0.1, 40)
    have: set[bytes] = set()
    need: set[bytes] = set()
    with contextlib.ExitStack() as stack:
        pipes: list[tuple[IO[str], IO[str]]] = []
        procs: list[subprocess.Popen[str]] = []
        for items, fsl in ((client_items, "4096"), (server_items, "")):
            p = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, str(HARNESS)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "FRAMESIZELIMIT": fsl},
                )
            )
            # Popen's __exit__ closes the pipes and waits, so no process outlives the test.
            stack.callback(p.kill)
            assert p.stdin is not None
            assert p.stdout is not None
            p.stdin.write("".join(f"item,{ts},{i.hex()}\n" for ts, i in items) + "seal\n")
            p.stdin.flush()
            pipes.append((p.stdin, p.stdout))
            procs.append(p)
        (c_in, c_out), (s_in, s_out) = pipes
        c_in.write("initiate\n")
        c_in.flush()
        for _ in range(200):
            line = c_out.readline().strip()
            if line.startswith(("have,", "need,")):
                (have if line[0] == "h" else need).add(bytes.fromhex(line[5:]))
                continue
            if line == "done":
                break
            assert line.startswith("msg,"), line
            assert len(line) // 2 - 2 <= 4096
            s_in.write(line + "\n")
            s_in.flush()
            answer = s_out.readline()
            assert answer.startswith("msg,"), answer
            c_in.write(answer)
            c_in.flush()
        else:
            pytest.fail("harness pair did not finish")
        for (stdin, _), p in zip(pipes, procs, strict=True):
            stdin.close()
            assert p.wait(timeout=10) == 0
    c_ids = {i for _, i in client_items}
    s_ids = {i for _, i in server_items}
    assert have == c_ids - s_ids
    assert need == s_ids - c_ids


def test_harness_answers_version_fallback() -> None:
    lines = "item,12345," + "ee" * 32 + "\nseal\nmsg,62aabbccddeeff\nmsg,6100000200\n"
    out = subprocess.run(
        [sys.executable, str(HARNESS)], input=lines, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["msg,61", "msg,6100000201" + "ee" * 32]


# ---------------------------------------------------------------------- performance


@pytest.mark.slow
def test_large_set_reconciles_quickly() -> None:
    rng = random.Random(1)
    n = 100_000
    items = [(1_600_000_000 + rng.randrange(n), rng.randbytes(32)) for _ in range(n)]
    missing = set(rng.sample(range(n), 100))
    client = [it for k, it in enumerate(items) if k not in missing]
    out = reconcile_pair(client, items)
    assert out.need == {items[k][1] for k in missing}
    assert not out.have
    assert out.round_trips == 2
