"""Hydration of media: blob refs in records become the view URLs a client loads.

``app.bsky.embed.images`` -> ``app.bsky.embed.images#view`` (``thumb``, ``fullsize``,
``alt``, ``aspectRatio``), ``app.bsky.embed.external`` -> ``#view`` with its ``thumb``,
the media half of ``app.bsky.embed.recordWithMedia``, and profile avatars and
banners. Every URL points at this node (``com.atproto.sync.getBlob``), which serves
the bytes, fetching them from peers when the account lives elsewhere
(node/net/blobfetch.py). A ref that is malformed or not an image is left out, never
passed through: views hold only what the node checked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from protocol.blobs import BlobRef

__all__ = [
    "EXTERNAL",
    "IMAGES",
    "RECORD_WITH_MEDIA",
    "blob_url",
    "media_view",
]

IMAGES = "app.bsky.embed.images"
EXTERNAL = "app.bsky.embed.external"
RECORD_WITH_MEDIA = "app.bsky.embed.recordWithMedia"
_MAX_IMAGES = 4
_MAX_TEXT = 10_000


def blob_url(base: str, did: str, cid: str) -> str:
    """Where this node serves the blob ``cid`` of ``did``."""
    return f"{base}/xrpc/com.atproto.sync.getBlob?did={quote(did, safe=':')}&cid={cid}"


def image_url(base: str, did: str, value: object) -> str | None:
    """The URL of the image blob ref ``value``; None if it is not one."""
    ref = BlobRef.from_value(value)
    if ref is None or not ref.mime.startswith("image/"):
        return None
    return blob_url(base, did, ref.cid.to_str())


def _text(value: object) -> str:
    return value[:_MAX_TEXT] if isinstance(value, str) else ""


def _aspect_ratio(value: object) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    w, h = value.get("width"), value.get("height")
    if type(w) is int and type(h) is int and w > 0 and h > 0:
        return {"width": w, "height": h}
    return None


def images_view(base: str, did: str, embed: dict[str, Any]) -> dict[str, Any] | None:
    images = embed.get("images")
    if not isinstance(images, list):
        return None
    out = []
    for item in images[:_MAX_IMAGES]:
        if not isinstance(item, dict):
            continue
        url = image_url(base, did, item.get("image"))
        if url is None:
            continue
        view: dict[str, Any] = {"thumb": url, "fullsize": url, "alt": _text(item.get("alt"))}
        ratio = _aspect_ratio(item.get("aspectRatio"))
        if ratio is not None:
            view["aspectRatio"] = ratio
        out.append(view)
    if not out:
        return None
    return {"$type": IMAGES + "#view", "images": out}


def external_view(base: str, did: str, embed: dict[str, Any]) -> dict[str, Any] | None:
    ext = embed.get("external")
    if not isinstance(ext, dict) or not isinstance(ext.get("uri"), str):
        return None
    view: dict[str, Any] = {
        "uri": _text(ext["uri"]),
        "title": _text(ext.get("title")),
        "description": _text(ext.get("description")),
    }
    thumb = image_url(base, did, ext.get("thumb"))
    if thumb is not None:
        view["thumb"] = thumb
    return {"$type": EXTERNAL + "#view", "external": view}


def media_view(base: str, did: str, embed: object) -> dict[str, Any] | None:
    """The view of an images or external embed (None for anything else)."""
    if not isinstance(embed, dict):
        return None
    kind = embed.get("$type")
    if kind == IMAGES:
        return images_view(base, did, embed)
    if kind == EXTERNAL:
        return external_view(base, did, embed)
    return None
