"""Typed, validated records for the ``app.bsky`` lexicons skyfed models.

A record is a plain data-model map (``str`` keys; ``None``, ``bool``, ``int``, ``str``,
``bytes``, lists and maps as values; never a float) with a ``"$type"``. This module
checks one against its lexicon and turns it into a frozen dataclass and back:

* :func:`validate_record` -- the gate for writes and for records received from peers:
  returns the dict unchanged or raises :class:`~protocol.errors.InvalidRecord` whose
  ``field`` is the path to the fault (``"reply.parent.cid"``, ``"facets[2].index"``)
  and whose message states the rule (``"text: must be at most 300 graphemes (got
  301)"``);
* :func:`parse_record` -- the typed view (:class:`Post`, :class:`Like`, ...,
  :class:`UnknownRecord`); every class has ``from_dict`` / ``to_dict`` and its
  constructor validates, so an invalid instance cannot exist;
* :func:`detect_facets` -- links, mentions and hashtags in post text, with UTF-8 byte
  offsets, for clients composing posts.

Lexicons are open: fields this module does not know are kept (in ``extra``) and
written back by ``to_dict``, so ``from_dict(d).to_dict() == d`` for every valid ``d``;
open unions (embeds, facet features) keep unknown members as :class:`UnknownObject`.
Instances compare by value but are not hashable: they hold maps.
Unknown collections pass through with only two checks (the value is a map, and its
``"$type"``, when present, is the collection).

What it refuses: strings over their lexicon limits (counted in UTF-8 bytes, checked
first, and in grapheme clusters), malformed identifiers (via :mod:`protocol.syntax`),
facets whose byte range is empty or runs past the text, ``null`` where a field is
optional (absent is the data model's way of saying "none"), values outside the data
model (floats, non-string keys, integers beyond 64 bits, lone surrogates, nesting past
32 levels) and record keys of the wrong kind for the collection (``tid`` for posts,
likes, reposts, follows and blocks; ``self`` for the profile). Blob refs (profile
``avatar`` / ``banner``) are only checked to be maps: blobs are someone else's job.
Self-labels (``labels``) and the deprecated post ``entities`` ride along in ``extra``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn, TypeAlias

from . import syntax
from .errors import InvalidRecord, InvalidSyntax

if TYPE_CHECKING:
    import regex

__all__ = [
    "BLOCK",
    "EMBED_RECORD",
    "FACET",
    "FACET_BYTE_SLICE",
    "FACET_LINK",
    "FACET_MENTION",
    "FACET_TAG",
    "FOLLOW",
    "KNOWN_COLLECTIONS",
    "LIKE",
    "POST",
    "PROFILE",
    "REPLY_REF",
    "REPOST",
    "STRONG_REF",
    "AnyRecord",
    "Block",
    "ByteSlice",
    "Embed",
    "EmbedRecord",
    "Facet",
    "Feature",
    "Follow",
    "Like",
    "Link",
    "Mention",
    "Post",
    "Profile",
    "ReplyRef",
    "Repost",
    "StrongRef",
    "Tag",
    "UnknownObject",
    "UnknownRecord",
    "detect_facets",
    "parse_record",
    "validate_record",
]

# -- NSIDs and $types ------------------------------------------------------------------

POST: Final = "app.bsky.feed.post"
LIKE: Final = "app.bsky.feed.like"
REPOST: Final = "app.bsky.feed.repost"
FOLLOW: Final = "app.bsky.graph.follow"
BLOCK: Final = "app.bsky.graph.block"
PROFILE: Final = "app.bsky.actor.profile"

STRONG_REF: Final = "com.atproto.repo.strongRef"
REPLY_REF: Final = "app.bsky.feed.post#replyRef"
FACET: Final = "app.bsky.richtext.facet"
FACET_BYTE_SLICE: Final = "app.bsky.richtext.facet#byteSlice"
FACET_MENTION: Final = "app.bsky.richtext.facet#mention"
FACET_LINK: Final = "app.bsky.richtext.facet#link"
FACET_TAG: Final = "app.bsky.richtext.facet#tag"
EMBED_RECORD: Final = "app.bsky.embed.record"

# -- lexicon limits --------------------------------------------------------------------

POST_TEXT_MAX_GRAPHEMES: Final = 300
POST_TEXT_MAX_BYTES: Final = 3000
POST_MAX_LANGS: Final = 3
POST_MAX_TAGS: Final = 8
TAG_MAX_GRAPHEMES: Final = 64
TAG_MAX_BYTES: Final = 640
DISPLAY_NAME_MAX_GRAPHEMES: Final = 64
DISPLAY_NAME_MAX_BYTES: Final = 640
DESCRIPTION_MAX_GRAPHEMES: Final = 256
DESCRIPTION_MAX_BYTES: Final = 2560
PRONOUNS_MAX_GRAPHEMES: Final = 20
PRONOUNS_MAX_BYTES: Final = 200

#: Same bound as the msgpack codec: deeper nesting in a record is abuse.
_MAX_DEPTH: Final = 32
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
#: detect_facets scans text a user is composing; anything longer is not a post.
_DETECT_MAX_CHARS: Final = 64 * 1024

_GRAPHEME: Final = r"\X"


@functools.cache
def _pattern(source: str) -> regex.Pattern[str]:
    """``source`` compiled by ``regex`` (the module, about 1.4 MB, is loaded by the
    first text checked, not with this one)."""
    import regex

    return regex.compile(source)


# -- error plumbing --------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    if not name:
        return prefix
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


def _fail(path: str, rule: str) -> NoReturn:
    raise InvalidRecord(rule, field=path)


@contextmanager
def _under(prefix: str) -> Iterator[None]:
    """Re-raise a nested object's InvalidRecord with ``prefix`` in front of its field.

    InvalidRecord keeps only the joined message, so the rule is recovered by removing
    the ``"field: "`` prefix that errors.py put there.
    """
    try:
        yield
    except InvalidRecord as e:
        rule = e.message[len(e.field) + 2 :] if e.field else e.message
        raise InvalidRecord(rule, field=_join(prefix, e.field)) from None


# -- value checks ----------------------------------------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string (got {_type_name(value)})")
    return value


def _utf8_len(value: str, path: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        _fail(path, "must be valid Unicode (it contains a lone surrogate)")


def _check_text(value: object, path: str, *, max_bytes: int, max_graphemes: int) -> None:
    text = _check_str(value, path)
    # Bytes first: it is cheap and bounds the grapheme scan that follows.
    n_bytes = _utf8_len(text, path)
    if n_bytes > max_bytes:
        _fail(path, f"must be at most {max_bytes} bytes of UTF-8 (got {n_bytes})")
    # A grapheme is at least one code point, so short strings need no count.
    if len(text) > max_graphemes:
        n_graphemes = sum(1 for _ in _pattern(_GRAPHEME).finditer(text))
        if n_graphemes > max_graphemes:
            _fail(path, f"must be at most {max_graphemes} graphemes (got {n_graphemes})")


def _check_format(value: object, path: str, validator: Callable[[str], None], what: str) -> None:
    text = _check_str(value, path)
    try:
        validator(text)
    except InvalidSyntax as e:
        _fail(path, f"must be a valid {what}: {e.message}")


def _check_int(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"must be an integer (got {_type_name(value)})")
    return value


def _check_value(value: object, path: str, depth: int = 0) -> None:
    """``value`` is in the data model (what canonical msgpack can carry)."""
    if depth > _MAX_DEPTH:
        _fail(path, f"is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | bytes):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            _fail(path, "must fit in a signed 64-bit integer")
    elif isinstance(value, str):
        _utf8_len(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(path, f"map keys must be strings (got {_type_name(key)})")
            _check_value(item, _join(path, key), depth + 1)
    else:
        _fail(path, f"{_type_name(value)} is not in the data model (no floats, for one)")


def _as_map(value: object, path: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"must be an object (got {_type_name(value)})")
    return value


def _required(data: dict[str, Any], key: str) -> Any:
    if key not in data:
        _fail(key, "is required")
    return data[key]


def _optional(data: dict[str, Any], key: str) -> Any:
    # An optional field is absent, not null: None here means "absent".
    if key in data and data[key] is None:
        _fail(key, "must not be null (leave it out instead)")
    return data.get(key)


def _extra_of(data: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


def _check_extra(extra: object, known: frozenset[str], type_: str, *, typed: bool) -> None:
    """Unknown fields: a data-model map that does not shadow a known field.

    ``typed`` objects always write their ``$type`` themselves; the others keep an
    optional ``$type`` in ``extra``, where it must name this object's type.
    """
    if not isinstance(extra, dict):
        _fail("extra", f"must be a dict (got {_type_name(extra)})")
    for key in extra:
        if key in known or (typed and key == "$type"):
            _fail("extra", f"must not contain the known field {key!r}")
    if "$type" in extra and extra["$type"] != type_:
        _fail("$type", f"must be {type_!r} (got {extra['$type']!r})")
    for key, value in extra.items():
        if not isinstance(key, str):
            _fail("", f"map keys must be strings (got {_type_name(key)})")
        _check_value(value, key, 1)


def _check_type(data: dict[str, Any], type_: str) -> None:
    if "$type" not in data:
        _fail("$type", "is required")
    if data["$type"] != type_:
        _fail("$type", f"must be {type_!r} (got {data['$type']!r})")


def _tuple_of(value: object, path: str, kind: type[Any] | tuple[type[Any], ...]) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        _fail(path, f"must be a list (got {_type_name(value)})")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            _fail(f"{path}[{i}]", f"has the wrong type ({_type_name(item)})")
    return tuple(value)


def _list_of(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"must be an array (got {_type_name(value)})")
    return value


def _freeze(obj: object, name: str, value: object) -> None:
    # Frozen dataclasses normalize in __post_init__ through object.__setattr__.
    object.__setattr__(obj, name, value)


# -- open-union members we do not model ------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownObject:
    """A member of an open union (embed, facet feature) whose ``$type`` we don't model.

    Kept as its map so it is written back unchanged.
    """

    data: dict[str, Any]

    def __post_init__(self) -> None:
        data = _as_map(self.data)
        type_ = data.get("$type")
        if not isinstance(type_, str) or not type_:
            _fail("$type", "is required on a union member")
        _check_value(data, "", 0)

    @property
    def type(self) -> str:
        return str(self.data["$type"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


# -- com.atproto.repo.strongRef --------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StrongRef:
    """A content-addressed reference: an AT-URI plus the CID of the record there."""

    uri: str
    cid: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = STRONG_REF
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"uri", "cid"})

    def __post_init__(self) -> None:
        _check_format(self.uri, "uri", syntax.validate_at_uri, "AT-URI")
        _check_format(self.cid, "cid", syntax.validate_cid, "CID")
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=False)

    @classmethod
    def from_dict(cls, data: object) -> StrongRef:
        d = _as_map(data)
        return cls(_required(d, "uri"), _required(d, "cid"), _extra_of(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "uri": self.uri, "cid": self.cid}


def _ref_from(data: dict[str, Any], key: str) -> StrongRef | None:
    value = _optional(data, key)
    if value is None:
        return None
    with _under(key):
        return StrongRef.from_dict(value)


def _check_ref(value: object, path: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, StrongRef):
        _fail(path, f"must be a StrongRef (got {_type_name(value)})")


# -- app.bsky.feed.post#replyRef -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyRef:
    """Where a reply sits: the thread's root post and the post answered."""

    root: StrongRef
    parent: StrongRef
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = REPLY_REF
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"root", "parent"})

    def __post_init__(self) -> None:
        _check_ref(self.root, "root", optional=False)
        _check_ref(self.parent, "parent", optional=False)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=False)

    @classmethod
    def from_dict(cls, data: object) -> ReplyRef:
        d = _as_map(data)
        raw_root, raw_parent = _required(d, "root"), _required(d, "parent")
        with _under("root"):
            root = StrongRef.from_dict(raw_root)
        with _under("parent"):
            parent = StrongRef.from_dict(raw_parent)
        return cls(root, parent, _extra_of(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "root": self.root.to_dict(), "parent": self.parent.to_dict()}


# -- app.bsky.richtext.facet -----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ByteSlice:
    """A half-open range ``[byte_start, byte_end)`` of the text's UTF-8 bytes."""

    byte_start: int
    byte_end: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FACET_BYTE_SLICE
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"byteStart", "byteEnd"})

    def __post_init__(self) -> None:
        start = _check_int(self.byte_start, "byteStart")
        end = _check_int(self.byte_end, "byteEnd")
        if start < 0:
            _fail("byteStart", f"must be at least 0 (got {start})")
        if end <= start:
            _fail("byteEnd", f"must be greater than byteStart ({start}) (got {end})")
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=False)

    @classmethod
    def from_dict(cls, data: object) -> ByteSlice:
        d = _as_map(data)
        return cls(_required(d, "byteStart"), _required(d, "byteEnd"), _extra_of(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "byteStart": self.byte_start, "byteEnd": self.byte_end}


@dataclasses.dataclass(frozen=True, slots=True)
class Mention:
    """Facet feature: the text mentions the account ``did``."""

    did: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FACET_MENTION
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"did"})

    def __post_init__(self) -> None:
        _check_format(self.did, "did", syntax.validate_did, "DID")
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Mention:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(_required(d, "did"), _extra_of(d, cls._KNOWN | {"$type"}))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "$type": self.TYPE, "did": self.did}


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """Facet feature: the text links to ``uri`` (a full URI, whatever the text shows)."""

    uri: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FACET_LINK
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"uri"})

    def __post_init__(self) -> None:
        _check_format(self.uri, "uri", syntax.validate_link_uri, "URI")
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Link:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(_required(d, "uri"), _extra_of(d, cls._KNOWN | {"$type"}))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "$type": self.TYPE, "uri": self.uri}


