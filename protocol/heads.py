"""Negentropy items for the heads of state a node holds.

Reconciliation runs over heads, not events: one item per repository head, one per
identity-log head and one per labeler's label set (see docs/protocol.md §16). Two
nodes that hold the same heads hold the same items; any difference is a head one of
them lacks.

* a repo head: timestamp = the microseconds of its rev (a TID), id =
  ``sha256(b"repo\\0" + did + b"\\0" + head CID bytes)``;
* an identity head: timestamp 0, id = ``sha256(b"ident\\0" + did + b"\\0" + head CID bytes)``;
* a labeler's label set: timestamp 0, id = ``sha256(b"labels\\0" + src + b"\\0" + digest)``,
  where the digest (:func:`label_set_digest`) is a hash of the set of its label CIDs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .cid import CID
from .syntax import tid_to_parts

__all__ = ["identity_item", "label_set_digest", "labels_item", "repo_item"]


def repo_item(did: str, head: CID, rev: str) -> tuple[int, bytes]:
    """(timestamp, id) of a repo head."""
    item_id = hashlib.sha256(b"repo\0" + did.encode() + b"\0" + head.to_bytes()).digest()
    return tid_to_parts(rev)[0], item_id


def identity_item(did: str, head: CID) -> tuple[int, bytes]:
    """(timestamp, id) of an identity-log head."""
    return 0, hashlib.sha256(b"ident\0" + did.encode() + b"\0" + head.to_bytes()).digest()


def label_set_digest(cids: Iterable[CID]) -> bytes:
    """sha256 over the sorted binary CIDs of a labeler's labels, concatenated: the
    same set gives the same digest whatever order it was received in (duplicates
    count once)."""
    h = hashlib.sha256()
    for raw in sorted({cid.to_bytes() for cid in cids}):
        h.update(raw)
    return h.digest()


def labels_item(src: str, digest: bytes) -> tuple[int, bytes]:
    """(timestamp, id) of a labeler's label set with digest ``digest``."""
    return 0, hashlib.sha256(b"labels\0" + src.encode() + b"\0" + digest).digest()
