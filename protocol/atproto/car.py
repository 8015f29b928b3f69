"""CAR v1 files as atproto writes them (repo exports, commit-event block slices).

Layout::

    varint(len(header)) || header || (varint(len(cid) + len(block)) || cid || block)*

``header`` is the DAG-CBOR map ``{"roots": [CID, ...], "version": 1}`` and each
``cid`` is a 36-byte binary atproto CID (:mod:`.cid`). Varints are unsigned LEB128.

:func:`read_car` checks every block against its CID (sha-256 of the block bytes) and
refuses: a header that is not exactly ``{roots, version: 1}`` or has no root; a
varint that is not minimal or longer than 9 bytes; a CID that is not an atproto CID;
a block whose bytes do not hash to its CID; truncation; and, before the work is done,
input over ``max_total`` bytes, a block over ``max_block`` bytes, more than
``max_blocks`` blocks. The same block twice is accepted (it is the same bytes) and
kept once; it still counts towards ``max_blocks``.

Blocks are returned as bytes; decoding them (:func:`.dagcbor.decode`) is up to the
caller, which knows which ones it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..car import read_varint, varint
from ..errors import DecodeError
from . import dagcbor
from .cid import CID

__all__ = ["MAX_BLOCK", "MAX_BLOCKS", "MAX_TOTAL", "Car", "read_car", "varint", "write_car"]

#: Default bound on one block: 2 MiB (a record is at most 1 MiB in atproto).
MAX_BLOCK = 2 * 1024 * 1024
#: Default bound on the whole file: the 2 MB a commit event's ``blocks`` may hold,
#: rounded up. A repo export needs far more: the caller passes its own bound.
MAX_TOTAL = 2 * 1024 * 1024
#: Default bound on the number of blocks.
MAX_BLOCKS = 10_000
_MAX_HEADER = 4096
_CID_LENGTH = 36


@dataclass(frozen=True, slots=True)
class Car:
    """A parsed CAR: its roots and its blocks by CID (each checked against its CID)."""

    roots: tuple[CID, ...]
    blocks: dict[CID, bytes]

    @property
    def root(self) -> CID:
        """The first root (the commit, in atproto)."""
        return self.roots[0]


def read_car(
    data: bytes,
    *,
    max_total: int = MAX_TOTAL,
    max_block: int = MAX_BLOCK,
    max_blocks: int = MAX_BLOCKS,
) -> Car:
    """Parse a whole CAR v1 file (see the module doc for what is refused)."""
    if type(data) is not bytes:
        raise DecodeError("CAR input must be bytes")
    if len(data) > max_total:
        raise DecodeError(f"CAR of {len(data)} bytes is over {max_total}")
    hlen, pos = read_varint(data, 0)
    if hlen == 0 or hlen > _MAX_HEADER or pos + hlen > len(data):
        raise DecodeError("bad CAR header length")
    header = dagcbor.decode(data[pos : pos + hlen], max_depth=3)
    pos += hlen
    if (
        not isinstance(header, dict)
        or set(header) != {"roots", "version"}
        or type(header["version"]) is not int  # True == 1 in Python
        or header["version"] != 1
    ):
        raise DecodeError("CAR header must be {roots, version: 1}")
    roots = header["roots"]
    if not isinstance(roots, list) or not roots or not all(isinstance(r, CID) for r in roots):
        raise DecodeError("CAR header needs at least one root, all CIDs")
    blocks: dict[CID, bytes] = {}
    count = 0
    view = memoryview(data)
    while pos < len(data):
        count += 1
        if count > max_blocks:
            raise DecodeError(f"CAR has more than {max_blocks} blocks")
        size, pos = read_varint(data, pos)
        if size < _CID_LENGTH or size - _CID_LENGTH > max_block or pos + size > len(data):
            raise DecodeError("CAR block is short, over-size or truncated")
        cid = CID.from_bytes(bytes(view[pos : pos + _CID_LENGTH]))
        block = bytes(view[pos + _CID_LENGTH : pos + size])
        pos += size
        if hashlib.sha256(block).digest() != cid.digest:
            raise DecodeError(f"CAR block does not hash to {cid}")
        blocks[cid] = block
    return Car(tuple(r for r in roots if isinstance(r, CID)), blocks)


def write_car(roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> bytes:
    """Write a CAR v1 file (for tests, vectors and benchmarks)."""
    root_list: list[dagcbor.Value] = list(roots)
    header = dagcbor.encode({"roots": root_list, "version": 1})
    out = [varint(len(header)), header]
    for cid, block in blocks:
        out.append(varint(_CID_LENGTH + len(block)))
        out.append(cid.to_bytes())
        out.append(block)
    return b"".join(out)