@dataclasses.dataclass(frozen=True, slots=True)
class Tag:
    """Facet feature: a hashtag, without its leading ``#``."""

    tag: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FACET_TAG
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"tag"})

    def __post_init__(self) -> None:
        _check_text(self.tag, "tag", max_bytes=TAG_MAX_BYTES, max_graphemes=TAG_MAX_GRAPHEMES)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Tag:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(_required(d, "tag"), _extra_of(d, cls._KNOWN | {"$type"}))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "$type": self.TYPE, "tag": self.tag}


Feature: TypeAlias = Mention | Link | Tag | UnknownObject
_FEATURES: Final[dict[str, type[Mention] | type[Link] | type[Tag]]] = {
    FACET_MENTION: Mention,
    FACET_LINK: Link,
    FACET_TAG: Tag,
}


def _feature_from_dict(data: object) -> Feature:
    d = _as_map(data)
    type_ = d.get("$type")
    known = _FEATURES.get(type_) if isinstance(type_, str) else None
    if known is not None:
        return known.from_dict(d)
    return UnknownObject(d)


@dataclasses.dataclass(frozen=True, slots=True)
class Facet:
    """Rich-text annotation: a byte range of the text and what it means."""

    index: ByteSlice
    features: tuple[Feature, ...]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FACET
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"index", "features"})

    def __post_init__(self) -> None:
        if not isinstance(self.index, ByteSlice):
            _fail("index", f"must be a ByteSlice (got {_type_name(self.index)})")
        features = _tuple_of(self.features, "features", (Mention, Link, Tag, UnknownObject))
        _freeze(self, "features", features)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=False)

    @property
    def byte_start(self) -> int:
        return self.index.byte_start

    @property
    def byte_end(self) -> int:
        return self.index.byte_end

    @classmethod
    def from_dict(cls, data: object) -> Facet:
        d = _as_map(data)
        raw_index, raw_features = _required(d, "index"), _required(d, "features")
        with _under("index"):
            index = ByteSlice.from_dict(raw_index)
        features = []
        for i, item in enumerate(_list_of(raw_features, "features")):
            with _under(f"features[{i}]"):
                features.append(_feature_from_dict(item))
        return cls(index, tuple(features), _extra_of(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "index": self.index.to_dict(),
            "features": [f.to_dict() for f in self.features],
        }


# -- app.bsky.embed.record -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EmbedRecord:
    """A quote: the post embeds another record by strong reference."""

    record: StrongRef
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = EMBED_RECORD
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"record"})

    def __post_init__(self) -> None:
        _check_ref(self.record, "record", optional=False)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> EmbedRecord:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        raw_record = _required(d, "record")
        with _under("record"):
            record = StrongRef.from_dict(raw_record)
        return cls(record, _extra_of(d, cls._KNOWN | {"$type"}))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "$type": self.TYPE, "record": self.record.to_dict()}


