"""protocol/feedgen.py without a node: skeletons round-trip, and no JSON value makes
the parser fail other than with SkeletonError."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from protocol.feedgen import (
    MAX_CURSOR,
    GeneratorDecl,
    Skeleton,
    SkeletonError,
    SkeletonItem,
    feed_uri_parts,
)

_RKEY = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=13)
_DID = st.builds(
    lambda s: "did:skyfed:" + s, st.text("abcdefghijklmnopqrstuvwxyz", min_size=24, max_size=24)
)
_POST = st.builds(lambda d, r: f"at://{d}/app.bsky.feed.post/{r}", _DID, _RKEY)
_REPOST = st.builds(lambda d, r: f"at://{d}/app.bsky.feed.repost/{r}", _DID, _RKEY)
_ITEM = st.builds(
    SkeletonItem,
    post=_POST,
    repost=st.none() | _REPOST,
    pinned=st.booleans(),
    feed_context=st.none() | st.text(max_size=50),
)


@given(
    items=st.lists(_ITEM, max_size=20, unique_by=lambda i: i.post),
    cursor=st.none() | st.text(min_size=1, max_size=MAX_CURSOR),
)
def test_a_skeleton_round_trips_through_its_json(
    items: list[SkeletonItem], cursor: str | None
) -> None:
    # A repost reason wins over a pin when both are set: the JSON has one reason.
    items = [
        SkeletonItem(i.post, i.repost, i.pinned and i.repost is None, i.feed_context) for i in items
    ]
    skeleton = Skeleton(tuple(items), cursor)
    data = orjson.dumps(skeleton.to_json())
    assert Skeleton.from_bytes(data, max_items=20, max_bytes=len(data)) == skeleton


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["feed", "post", "cursor", "reason", "$type", "repost", "feedContext", "x"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(value=_JSON)
def test_any_json_is_a_skeleton_or_a_skeleton_error(value: Any) -> None:
    try:
        parsed = Skeleton.from_json(value, max_items=10)
    except SkeletonError:
        return
    assert all(feed_uri_parts(i.post) is None for i in parsed.items)  # posts, not feeds


def test_feed_uri_parts() -> None:
    assert feed_uri_parts("at://did:key:z6Mk/app.bsky.feed.generator/cats") == (
        "did:key:z6Mk",
        "cats",
    )
    for uri in (
        "at://alice.test/app.bsky.feed.generator/cats",  # a handle: views name DIDs
        "at://did:key:z6Mk/app.bsky.feed.post/cats",
        "at://did:key:z6Mk/app.bsky.feed.generator",
        "https://example.com/app.bsky.feed.generator/cats",
        "",
    ):
        assert feed_uri_parts(uri) is None, uri


def test_a_declaration_keeps_only_what_views_need() -> None:
    decl = GeneratorDecl.from_record(
        {"did": "did:key:z6Mk", "displayName": "Cats", "description": 5, "createdAt": "x" * 100}
    )
    assert decl is not None
    assert (decl.did, decl.display_name, decl.description, decl.created_at) == (
        "did:key:z6Mk",
        "Cats",
        None,
        None,
    )
    assert GeneratorDecl.from_record(["not", "a", "record"]) is None
