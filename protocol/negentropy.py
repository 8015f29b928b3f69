"""Negentropy protocol V1: range-based set reconciliation, sans-IO.

Two peers each hold a set of items ``(timestamp, 32-byte id)`` and want to learn the
symmetric difference of their sets with few round trips and few bytes. The client
(initiator) calls :meth:`Negentropy.initiate` and feeds every server answer to
:meth:`Negentropy.reconcile_client`; the server feeds every client message to
:meth:`Negentropy.reconcile`. Moving the bytes is the caller's business.

This is a byte-for-byte port of the reference implementations in hoytech/negentropy
(``cpp/negentropy.h``, ``js/Negentropy.js``) and follows ``docs/negentropy-protocol-v1.md``:
16 buckets per split, ranges of fewer than 32 items sent as id lists, minimal bounds
with the shortest distinguishing id prefix, timestamps delta-encoded with 0 meaning
infinity, fingerprint = first 16 bytes of sha256(sum of ids mod 2**256 as 32
little-endian bytes || varint(count)), and the reference's frame-size-limit
truncation (stop 200 bytes short of the limit and fingerprint the rest). Recorded
reference exchanges under ``tests/vectors/negentropy/`` pin that down.

It refuses, with :class:`~protocol.errors.NegentropyError`: an empty message, a
protocol byte outside 0x60-0x6F (a server answers a version it does not speak in
that range with just ``0x61``, as the reference does; a client refuses it), messages
longer than ``max_message_size``, truncated or over-long varints (more than 64 bits,
or padded with leading zero digits), timestamps past infinity, id prefixes longer than
32 bytes, bounds that go backwards, unknown modes, truncated fingerprints or id lists.
The reference would wrap the over-long varint, saturate the timestamp, treat the
backwards bound as an empty range and ignore anything after a frame-limit stop; for
well-formed input the answers are the same bytes, and ill-formed input gets an error
here instead of a guess. An answer can be some tens of times longer than the message
it answers (each mismatched fingerprint becomes 16), so a server that must bound its
output sets ``frame_size_limit``.

A session is bounded in rounds and time, so a hostile peer cannot keep a node in
one: a server refuses (``NegentropyError``) a message past :data:`MAX_ROUNDS`
answers or more than :data:`MAX_SESSION_SECONDS` after the session's first message;
a client stops after reading :data:`MAX_ROUNDS` answers or past the same time, with
the differences it found so far (:attr:`Negentropy.stopped_early`): they are real,
and once fetched the next session picks up where this one stopped. The clock is the
caller's (``now``, in seconds); without it only rounds are counted.

Misuse by this process (a frame size limit under 4096, initiating twice, asking the
wrong side's question, an unsealed or duplicated storage) is a
:class:`~protocol.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import itertools
import operator
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from protocol.errors import LocalProtocolError, NegentropyError

__all__ = [
    "BUCKETS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FINGERPRINT_SIZE",
    "ID_SIZE",
    "INFINITY",
    "MAX_ROUNDS",
    "MAX_SESSION_SECONDS",
    "MIN_FRAME_SIZE_LIMIT",
    "PROTOCOL_VERSION",
    "Bound",
    "ClientStep",
    "Item",
    "Message",
    "Mode",
    "Negentropy",
    "NegentropyStorageVector",
    "Range",
    "Storage",
    "decode_varint",
    "encode_varint",
    "fingerprint_of",
]

PROTOCOL_VERSION = 0x61
ID_SIZE = 32
FINGERPRINT_SIZE = 16
#: The reserved "infinity" timestamp (max u64). No item may carry it.
INFINITY = 2**64 - 1
#: The reference refuses smaller non-zero limits: the 200-byte slack must leave room.
MIN_FRAME_SIZE_LIMIT = 4096
#: Incoming size cap when the caller names none. A peer with no frame limit answers a
#: one-million-item set with at most a few tens of megabytes, so this is generous.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
BUCKETS = 16
#: Most messages one side of a session processes (a server: answers it gives; a
#: client: answers it reads). An honest session takes about log16(n / 32) + 2 rounds,
#: plus about one per frame of ids when the sets differ a lot: a 300,000-item
#: difference at a 500 kB frame limit takes 20, so 100 covers some 1.5 million
#: differing items in one session (a larger difference takes more sessions).
MAX_ROUNDS = 100
#: Longest a session may last, from its first message, in the caller's seconds.
MAX_SESSION_SECONDS = 60.0

_U64_MASK = 2**64 - 1
_SUM_MODULUS = 2**256
# Protocol versions live in 0x60..0x6F; anything else is not a negentropy message.
_VERSION_MIN = 0x60
_VERSION_MAX = 0x6F
# The reference stops adding to a frame once it passes limit - 200 bytes; the slack is
# for the closing "infinity, fingerprint" range.
_FRAME_SLACK = 200


class Mode(enum.IntEnum):
    """What a range's payload is."""

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Item:
    """One record as negentropy sees it: a timestamp and a 32-byte id."""

    timestamp: int
    id: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp < INFINITY:
            raise LocalProtocolError(f"item timestamp out of range: {self.timestamp}")
        if len(self.id) != ID_SIZE:
            raise LocalProtocolError(f"item id must be {ID_SIZE} bytes, got {len(self.id)}")


