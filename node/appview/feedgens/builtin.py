"""The feed generators every node hosts unless told not to (``builtin_feeds``).

- ``quiet-posters``: what's new from the people you follow who rarely post: the
  last 30 days of top-level posts by followed accounts that posted at most
  :data:`QUIET_MAX_POSTS` times in those 30 days, newest first. The people who post
  a lot fill a timeline; this is where the others are not drowned.
- ``follows-popular``: posts the people you follow liked in the last 3 days, most
  liked by them first (each account's newest 20 likes count; the ranking is kept a
  minute per reader, for 256 readers at most).
- ``mutuals``: posts by accounts you follow that follow you back, newest first.

Each needs a viewer (an anonymous reader gets an empty feed). Cursors are what the
generator handed out; anything else is read as "from the start" or refused, never
trusted as SQL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

from protocol.errors import RemoteProtocolError
from protocol.feedgen import Skeleton, SkeletonItem

from .base import FeedContext, FeedGenerator, PostRef

__all__ = ["BUILTIN_FEEDS", "FollowsPopular", "Mutuals", "QuietPosters"]

#: Days of posts ``quiet-posters`` looks at, and how many posts in them is "rarely".
QUIET_DAYS: Final = 30
QUIET_MAX_POSTS: Final = 10
#: Likes ``follows-popular`` looks back over, in seconds, and the deepest page.
POPULAR_WINDOW: Final = 3 * 86400
POPULAR_MAX_OFFSET: Final = 900
POPULAR_CACHE_SECONDS: Final = 60.0
POPULAR_CACHE_READERS: Final = 256


def _time_page(posts: list[PostRef], limit: int) -> Skeleton:
    items = tuple(SkeletonItem(p.uri) for p in posts[:limit])
    cursor = posts[limit - 1].sort_at if len(posts) >= limit and limit > 0 else None
    return Skeleton(items, cursor)


class QuietPosters(FeedGenerator):
    name = "quiet-posters"
    display_name = "Quiet posters"
    description = (
        "What's new from the people you follow who rarely post "
        f"(at most {QUIET_MAX_POSTS} posts in {QUIET_DAYS} days)."
    )

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        if viewer is None:
            return Skeleton(())
        since = ctx.ago(QUIET_DAYS * 86400)
        follows = await ctx.follows(viewer)
        counts = await ctx.post_counts(follows, since=since)
        quiet = [did for did, n in counts.items() if 0 < n <= QUIET_MAX_POSTS]
        if not quiet:
            return Skeleton(())
        posts = await ctx.recent_posts(
            quiet, limit=limit, before=cursor, since=since, replies=False
        )
        return _time_page(posts, limit)


class FollowsPopular(FeedGenerator):
    """The ranking is worked out once per reader and kept for
    :data:`POPULAR_CACHE_SECONDS` (for :data:`POPULAR_CACHE_READERS` readers at most),
    so the pages of one scroll come from one ranking and cost one computation."""

    name = "follows-popular"
    display_name = "Popular with your follows"
    description = "Posts the people you follow liked in the last three days, most liked first."

    def __init__(self) -> None:
        self._ranked: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()

    async def _ranking(self, ctx: FeedContext, viewer: str) -> list[str]:
        now = time.monotonic()
        hit = self._ranked.get(viewer)
        if hit is not None and hit[0] > now:
            return hit[1]
        follows = await ctx.follows(viewer)
        ranked = await ctx.liked_by(
            follows, since=ctx.ago(POPULAR_WINDOW), limit=POPULAR_MAX_OFFSET
        )
        uris = [uri for uri, _ in ranked]
        self._ranked[viewer] = (now + POPULAR_CACHE_SECONDS, uris)
        self._ranked.move_to_end(viewer)
        while len(self._ranked) > POPULAR_CACHE_READERS:
            self._ranked.popitem(last=False)
        return uris

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        if viewer is None:
            return Skeleton(())
        offset = 0
        if cursor:
            if not cursor.isdigit() or len(cursor) > 4:
                raise RemoteProtocolError("malformed cursor")
            offset = int(cursor)
        if offset >= POPULAR_MAX_OFFSET:
            return Skeleton(())
        ranked = await self._ranking(ctx, viewer)
        page = ranked[offset : offset + limit]
        more = len(page) == limit and offset + limit < POPULAR_MAX_OFFSET
        return Skeleton(
            tuple(SkeletonItem(uri) for uri in page), str(offset + limit) if more else None
        )


class Mutuals(FeedGenerator):
    name = "mutuals"
    display_name = "Mutuals"
    description = "Posts by the people you follow who follow you back."

    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        if viewer is None:
            return Skeleton(())
        follows = set(await ctx.follows(viewer))
        mutuals = [d for d in await ctx.followers(viewer) if d in follows]
        if not mutuals:
            return Skeleton(())
        posts = await ctx.recent_posts(mutuals, limit=limit, before=cursor)
        return _time_page(posts, limit)


BUILTIN_FEEDS: Final[tuple[type[FeedGenerator], ...]] = (QuietPosters, FollowsPopular, Mutuals)
