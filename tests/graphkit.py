"""Records for graph and moderation tests: lists, items, listblocks, gates."""

from __future__ import annotations

import datetime
from typing import Any

from node.client import Client, RecordRef

MODLIST = "app.bsky.graph.defs#modlist"
CURATELIST = "app.bsky.graph.defs#curatelist"


def now() -> str:
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


async def make_list(
    c: Client, name: str, purpose: str = CURATELIST, description: str | None = None
) -> RecordRef:
    record: dict[str, Any] = {
        "$type": "app.bsky.graph.list",
        "name": name,
        "purpose": purpose,
        "createdAt": now(),
    }
    if description is not None:
        record["description"] = description
    return await c.create_record("app.bsky.graph.list", record)


async def add_item(c: Client, list_uri: str, subject: str) -> RecordRef:
    return await c.create_record(
        "app.bsky.graph.listitem",
        {
            "$type": "app.bsky.graph.listitem",
            "subject": subject,
            "list": list_uri,
            "createdAt": now(),
        },
    )


async def block_list(c: Client, list_uri: str) -> RecordRef:
    return await c.create_record(
        "app.bsky.graph.listblock",
        {"$type": "app.bsky.graph.listblock", "subject": list_uri, "createdAt": now()},
    )


def rkey(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


async def threadgate(
    c: Client, post: RecordRef, allow: list[dict[str, Any]] | None, hidden: tuple[str, ...] = ()
) -> RecordRef:
    record: dict[str, Any] = {
        "$type": "app.bsky.feed.threadgate",
        "post": post.uri,
        "createdAt": now(),
    }
    if allow is not None:
        record["allow"] = allow
    if hidden:
        record["hiddenReplies"] = list(hidden)
    return await c.put_record("app.bsky.feed.threadgate", rkey(post.uri), record)


async def postgate(
    c: Client, post: RecordRef, *, disable: bool = False, detached: list[str] | None = None
) -> RecordRef:
    record: dict[str, Any] = {
        "$type": "app.bsky.feed.postgate",
        "post": post.uri,
        "createdAt": now(),
    }
    if disable:
        record["embeddingRules"] = [{"$type": "app.bsky.feed.postgate#disableRule"}]
    if detached:
        record["detachedEmbeddingUris"] = detached
    return await c.put_record("app.bsky.feed.postgate", rkey(post.uri), record)


def texts(feed: list[dict[str, Any]]) -> list[str]:
    return [item["post"]["record"]["text"] for item in feed]
