#!/usr/bin/env python3
"""A feed generator plugin, and a node that hosts it, as a story on one local node.

    .venv/bin/python examples/feed_plugin.py

``Cats`` below is a complete plugin: the posts of the last day that mention a cat,
newest first. A node hosts it when its config names it by dotted path::

    feed_plugins = ["feed_plugin:Cats"]      # skyfed.toml, module on the PYTHONPATH

An account then declares the feed with an ``app.bsky.feed.generator`` record whose
``did`` is the node's DID and whose record key is the plugin's ``name``; any Bluesky
app (or any skyfed node, through service auth) reads it with
``app.bsky.feed.getFeed``. See docs/feed-generators.md.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import tempfile
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)

from node.appview.feedgens import FeedContext, FeedGenerator
from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.feedgen import Skeleton, SkeletonItem

PASSWORD = "feed-plugin-demo-123"
_CAT = re.compile(r"\b(cat|cats|kitten|kittens)\b", re.IGNORECASE)


class Cats(FeedGenerator):
    """Posts of the last day that mention a cat, newest first."""

    name = "cats"  # the record key of the feed's declaration
    display_name = "Cats"
    description = "Posts of the last day that mention a cat."

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        # The cursor is whatever this method handed out last time (a sort time), or
        # anything a client made up: it is only ever compared, never trusted.
        found: list[SkeletonItem] = []
        before = cursor
        since = ctx.ago(86400)
        last = None
        for _ in range(5):  # look at up to five pages of recent posts
            posts = await ctx.recent_posts(None, limit=200, before=before, since=since)
            if not posts:
                break
            texts = await ctx.texts([p.uri for p in posts])
            for post in posts:
                last = post.sort_at
                if _CAT.search(texts.get(post.uri, "")):
                    found.append(SkeletonItem(post.uri))
                    if len(found) == limit:
                        return Skeleton(tuple(found), post.sort_at)
            before = last
        return Skeleton(tuple(found))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = NodeConfig(data_dir=Path(tmp) / "node", port=0, feed_plugins=("feed_plugin:Cats",))
        async with Node(config) as node, Client(node.url) as alice, Client(node.url) as bob:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await bob.create_account("bob.skyfed.test", PASSWORD)
            await alice.post("My cat knocked a glass off the table.")
            await bob.post("Lunch was good.")
            await bob.post("Two kittens on the balcony!")
            feed = await alice.create_record(
                "app.bsky.feed.generator",
                {
                    "$type": "app.bsky.feed.generator",
                    "did": node.node_did,
                    "displayName": Cats.display_name,
                    "description": Cats.description,
                    "createdAt": _now(),
                },
                rkey=Cats.name,
            )
            print(f"alice declared the feed {feed.uri}")
            about = await bob.call("app.bsky.feed.getFeedGenerator", params={"feed": feed.uri})
            print(
                f"getFeedGenerator: {about['view']['displayName']!r} by "
                f"@{about['view']['creator']['handle']}, online={about['isOnline']},"
                f" valid={about['isValid']}"
            )
            out = await bob.call("app.bsky.feed.getFeed", params={"feed": feed.uri})
            print("bob reads the Cats feed:")
            for item in out["feed"]:
                post = item["post"]
                print(f"  @{post['author']['handle']}: {post['record']['text']}")


if __name__ == "__main__":
    asyncio.run(main())
