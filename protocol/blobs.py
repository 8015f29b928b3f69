"""Blobs: what an upload may be, what its bytes really are, and how records point at them.

A blob is a byte string named by its raw-codec CID (:func:`~protocol.cid.cid_for_raw`,
CIDv1 raw sha2-256, as atproto names blobs). Records point at one with a blob ref,
in the data model the map ``{"$type": "blob", "ref": {"$link": "<cid>"}, "mimeType",
"size"}`` (atproto's legacy ``{"cid": "<cid>", "mimeType"}`` is read too).

What this module refuses: an empty upload, one over the size limit, bytes that are
none of the image formats it recognises by their magic bytes (PNG, JPEG, GIF, WebP),
and a declared type that disagrees with the bytes (a PNG declared as JPEG, HTML
declared as an image). A declared ``*/*``, ``application/octet-stream`` or nothing
takes the sniffed type. The served type is always the sniffed one, never a claim.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

from .cid import CID, CODEC_RAW
from .errors import RemoteProtocolError, SkyfedError

__all__ = [
    "ALLOWED_MIME",
    "MAX_REFS_PER_RECORD",
    "BlobRef",
    "BlobRefused",
    "blob_refs_in",
    "check_upload",
    "sniff_mime",
]

#: The types an upload may have (and the only ones a node serves).
ALLOWED_MIME: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: Declared types that say "I don't know": the sniffed type is taken.
_UNDECLARED: Final = frozenset({"", "*/*", "application/octet-stream"})
#: Blob refs read from one record (an images embed has at most 4; a profile 2).
MAX_REFS_PER_RECORD: Final = 16
_MAX_WALK: Final = 2000  # values looked at per record, whatever its shape


class BlobRefused(RemoteProtocolError):
    """An upload or a fetched blob that is not acceptable."""

    error = "InvalidBlob"


def sniff_mime(data: bytes) -> str | None:
    """The image type ``data`` starts like, from its magic bytes; None if none."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _media_type(declared: str | None) -> str:
    """``declared`` without parameters, lower case (``image/PNG; x=1`` -> ``image/png``)."""
    return (declared or "").split(";", 1)[0].strip().lower()


def check_upload(data: bytes, declared: str | None, max_bytes: int) -> str:
    """The type to store ``data`` under, or :class:`BlobRefused` saying why not."""
    if not data:
        raise BlobRefused("the blob is empty")
    if len(data) > max_bytes:
        raise BlobRefused(
            f"the blob is {len(data)} bytes, over the limit of {max_bytes}",
            error="BlobTooLarge",
            status=413,
        )
    sniffed = sniff_mime(data)
    if sniffed is None:
        raise BlobRefused(
            "the blob is not an image this node accepts (PNG, JPEG, GIF, WebP)",
            error="InvalidMimeType",
        )
    claimed = _media_type(declared)
    if claimed not in _UNDECLARED and claimed != sniffed:
        raise BlobRefused(
            f"declared {claimed[:100]!r} but the bytes are {sniffed}", error="InvalidMimeType"
        )
    return sniffed


@dataclasses.dataclass(frozen=True, slots=True)
class BlobRef:
    """A record's pointer at a blob; ``path`` is where in the record it sits
    (``avatar``, ``embed.images[0].image``)."""

    cid: CID
    mime: str
    size: int | None
    path: str = ""

    @classmethod
    def from_value(cls, value: object, path: str = "") -> BlobRef | None:
        """The blob ref ``value`` is, or None if it is not one (or is malformed)."""
        if not isinstance(value, dict):
            return None
        mime = value.get("mimeType")
        if not isinstance(mime, str) or len(mime) > 128:
            return None
        if value.get("$type") == "blob":
            ref = value.get("ref")
            link = ref.get("$link") if isinstance(ref, dict) and len(ref) == 1 else None
            size = value.get("size")
            if type(size) is not int or size < 0:
                return None
        elif "$type" not in value and set(value) == {"cid", "mimeType"}:
            link, size = value.get("cid"), None  # the legacy form
        else:
            return None
        cid = _raw_cid(link) if isinstance(link, str) else None
        if cid is None:
            return None
        return cls(cid, _media_type(mime), size, path)

    def to_value(self) -> dict[str, Any]:
        return {
            "$type": "blob",
            "ref": {"$link": self.cid.to_str()},
            "mimeType": self.mime,
            "size": self.size or 0,
        }


@functools.lru_cache(maxsize=4096)
def _raw_cid(link: str) -> CID | None:
    """A raw-codec CID from its string; cached, as the same blobs are seen again (a
    record written, then indexed; a profile updated) and base32 is slow."""
    try:
        cid = CID.from_str(link)
    except SkyfedError:
        return None
    return cid if cid.codec == CODEC_RAW else None


def blob_refs_in(record: object) -> list[BlobRef]:
    """Every blob ref in a record (first :data:`MAX_REFS_PER_RECORD`, distinct by CID
    and path), found by walking it breadth first; at most ``_MAX_WALK`` values are
    looked at, so a hostile record costs a bounded walk."""
    out: list[BlobRef] = []
    seen: set[tuple[CID, str]] = set()
    for path, value in _walk(record):
        if "mimeType" not in value:
            continue
        ref = BlobRef.from_value(value, path)
        if ref is None or (ref.cid, path) in seen:
            continue
        seen.add((ref.cid, path))
        out.append(ref)
        if len(out) >= MAX_REFS_PER_RECORD:
            break
    return out


def _walk(root: object) -> Iterator[tuple[str, dict[str, Any]]]:
    queue: deque[tuple[str, object]] = deque([("", root)])
    looked = 0
    while queue and looked < _MAX_WALK:
        path, value = queue.popleft()
        looked += 1
        if isinstance(value, dict):
            yield path, value
            items: Iterator[tuple[str, object]] = (
                ((f"{path}.{k}" if path else k)[:200], v)
                for k, v in value.items()
                if isinstance(k, str)
            )
        elif isinstance(value, list):
            items = ((f"{path}[{i}]"[:200], v) for i, v in enumerate(value))
        else:
            continue
        # Never more queued than can still be looked at: a wide record costs no more.
        room = _MAX_WALK - looked - len(queue)
        for child in items:
            if room <= 0:
                break
            if isinstance(child[1], dict | list):
                queue.append(child)
                room -= 1
