"""Feed generator plugins for tests/test_feedgen.py: one that works, and the ways a
plugin can misbehave (raise, block its thread, sleep, answer garbage or too much)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from node.appview.feedgens import FeedContext, FeedGenerator
from protocol.feedgen import Skeleton, SkeletonItem

#: Set by the test when the blocking plugin may return.
RELEASE = threading.Event()
#: Viewers the working plugin was asked for.
SEEN: list[str | None] = []


class Everything(FeedGenerator):
    name = "everything"
    display_name = "Everything"
    description = "Every post this node holds, newest first."

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        SEEN.append(viewer)
        posts = await ctx.recent_posts(None, limit=limit, before=cursor)
        return Skeleton(
            tuple(SkeletonItem(p.uri) for p in posts),
            posts[-1].sort_at if len(posts) == limit else None,
        )


class Raises(FeedGenerator):
    name = "raises"
    display_name = "Raises"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        raise RuntimeError("secret detail /etc/skyfed")


class Blocks(FeedGenerator):
    """Blocks its thread without ever yielding to its event loop."""

    name = "blocks"
    display_name = "Blocks"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        RELEASE.wait(60)
        return Skeleton(())


class Sleeps(FeedGenerator):
    name = "sleeps"
    display_name = "Sleeps"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        await asyncio.sleep(3600)
        return Skeleton(())


class Garbage(FeedGenerator):
    name = "garbage"
    display_name = "Garbage"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        return Skeleton((SkeletonItem("javascript:alert(1)"),))


class NotASkeleton(FeedGenerator):
    name = "not-a-skeleton"
    display_name = "Not a skeleton"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Any:
        return {"feed": []}


class TooMany(FeedGenerator):
    name = "too-many"
    display_name = "Too many"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        return Skeleton(
            tuple(SkeletonItem(f"at://did:plc:x/app.bsky.feed.post/{i}") for i in range(limit + 1))
        )


class Greedy(FeedGenerator):
    """Asks for far more reads at once than a call may make."""

    name = "greedy"
    display_name = "Greedy"

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        await asyncio.gather(*(ctx.follows(viewer or "did:plc:x") for _ in range(500)))
        return Skeleton(())


ALL = (
    "tests.feedplugins:Everything",
    "tests.feedplugins:Raises",
    "tests.feedplugins:Blocks",
    "tests.feedplugins:Sleeps",
    "tests.feedplugins:Garbage",
    "tests.feedplugins:NotASkeleton",
    "tests.feedplugins:TooMany",
    "tests.feedplugins:Greedy",
)