@dataclass(frozen=True, slots=True)
class Bound:
    """An exclusive upper bound: a timestamp and an id prefix (omitted bytes are 0).

    The prefix is kept exactly as sent, trailing zeros included, because the reference
    echoes a received bound back with the same length.
    """

    timestamp: int
    id_prefix: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp <= INFINITY:
            raise LocalProtocolError(f"bound timestamp out of range: {self.timestamp}")
        if len(self.id_prefix) > ID_SIZE:
            raise LocalProtocolError(f"bound id prefix longer than {ID_SIZE} bytes")

    @classmethod
    def from_item(cls, item: Item) -> Bound:
        return cls(item.timestamp, item.id)

    @property
    def key(self) -> bytes:
        """Sort key: 8-byte big-endian timestamp and the prefix padded to 32 bytes with zeros."""
        return _item_key(self.timestamp, self.id_prefix.ljust(ID_SIZE, b"\0"))


_ZERO_BOUND = Bound(0)
_INFINITY_BOUND = Bound(INFINITY)


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a message. ``fingerprint`` is set for FINGERPRINT, ``ids`` for ID_LIST."""

    upper_bound: Bound
    mode: Mode
    fingerprint: bytes = b""
    ids: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.mode == Mode.FINGERPRINT and len(self.fingerprint) != FINGERPRINT_SIZE:
            raise LocalProtocolError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
        if self.mode != Mode.FINGERPRINT and self.fingerprint:
            raise LocalProtocolError("only FINGERPRINT ranges carry a fingerprint")
        if self.mode != Mode.ID_LIST and self.ids:
            raise LocalProtocolError("only ID_LIST ranges carry ids")
        if any(len(i) != ID_SIZE for i in self.ids):
            raise LocalProtocolError(f"ids must be {ID_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded V1 message: an ordered list of adjacent ranges.

    ``from_bytes`` validates everything a reconciler relies on; ``to_bytes`` is its exact
    inverse for canonical input. Reconciliation itself does not go through ``to_bytes``:
    it builds its answer incrementally so it can stop at the frame size limit.
    """

    ranges: tuple[Range, ...]

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> Message:
        if len(data) > max_message_size:
            raise NegentropyError(
                f"negentropy message of {len(data)} bytes exceeds {max_message_size}"
            )
        if not data:
            raise NegentropyError("empty negentropy message")
        if data[0] != PROTOCOL_VERSION:
            raise NegentropyError(f"unsupported negentropy protocol version byte 0x{data[0]:02x}")
        return cls(tuple(_parse_ranges(data, 1)))

    def to_bytes(self) -> bytes:
        out = bytearray([PROTOCOL_VERSION])
        enc = _BoundEncoder()
        for r in self.ranges:
            out += enc.encode(r.upper_bound)
            out += encode_varint(r.mode)
            if r.mode == Mode.FINGERPRINT:
                out += r.fingerprint
            elif r.mode == Mode.ID_LIST:
                out += encode_varint(len(r.ids))
                out += b"".join(r.ids)
        return bytes(out)


class ClientStep(NamedTuple):
    """What one client round yields: the next message (None when done) and the ids found.

    ``have_ids``: ids this side has and the server lacks. ``need_ids``: ids the server
    has and this side lacks. When either side uses a frame size limit, the reference
    protocol may report an id again in a later round (a truncated frame folds ranges
    already settled into its closing fingerprint), so callers should de-duplicate.
    """

    next_message: bytes | None
    have_ids: list[bytes]
    need_ids: list[bytes]


# -------------------------------------------------------------------------- encoding


