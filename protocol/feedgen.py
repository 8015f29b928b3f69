"""Feed generators: the declaration record and the skeleton a generator answers with.

A feed generator is a service that picks posts: asked ``getFeedSkeleton`` for one
of its feeds, it answers a list of post AT-URIs (a *skeleton*), and the reader's
node hydrates them into post views from what it holds. An account announces a feed
with an ``app.bsky.feed.generator`` record naming the service's DID (``did``),
``displayName``, ``description`` and ``avatar``. The feed is named by the record's
AT-URI. This module is the sans-IO half: parsing the record and a skeleton answer.

What a skeleton answer must be, or it is refused whole (:class:`SkeletonError`,
XRPC ``UpstreamFailure``, 502): JSON of at most ``max_bytes`` (checked before it is
parsed), an object with a ``feed`` list of at most ``max_items`` entries, each an
object whose ``post`` is a valid AT-URI naming an ``app.bsky.feed.post`` record, an
optional ``reason`` (``#skeletonReasonRepost`` with a valid repost AT-URI, or
``#skeletonReasonPin``; anything else is dropped, as an open union allows), an
optional ``feedContext`` string of at most 2000 characters, and an optional
``cursor`` string of at most :data:`MAX_CURSOR` characters. Nesting is bounded by
the JSON parser. Duplicated posts are kept once (the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import RemoteProtocolError
from .syntax import is_valid_at_uri, is_valid_did

__all__ = [
    "GENERATOR",
    "MAX_CURSOR",
    "MAX_FEED_CONTEXT",
    "SKELETON_PIN",
    "SKELETON_REPOST",
    "GeneratorDecl",
    "Skeleton",
    "SkeletonError",
    "SkeletonItem",
    "feed_uri_parts",
]

GENERATOR: Final = "app.bsky.feed.generator"
SKELETON_REPOST: Final = "app.bsky.feed.defs#skeletonReasonRepost"
SKELETON_PIN: Final = "app.bsky.feed.defs#skeletonReasonPin"
#: Longest cursor accepted from a generator (and passed back to it), in characters.
MAX_CURSOR: Final = 1024
#: The lexicon's bound on ``feedContext``.
MAX_FEED_CONTEXT: Final = 2000
#: The lexicon's bounds on the declaration's text fields.
_MAX_NAME: Final = 240
_MAX_DESCRIPTION: Final = 3000


class SkeletonError(RemoteProtocolError):
    """A feed generator answered something that is not a skeleton."""

    error = "UpstreamFailure"
    status = 502


def feed_uri_parts(uri: str) -> tuple[str, str] | None:
    """(creator DID, record key) of a feed generator AT-URI, or None if ``uri`` is
    not ``at://<did>/app.bsky.feed.generator/<rkey>``."""
    if not is_valid_at_uri(uri):
        return None
    parts = uri[len("at://") :].split("/")
    if len(parts) != 3 or parts[1] != GENERATOR or not parts[0].startswith("did:"):
        return None
    return parts[0], parts[2]


@dataclass(frozen=True, slots=True)
class GeneratorDecl:
    """What an ``app.bsky.feed.generator`` record declares (only what views need)."""

    did: str
    display_name: str
    description: str | None
    created_at: str | None
    avatar: Any = None

    @classmethod
    def from_record(cls, value: object) -> GeneratorDecl | None:
        """The declaration, or None if ``value`` is not one (a relay keeps such a
        record; it is simply not a feed)."""
        if not isinstance(value, dict):
            return None
        did = value.get("did")
        name = value.get("displayName")
        if not is_valid_did(did) or not isinstance(name, str) or len(name) > _MAX_NAME:
            return None
        desc = value.get("description")
        if not isinstance(desc, str) or len(desc) > _MAX_DESCRIPTION:
            desc = None
        created = value.get("createdAt")
        assert isinstance(did, str)
        return cls(
            did=did,
            display_name=name,
            description=desc,
            created_at=created if isinstance(created, str) and len(created) <= 64 else None,
            avatar=value.get("avatar"),
        )


@dataclass(frozen=True, slots=True)
class SkeletonItem:
    """One entry of a skeleton: a post, and why it is there."""

    post: str
    repost: str | None = None
    pinned: bool = False
    feed_context: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"post": self.post}
        if self.repost is not None:
            out["reason"] = {"$type": SKELETON_REPOST, "repost": self.repost}
        elif self.pinned:
            out["reason"] = {"$type": SKELETON_PIN}
        if self.feed_context is not None:
            out["feedContext"] = self.feed_context
        return out


@dataclass(frozen=True, slots=True)
class Skeleton:
    """A generator's answer: posts in order and a cursor for the next page."""

    items: tuple[SkeletonItem, ...]
    cursor: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feed": [i.to_json() for i in self.items]}
        if self.cursor is not None:
            out["cursor"] = self.cursor
        return out

    @classmethod
    def from_bytes(cls, data: bytes, *, max_items: int, max_bytes: int) -> Skeleton:
        """Parse a ``getFeedSkeleton`` answer (see the module docstring)."""
        if len(data) > max_bytes:
            raise SkeletonError(f"feed skeleton is over {max_bytes} bytes")
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise SkeletonError(f"feed skeleton is not JSON: {e}") from e
        return cls.from_json(value, max_items=max_items)

    @classmethod
    def from_json(cls, value: object, *, max_items: int) -> Skeleton:
        if not isinstance(value, dict):
            raise SkeletonError("feed skeleton must be an object")
        feed = value.get("feed")
        if not isinstance(feed, list):
            raise SkeletonError("feed skeleton must have a feed list")
        if len(feed) > max_items:
            raise SkeletonError(f"feed skeleton has {len(feed)} entries, over {max_items}")
        cursor = value.get("cursor")
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > MAX_CURSOR):
            raise SkeletonError(f"feed skeleton cursor must be a string of <= {MAX_CURSOR}")
        items: list[SkeletonItem] = []
        seen: set[str] = set()
        for i, entry in enumerate(feed):
            item = _item(entry, i)
            if item.post not in seen:
                seen.add(item.post)
                items.append(item)
        return cls(tuple(items), cursor or None)


def _is_record_uri(value: object, collection: str) -> bool:
    if not is_valid_at_uri(value):
        return False
    assert isinstance(value, str)
    parts = value[len("at://") :].split("/")
    return len(parts) == 3 and parts[0].startswith("did:") and parts[1] == collection


def _item(entry: object, i: int) -> SkeletonItem:
    if not isinstance(entry, dict):
        raise SkeletonError(f"feed[{i}] must be an object")
    post = entry.get("post")
    if not _is_record_uri(post, "app.bsky.feed.post"):
        raise SkeletonError(f"feed[{i}].post must be the AT-URI of a post")
    assert isinstance(post, str)
    context = entry.get("feedContext")
    if context is not None and (not isinstance(context, str) or len(context) > MAX_FEED_CONTEXT):
        raise SkeletonError(f"feed[{i}].feedContext must be a string of <= {MAX_FEED_CONTEXT}")
    reason = entry.get("reason")
    repost = None
    pinned = False
    if isinstance(reason, dict):
        kind = reason.get("$type")
        if kind == SKELETON_REPOST:
            uri = reason.get("repost")
            if not _is_record_uri(uri, "app.bsky.feed.repost"):
                raise SkeletonError(f"feed[{i}].reason.repost must be the AT-URI of a repost")
            assert isinstance(uri, str)
            repost = uri
        elif kind == SKELETON_PIN:
            pinned = True
    return SkeletonItem(post, repost, pinned, context)