Embed: TypeAlias = EmbedRecord | UnknownObject


def _embed_from_dict(data: object) -> Embed:
    d = _as_map(data)
    if d.get("$type") == EMBED_RECORD:
        return EmbedRecord.from_dict(d)
    return UnknownObject(d)


# -- records ---------------------------------------------------------------------------


def _check_created_at(value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    _check_format(value, "createdAt", syntax.validate_datetime, "datetime")


@dataclasses.dataclass(frozen=True, slots=True)
class Post:
    """``app.bsky.feed.post``: a post, reply or quote."""

    text: str
    created_at: str
    reply: ReplyRef | None = None
    facets: tuple[Facet, ...] | None = None
    embed: Embed | None = None
    langs: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = POST
    _KNOWN: ClassVar[frozenset[str]] = frozenset(
        {"text", "createdAt", "reply", "facets", "embed", "langs", "tags"}
    )

    def __post_init__(self) -> None:
        _check_text(
            self.text,
            "text",
            max_bytes=POST_TEXT_MAX_BYTES,
            max_graphemes=POST_TEXT_MAX_GRAPHEMES,
        )
        _check_created_at(self.created_at)
        if self.reply is not None and not isinstance(self.reply, ReplyRef):
            _fail("reply", f"must be a ReplyRef (got {_type_name(self.reply)})")
        if self.embed is not None and not isinstance(self.embed, EmbedRecord | UnknownObject):
            _fail("embed", f"has the wrong type ({_type_name(self.embed)})")
        if self.facets is not None:
            facets = _tuple_of(self.facets, "facets", Facet)
            _freeze(self, "facets", facets)
            text_bytes = len(self.text.encode("utf-8"))
            for i, facet in enumerate(facets):
                if facet.byte_end > text_bytes:
                    _fail(
                        f"facets[{i}].index.byteEnd",
                        f"must be at most the text's length in UTF-8 bytes ({text_bytes}) "
                        f"(got {facet.byte_end})",
                    )
        if self.langs is not None:
            langs = _tuple_of(self.langs, "langs", object)
            _freeze(self, "langs", langs)
            if len(langs) > POST_MAX_LANGS:
                _fail("langs", f"must have at most {POST_MAX_LANGS} items (got {len(langs)})")
            for i, lang in enumerate(langs):
                _check_format(lang, f"langs[{i}]", syntax.validate_language, "language tag")
        if self.tags is not None:
            tags = _tuple_of(self.tags, "tags", object)
            _freeze(self, "tags", tags)
            if len(tags) > POST_MAX_TAGS:
                _fail("tags", f"must have at most {POST_MAX_TAGS} items (got {len(tags)})")
            for i, tag in enumerate(tags):
                _check_text(
                    tag, f"tags[{i}]", max_bytes=TAG_MAX_BYTES, max_graphemes=TAG_MAX_GRAPHEMES
                )
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Post:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        reply = None
        if (raw_reply := _optional(d, "reply")) is not None:
            with _under("reply"):
                reply = ReplyRef.from_dict(raw_reply)
        facets = None
        if (raw_facets := _optional(d, "facets")) is not None:
            parsed = []
            for i, item in enumerate(_list_of(raw_facets, "facets")):
                with _under(f"facets[{i}]"):
                    parsed.append(Facet.from_dict(item))
            facets = tuple(parsed)
        embed = None
        if (raw_embed := _optional(d, "embed")) is not None:
            with _under("embed"):
                embed = _embed_from_dict(raw_embed)
        langs = _optional(d, "langs")
        tags = _optional(d, "tags")
        return cls(
            text=_required(d, "text"),
            created_at=_required(d, "createdAt"),
            reply=reply,
            facets=facets,
            embed=embed,
            langs=None if langs is None else tuple(_list_of(langs, "langs")),
            tags=None if tags is None else tuple(_list_of(tags, "tags")),
            extra=_extra_of(d, cls._KNOWN | {"$type"}),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "$type": self.TYPE,
            "text": self.text,
            "createdAt": self.created_at,
        }
        if self.reply is not None:
            out["reply"] = self.reply.to_dict()
        if self.facets is not None:
            out["facets"] = [f.to_dict() for f in self.facets]
        if self.embed is not None:
            out["embed"] = self.embed.to_dict()
        if self.langs is not None:
            out["langs"] = list(self.langs)
        if self.tags is not None:
            out["tags"] = list(self.tags)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Reaction:
    """Shared shape of likes and reposts: a strong ref to the subject and a time."""

    subject: StrongRef
    created_at: str
    via: StrongRef | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = ""
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"subject", "createdAt", "via"})

    def __post_init__(self) -> None:
        _check_ref(self.subject, "subject", optional=False)
        _check_created_at(self.created_at)
        _check_ref(self.via, "via", optional=True)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "$type": self.TYPE,
            "subject": self.subject.to_dict(),
            "createdAt": self.created_at,
        }
        if self.via is not None:
            out["via"] = self.via.to_dict()
        return out