def encode_varint(n: int) -> bytes:
    """Base-128, most significant digit first, high bit set on all but the last byte."""
    if n < 0:
        raise LocalProtocolError("varint must be non-negative")
    if n < 0x80:
        return bytes((n,))
    digits = [n & 0x7F]
    n >>= 7
    while n:
        digits.append((n & 0x7F) | 0x80)
        n >>= 7
    digits.reverse()
    return bytes(digits)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``.

    Refuses truncation, values past 64 bits (the reference would silently wrap) and
    non-minimal encodings (a leading 0x80 digit), which no implementation produces.
    """
    end = len(data)
    if pos >= end:
        raise NegentropyError("negentropy message ends inside a varint")
    if data[pos] == 0x80:
        raise NegentropyError("non-minimal varint in negentropy message")
    value = 0
    while True:
        if pos >= end:
            raise NegentropyError("negentropy message ends inside a varint")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if value > _U64_MASK:
            raise NegentropyError("varint exceeds 64 bits in negentropy message")
        if not byte & 0x80:
            return value, pos


def fingerprint_of(id_sum: int, count: int) -> bytes:
    """Fingerprint of a range whose ids add up to ``id_sum`` (any int; taken mod 2**256)."""
    payload = (id_sum % _SUM_MODULUS).to_bytes(32, "little") + encode_varint(count)
    return hashlib.sha256(payload).digest()[:FINGERPRINT_SIZE]


_ID_OF_KEY = operator.itemgetter(slice(8, None))
_LITTLE_ENDIAN_INT = functools.partial(int.from_bytes, byteorder="little")


def _item_key(timestamp: int, id32: bytes) -> bytes:
    # Big-endian timestamp then id: plain bytes order is then (timestamp, id) order,
    # which lets bisect and sort work on one flat bytes object per item.
    return timestamp.to_bytes(8, "big") + id32


class _BoundEncoder:
    """Per-message timestamp delta state for outgoing bounds."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def encode(self, bound: Bound) -> bytes:
        ts = bound.timestamp
        if ts == INFINITY:
            self.last = INFINITY
            head = b"\x00"
        else:
            # Outgoing bounds never go backwards; the mask mirrors the reference's u64
            # arithmetic should that ever be violated.
            delta = (ts - self.last) & _U64_MASK
            self.last = ts
            head = encode_varint(delta + 1)
        return head + encode_varint(len(bound.id_prefix)) + bound.id_prefix


def _parse_ranges(data: bytes, pos: int) -> list[Range]:
    ranges: list[Range] = []
    last_ts = 0
    prev_key = _ZERO_BOUND.key
    end = len(data)
    while pos < end:
        raw_ts, pos = decode_varint(data, pos)
        if raw_ts == 0:
            ts = INFINITY
        else:
            ts = last_ts + raw_ts - 1
            if ts > INFINITY:
                raise NegentropyError("bound timestamp overflows past infinity")
        last_ts = ts
        prefix_len, pos = decode_varint(data, pos)
        if prefix_len > ID_SIZE:
            raise NegentropyError(f"bound id prefix of {prefix_len} bytes exceeds {ID_SIZE}")
        if pos + prefix_len > end:
            raise NegentropyError("negentropy message ends inside a bound")
        bound = Bound(ts, data[pos : pos + prefix_len])
        pos += prefix_len
        key = bound.key
        # Equal bounds (empty ranges) do occur: the reference may close a truncated frame
        # with a second infinity range. Going backwards never does.
        if key < prev_key:
            raise NegentropyError("negentropy bounds out of order")
        prev_key = key

        raw_mode, pos = decode_varint(data, pos)
        if raw_mode == Mode.SKIP:
            ranges.append(Range(bound, Mode.SKIP))
        elif raw_mode == Mode.FINGERPRINT:
            if pos + FINGERPRINT_SIZE > end:
                raise NegentropyError("negentropy message ends inside a fingerprint")
            fp = data[pos : pos + FINGERPRINT_SIZE]
            pos += FINGERPRINT_SIZE
            ranges.append(Range(bound, Mode.FINGERPRINT, fingerprint=fp))
        elif raw_mode == Mode.ID_LIST:
            count, pos = decode_varint(data, pos)
            # Check the length before slicing so a huge count costs nothing.
            if count > (end - pos) // ID_SIZE:
                raise NegentropyError("negentropy message ends inside an id list")
            ids = tuple(data[p : p + ID_SIZE] for p in range(pos, pos + count * ID_SIZE, ID_SIZE))
            pos += count * ID_SIZE
            ranges.append(Range(bound, Mode.ID_LIST, ids=ids))
        else:
            raise NegentropyError(f"unknown negentropy range mode {raw_mode}")
    return ranges


