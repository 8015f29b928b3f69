"""The web client's search and activity pages (node/server/web.py serves the rest).

* ``/search?q=...`` -- people and posts matching a query, from the box in every
  page's header: a plain GET form, so it works with no JavaScript; ``sort=top``
  ranks posts by engagement, ``cursor`` pages on.
* ``/notifications/{handle-or-did}`` -- who liked, reposted, replied to, mentioned,
  quoted or followed an account hosted on this node. The web client has no login, so
  this is the public part of an account's notifications: what it is made of is public
  records anyway. It shows no read state and does not apply the account's own mutes
  (either would tell a stranger something private); an account hosted elsewhere has
  its notifications at its home node, and the page says so.

Like web.py, this module refuses to write anything, and escapes every string that
came from the network.
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.syntax import is_valid_at_identifier

from ..appview.notifications import Notifications
from ..appview.search import MAX_SEARCH_CHARS, Search
from ..store.sqlite import SqliteStorage
from . import inputs
from .web import (
    PAGE_SIZE,
    VIEWS_KEY,
    _author_link,
    _avatar,
    _e,
    _guard,
    _labelled,
    _list,
    _map,
    _page,
    _problem,
    _str,
    post_path,
    profile_path,
    relative_time,
    render_post,
    render_text,
    search_form,
)

__all__ = ["add_search_routes"]

SEARCH_KEY: Final = web.AppKey[Search]("skyfed.web.search")
NOTIFICATIONS_KEY: Final = web.AppKey[Notifications]("skyfed.web.notifications")
STORAGE_KEY: Final = web.AppKey[SqliteStorage]("skyfed.web.storage")
#: People shown above the posts of a search.
PEOPLE_SHOWN: Final = 5

_REASONS: Final = {
    "like": "liked",
    "repost": "reposted",
    "follow": "followed",
    "reply": "replied to",
    "mention": "mentioned",
    "quote": "quoted",
}


def _people(actors: list[Any]) -> str:
    items = []
    for actor in actors[:PEOPLE_SHOWN]:
        if not isinstance(actor, dict):
            continue
        bio = _str(actor, "description").split("\n", 1)[0]
        items.append(
            f'<li class="post">{_avatar(actor)}<div class="meta">{_author_link(actor)}</div>'
            + (f'<p class="text">{_e(bio[:200])}</p>' if bio else "")
            + "</li>"
        )
    if not items:
        return ""
    return f'<h2 class="context">People</h2><ol class="feed">{"".join(items)}</ol>'


async def search_page(request: web.Request) -> web.Response:
    search = request.app[SEARCH_KEY]
    q = inputs.query_str(request, "q", required=False, max_chars=MAX_SEARCH_CHARS) or ""
    sort = "top" if request.query.get("sort") == "top" else "latest"
    cursor = inputs.query_str(request, "cursor", required=False, max_chars=64)
    head = f"<h1>Search</h1>{search_form(q, sort)}"
    if not q.strip():
        return _page("Search · skyfed", head + '<p class="empty">Type words to look for.</p>')
    try:
        posts = await search.posts(q, None, limit=PAGE_SIZE, cursor=cursor, sort=sort)
    except RemoteProtocolError as e:
        body = head + f'<p class="empty">This search could not be run: {_e(e.message)}</p>'
        return _page("Search · skyfed", body, status=e.status)
    actors = {"actors": []} if cursor else await search.actors(q, None, limit=PEOPLE_SHOWN)
    prefs = await _labelled(request, {"posts": posts, "actors": actors})
    now = time.time()
    items = [f"<li>{render_post(p, now, prefs=prefs)}</li>" for p in _list(posts, "posts")]
    other = "top" if sort == "latest" else "latest"
    switch = "/search?" + urlencode({"q": q, **({"sort": "top"} if other == "top" else {})})
    tabs = (
        f'<p class="context">{"Newest" if sort == "latest" else "Most liked"} first · '
        f'<a href="{_e(switch)}">{"most liked" if other == "top" else "newest"} first</a></p>'
    )
    listing = (
        f'<ol class="feed">{"".join(items)}</ol>'
        if items
        else '<p class="empty">No posts found.</p>'
    )
    pager = ""
    if _str(posts, "cursor"):
        more = {
            "q": q,
            "cursor": _str(posts, "cursor"),
            **({"sort": "top"} if sort == "top" else {}),
        }
        pager = (
            '<nav class="pager" aria-label="Pages"><span></span>'
            f'<a rel="next" href="{_e("/search?" + urlencode(more))}">More results →</a></nav>'
        )
    body = head + _people(_list(actors, "actors")) + '<h2 class="context">Posts</h2>'
    return _page(f"{q[:60]} · Search · skyfed", body + tabs + listing + pager)


def _notification(item: dict[str, Any], now: float) -> str:
    author = _map(item, "author")
    reason = _str(item, "reason")
    verb = _REASONS.get(reason, "notified")
    record = _map(item, "record")
    subject = _str(item, "reasonSubject")
    what = ""
    if subject:
        path = post_path(subject)
        what = f' <a href="{_e(path)}">a post</a>' if path else " a post"
    else:
        what = " this account"
    text = ""
    if reason in ("reply", "mention", "quote"):
        facets = _list(record, "facets")
        text = f'<p class="text">{render_text(_str(record, "text"), facets)}</p>'
    when = relative_time(_str(item, "indexedAt"), now)
    return (
        f'<li class="post">{_avatar(author)}<div class="meta">{_author_link(author)} '
        f'{_e(verb)}{what} <span class="when">· {_e(when)}</span></div>{text}</li>'
    )


async def notifications_page(request: web.Request) -> web.Response:
    views = request.app[VIEWS_KEY]
    actor = request.match_info["actor"]
    if not is_valid_at_identifier(actor):
        return _problem(404, "Profile not found", "That is not a handle or DID.")
    cursor = inputs.query_str(request, "cursor", required=False, max_chars=512)
    profile = await views.profile(actor, None)
    did = _str(profile, "did")
    handle = _str(profile, "handle") or did
    if await request.app[STORAGE_KEY].account_by_did(did) is None:
        return _problem(
            404,
            "Not hosted here",
            f"@{handle} is not hosted on this node: its notifications are at its home node.",
        )
    out = await request.app[NOTIFICATIONS_KEY].list(did, PAGE_SIZE, cursor, public=True)
    now = time.time()
    items = [_notification(n, now) for n in _list(out, "notifications") if isinstance(n, dict)]
    listing = (
        f'<ol class="feed">{"".join(items)}</ol>' if items else '<p class="empty">Nothing yet.</p>'
    )
    base = "/notifications/" + quote(actor, safe=":")
    pager = ""
    if _str(out, "cursor"):
        href = base + "?" + urlencode({"cursor": _str(out, "cursor")})
        pager = (
            '<nav class="pager" aria-label="Pages"><span></span>'
            f'<a rel="next" href="{_e(href)}">Older →</a></nav>'
        )
    body = (
        f'<h1>Activity for <a href="{_e(profile_path(profile))}">@{_e(handle)}</a></h1>'
        '<p class="context">Who liked, reposted, replied to, mentioned, quoted or followed '
        "this account (public records; no read state).</p>" + listing + pager
    )
    return _page(f"Activity · @{handle} · skyfed", body)


def add_search_routes(
    app: web.Application,
    search: Search,
    notifications: Notifications,
    storage: SqliteStorage,
) -> None:
    """Serve ``/search`` and ``/notifications/{actor}`` (after web.add_web_routes)."""
    app[SEARCH_KEY] = search
    app[NOTIFICATIONS_KEY] = notifications
    app[STORAGE_KEY] = storage
    app.router.add_get("/search", _guard("Page", search_page))
    app.router.add_get("/notifications/{actor}", _guard("Profile", notifications_page))