def _reaction_fields(cls: type[_Reaction], data: object) -> dict[str, Any]:
    d = _as_map(data)
    _check_type(d, cls.TYPE)
    raw_subject = _required(d, "subject")
    with _under("subject"):
        subject = StrongRef.from_dict(raw_subject)
    return {
        "subject": subject,
        "created_at": _required(d, "createdAt"),
        "via": _ref_from(d, "via"),
        "extra": _extra_of(d, cls._KNOWN | {"$type"}),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Like(_Reaction):
    """``app.bsky.feed.like``: a like of ``subject``."""

    TYPE: ClassVar[str] = LIKE

    @classmethod
    def from_dict(cls, data: object) -> Like:
        return cls(**_reaction_fields(cls, data))


@dataclasses.dataclass(frozen=True, slots=True)
class Repost(_Reaction):
    """``app.bsky.feed.repost``: a repost of ``subject``."""

    TYPE: ClassVar[str] = REPOST

    @classmethod
    def from_dict(cls, data: object) -> Repost:
        return cls(**_reaction_fields(cls, data))


@dataclasses.dataclass(frozen=True, slots=True)
class Follow:
    """``app.bsky.graph.follow``: the author follows the account ``subject`` (a DID)."""

    subject: str
    created_at: str
    via: StrongRef | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = FOLLOW
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"subject", "createdAt", "via"})

    def __post_init__(self) -> None:
        _check_format(self.subject, "subject", syntax.validate_did, "DID")
        _check_created_at(self.created_at)
        _check_ref(self.via, "via", optional=True)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Follow:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(
            _required(d, "subject"),
            _required(d, "createdAt"),
            _ref_from(d, "via"),
            _extra_of(d, cls._KNOWN | {"$type"}),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "$type": self.TYPE,
            "subject": self.subject,
            "createdAt": self.created_at,
        }
        if self.via is not None:
            out["via"] = self.via.to_dict()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """``app.bsky.graph.block``: the author blocks the account ``subject`` (a DID)."""

    subject: str
    created_at: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = BLOCK
    _KNOWN: ClassVar[frozenset[str]] = frozenset({"subject", "createdAt"})

    def __post_init__(self) -> None:
        _check_format(self.subject, "subject", syntax.validate_did, "DID")
        _check_created_at(self.created_at)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Block:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(
            _required(d, "subject"),
            _required(d, "createdAt"),
            _extra_of(d, cls._KNOWN | {"$type"}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "$type": self.TYPE,
            "subject": self.subject,
            "createdAt": self.created_at,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """``app.bsky.actor.profile`` (record key ``self``): every field is optional."""

    display_name: str | None = None
    description: str | None = None
    pronouns: str | None = None
    website: str | None = None
    avatar: dict[str, Any] | None = None
    banner: dict[str, Any] | None = None
    joined_via_starter_pack: StrongRef | None = None
    pinned_post: StrongRef | None = None
    created_at: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    TYPE: ClassVar[str] = PROFILE
    _FIELDS: ClassVar[dict[str, str]] = {
        "display_name": "displayName",
        "description": "description",
        "pronouns": "pronouns",
        "website": "website",
        "avatar": "avatar",
        "banner": "banner",
        "joined_via_starter_pack": "joinedViaStarterPack",
        "pinned_post": "pinnedPost",
        "created_at": "createdAt",
    }
    _KNOWN: ClassVar[frozenset[str]] = frozenset(_FIELDS.values())

    def __post_init__(self) -> None:
        if self.display_name is not None:
            _check_text(
                self.display_name,
                "displayName",
                max_bytes=DISPLAY_NAME_MAX_BYTES,
                max_graphemes=DISPLAY_NAME_MAX_GRAPHEMES,
            )
        if self.description is not None:
            _check_text(
                self.description,
                "description",
                max_bytes=DESCRIPTION_MAX_BYTES,
                max_graphemes=DESCRIPTION_MAX_GRAPHEMES,
            )
        if self.pronouns is not None:
            _check_text(
                self.pronouns,
                "pronouns",
                max_bytes=PRONOUNS_MAX_BYTES,
                max_graphemes=PRONOUNS_MAX_GRAPHEMES,
            )
        if self.website is not None:
            _check_format(self.website, "website", syntax.validate_uri, "URI")
        for name in ("avatar", "banner"):
            blob = getattr(self, name)
            if blob is not None:
                # Blob refs are passed through; they only have to be data-model maps.
                _as_map(blob, name)
                _check_value(blob, name, 1)
        _check_ref(self.joined_via_starter_pack, "joinedViaStarterPack", optional=True)
        _check_ref(self.pinned_post, "pinnedPost", optional=True)
        _check_created_at(self.created_at, optional=True)
        _check_extra(self.extra, self._KNOWN, self.TYPE, typed=True)

    @classmethod
    def from_dict(cls, data: object) -> Profile:
        d = _as_map(data)
        _check_type(d, cls.TYPE)
        return cls(
            display_name=_optional(d, "displayName"),
            description=_optional(d, "description"),
            pronouns=_optional(d, "pronouns"),
            website=_optional(d, "website"),
            avatar=_optional(d, "avatar"),
            banner=_optional(d, "banner"),
            joined_via_starter_pack=_ref_from(d, "joinedViaStarterPack"),
            pinned_post=_ref_from(d, "pinnedPost"),
            created_at=_optional(d, "createdAt"),
            extra=_extra_of(d, cls._KNOWN | {"$type"}),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "$type": self.TYPE}
        for attr, key in self._FIELDS.items():
            value = getattr(self, attr)
            if isinstance(value, StrongRef):
                out[key] = value.to_dict()
            elif value is not None:
                out[key] = value
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownRecord:
    """A record of a collection this module does not model, kept as it came."""

    value: dict[str, Any]

    def __post_init__(self) -> None:
        _as_map(self.value)

    @property
    def type(self) -> str | None:
        type_ = self.value.get("$type")
        return type_ if isinstance(type_, str) else None

    @classmethod
    def from_dict(cls, data: object) -> UnknownRecord:
        return cls(_as_map(data))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.value)


AnyRecord: TypeAlias = Post | Like | Repost | Follow | Block | Profile | UnknownRecord

_RECORDS: Final[
    dict[
        str,
        type[Post] | type[Like] | type[Repost] | type[Follow] | type[Block] | type[Profile],
    ]
] = {POST: Post, LIKE: Like, REPOST: Repost, FOLLOW: Follow, BLOCK: Block, PROFILE: Profile}

#: Collections whose records this module validates field by field.
KNOWN_COLLECTIONS: Final = frozenset(_RECORDS)

# The lexicons' record-key types: "tid" everywhere except the profile's literal "self".
_LITERAL_KEYS: Final = {PROFILE: "self"}


def _check_rkey(collection: str, rkey: object) -> None:
    literal = _LITERAL_KEYS.get(collection)
    if literal is not None:
        if rkey != literal:
            _fail("rkey", f"must be {literal!r} for {collection} (got {rkey!r})")
        return
    if collection in _RECORDS:
        _check_format(rkey, "rkey", syntax.validate_tid, "TID")
    else:
        _check_format(rkey, "rkey", syntax.validate_record_key, "record key")


def validate_record(
    collection: str, value: dict[str, Any], rkey: str | None = None
) -> dict[str, Any]:
    """Check ``value`` as a record of ``collection`` (stored under ``rkey``, if given).

    Returns ``value`` itself, unchanged. Records of collections not in
    :data:`KNOWN_COLLECTIONS` are only checked to be maps whose ``$type``, if present,
    is ``collection``. Raises :class:`InvalidRecord`.
    """
    _check_format(collection, "collection", syntax.validate_nsid, "NSID")
    record = _as_map(value)
    if rkey is not None:
        _check_rkey(collection, rkey)
    cls = _RECORDS.get(collection)
    if cls is None:
        if "$type" in record and record["$type"] != collection:
            _fail("$type", f"must be {collection!r} (got {record['$type']!r})")
        return record
    cls.from_dict(record)
    return record


def parse_record(value: dict[str, Any]) -> AnyRecord:
    """The typed form of a record, chosen by its ``$type``; validates as it goes."""
    record = _as_map(value)
    type_ = record.get("$type")
    if type_ is None:
        _fail("$type", "is required")
    if not isinstance(type_, str):
        _fail("$type", f"must be a string (got {_type_name(type_)})")
    cls = _RECORDS.get(type_)
    if cls is None:
        return UnknownRecord(record)
    return cls.from_dict(record)


# -- facet detection -------------------------------------------------------------------

# Mentions, links and tags start at the text's start or after whitespace (mentions and
# links also after "("), as in the Bluesky clients, so "a@b.com" is no mention.
_MENTION_RE: Final = r"(?:^|(?<=[\s(]))@([a-zA-Z0-9.-]+)"
_LINK_RE: Final = r"(?i)(?:^|(?<=[\s(]))(https?://\S+)"
# Invisible characters that must not be swallowed into a tag.
_TAG_STOP: Final = r"\s\u00AD\u2060\u200A\u200B\u200C\u200D\u20e2"
_TAG_RE: Final = (
    rf"(?:^|(?<=\s))[#＃]((?!\ufe0f)[^{_TAG_STOP}]*[^0-9\p{{P}}{_TAG_STOP}]+[^{_TAG_STOP}]*)"
)
_TRAILING_PUNCT_RE: Final = r"\p{P}+$"


def detect_facets(
    text: str, resolve: Callable[[str], str | None] | None = None
) -> list[dict[str, Any]]:
    """Find links (http/https), @mentions and #tags in ``text``, as facet maps.

    Offsets are UTF-8 byte offsets into ``text``. A mention's handle (lowercased) is
    passed to ``resolve``, which returns its DID or ``None``; a mention that does not
    resolve to a valid DID, or any mention when there is no ``resolve``, gets no facet
    (a mention facet must carry a DID). Facets come sorted by ``byteStart``.
    """
    if not isinstance(text, str):
        _fail("text", f"must be a string (got {_type_name(text)})")
    if len(text) > _DETECT_MAX_CHARS:
        _fail("text", f"is too long to scan for facets ({len(text)} > {_DETECT_MAX_CHARS})")
    _utf8_len(text, "text")

    def byte_at(index: int) -> int:
        return len(text[:index].encode("utf-8"))

    found: list[tuple[int, int, dict[str, Any]]] = []

    if resolve is not None:
        for m in _pattern(_MENTION_RE).finditer(text):
            handle = m.group(1).rstrip(".-")
            if not syntax.is_valid_handle(handle):
                continue
            did = resolve(handle.lower())
            if did is None or not syntax.is_valid_did(did):
                continue
            start = m.start()
            feature = {"$type": FACET_MENTION, "did": did}
            found.append((byte_at(start), byte_at(start + 1 + len(handle)), feature))

    for m in _pattern(_LINK_RE).finditer(text):
        uri = m.group(1)
        if uri[-1] in ".,;:!?":
            uri = uri[:-1]
        if uri.endswith(")") and "(" not in uri:
            uri = uri[:-1]
        if not syntax.is_valid_link_uri(uri):
            continue
        start = m.start(1)
        found.append((byte_at(start), byte_at(start + len(uri)), {"$type": FACET_LINK, "uri": uri}))

    for m in _pattern(_TAG_RE).finditer(text):
        tag = _pattern(_TRAILING_PUNCT_RE).sub("", m.group(1).strip())
        if not tag:
            continue
        try:
            _check_text(tag, "tag", max_bytes=TAG_MAX_BYTES, max_graphemes=TAG_MAX_GRAPHEMES)
        except InvalidRecord:
            continue
        start = m.start()  # the '#' (or fullwidth '＃') itself
        end = start + 1 + len(tag)
        found.append((byte_at(start), byte_at(end), {"$type": FACET_TAG, "tag": tag}))

    found.sort(key=lambda item: (item[0], item[1]))
    return [
        {
            "$type": FACET,
            "index": {"byteStart": start, "byteEnd": end},
            "features": [feature],
        }
        for start, end, feature in found
    ]