# --------------------------------------------------------------------------- storage


class Storage(Protocol):
    """What :class:`Negentropy` needs from a sealed, sorted item collection.

    Indices are positions in (timestamp, id) order; ranges are half-open.
    """

    def size(self) -> int: ...

    def get_item(self, index: int) -> Item: ...

    def ids(self, begin: int, end: int) -> list[bytes]: ...

    def find_lower_bound(self, begin: int, end: int, bound: Bound) -> int: ...

    def fingerprint(self, begin: int, end: int) -> bytes: ...


class NegentropyStorageVector:
    """In-memory sorted vector of items with O(1) range fingerprints.

    Items are kept as 40-byte keys (big-endian timestamp || id) so sorting and bisect
    run on plain bytes, and the id sums as prefix sums, so the fingerprint of any range
    is one subtraction and one sha256. A million items seal in a few seconds.
    """

    __slots__ = ("_keys", "_pending", "_prefix", "_sealed")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._keys: list[bytes] = []
        self._prefix: list[int] = [0]
        self._sealed = False

    def insert(self, timestamp: int, id: bytes) -> None:
        if self._sealed:
            raise LocalProtocolError("negentropy storage already sealed")
        if not 0 <= timestamp < INFINITY:
            raise LocalProtocolError(f"item timestamp out of range: {timestamp}")
        if len(id) != ID_SIZE:
            raise LocalProtocolError(f"item id must be {ID_SIZE} bytes, got {len(id)}")
        self._pending.append(_item_key(timestamp, bytes(id)))

    def insert_item(self, item: Item) -> None:
        self.insert(item.timestamp, item.id)

    def extend(self, items: Iterable[tuple[int, bytes]]) -> None:
        for timestamp, id in items:
            self.insert(timestamp, id)

    def seal(self) -> None:
        if self._sealed:
            raise LocalProtocolError("negentropy storage already sealed")
        keys = self._pending
        keys.sort()
        # map() over C callables rather than generator expressions: at a million items
        # this halves the time spent outside the sort.
        if any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
            raise LocalProtocolError("duplicate item inserted into negentropy storage")
        # Unreduced prefix sums: Python ints grow by a few bits at most, and reducing
        # once per query is cheaper than once per item.
        id_values = map(_LITTLE_ENDIAN_INT, map(_ID_OF_KEY, keys))
        self._prefix = list(itertools.accumulate(id_values, initial=0))
        self._keys = keys
        self._pending = []
        self._sealed = True

    @property
    def sealed(self) -> bool:
        return self._sealed

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        self._check_sealed()
        return len(self._keys)

    def get_item(self, index: int) -> Item:
        self._check_sealed()
        if not 0 <= index < len(self._keys):
            raise LocalProtocolError(f"item index {index} out of range")
        key = self._keys[index]
        return Item(int.from_bytes(key[:8], "big"), key[8:])

    def ids(self, begin: int, end: int) -> list[bytes]:
        self._check_range(begin, end)
        return [k[8:] for k in self._keys[begin:end]]

    def find_lower_bound(self, begin: int, end: int, bound: Bound) -> int:
        self._check_range(begin, end)
        return bisect_left(self._keys, bound.key, begin, end)

    def fingerprint(self, begin: int, end: int) -> bytes:
        self._check_range(begin, end)
        return fingerprint_of(self._prefix[end] - self._prefix[begin], end - begin)

    def _check_sealed(self) -> None:
        if not self._sealed:
            raise LocalProtocolError("negentropy storage not sealed")

    def _check_range(self, begin: int, end: int) -> None:
        self._check_sealed()
        if not 0 <= begin <= end <= len(self._keys):
            raise LocalProtocolError(f"bad negentropy storage range [{begin}, {end})")


# ------------------------------------------------------------------------ reconciler


