"""Block streams: CAR v1 framing with a canonical msgpack header.

A repository export (``com.atproto.sync.getRepo``) and a record proof are one stream
of blocks, framed like a CARv1 file:

    varint(len(header)) || header || (varint(len(cid) + len(block)) || cid || block)*

where ``header`` is the canonical msgpack map ``{"roots": [<binary CID>], "version": 1}``
(CARv1 uses DAG-CBOR here) and each ``cid`` is a binary CIDv1. The first root is the
commit. The reader checks every block against its CID and refuses: a bad header
(``version`` must be the integer 1: ``true`` is not), a varint longer than 9 bytes, a
block over ``max_block`` bytes (the block itself, not counting its CID, so a block of
exactly :data:`MAX_BLOCK` passes), a stream over ``max_total`` bytes, a CID that does
not match its block, and truncation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from .cid import CID
from .encoding import decode, encode
from .errors import DecodeError

__all__ = ["MAX_BLOCK", "MAX_STREAM", "read_car", "read_varint", "varint", "write_car"]

_MAX_HEADER = 4096
#: Default bound on one block (§10: 2 MiB, the bound on a commit's blocks).
MAX_BLOCK = 2 * 1024 * 1024
#: Default bound on a whole stream.
MAX_STREAM = 512 * 1024 * 1024
#: The longest binary CID we read (msgpack codec); a raw CID is 36.
_MAX_CID = 37


def varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats and CAR use."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 at ``pos``, minimally encoded, at most 9 bytes: (value,
    position after it)."""
    n = shift = 0
    for i in range(pos, min(pos + 9, len(data))):
        byte = data[i]
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > pos:
                raise DecodeError("varint is not minimally encoded")
            return n, i + 1
        shift += 7
    raise DecodeError("truncated or over-long varint")


def write_car(roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> Iterator[bytes]:
    """Yield the stream in chunks (header, then one chunk per block)."""
    header = encode({"roots": [r.to_bytes() for r in roots], "version": 1})
    yield varint(len(header)) + header
    for cid, block in blocks:
        raw = cid.to_bytes()
        yield varint(len(raw) + len(block)) + raw + block


def read_car(
    data: bytes, *, max_block: int = MAX_BLOCK, max_total: int = MAX_STREAM
) -> tuple[list[CID], dict[CID, bytes]]:
    """Parse a whole stream; returns the roots and the blocks by CID."""
    if len(data) > max_total:
        raise DecodeError(f"block stream exceeds {max_total} bytes")
    view = memoryview(data)
    hlen, pos = read_varint(view, 0)
    if hlen > _MAX_HEADER or pos + hlen > len(data):
        raise DecodeError("bad block stream header length")
    header = decode(bytes(view[pos : pos + hlen]))
    pos += hlen
    if (
        type(header) is not dict
        or set(header) != {"roots", "version"}
        or type(header["version"]) is not int  # True == 1 in Python
        or header["version"] != 1
    ):
        raise DecodeError("block stream header must be {roots, version: 1}")
    raw_roots = header["roots"]
    if type(raw_roots) is not list or not raw_roots:
        raise DecodeError("block stream header needs at least one root")
    roots = []
    for r in raw_roots:
        if type(r) is not bytes:
            raise DecodeError("roots must be binary CIDs")
        roots.append(CID.from_bytes(r))
    blocks: dict[CID, bytes] = {}
    while pos < len(data):
        size, pos = read_varint(view, pos)
        # The frame holds the CID too: bound it by the largest block plus CID first,
        # then the block itself once its CID's length is known.
        if size > max_block + _MAX_CID or pos + size > len(data):
            raise DecodeError("block is over-size or truncated")
        chunk = view[pos : pos + size]
        pos += size
        cid, block = _split_block(bytes(chunk))
        if len(block) > max_block:
            raise DecodeError(f"block of {len(block)} bytes is over {max_block}")
        blocks[cid] = block
    return roots, blocks


def _split_block(chunk: bytes) -> tuple[CID, bytes]:
    # Both codecs we use have fixed-length binary CIDs; try the longer prefix first.
    for length in (37, 36):
        if len(chunk) >= length:
            try:
                cid = CID.from_bytes(chunk[:length])
            except DecodeError:
                continue
            block = chunk[length:]
            digest = hashlib.sha256(block).digest()
            if digest != cid.digest:
                raise DecodeError(f"block does not hash to {cid}")
            return cid, block
    raise DecodeError("block does not start with a supported CID")
