"""app.bsky records: validation with field paths, typed round-trips, facet detection."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import records
from protocol.errors import InvalidRecord
from protocol.records import (
    BLOCK,
    FOLLOW,
    LIKE,
    POST,
    PROFILE,
    REPOST,
    Block,
    EmbedRecord,
    Facet,
    Follow,
    Like,
    Link,
    Mention,
    Post,
    Profile,
    ReplyRef,
    Repost,
    StrongRef,
    Tag,
    UnknownObject,
    UnknownRecord,
    detect_facets,
    parse_record,
    validate_record,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
URI = f"at://{DID}/app.bsky.feed.post/3k5nobkf2w72g"
NOW = "2024-05-01T12:34:56.123456+00:00"  # what the Python SDK writes
RKEY = "3k5nobkf2w72g"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # one grapheme, 25 bytes
FLAG = "\U0001f1ef\U0001f1f5"  # one grapheme, 8 bytes


def strong_ref(**extra: Any) -> dict[str, Any]:
    return {"$type": "com.atproto.repo.strongRef", "uri": URI, "cid": CID, **extra}


def make_post(**fields: Any) -> dict[str, Any]:
    """A post the way the Bluesky SDK sends one, every nested $type included."""
    text = "héllo @alice.test, see https://example.com/ ✨ #atproto"
    post: dict[str, Any] = {
        "$type": POST,
        "text": text,
        "createdAt": NOW,
        "langs": ["en", "pt-BR"],
        "reply": {
            "$type": "app.bsky.feed.post#replyRef",
            "root": strong_ref(),
            "parent": strong_ref(),
        },
        "facets": detect_facets(text, lambda handle: DID),
        "embed": {"$type": "app.bsky.embed.record", "record": strong_ref()},
    }
    post.update(fields)
    return post


def make_like() -> dict[str, Any]:
    return {"$type": LIKE, "subject": strong_ref(), "createdAt": NOW}


def make_repost() -> dict[str, Any]:
    return {"$type": REPOST, "subject": strong_ref(), "createdAt": "2024-05-01T12:34:56Z"}


def make_follow() -> dict[str, Any]:
    return {"$type": FOLLOW, "subject": DID, "createdAt": NOW}


def make_block() -> dict[str, Any]:
    return {"$type": BLOCK, "subject": "did:web:example.com", "createdAt": NOW}


def make_profile() -> dict[str, Any]:
    return {
        "$type": PROFILE,
        "displayName": "Alice 🌸",
        "description": "hello\nworld",
        "avatar": {
            "$type": "blob",
            "ref": b"\x01q\x12 " + bytes(32),
            "mimeType": "image/png",
            "size": 1234,
        },
        "pinnedPost": strong_ref(),
        "createdAt": NOW,
    }


KNOWN = [
    pytest.param(POST, make_post, Post, RKEY, id="post"),
    pytest.param(LIKE, make_like, Like, RKEY, id="like"),
    pytest.param(REPOST, make_repost, Repost, RKEY, id="repost"),
    pytest.param(FOLLOW, make_follow, Follow, RKEY, id="follow"),
    pytest.param(BLOCK, make_block, Block, RKEY, id="block"),
    pytest.param(PROFILE, make_profile, Profile, "self", id="profile"),
]


@pytest.mark.parametrize(("collection", "make", "cls", "rkey"), KNOWN)
def test_valid_record_round_trips(
    collection: str, make: Callable[[], dict[str, Any]], cls: type[Any], rkey: str
) -> None:
    value = make()
    snapshot = copy.deepcopy(value)
    assert validate_record(collection, value, rkey) is value
    assert value == snapshot  # unchanged
    parsed = parse_record(value)
    assert type(parsed) is cls
    assert parsed.to_dict() == snapshot
    assert cls.from_dict(value) == parsed


@pytest.mark.parametrize(("collection", "make", "cls", "rkey"), KNOWN)
def test_unknown_fields_are_kept(
    collection: str, make: Callable[[], dict[str, Any]], cls: type[Any], rkey: str
) -> None:
    value = make()
    value["futureField"] = {"nested": [1, "two", None, True, b"\x00"]}
    validate_record(collection, value, rkey)
    parsed = parse_record(value)
    assert not isinstance(parsed, UnknownRecord)
    assert parsed.extra == {"futureField": value["futureField"]}
    assert parsed.to_dict() == value


@pytest.mark.parametrize(("collection", "make", "cls", "rkey"), KNOWN)
def test_type_is_required_and_must_match(
    collection: str, make: Callable[[], dict[str, Any]], cls: type[Any], rkey: str
) -> None:
    value = make()
    del value["$type"]
    with pytest.raises(InvalidRecord) as excinfo:
        validate_record(collection, value)
    assert excinfo.value.field == "$type"
    value["$type"] = "app.bsky.feed.generator"
    with pytest.raises(InvalidRecord, match=r"^\$type: must be"):
        validate_record(collection, value)


def test_typed_post_fields() -> None:
    post = parse_record(make_post())
    assert isinstance(post, Post)
    assert post.created_at == NOW
    assert post.langs == ("en", "pt-BR")
    assert isinstance(post.reply, ReplyRef)
    assert post.reply.parent == StrongRef(URI, CID, {"$type": "com.atproto.repo.strongRef"})
    assert isinstance(post.embed, EmbedRecord)
    assert post.embed.record.uri == URI
    assert post.facets is not None
    kinds = [type(f.features[0]) for f in post.facets]
    assert kinds == [Mention, Link, Tag]


def test_building_a_post_from_parts() -> None:
    text = "quote of @bob.test"
    post = Post(
        text=text,
        created_at="2024-01-01T00:00:00.000Z",
        facets=[Facet(records.ByteSlice(9, 18), [Mention(DID)])],  # type: ignore[arg-type]
        embed=EmbedRecord(StrongRef(URI, CID)),
    )
    assert isinstance(post.facets, tuple)
    assert post.to_dict() == {
        "$type": POST,
        "text": text,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "facets": [
            {
                "index": {"byteStart": 9, "byteEnd": 18},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": DID}],
            }
        ],
        "embed": {"$type": "app.bsky.embed.record", "record": {"uri": URI, "cid": CID}},
    }
    validate_record(POST, post.to_dict(), RKEY)


def test_constructors_validate() -> None:
    with pytest.raises(InvalidRecord, match=r"^text: must be at most 300 graphemes"):
        Post(text="x" * 301, created_at=NOW)
    with pytest.raises(InvalidRecord, match=r"^uri: must be a valid AT-URI"):
        StrongRef("https://example.com", CID)
    with pytest.raises(InvalidRecord, match=r"^subject: must be a valid DID"):
        Follow("alice.test", NOW)
    with pytest.raises(InvalidRecord, match=r"^extra: must not contain the known field 'text'"):
        Post(text="x", created_at=NOW, extra={"text": "y"})


# -- open unions -----------------------------------------------------------------------


def test_unknown_embed_and_feature_pass_through() -> None:
    images = {
        "$type": "app.bsky.embed.images",
        "images": [{"alt": "", "image": {"$type": "blob", "size": 1}}],
    }
    facet = {
        "index": {"byteStart": 0, "byteEnd": 1},
        "features": [{"$type": "com.example.facet#sparkle", "level": 3}],
    }
    value = make_post(text="x", embed=images, facets=[facet])
    validate_record(POST, value)
    post = parse_record(value)
    assert isinstance(post, Post)
    assert post.embed == UnknownObject(images)
    assert post.facets is not None
    assert isinstance(post.facets[0].features[0], UnknownObject)
    assert post.to_dict() == value


# -- field paths and rules -------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        target: Any = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        target: Any = record
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


POST_ERRORS = [
    pytest.param(_delete(["text"]), "text", "is required", id="text-missing"),
    pytest.param(_set(["text"], 5), "text", "must be a string (got int)", id="text-int"),
    pytest.param(_set(["text"], "\ud800"), "text", "lone surrogate", id="text-surrogate"),
    pytest.param(_delete(["createdAt"]), "createdAt", "is required", id="createdAt-missing"),
    pytest.param(
        _set(["createdAt"], "2024-01-01 00:00:00Z"),
        "createdAt",
        "must be a valid datetime",
        id="createdAt-space",
    ),
    pytest.param(
        _set(["reply", "parent", "cid"], "not a cid"),
        "reply.parent.cid",
        "must be a valid CID",
        id="reply-parent-cid",
    ),
    pytest.param(_delete(["reply", "root"]), "reply.root", "is required", id="reply-root"),
    pytest.param(
        _set(["reply", "$type"], "app.bsky.feed.post#other"),
        "reply.$type",
        "must be 'app.bsky.feed.post#replyRef'",
        id="reply-type",
    ),
    pytest.param(
        _set(["reply", "root", "$type"], "com.example.ref"),
        "reply.root.$type",
        "must be 'com.atproto.repo.strongRef'",
        id="strongref-type",
    ),
    pytest.param(_set(["reply"], None), "reply", "must not be null", id="reply-null"),
    pytest.param(_set(["reply"], "at://x"), "reply", "must be an object", id="reply-str"),
    pytest.param(
        _set(["langs"], ["en", "fr", "de", "ja"]),
        "langs",
        "must have at most 3 items (got 4)",
        id="langs-4",
    ),
    pytest.param(_set(["langs"], ["en", "j"]), "langs[1]", "language tag", id="langs-bad"),
    pytest.param(_set(["langs"], "en"), "langs", "must be an array", id="langs-str"),
    pytest.param(
        _set(["facets", 0, "index", "byteEnd"], 10_000),
        "facets[0].index.byteEnd",
        "must be at most the text's length in UTF-8 bytes",
        id="facet-past-end",
    ),
    pytest.param(
        _set(["facets", 1, "index", "byteEnd"], 0),
        "facets[1].index.byteEnd",
        "must be greater than byteStart",
        id="facet-empty",
    ),
    pytest.param(
        _set(["facets", 0, "index", "byteStart"], -1),
        "facets[0].index.byteStart",
        "must be at least 0",
        id="facet-negative",
    ),
    pytest.param(
        _set(["facets", 0, "index", "byteStart"], True),
        "facets[0].index.byteStart",
        "must be an integer",
        id="facet-bool",
    ),
    pytest.param(
        _set(["facets", 0, "features", 0, "did"], "@alice.test"),
        "facets[0].features[0].did",
        "must be a valid DID",
        id="mention-not-did",
    ),
    pytest.param(
        _set(["facets", 1, "features", 0, "uri"], "not a uri"),
        "facets[1].features[0].uri",
        "must be a valid URI",
        id="link-not-uri",
    ),
    pytest.param(
        _set(["facets", 2, "features", 0, "tag"], "t" * 65),
        "facets[2].features[0].tag",
        "must be at most 64 graphemes (got 65)",
        id="tag-too-long",
    ),
    pytest.param(
        _delete(["facets", 0, "features", 0, "$type"]),
        "facets[0].features[0].$type",
        "is required",
        id="feature-untyped",
    ),
    pytest.param(
        _delete(["embed", "$type"]),
        "embed.$type",
        "is required on a union member",
        id="embed-untyped",
    ),
    pytest.param(
        _set(["embed", "record", "uri"], "at://did:plc:x/app.bsky.feed.post/"),
        "embed.record.uri",
        "must be a valid AT-URI",
        id="embed-uri",
    ),
    pytest.param(_set(["tags"], ["a"] * 9), "tags", "at most 8 items", id="tags-9"),
    pytest.param(_set(["score"], 1.5), "score", "float is not in the data model", id="float"),
    pytest.param(
        _set(["deep"], {"a": [{"b": 2**64}]}),
        "deep.a[0].b",
        "signed 64-bit",
        id="int-overflow",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "rule"), POST_ERRORS)
def test_post_errors_name_field_and_rule(
    mutate: Callable[[dict[str, Any]], None], field: str, rule: str
) -> None:
    value = make_post()
    mutate(value)
    with pytest.raises(InvalidRecord) as excinfo:
        validate_record(POST, value)
    assert excinfo.value.field == field
    assert rule in excinfo.value.message
    assert excinfo.value.message.startswith(f"{field}: ")
    assert excinfo.value.error == "InvalidRecord"
    with pytest.raises(InvalidRecord):
        parse_record(value)


OTHER_ERRORS = [
    pytest.param(LIKE, make_like, _delete(["subject"]), "subject", id="like-subject"),
    pytest.param(LIKE, make_like, _set(["subject", "uri"], "at://a"), "subject.uri", id="like-uri"),
    pytest.param(LIKE, make_like, _set(["via"], {"uri": URI}), "via.cid", id="like-via"),
    pytest.param(REPOST, make_repost, _set(["createdAt"], "yesterday"), "createdAt", id="rp-dt"),
    pytest.param(FOLLOW, make_follow, _set(["subject"], "alice.test"), "subject", id="fl-did"),
    pytest.param(BLOCK, make_block, _set(["subject"], None), "subject", id="block-null"),
    pytest.param(PROFILE, make_profile, _set(["avatar"], "x.png"), "avatar", id="avatar-str"),
    pytest.param(
        PROFILE, make_profile, _set(["pinnedPost", "cid"], "x"), "pinnedPost.cid", id="pinned"
    ),
    pytest.param(PROFILE, make_profile, _set(["website"], "no uri"), "website", id="website"),
    pytest.param(
        PROFILE, make_profile, _set(["displayName"], "n" * 65), "displayName", id="name-65"
    ),
    pytest.param(
        PROFILE, make_profile, _set(["description"], "d" * 257), "description", id="desc-257"
    ),
]


@pytest.mark.parametrize(("collection", "make", "mutate", "field"), OTHER_ERRORS)
def test_other_record_errors(
    collection: str,
    make: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    value = make()
    mutate(value)
    with pytest.raises(InvalidRecord) as excinfo:
        validate_record(collection, value)
    assert excinfo.value.field == field


@pytest.mark.parametrize(
    ("collection", "make", "rkey", "ok"),
    [
        pytest.param(POST, make_post, RKEY, True, id="post-tid"),
        pytest.param(POST, make_post, "self", False, id="post-self"),
        pytest.param(PROFILE, make_profile, "self", True, id="profile-self"),
        pytest.param(PROFILE, make_profile, RKEY, False, id="profile-tid"),
        pytest.param(FOLLOW, make_follow, "..", False, id="follow-dots"),
    ],
)
def test_record_keys(
    collection: str, make: Callable[[], dict[str, Any]], rkey: str, ok: bool
) -> None:
    if ok:
        validate_record(collection, make(), rkey)
    else:
        with pytest.raises(InvalidRecord) as excinfo:
            validate_record(collection, make(), rkey)
        assert excinfo.value.field == "rkey"


# -- unknown collections ---------------------------------------------------------------


def test_unknown_collection_passes_through() -> None:
    value = {"$type": "com.example.thing", "anything": 1.5, "n": {"deep": [1]}}
    assert validate_record("com.example.thing", value, "any:key~") is value
    untyped = {"x": 1}
    assert validate_record("com.example.thing", untyped) is untyped
    parsed = parse_record(value)
    assert parsed == UnknownRecord(value)
    assert isinstance(parsed, UnknownRecord)
    assert parsed.type == "com.example.thing"
    assert parsed.to_dict() == value


@pytest.mark.parametrize(
    ("collection", "value", "rkey", "field"),
    [
        pytest.param("com.example.thing", {"$type": "com.example.other"}, None, "$type", id="t"),
        pytest.param("com.example.thing", ["not", "a", "map"], None, "", id="list"),
        pytest.param("not-an-nsid", {}, None, "collection", id="nsid"),
        pytest.param("com.example.thing", {}, "a/b", "rkey", id="rkey"),
    ],
)
def test_unknown_collection_checks(
    collection: str, value: Any, rkey: str | None, field: str
) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        validate_record(collection, value, rkey)
    assert excinfo.value.field == field


def test_parse_record_needs_type() -> None:
    with pytest.raises(InvalidRecord, match=r"^\$type: is required"):
        parse_record({"text": "hi"})
    with pytest.raises(InvalidRecord, match=r"^\$type: must be a string"):
        parse_record({"$type": 7})


# -- grapheme and byte limits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok", "rule"),
    [
        pytest.param("a" * 300, True, "", id="300-ascii"),
        pytest.param("a" * 301, False, "at most 300 graphemes (got 301)", id="301-ascii"),
        pytest.param("a" * 299 + FAMILY, True, "", id="299+family"),
        pytest.param("a" * 300 + FAMILY, False, "(got 301)", id="300+family"),
        pytest.param(FLAG * 300, True, "", id="300-flags"),
        pytest.param(FLAG * 301, False, "(got 301)", id="301-flags"),
        pytest.param("e\u0301" * 300, True, "", id="300-combining"),
        pytest.param(FAMILY * 120, True, "", id="3000-bytes"),
        pytest.param(
            FAMILY * 121, False, "at most 3000 bytes of UTF-8 (got 3025)", id="3025-bytes"
        ),
        pytest.param("日" * 1000, False, "at most 300 graphemes (got 1000)", id="cjk-3000-bytes"),
        pytest.param("", True, "", id="empty"),
    ],
)
def test_post_text_limits(text: str, ok: bool, rule: str) -> None:
    value = make_post(text=text, facets=[])
    if ok:
        validate_record(POST, value)
    else:
        with pytest.raises(InvalidRecord) as excinfo:
            validate_record(POST, value)
        assert excinfo.value.field == "text"
        assert rule in excinfo.value.message


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        pytest.param("displayName", 64, id="displayName"),
        pytest.param("description", 256, id="description"),
        pytest.param("pronouns", 20, id="pronouns"),
    ],
)
def test_profile_limits(field: str, limit: int) -> None:
    value = make_profile()
    value[field] = FLAG * limit
    validate_record(PROFILE, value, "self")
    value[field] = FLAG * (limit + 1)
    with pytest.raises(InvalidRecord, match=f"at most {limit} graphemes"):
        validate_record(PROFILE, value, "self")


# -- facet detection -------------------------------------------------------------------


def _facet_texts(text: str, facets: list[dict[str, Any]]) -> list[str]:
    raw = text.encode("utf-8")
    return [raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode("utf-8") for f in facets]


def test_detect_facets_multibyte_offsets() -> None:
    text = f"日本語 {FAMILY} @Alice.Test さん #タグ (https://例え.jp/パス?q=1). ＃全角"
    resolved: list[str] = []

    def resolve(handle: str) -> str | None:
        resolved.append(handle)
        return DID

    facets = detect_facets(text, resolve)
    assert resolved == ["alice.test"]
    assert _facet_texts(text, facets) == [
        "@Alice.Test",
        "#タグ",
        "https://例え.jp/パス?q=1",
        "＃全角",
    ]
    features = [f["features"][0] for f in facets]
    assert features == [
        {"$type": "app.bsky.richtext.facet#mention", "did": DID},
        {"$type": "app.bsky.richtext.facet#tag", "tag": "タグ"},
        {"$type": "app.bsky.richtext.facet#link", "uri": "https://例え.jp/パス?q=1"},
        {"$type": "app.bsky.richtext.facet#tag", "tag": "全角"},
    ]
    validate_record(POST, make_post(text=text, facets=facets))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("mail me at a@b.test", [], id="email-no-mention"),
        pytest.param("hi @nobody.test", [], id="unresolved"),
        pytest.param("hi @1.5 and @x", [], id="not-handles"),
        pytest.param("end @bob.test.", ["@bob.test"], id="trailing-dot"),
        pytest.param("see https://x.test/a, ok", ["https://x.test/a"], id="link-comma"),
        pytest.param("(https://x.test/a_(b))", ["https://x.test/a_(b))"], id="link-parens"),
        pytest.param("(https://x.test/a)", ["https://x.test/a"], id="link-close-paren"),
        pytest.param("ftp://x.test nope", [], id="not-http"),
        pytest.param("#123 is a number, #1a is not!", ["#1a"], id="numeric-tag"),
        pytest.param("a#b #end.", ["#end"], id="tag-punct"),
        pytest.param("#" + "t" * 65, [], id="tag-too-long"),
        pytest.param("#️⃣ keycap", [], id="keycap"),
    ],
)
def test_detect_facets_cases(text: str, expected: list[str]) -> None:
    def resolve(handle: str) -> str | None:
        return None if handle == "nobody.test" else DID

    assert _facet_texts(text, detect_facets(text, resolve)) == expected


def test_detect_facets_without_resolver_skips_mentions() -> None:
    facets = detect_facets("@alice.test #tag")
    assert [f["features"][0]["$type"] for f in facets] == ["app.bsky.richtext.facet#tag"]


def test_detect_facets_skips_bad_dids_from_resolver() -> None:
    assert detect_facets("@alice.test", lambda h: "alice") == []


def test_detect_facets_bounds_input() -> None:
    with pytest.raises(InvalidRecord, match="too long"):
        detect_facets("a" * (64 * 1024 + 1))


# -- hypothesis ------------------------------------------------------------------------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=10)
)
_values = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)
    ),
    max_leaves=30,
)
_field_names = st.sampled_from(
    [
        "$type",
        "text",
        "createdAt",
        "reply",
        "facets",
        "embed",
        "langs",
        "tags",
        "subject",
        "via",
        "displayName",
        "description",
        "avatar",
        "website",
        "pinnedPost",
        "index",
        "features",
        "uri",
        "cid",
        "root",
        "parent",
        "record",
    ]
)
_collections = st.sampled_from([POST, LIKE, REPOST, FOLLOW, BLOCK, PROFILE, "com.example.x"])


@given(collection=_collections, value=st.dictionaries(_field_names, _values, max_size=8))
def test_random_dicts_raise_only_invalid_record(collection: str, value: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidRecord):
        validate_record(collection, value)
    with contextlib.suppress(InvalidRecord):
        parse_record(value)


@given(value=_values, rkey=st.none() | st.text(max_size=15))
def test_random_values_raise_only_invalid_record(value: Any, rkey: str | None) -> None:
    for collection in (POST, PROFILE, "com.example.x"):
        with contextlib.suppress(InvalidRecord):
            validate_record(collection, value, rkey)


_mutation_paths = st.sampled_from(
    [
        ["text"],
        ["reply"],
        ["reply", "root"],
        ["reply", "parent", "cid"],
        ["facets"],
        ["facets", 0],
        ["facets", 0, "index"],
        ["facets", 0, "index", "byteEnd"],
        ["facets", 1, "features"],
        ["facets", 1, "features", 0],
        ["facets", 2, "features", 0, "tag"],
        ["embed"],
        ["embed", "record"],
        ["langs"],
        ["langs", 0],
        ["createdAt"],
    ]
)


@given(path=_mutation_paths, replacement=_values)
def test_mutated_posts_raise_only_invalid_record(path: list[Any], replacement: Any) -> None:
    value = make_post()
    _set(path, replacement)(value)
    try:
        validate_record(POST, value)
    except InvalidRecord as e:
        error: InvalidRecord | None = e
    else:
        error = None
        assert parse_record(value).to_dict() == value
    if error is not None:
        assert error.field


_post_text = st.lists(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10)
    | st.sampled_from([" @bob.test ", " #tag ", " https://x.test/ ", FAMILY]),
    max_size=12,
).map("".join)


@given(text=_post_text, langs=st.lists(st.sampled_from(["en", "ja", "pt-BR"]), max_size=3))
def test_generated_posts_round_trip(text: str, langs: list[str]) -> None:
    facets = detect_facets(text, lambda handle: DID)
    value = make_post(text=text, facets=facets, langs=langs)
    validate_record(POST, value, RKEY)
    post = parse_record(value)
    assert isinstance(post, Post)
    assert post.to_dict() == value
    assert Post.from_dict(post.to_dict()) == post
    raw = text.encode("utf-8")
    for facet in facets:
        start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
        raw[start:end].decode("utf-8")  # offsets fall on character boundaries
