"""Negentropy items for the heads of state a node holds.

Reconciliation runs over heads, not events: one item per repository head and one
per identity-log head (see docs/protocol.md §16). Two nodes that hold the same heads
hold the same items; any difference is a head one of them lacks.

* a repo head: timestamp = the microseconds of its rev (a TID), id =
  ``sha256(b"repo\\0" + did + b"\\0" + head CID bytes)``;
* an identity head: timestamp 0, id = ``sha256(b"ident\\0" + did + b"\\0" + head CID bytes)``.
"""

from __future__ import annotations

import hashlib

from .cid import CID
from .syntax import tid_to_parts

__all__ = ["identity_item", "repo_item"]


def repo_item(did: str, head: CID, rev: str) -> tuple[int, bytes]:
    """(timestamp, id) of a repo head."""
    item_id = hashlib.sha256(b"repo\0" + did.encode() + b"\0" + head.to_bytes()).digest()
    return tid_to_parts(rev)[0], item_id


def identity_item(did: str, head: CID) -> tuple[int, bytes]:
    """(timestamp, id) of an identity-log head."""
    return 0, hashlib.sha256(b"ident\0" + did.encode() + b"\0" + head.to_bytes()).digest()