class Negentropy:
    """One side of one reconciliation.

    A client calls :meth:`initiate` once, then :meth:`reconcile_client` on each answer
    until it returns no next message. A server answers each message with
    :meth:`reconcile`. ``frame_size_limit`` (0 = none, else >= 4096) caps every message
    this side produces; ``max_message_size`` caps what it accepts.
    """

    __slots__ = (
        "_frame_size_limit",
        "_initiator",
        "_max_message_size",
        "_max_rounds",
        "_max_seconds",
        "_rounds",
        "_started",
        "_stopped_early",
        "_storage",
    )

    def __init__(
        self,
        storage: Storage,
        frame_size_limit: int = 0,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_rounds: int = MAX_ROUNDS,
        max_seconds: float = MAX_SESSION_SECONDS,
    ) -> None:
        if frame_size_limit != 0 and frame_size_limit < MIN_FRAME_SIZE_LIMIT:
            raise LocalProtocolError(
                f"frame_size_limit must be 0 or at least {MIN_FRAME_SIZE_LIMIT}"
            )
        if max_message_size < 1:
            raise LocalProtocolError("max_message_size must be positive")
        if max_rounds < 1 or max_seconds <= 0:
            raise LocalProtocolError("max_rounds and max_seconds must be positive")
        self._storage = storage
        self._frame_size_limit = frame_size_limit
        self._max_message_size = max_message_size
        self._initiator = False
        self._max_rounds = max_rounds
        self._max_seconds = max_seconds
        self._rounds = 0
        self._started: float | None = None
        self._stopped_early = False

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def frame_size_limit(self) -> int:
        return self._frame_size_limit

    @property
    def rounds(self) -> int:
        """Messages this side has processed in the session so far."""
        return self._rounds

    @property
    def stopped_early(self) -> bool:
        """A client that gave up at the round or time bound: its differences are
        the ones found until then."""
        return self._stopped_early

    def _tick(self, now: float | None) -> bool:
        """Count one message; False once the session is past its bounds."""
        self._rounds += 1
        if self._rounds > self._max_rounds:
            return False
        if now is not None:
            if self._started is None:
                self._started = now
            elif now - self._started > self._max_seconds:
                return False
        return True

    def set_initiator(self) -> None:
        """Act as the client without building the first message here (it was sent already)."""
        self._initiator = True

    def initiate(self, *, now: float | None = None) -> bytes:
        """The client's first message: the whole set split into 16 fingerprints (or
        ids). ``now`` starts the session's clock (else its first answer does)."""
        if self._initiator:
            raise LocalProtocolError("negentropy reconciliation already initiated")
        self._initiator = True
        self._started = now
        enc = _BoundEncoder()
        out = bytearray([PROTOCOL_VERSION])
        # As in the reference, the first message ignores the frame size limit: it is at
        # most 16 fingerprint ranges or 31 ids, far below 4096 bytes.
        out += self._split_range(0, self._storage.size(), _INFINITY_BOUND, enc)
        return bytes(out)

    def reconcile(self, message: bytes, *, now: float | None = None) -> bytes:
        """Server side: answer a client message. Always returns a message, or raises
        NegentropyError (the session is over: drop it) past :data:`MAX_ROUNDS`
        answers or :data:`MAX_SESSION_SECONDS` after the first message (``now``)."""
        if self._initiator:
            raise LocalProtocolError("the negentropy initiator must use reconcile_client()")
        if not self._tick(now):
            raise NegentropyError(
                f"negentropy session past its bound of {self._max_rounds} rounds "
                f"or {self._max_seconds:g} seconds"
            )
        version = self._check_version(message)
        if version != PROTOCOL_VERSION:
            # Tell the client which version we speak so it can downgrade and retry.
            return bytes([PROTOCOL_VERSION])
        return self._reconcile(message, [], [])

    def reconcile_client(self, message: bytes, *, now: float | None = None) -> ClientStep:
        """Client side: process a server answer; the next message is None when done,
        or when the session reached :data:`MAX_ROUNDS` answers or
        :data:`MAX_SESSION_SECONDS` since the first answer (``now``): then
        :attr:`stopped_early` is set and the ids found so far are final for it."""
        if not self._initiator:
            raise LocalProtocolError("only the negentropy initiator may use reconcile_client()")
        version = self._check_version(message)
        if version != PROTOCOL_VERSION:
            raise NegentropyError(
                f"server wants unsupported negentropy protocol version {version - 0x60}"
            )
        within = self._tick(now)
        have: list[bytes] = []
        need: list[bytes] = []
        out = self._reconcile(message, have, need)
        if len(out) == 1:
            return ClientStep(None, have, need)
        if not within or self._rounds >= self._max_rounds:
            self._stopped_early = True
            return ClientStep(None, have, need)
        return ClientStep(out, have, need)

    # -- internals

    def _check_version(self, message: bytes) -> int:
        if len(message) > self._max_message_size:
            raise NegentropyError(
                f"negentropy message of {len(message)} bytes exceeds {self._max_message_size}"
            )
        if not message:
            raise NegentropyError("empty negentropy message")
        version = message[0]
        if not _VERSION_MIN <= version <= _VERSION_MAX:
            raise NegentropyError(f"invalid negentropy protocol version byte 0x{version:02x}")
        return version

    def _exceeded(self, n: int) -> bool:
        return self._frame_size_limit != 0 and n > self._frame_size_limit - _FRAME_SLACK

    def _reconcile(self, message: bytes, have: list[bytes], need: list[bytes]) -> bytes:
        # Parse the whole message first: the reference parses lazily and may stop early at
        # its frame limit, but a malformed tail is still malformed and we say so.
        ranges = _parse_ranges(message, 1)
        storage = self._storage
        enc = _BoundEncoder()
        full = bytearray([PROTOCOL_VERSION])
        storage_size = storage.size()
        prev_bound = _ZERO_BOUND
        prev_index = 0
        skip = False

        for rng in ranges:
            o = bytearray()
            curr_bound = rng.upper_bound
            lower = prev_index
            upper = storage.find_lower_bound(prev_index, storage_size, curr_bound)

            if rng.mode == Mode.SKIP:
                skip = True
            elif rng.mode == Mode.FINGERPRINT:
                if rng.fingerprint != storage.fingerprint(lower, upper):
                    if skip:
                        skip = False
                        o += enc.encode(prev_bound) + encode_varint(Mode.SKIP)
                    o += self._split_range(lower, upper, curr_bound, enc)
                else:
                    skip = True
            elif self._initiator:  # ID_LIST, client: the answer is final for this range
                skip = True
                # dict keeps arrival order (like the JS reference) and drops repeats.
                theirs = dict.fromkeys(rng.ids)
                for our_id in storage.ids(lower, upper):
                    if our_id in theirs:
                        del theirs[our_id]
                    else:
                        have.append(our_id)
                need.extend(theirs)
            else:  # ID_LIST, server: answer with our ids, as many as the frame allows
                if skip:
                    skip = False
                    o += enc.encode(prev_bound) + encode_varint(Mode.SKIP)
                count = upper - lower
                end_bound = curr_bound
                if self._frame_size_limit:
                    # The reference checks len(full) + 32 * k > limit - 200 before adding
                    # the k-th id; solve for how many pass instead of looping.
                    budget = self._frame_size_limit - _FRAME_SLACK - len(full)
                    fits = 0 if budget < 0 else budget // ID_SIZE + 1
                    if fits < count:
                        cut = lower + fits
                        end_bound = Bound.from_item(storage.get_item(cut))
                        upper = cut  # the closing fingerprint then covers what we left out
                        count = fits
                o += enc.encode(end_bound) + encode_varint(Mode.ID_LIST) + encode_varint(count)
                o += b"".join(storage.ids(lower, upper))
                full += o
                o = bytearray()

            if self._exceeded(len(full) + len(o)):
                # Stop here and fingerprint everything from `upper` on, exactly as the
                # reference does (it drops the pending range's output, `o`).
                full += enc.encode(_INFINITY_BOUND) + encode_varint(Mode.FINGERPRINT)
                full += storage.fingerprint(upper, storage_size)
                break
            full += o
            prev_index = upper
            prev_bound = curr_bound

        return bytes(full)

    def _split_range(self, lower: int, upper: int, upper_bound: Bound, enc: _BoundEncoder) -> bytes:
        storage = self._storage
        count = upper - lower
        out = bytearray()
        if count < BUCKETS * 2:
            out += enc.encode(upper_bound) + encode_varint(Mode.ID_LIST) + encode_varint(count)
            out += b"".join(storage.ids(lower, upper))
            return bytes(out)

        per_bucket, with_extra = divmod(count, BUCKETS)
        curr = lower
        for i in range(BUCKETS):
            size = per_bucket + (1 if i < with_extra else 0)
            fp = storage.fingerprint(curr, curr + size)
            curr += size
            if curr == upper:
                next_bound = upper_bound
            else:
                next_bound = _minimal_bound(storage.get_item(curr - 1), storage.get_item(curr))
            out += enc.encode(next_bound) + encode_varint(Mode.FINGERPRINT) + fp
        return bytes(out)


def _minimal_bound(prev: Item, curr: Item) -> Bound:
    """The shortest bound that is > prev and <= curr."""
    if curr.timestamp != prev.timestamp:
        return Bound(curr.timestamp)
    diff = int.from_bytes(curr.id, "big") ^ int.from_bytes(prev.id, "big")
    shared = (ID_SIZE * 8 - diff.bit_length()) // 8
    return Bound(curr.timestamp, curr.id[: shared + 1])
