"""The small read-only web client every node serves at ``/``.

Three kinds of page, all rendered on the server from the node's own views
(``app.bsky``-shaped dicts from :class:`ViewSource`), so they work with no JavaScript:

* ``/`` -- the network's latest posts, paged with ``?cursor=``;
* ``/profile/{handle-or-did}`` -- a profile header with counts, then the author's posts;
* ``/post/{did}/{rkey}`` -- a thread: parents above, the post, replies nested below.

Every string that came from the network is HTML-escaped; facets become links only
where their UTF-8 byte range lands on character boundaries, and a link facet only
when its URI is http(s). Pages carry a strict Content-Security-Policy: no outside
origin at all, and the one inline style sheet and script are allowed by their hash.
The script is optional progressive enhancement: it watches the firehose and offers
"n new posts" on the front page.

Moderation is the reader's here too: ``/settings/moderation`` is a form whose answer
is kept in a cookie (the labelers to listen to, and what each label does); pages then
carry those labelers' labels, a warned post sits behind a click-to-reveal warning
(``<details>``, no script needed) and a hidden post is shown as hidden.

This module refuses to: write anything to the node, log anyone in, serve images or other
people's HTML, or answer a failure with a traceback (an unknown profile or post is a
404 page; anything unexpected is a plain 500 page, logged here).
"""

from __future__ import annotations

import base64
import contextvars
import datetime
import hashlib
import html
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from aiohttp import web

from protocol.errors import InvalidSyntax, RemoteProtocolError, SkyfedError
from protocol.moderation import Decision, InvalidPrefs, ModerationPrefs, moderate
from protocol.syntax import is_valid_at_identifier, is_valid_did, is_valid_record_key

from ..accounts.moderation import MODERATION_KEY
from ..counts import count_parts, format_count
from . import inputs

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "VIEWS_KEY",
    "ViewSource",
    "add_web_routes",
    "relative_time",
    "render_text",
]

log = logging.getLogger("skyfed.web")

POST_COLLECTION: Final = "app.bsky.feed.post"
PAGE_SIZE: Final = 25
MAX_PAGE_SIZE: Final = 100
MAX_CURSOR: Final = 512
THREAD_DEPTH: Final = 6
THREAD_PARENTS: Final = 80

_LINK: Final = "app.bsky.richtext.facet#link"
_MENTION: Final = "app.bsky.richtext.facet#mention"
_TAG: Final = "app.bsky.richtext.facet#tag"
_REPOST: Final = "app.bsky.feed.defs#reasonRepost"
_THREAD: Final = "app.bsky.feed.defs#threadViewPost"
_NOT_FOUND: Final = "app.bsky.feed.defs#notFoundPost"
_BLOCKED: Final = "app.bsky.feed.defs#blockedPost"
# XRPC error names that mean "nothing by that name here": a 404 page, not a 400.
# (A malformed identifier in the path names nothing either.)
_MISSING: Final = frozenset({"NotFound", "ProfileNotFound", "RepoNotFound", "AccountNotFound"})


class ViewSource(Protocol):
    """What the pages read: the node's ``Views`` (node/appview/views.py) has this shape."""

    async def latest(
        self, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]: ...

    async def author_feed(
        self, actor: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]: ...

    async def thread(
        self, uri: str, viewer: str | None, depth: int = ..., parent_height: int = ...
    ) -> dict[str, Any]: ...

    async def profile(self, actor: str, viewer: str | None) -> dict[str, Any]: ...


VIEWS_KEY: Final = web.AppKey[ViewSource]("skyfed.web.views")
#: () -> (URL, DID) of the node serving the pages, named in every page's header and
#: footer so a reader knows whose view this is (a callable: the port is known late).
NODE_LABEL_KEY: Final = web.AppKey[Callable[[], tuple[str, str]]]("skyfed.web.node_label")
# The label of the node answering the current request: set by _guard for the request's
# own task (a context variable, so concurrent requests never see each other's).
_NODE_LABEL: Final = contextvars.ContextVar[tuple[str, str] | None]("node_label", default=None)


# -- style, script and the headers that allow exactly them ------------------------------

_CSS: Final = """
:root{color-scheme:light dark;--bg:#f7f9fa;--card:#fff;--fg:#0f1419;--muted:#5b6873;
--line:#dfe4e8;--link:#0a5dc2;--focus:#0a5dc2;--hi:#eef5fd}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;
--muted:#8d98a4;--line:#2b333c;--link:#6cb6ff;--focus:#6cb6ff;--hi:#16263a}}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Ubuntu,Cantarell,
"Helvetica Neue",Arial,sans-serif}
a{color:var(--link);text-decoration:none}
a:hover{text-decoration:underline}
a:focus-visible{outline:2px solid var(--focus);outline-offset:2px;border-radius:2px}
.wrap{max-width:40rem;margin:0 auto;padding:0 .75rem}
.skip{position:absolute;left:-100vw}
.skip:focus{left:.5rem;top:.5rem;z-index:2;background:var(--card);padding:.5rem}
.bar{position:sticky;top:0;z-index:1;background:var(--card);border-bottom:1px solid var(--line)}
.bar .wrap{display:flex;align-items:center;gap:1rem;min-height:3rem}
.brand{font-weight:700;font-size:1.15rem;color:var(--fg)}
.bar .node{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
.bar nav a{color:var(--muted)}
.bar nav a[aria-current]{color:var(--fg);font-weight:600}
.search{display:flex;gap:.35rem;margin-left:auto}
.search input{min-width:0;width:11rem;font:inherit;padding:.2rem .45rem;
border:1px solid var(--line);border-radius:.4rem;background:var(--bg);color:var(--fg)}
.search button{font:inherit;padding:.2rem .6rem}
#main .search{margin:0 0 1rem}
#main .search input{width:100%}
#main{padding:1rem .75rem 1rem}
h1{font-size:1.25rem;margin:.25rem 0 .75rem}
.feed,.replies,.parents{list-style:none;margin:0;padding:0}
.post{display:grid;grid-template-columns:2.5rem minmax(0,1fr);gap:0 .75rem;
background:var(--card);border:1px solid var(--line);border-radius:.75rem;
padding:.75rem;margin:0 0 .5rem}
.av{grid-column:1;grid-row:span 9;width:2.5rem;height:2.5rem;border-radius:50%;display:grid;
place-items:center;color:#fff;font-weight:700;font-size:1.1rem;text-transform:uppercase}
.av0{background:#d1495b}.av1{background:#c96b00}.av2{background:#2a8a4a}
.av3{background:#0f7c8c}.av4{background:#2f6bd6}.av5{background:#6a4fc4}
.av6{background:#b0418f}.av7{background:#57677a}
.context{margin:0;color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
.reason{grid-column:2;margin-bottom:.2rem}
.reason+.av{grid-row:2/span 9}
.meta{display:flex;align-items:baseline;gap:0 .35rem;min-width:0;white-space:nowrap}
.author{min-width:0;overflow:hidden;text-overflow:ellipsis;color:var(--fg)}
.dot,.when{flex:none}
.stamp{margin:.35rem 0 0;color:var(--muted);font-size:.85rem}
.name{font-weight:600}
.handle,.when,.dot{color:var(--muted)}
.handle{font-size:.9rem}
.text{margin:.15rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere}
.tag{color:var(--link)}
.embed{margin:.5rem 0 0;padding:.5rem .65rem;border:1px solid var(--line);border-radius:.5rem;
font-size:.9rem;overflow-wrap:anywhere}
.embed p{margin:0}
.pics{display:grid;grid-template-columns:repeat(auto-fit,minmax(8rem,1fr));gap:.35rem}
.pics img{display:block;width:100%;height:auto;max-height:30rem;object-fit:contain;
border-radius:.4rem;background:var(--line)}
img.av{object-fit:cover}
.stats{display:flex;flex-wrap:wrap;gap:0 1.25rem;margin:.35rem 0 0;padding:0;
list-style:none;color:var(--muted);font-size:.85rem}
.stats a{color:var(--muted)}
.main-post{border-color:var(--link);background:var(--hi)}
.main-post .text{font-size:1.15rem}
.parents .post{margin-bottom:0;border-bottom-left-radius:0;border-bottom-right-radius:0}
.parents li+li .post,.parents+.main-post{border-top-left-radius:0;border-top-right-radius:0}
.parents+.main-post{margin-top:0}
.replies .replies{margin-left:.9rem;padding-left:.6rem;border-left:2px solid var(--line)}
.replies .replies .replies .replies .replies{margin-left:0;padding-left:0;border-left:0}
.gone{color:var(--muted);font-style:italic;background:var(--card);border:1px dashed var(--line);
border-radius:.75rem;padding:.75rem;margin:0 0 .5rem}
.more{margin:0 0 .5rem .75rem;font-size:.9rem}
.profile{background:var(--card);border:1px solid var(--line);border-radius:.75rem;
padding:1rem;margin:0 0 1rem}
.profile h1{margin:0;overflow-wrap:anywhere}
.profile .handle{margin:0}
.did{font:.75rem/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--muted);
overflow-wrap:anywhere;margin:.25rem 0 0}
.bio{white-space:pre-wrap;overflow-wrap:anywhere;margin:.75rem 0 0}
.counts{display:flex;flex-wrap:wrap;gap:0 1.25rem;margin:.75rem 0 0;padding:0;list-style:none;
color:var(--muted)}
.counts strong{color:var(--fg)}
.pager{display:flex;justify-content:space-between;gap:1rem;margin:1rem 0}
.pager a{display:inline-block;padding:.5rem .9rem;border:1px solid var(--line);
border-radius:999px;background:var(--card)}
.empty{color:var(--muted);text-align:center;padding:2rem 0}
.live{margin:0 0 .5rem;text-align:center}
.live a{display:inline-block;padding:.4rem 1rem;border-radius:999px;background:var(--link);
color:var(--card);font-weight:600}
.live[hidden]{display:none}
.warning{margin:0 0 .5rem}
.warning>summary{cursor:pointer;list-style:none;background:var(--card);color:var(--muted);
border:1px solid var(--line);border-radius:.75rem;padding:.75rem}
.warning[open]>summary{border-bottom-left-radius:0;border-bottom-right-radius:0}
.settings textarea{width:100%;font:inherit}
.settings label{display:block;margin:.75rem 0 .25rem;font-weight:600}
.problem{background:var(--card);border:1px solid var(--line);border-radius:.75rem;padding:1.5rem}
.foot{color:var(--muted);font-size:.8rem;padding-bottom:2rem;overflow-wrap:anywhere}
@media (max-width:30rem){.post{grid-template-columns:2.25rem minmax(0,1fr);gap:0 .6rem;
padding:.65rem}.av{width:2.25rem;height:2.25rem}
.replies .replies{margin-left:.4rem;padding-left:.45rem}}
""".strip()

# Watches the firehose for new posts and offers a link to see them. Frames are two
# msgpack maps (header, body); skyfed's canonical msgpack has no floats or ext types,
# so a small decoder covers it. Without this script the page is the same, minus the
# offer.
_LIVE_JS: Final = """
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box || !window.WebSocket || !window.TextDecoder) return;
  var link = box.querySelector("a"), utf8 = new TextDecoder(), seen = 0, delay = 1000;
  function reader(bytes) {
    var dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), pos = 0;
    function u(n) {
      var v = n === 1 ? dv.getUint8(pos) : n === 2 ? dv.getUint16(pos) : n === 4 ?
        dv.getUint32(pos) : dv.getUint32(pos) * 4294967296 + dv.getUint32(pos + 4);
      pos += n; return v;
    }
    function i(n) {
      var v = n === 1 ? dv.getInt8(pos) : n === 2 ? dv.getInt16(pos) : n === 4 ?
        dv.getInt32(pos) : dv.getInt32(pos) * 4294967296 + dv.getUint32(pos + 4);
      pos += n; return v;
    }
    function str(n) { var s = utf8.decode(bytes.subarray(pos, pos + n)); pos += n; return s; }
    function bin(n) { pos += n; return null; }
    function arr(n) { var a = []; while (n-- > 0) a.push(next()); return a; }
    function map(n) { var m = {}; while (n-- > 0) { var k = next(); m[k] = next(); } return m; }
    function next() {
      if (pos >= bytes.length) throw new Error("short frame");
      var b = bytes[pos++];
      if (b < 0x80) return b;
      if (b < 0x90) return map(b & 15);
      if (b < 0xa0) return arr(b & 15);
      if (b < 0xc0) return str(b & 31);
      if (b >= 0xe0) return b - 256;
      switch (b) {
        case 0xc0: return null; case 0xc2: return false; case 0xc3: return true;
        case 0xc4: return bin(u(1)); case 0xc5: return bin(u(2)); case 0xc6: return bin(u(4));
        case 0xcc: return u(1); case 0xcd: return u(2); case 0xce: return u(4);
        case 0xcf: return u(8); case 0xd0: return i(1); case 0xd1: return i(2);
        case 0xd2: return i(4); case 0xd3: return i(8);
        case 0xd9: return str(u(1)); case 0xda: return str(u(2)); case 0xdb: return str(u(4));
        case 0xdc: return arr(u(2)); case 0xdd: return arr(u(4));
        case 0xde: return map(u(2)); case 0xdf: return map(u(4));
      }
      throw new Error("unexpected byte " + b);
    }
    return next;
  }
  function newPosts(data) {
    var next = reader(new Uint8Array(data)), head = next(), body = next(), n = 0;
    if (!head || head.op !== 1 || head.t !== "#commit" || !body || !body.ops) return 0;
    body.ops.forEach(function (op) {
      if (op && op.action === "create" && /^app[.]bsky[.]feed[.]post[/]/.test(op.path)) n++;
    });
    return n;
  }
  function connect() {
    var ws = new WebSocket(location.origin.replace(/^http/, "ws") +
      "/xrpc/com.atproto.sync.subscribeRepos");
    ws.binaryType = "arraybuffer";
    ws.onopen = function () { delay = 1000; box.setAttribute("data-state", "open"); };
    ws.onmessage = function (ev) {
      var n = 0;
      try { n = newPosts(ev.data); } catch (e) { return; }
      if (!n) return;
      seen += n;
      link.textContent = seen === 1 ? "1 new post \\u2013 show" : seen + " new posts \\u2013 show";
      box.hidden = false;
    };
    ws.onclose = function () {
      box.setAttribute("data-state", "closed");
      setTimeout(connect, delay * (1 + Math.random()));
      delay = Math.min(delay * 2, 60000);
    };
  }
  connect();
})();
""".strip()


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        f"style-src {_csp_hash(_CSS)}",
        f"script-src {_csp_hash(_LIVE_JS)}",
        "connect-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


# -- small helpers -------------------------------------------------------------------


def _e(value: object) -> str:
    """Escape for HTML text and double-quoted attributes."""
    return html.escape(str(value), quote=True)


def _str(data: object, key: str) -> str:
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, str):
            return value
    return ""


def _int(data: object, key: str) -> int:
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def _map(data: object, key: str) -> dict[str, Any]:
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _list(data: object, key: str) -> list[Any]:
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, list):
            return value
    return []


_plural = format_count  # one format for counts everywhere (node/counts.py)


def profile_path(actor: dict[str, Any]) -> str:
    """The page of an author: by handle when there is a usable one, else by DID."""
    handle = _str(actor, "handle")
    if handle and handle != "handle.invalid" and is_valid_at_identifier(handle):
        return "/profile/" + quote(handle, safe="")
    return "/profile/" + quote(_str(actor, "did"), safe=":")


def post_path(uri: str) -> str | None:
    """``at://did/app.bsky.feed.post/rkey`` -> ``/post/did/rkey``; None for anything else."""
    if not uri.startswith("at://"):
        return None
    parts = uri[len("at://") :].split("/")
    if len(parts) != 3 or parts[1] != POST_COLLECTION:
        return None
    did, rkey = parts[0], parts[2]
    if not is_valid_did(did) or not is_valid_record_key(rkey):
        return None
    return f"/post/{quote(did, safe=':')}/{quote(rkey, safe='')}"


def _parse_time(value: str) -> datetime.datetime | None:
    if not value:
        return None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return t


def relative_time(value: str, now: float) -> str:
    """How long ago ``value`` was: "now", "42s", "3m", "2h", "5d", then a date."""
    t = _parse_time(value)
    if t is None:
        return ""
    seconds = now - t.timestamp()
    if seconds < 5:  # also a little in the future: clocks disagree
        return "now"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)}d"
    today = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if t.year == today.year:
        return f"{t.day} {t:%b}"
    return f"{t.day} {t:%b} {t.year}"


def _full_time(value: str) -> str:
    t = _parse_time(value)
    if t is None:
        return ""
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- rich text -----------------------------------------------------------------------


def _web_url(uri: str) -> str | None:
    """``uri`` if it is an http(s) URL a browser can follow, else None. A post that
    arrived from a peer may carry any string here (``http://[`` made every page that
    showed it fail once): nothing about it may raise."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return uri


def _is_boundary(data: bytes, index: int) -> bool:
    """True if a UTF-8 character starts at ``index`` (or it is the end)."""
    return index == len(data) or (0 <= index < len(data) and (data[index] & 0xC0) != 0x80)


def _feature_html(features: list[Any], inner: str) -> str | None:
    for feature in features:
        kind = _str(feature, "$type")
        if kind == _LINK:
            uri = _web_url(_str(feature, "uri"))
            if uri is not None:
                return f'<a href="{_e(uri)}" rel="nofollow ugc noopener noreferrer">{inner}</a>'
        elif kind == _MENTION:
            did = _str(feature, "did")
            if is_valid_did(did):
                return f'<a href="/profile/{_e(quote(did, safe=":"))}">{inner}</a>'
        elif kind == _TAG:
            return f'<span class="tag">{inner}</span>'
    return None


def render_text(text: str, facets: Iterable[Any] = ()) -> str:
    """Post text as HTML: escaped, with link, mention and tag facets applied.

    Facet offsets count UTF-8 bytes. A facet that overlaps an earlier one, runs past
    the text, or cuts a character in two is ignored (the text still shows, plain).
    """
    data = text.encode("utf-8")
    spans: list[tuple[int, int, list[Any]]] = []
    for facet in facets:
        index = _map(facet, "index")
        start, end = index.get("byteStart"), index.get("byteEnd")
        if not isinstance(start, int) or not isinstance(end, int):
            continue
        if not 0 <= start < end <= len(data):
            continue
        if not (_is_boundary(data, start) and _is_boundary(data, end)):
            continue
        spans.append((start, end, _list(facet, "features")))
    spans.sort(key=lambda s: s[0])
    out: list[str] = []
    at = 0
    for start, end, features in spans:
        if start < at:
            continue  # overlaps the previous facet
        inner = _e(data[start:end].decode("utf-8"))
        marked = _feature_html(features, inner)
        if marked is None:
            continue
        out.append(_e(data[at:start].decode("utf-8")))
        out.append(marked)
        at = end
    out.append(_e(data[at:].decode("utf-8")))
    return "".join(out)


# -- posts ---------------------------------------------------------------------------


def blob_src(url: str) -> str | None:
    """A view's image URL as a path on this node (so the page's ``img-src 'self'``
    allows it, whatever host name the reader used); None unless it is this node's
    getBlob, so a view can never make the page load from elsewhere."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.path != "/xrpc/com.atproto.sync.getBlob" or not parts.query:
        return None
    return f"{parts.path}?{parts.query}"


def _images_html(embed: dict[str, Any]) -> str:
    """An images view as pictures with their alt text (alt, and a caption when long)."""
    pics = []
    for image in _list(embed, "images")[:4]:
        alt = _str(image, "alt")
        src = blob_src(_str(image, "fullsize")) or blob_src(_str(image, "thumb"))
        if src is None:
            pics.append(f"<p>[image{': ' + _e(alt) if alt else ''}]</p>")
            continue
        pics.append(
            f'<a href="{_e(src)}"><img src="{_e(blob_src(_str(image, "thumb")) or src)}"'
            f' alt="{_e(alt)}" title="{_e(alt[:300])}" loading="lazy"></a>'
        )
    return f'<div class="pics">{"".join(pics)}</div>' if pics else ""


def _avatar(actor: dict[str, Any]) -> str:
    src = blob_src(_str(actor, "avatar"))
    if src is not None:
        return f'<img class="av" src="{_e(src)}" alt="" loading="lazy">'
    did = _str(actor, "did")
    name = _str(actor, "displayName").strip() or _str(actor, "handle") or "?"
    hue = hashlib.sha256(did.encode("utf-8")).digest()[0] % 8
    return f'<span class="av av{hue}" aria-hidden="true">{_e(name[0])}</span>'


def _author_link(actor: dict[str, Any]) -> str:
    handle = _str(actor, "handle") or _str(actor, "did")
    name = _str(actor, "displayName").strip()
    shown = f'<span class="name">{_e(name)}</span> ' if name else ""
    return (
        f'<a class="author" href="{_e(profile_path(actor))}">'
        f'{shown}<span class="handle">@{_e(handle)}</span></a>'
    )


def _embed_html(post: dict[str, Any], prefs: ModerationPrefs | None = None) -> str:
    """Quotes and link cards as links, images as pictures served by this node with
    their alt text (an un-viewed record: the alt text only).

    A quoted post is moderated like any other: hidden, or behind a warning."""
    embed = _map(post, "embed") or _map(_map(post, "record"), "embed")
    kind = _str(embed, "$type").split("#")[0]
    if kind == "app.bsky.embed.recordWithMedia":
        media = _embed_html({"embed": _map(embed, "media")}, prefs)
        quote = _embed_html({"embed": _map(embed, "record")}, prefs)
        return media + quote
    if kind == "app.bsky.embed.record":
        quoted = _map(embed, "record")
        if "record" in quoted and "uri" not in quoted:  # the un-viewed record shape
            quoted = _map(quoted, "record")
        path = post_path(_str(quoted, "uri"))
        if path is None:
            return ""
        author = _map(quoted, "author")
        text = _str(_map(quoted, "value"), "text")
        who = f"{_e(_str(author, 'displayName') or _str(author, 'handle'))}: " if author else ""
        snippet = _e(text[:140] + ("…" if len(text) > 140 else ""))
        label = f"{who}{snippet}" if text else "Quoted post"
        link = f'<a href="{_e(path)}">{label}</a>'
        decision = moderate(quoted, prefs) if prefs is not None else Decision("show")
        if decision.hidden:
            return (
                '<div class="embed"><p class="context">Quoted post hidden by your moderation'
                f" settings: {_e(decision.reason())}</p></div>"
            )
        if decision.warned:
            return (
                '<div class="embed"><details class="warning"><summary>Quoted post: content'
                f" warning: {_e(decision.reason())} · Show</summary>{link}</details></div>"
            )
        return f'<div class="embed">{link}</div>'
    if kind == "app.bsky.embed.external":
        ext = _map(embed, "external")
        uri = _web_url(_str(ext, "uri")) or ""
        if not uri:
            return ""
        title = _str(ext, "title") or uri
        desc = _str(ext, "description")
        desc_html = f"<p>{_e(desc[:300])}</p>" if desc else ""
        return (
            f'<div class="embed"><a href="{_e(uri)}" rel="nofollow ugc noopener noreferrer">'
            f"{_e(title)}</a>{desc_html}</div>"
        )
    if kind == "app.bsky.embed.images" and _str(embed, "$type").endswith("#view"):
        pictures = _images_html(embed)
        return f'<div class="embed">{pictures}</div>' if pictures else ""
    if kind == "app.bsky.embed.images":
        alts = [_str(image, "alt") for image in _list(embed, "images")]
        if not alts:
            return ""
        items = "".join(f"<p>[image{': ' + _e(a) if a else ''}]</p>" for a in alts)
        return f'<div class="embed">{items}</div>'
    return ""


def render_post(
    post: dict[str, Any],
    now: float,
    *,
    reason: dict[str, Any] | None = None,
    reply: dict[str, Any] | None = None,
    main: bool = False,
    in_thread: bool = False,
    prefs: ModerationPrefs | None = None,
) -> str:
    """One PostView as an ``<article>``.

    ``main`` marks the post a thread page is about (full timestamp, larger text);
    ``in_thread`` drops "Replying to", which the thread's layout already shows.
    ``prefs``: the reader's moderation settings (hide, or put behind a warning).
    """
    try:
        decision = moderate(post, prefs) if prefs is not None else Decision("show")
        if decision.hidden:
            return (
                '<article class="post"><p class="context">Hidden by your moderation settings: '
                f"{_e(decision.reason())}</p></article>"
            )
        article = _render_post(
            post, now, reason=reason, reply=reply, main=main, in_thread=in_thread, prefs=prefs
        )
    except Exception:
        # One post that we fail to render (its data came from anyone) must not take the
        # page, and with it everyone else's posts, down with it.
        log.exception("could not render post %r", _str(post, "uri")[:200])
        return (
            '<article class="post"><p class="context">This post could not be shown.</p></article>'
        )
    if decision.warned:
        return (
            '<details class="warning"><summary>Content warning: '
            f"{_e(decision.reason())} · Show</summary>{article}</details>"
        )
    return article


def _render_post(
    post: dict[str, Any],
    now: float,
    *,
    reason: dict[str, Any] | None,
    reply: dict[str, Any] | None,
    main: bool,
    in_thread: bool,
    prefs: ModerationPrefs | None,
) -> str:
    author = _map(post, "author")
    record = _map(post, "record")
    path = post_path(_str(post, "uri"))
    created = _str(record, "createdAt") or _str(post, "indexedAt")
    above = ""
    if reason and _str(reason, "$type") == _REPOST:
        by = _map(reason, "by")
        name = _str(by, "displayName") or "@" + _str(by, "handle")
        above = (
            f'<p class="context reason">↻ Reposted by '
            f'<a href="{_e(profile_path(by))}">{_e(name)}</a></p>'
        )
    below = ""
    parent_uri = _str(_map(_map(record, "reply"), "parent"), "uri")
    if parent_uri and not (main or in_thread):
        parent_author = _map(_map(reply, "parent"), "author") if reply else {}
        target = post_path(parent_uri)
        who = "@" + _str(parent_author, "handle") if _str(parent_author, "handle") else "a post"
        text = f'<a href="{_e(target)}">{_e(who)}</a>' if target else _e(who)
        below = f'<p class="context">Replying to {text}</p>'
    when = relative_time(created, now)
    stamp = _full_time(created)
    when_html = stamp_html = ""
    if main and stamp:
        stamp_html = f'<p class="stamp"><time datetime="{_e(created)}">{_e(stamp)}</time></p>'
    elif when:
        inner = f'<time datetime="{_e(created)}" title="{_e(stamp)}">{_e(when)}</time>'
        when_html = '<span class="dot" aria-hidden="true">·</span>' + (
            f'<a class="when" href="{_e(path)}">{inner}</a>' if path else inner
        )
    replies = _int(post, "replyCount")
    reply_text = _e(_plural(replies, "reply", "replies"))
    reply_html = f'<a href="{_e(path)}">{reply_text}</a>' if path and not main else reply_text
    stats = (
        f'<ul class="stats"><li>{reply_html}</li>'
        f"<li>{_e(_plural(_int(post, 'repostCount'), 'repost', 'reposts'))}</li>"
        f"<li>{_e(_plural(_int(post, 'likeCount'), 'like', 'likes'))}</li>"
    )
    quotes = _int(post, "quoteCount")
    if quotes:
        stats += f"<li>{_e(_plural(quotes, 'quote', 'quotes'))}</li>"
    stats += "</ul>"
    text = _str(record, "text")
    text_html = f'<p class="text">{render_text(text, _list(record, "facets"))}</p>' if text else ""
    classes = "post main-post" if main else "post"
    return (
        f'<article class="{classes}">{above}{_avatar(author)}'
        f'<div class="meta">{_author_link(author)}{when_html}{_via_html(post)}</div>{below}'
        f"{text_html}{_embed_html(post, prefs)}{stamp_html}{stats}</article>"
    )


def _via_html(post: dict[str, Any]) -> str:
    """The mark on a post bridged from atproto: where it comes from."""
    via = _map(post, "via")
    if _str(via, "protocol") != "atproto":
        return ""
    return (
        '<span class="dot" aria-hidden="true">·</span>'
        f'<span class="via">via atproto {_e(_str(via, "host"))}</span>'
    )


def _feed_html(
    items: list[Any], now: float, empty: str, prefs: ModerationPrefs | None = None
) -> str:
    posts = []
    for item in items:
        post = _map(item, "post")
        if not post:
            continue
        reason = _map(item, "reason") or None
        reply = _map(item, "reply") or None
        html_ = render_post(post, now, reason=reason, reply=reply, prefs=prefs)
        posts.append(f"<li>{html_}</li>")
    if not posts:
        return f'<p class="empty">{_e(empty)}</p>'
    return f'<ol class="feed">{"".join(posts)}</ol>'


def _pager(base: str, cursor: str | None, next_cursor: str, limit: int) -> str:
    links = []
    extra = {} if limit == PAGE_SIZE else {"limit": str(limit)}
    if cursor:
        first = base + ("?" + urlencode(extra) if extra else "")
        links.append(f'<a href="{_e(first)}">← Newest</a>')
    else:
        links.append("<span></span>")
    if next_cursor:
        href = base + "?" + urlencode({"cursor": next_cursor, **extra})
        links.append(f'<a rel="next" href="{_e(href)}">Older posts →</a>')
    if len(links) == 1 and not cursor:
        return ""
    return f'<nav class="pager" aria-label="Pages">{"".join(links)}</nav>'


def _gone(node: dict[str, Any]) -> str:
    kind = _str(node, "$type")
    if kind == _BLOCKED:
        return '<p class="gone">This post is from an account that is blocked.</p>'
    return '<p class="gone">This post was deleted or is not known here.</p>'


def _thread_replies(node: dict[str, Any], now: float, prefs: ModerationPrefs | None = None) -> str:
    items = []
    for child in _list(node, "replies"):
        if not isinstance(child, dict):
            continue
        if _str(child, "$type") != _THREAD:
            items.append(f"<li>{_gone(child)}</li>")
            continue
        post = _map(child, "post")
        inner = render_post(post, now, in_thread=True, prefs=prefs)
        if "replies" in child:
            inner += _thread_replies(child, now, prefs)
        elif _int(post, "replyCount") and (path := post_path(_str(post, "uri"))):
            inner += f'<p class="more"><a href="{_e(path)}">Continue this thread →</a></p>'
        items.append(f"<li>{inner}</li>")
    if not items:
        return ""
    return f'<ol class="replies">{"".join(items)}</ol>'


# -- pages ---------------------------------------------------------------------------


#: Longest search query the box sends (node/appview/search.py refuses longer).
_SEARCH_CHARS: Final = 1000


def search_form(q: str = "", sort: str = "latest") -> str:
    """The search box: a GET form to /search (node/server/web_search.py), no script."""
    top = '<input type="hidden" name="sort" value="top">' if sort == "top" else ""
    return (
        '<form class="search" role="search" method="get" action="/search">'
        '<label class="skip" for="q">Search</label>'
        f'<input id="q" type="search" name="q" value="{_e(q)}" maxlength="{_SEARCH_CHARS}"'
        ' placeholder="Search posts and people">'
        f'{top}<button type="submit">Search</button></form>'
    )


def _page(
    title: str,
    body: str,
    *,
    status: int = 200,
    live: bool = False,
    current: str = "",
) -> web.Response:
    latest = ' aria-current="page"' if current == "latest" else ""
    label = _NODE_LABEL.get()
    node_host = node_footer = ""
    if label is None:
        node_footer = "this node"
    else:
        url, did = label
        host = urlsplit(url).netloc or url
        node_host = f'<span class="node" title="{_e(did)}">{_e(host)}</span>'
        node_footer = f'the node at <a href="{_e(url)}/">{_e(url)}</a> ({_e(did)})'
    script = f"<script>{_LIVE_JS}</script>" if live else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="referrer" content="same-origin">'
        '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="bar"><div class="wrap"><a class="brand" href="/">skyfed</a>'
        f"{node_host}"
        f'<nav aria-label="Site"><a href="/"{latest}>Latest</a> '
        '<a href="/settings/moderation">Moderation</a></nav>'
        f"{search_form()}</div></header>"
        f'<main id="main" class="wrap">{body}</main>'
        f'<footer class="foot wrap">A read-only view from {node_footer}. '
        "Posts live in their authors' signed repositories.</footer>"
        f"{script}</body></html>"
    )
    return web.Response(
        text=document,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=_HEADERS,
    )


def _problem(status: int, heading: str, detail: str) -> web.Response:
    body = (
        f'<section class="problem"><h1>{_e(heading)}</h1><p>{_e(detail)}</p>'
        '<p><a href="/">See the latest posts</a></p></section>'
    )
    return _page(f"{heading} · skyfed", body, status=status)


def _limit(request: web.Request) -> int:
    return inputs.query_int(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)


def _cursor(request: web.Request) -> str | None:
    return inputs.query_str(request, "cursor", required=False, max_chars=MAX_CURSOR)


async def latest_page(request: web.Request) -> web.Response:
    views = request.app[VIEWS_KEY]
    limit, cursor = _limit(request), _cursor(request)
    out = await views.latest(None, limit, cursor)
    prefs = await _labelled(request, out)
    now = time.time()
    live = (
        '<p id="live" class="live" role="status" hidden><a href="/">New posts</a></p>'
        if cursor is None
        else ""
    )
    body = (
        "<h1>Latest posts</h1>"
        + live
        + _feed_html(_list(out, "feed"), now, "Nothing has been posted yet.", prefs)
        + _pager("/", cursor, _str(out, "cursor"), limit)
    )
    return _page("Latest posts · skyfed", body, live=cursor is None, current="latest")


async def profile_page(request: web.Request) -> web.Response:
    views = request.app[VIEWS_KEY]
    actor = request.match_info["actor"]
    if not is_valid_at_identifier(actor):
        return _problem(404, "Profile not found", "That is not a handle or DID.")
    limit, cursor = _limit(request), _cursor(request)
    profile = await views.profile(actor, None)
    feed = await views.author_feed(actor, None, limit, cursor)
    prefs = await _labelled(request, {"profile": profile, "feed": feed})
    now = time.time()
    handle = _str(profile, "handle") or _str(profile, "did")
    name = _str(profile, "displayName").strip()
    description = _str(profile, "description")
    bio = f'<p class="bio">{_e(description)}</p>' if description else ""
    counts = "".join(
        "<li><strong>{}</strong> {}</li>".format(*count_parts(_int(profile, key), one, many))
        for key, one, many in (
            ("postsCount", "post", "posts"),
            ("followersCount", "follower", "followers"),
            ("followsCount", "following", "following"),
        )
    )
    account = moderate(profile, prefs)
    if account.action != "show":
        what = "hide" if account.hidden else "warn about"
        bio = f'{bio}<p class="context">Your moderation settings {what} this account: ' + (
            f"{_e(account.reason())}</p>"
        )
    # The handle once: it is the heading when there is no display name.
    names = (
        f'<h1>{_e(name)}</h1><p class="handle">@{_e(handle)}</p>'
        if name
        else f"<h1>@{_e(handle)}</h1>"
    )
    header = (
        f'<section class="profile" aria-label="Profile">{names}'
        f'<p class="did">{_e(_str(profile, "did"))}</p>{bio}'
        f'<ul class="counts">{counts}</ul>'
        # Its notifications, if this node hosts it (node/server/web_search.py).
        f'<p class="context"><a href="/notifications/{_e(quote(actor, safe=":"))}">'
        "Activity →</a></p></section>"
    )
    base = profile_path(profile) if profile else "/profile/" + quote(actor, safe=":")
    body = (
        header
        + '<h2 class="context">Posts</h2>'
        + _feed_html(_list(feed, "feed"), now, "No posts yet.", prefs)
        + _pager(base, cursor, _str(feed, "cursor"), limit)
    )
    title = f"{name} (@{handle})" if name else f"@{handle}"
    return _page(f"{title} · skyfed", body)


async def thread_page(request: web.Request) -> web.Response:
    views = request.app[VIEWS_KEY]
    did, rkey = request.match_info["did"], request.match_info["rkey"]
    if not is_valid_did(did) or not is_valid_record_key(rkey):
        return _problem(404, "Post not found", "That address does not name a post.")
    uri = f"at://{did}/{POST_COLLECTION}/{rkey}"
    out = await views.thread(uri, None, THREAD_DEPTH, THREAD_PARENTS)
    prefs = await _labelled(request, out)
    root = _map(out, "thread")
    kind = _str(root, "$type")
    if kind == _BLOCKED:
        return _problem(403, "Post unavailable", "This post is from a blocked account.")
    if kind != _THREAD:
        return _problem(404, "Post not found", "This post was deleted or is not known here.")
    now = time.time()
    chain: list[dict[str, Any]] = []
    parent = _map(root, "parent")
    while parent and len(chain) < THREAD_PARENTS:
        chain.append(parent)
        parent = _map(parent, "parent")
    chain.reverse()
    parents = "".join(
        "<li>"
        + (
            render_post(_map(p, "post"), now, in_thread=True, prefs=prefs)
            if _str(p, "$type") == _THREAD
            else _gone(p)
        )
        + "</li>"
        for p in chain
    )
    post = _map(root, "post")
    body = (
        (f'<ol class="parents" aria-label="Earlier in the thread">{parents}</ol>' if chain else "")
        + render_post(post, now, main=True, prefs=prefs)
        + _thread_replies(root, now, prefs)
    )
    author = _map(post, "author")
    who = _str(author, "displayName") or "@" + _str(author, "handle")
    text = _str(_map(post, "record"), "text")
    if moderate(post, prefs).action != "show":
        text = "(moderated)"  # the title would show what the page hides
    snippet = text[:60] + ("…" if len(text) > 60 else "")
    return _page(f"{who}: “{snippet}” · skyfed", body)


# -- the reader's moderation settings (a cookie) -----------------------------------------

PREFS_COOKIE: Final = "skyfed_moderation"
_MAX_FORM: Final = 16 * 1024
_MAX_FORM_FIELDS: Final = 16


def reader_prefs(request: web.Request) -> ModerationPrefs:
    """The settings in the reader's cookie; none (or a broken cookie) means none."""
    raw = request.cookies.get(PREFS_COOKIE)
    if not raw or len(raw) > 4096:
        return ModerationPrefs()
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        # The inputs parser, not json.loads: 3,000 "[" fit in the cookie, and
        # json.loads recurses on them until RecursionError (a 500 on every page).
        return ModerationPrefs.from_json(inputs.parse_json_object(data))
    except (ValueError, SkyfedError):
        return ModerationPrefs()


async def _labelled(request: web.Request, out: dict[str, Any]) -> ModerationPrefs:
    """Attach the reader's labelers' labels to a view answer; the reader's settings."""
    prefs = reader_prefs(request)
    moderation = request.app.get(MODERATION_KEY)
    if moderation is not None and prefs.labelers:
        await moderation.apply_labels(out, prefs.labelers)
    return prefs


def _settings_form(prefs: ModerationPrefs, note: str = "") -> str:
    labelers = "\n".join(p.to_str() for p in prefs.labelers)
    labels = "\n".join(f"{val}={b}" for val, b in sorted(prefs.behaviours.items()))
    return (
        '<section class="problem settings"><h1>Moderation</h1>'
        + (f'<p role="status">{_e(note)}</p>' if note else "")
        + "<p>Labelers are accounts that label posts and accounts. Name the ones you "
        "trust; pages then carry their labels, and you choose what each label does. "
        "<code>!hide</code> and <code>!takedown</code> always hide and <code>!warn</code> "
        "always warns; <code>spam</code> hides and <code>nudity</code>, <code>porn</code>, "
        "<code>sexual</code>, <code>gore</code>, <code>graphic-media</code> warn unless you "
        "say otherwise. Kept in a cookie in this browser only.</p>"
        '<form method="post" action="/settings/moderation">'
        '<label for="labelers">Labelers (one DID a line; add ;redact to drop what they '
        "take down)</label>"
        f'<textarea id="labelers" name="labelers" rows="4">{_e(labelers)}</textarea>'
        '<label for="labels">What labels do (one <code>label=hide|warn|show</code> a line)'
        "</label>"
        f'<textarea id="labels" name="labels" rows="4">{_e(labels)}</textarea>'
        '<p><button type="submit">Save</button></p></form></section>'
    )


async def settings_page(request: web.Request) -> web.Response:
    note = "Saved." if request.query.get("saved") else ""
    return _page("Moderation · skyfed", _settings_form(reader_prefs(request), note))


def _same_site(request: web.Request) -> bool:
    # A cross-site form must not change a reader's settings: the form must say it
    # comes from this site (Origin, or Referer where a browser sends no Origin).
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    try:
        return urlsplit(source).netloc == request.host
    except ValueError:  # "http://[" and the like
        return False


async def _read_form(request: web.Request) -> dict[str, str]:
    """The settings form's fields. Only what the page's own form sends is taken: a
    urlencoded body of at most :data:`_MAX_FORM` bytes, strict UTF-8, at most
    :data:`_MAX_FORM_FIELDS` fields; anything else is a 4xx page."""
    if (request.content_length or 0) > _MAX_FORM:
        raise RemoteProtocolError("That is more settings than this page takes.", status=413)
    if request.content_type != "application/x-www-form-urlencoded":
        raise RemoteProtocolError("The settings form is sent urlencoded.", status=415)
    raw = await request.content.read(_MAX_FORM + 1)
    if len(raw) > _MAX_FORM:
        raise RemoteProtocolError("That is more settings than this page takes.", status=413)
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise RemoteProtocolError("The form is not valid UTF-8 form data.") from None
    return {name: inputs.check_text(value, name) for name, value in pairs}


async def save_settings(request: web.Request) -> web.Response:
    if not _same_site(request):
        return _problem(403, "Not allowed", "Settings can only be changed from this site.")
    form = await _read_form(request)
    labelers = form.get("labelers", "")
    behaviours: dict[str, str] = {}
    for line in form.get("labels", "").splitlines():
        if line.strip():
            val, _, behaviour = line.partition("=")
            behaviours[val.strip()] = behaviour.strip()
    try:
        prefs = ModerationPrefs.from_json(
            {
                "labelers": [
                    {"did": entry.split(";")[0].strip(), "redact": "redact" in entry}
                    for entry in labelers.replace(",", "\n").splitlines()
                    if entry.strip()
                ],
                "labels": behaviours,
            }
        )
        for val in behaviours:
            prefs.with_behaviour(val, prefs.behaviours[val])  # refuses the global ones
    except InvalidPrefs as e:
        return _page(
            "Moderation · skyfed", _settings_form(reader_prefs(request), e.message), status=400
        )
    value = base64.urlsafe_b64encode(json.dumps(prefs.to_json()).encode()).decode().rstrip("=")
    if len(value) > 4000:
        return _problem(400, "Too many settings", "Name fewer labelers or labels.")
    done = web.HTTPSeeOther("/settings/moderation?saved=1")
    done.set_cookie(
        PREFS_COOKIE, value, max_age=365 * 86400, httponly=True, samesite="Lax", path="/"
    )
    raise done


Page = Callable[[web.Request], Awaitable[web.Response]]


def _guard(kind: str, page: Page) -> Page:
    """Answer every failure as an HTML page: the app's own middleware speaks JSON."""

    async def handler(request: web.Request) -> web.Response:
        label = request.app.get(NODE_LABEL_KEY)
        if label is not None:
            _NODE_LABEL.set(label())
        try:
            return await page(request)
        except RemoteProtocolError as e:
            if e.error in _MISSING or e.status == 404 or isinstance(e, InvalidSyntax):
                return _problem(404, f"{kind} not found", e.message)
            status = e.status if 400 <= e.status < 600 else 400
            return _problem(status, "Bad request", e.message)
        except (web.HTTPException, ConnectionError):
            raise  # a redirect; or the reader went away (the app's middleware logs it)
        except Exception:
            log.exception("web page %s failed", request.path)
            return _problem(500, "Something went wrong", "This node could not build the page.")

    return handler


_ICON: Final = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="8" fill="#0a5dc2"/>'
    b'<path d="M8 20c4 4 12 4 16-2M9 13c3-4 10-5 14-1" stroke="#fff" stroke-width="3" '
    b'fill="none" stroke-linecap="round"/></svg>'
)


async def icon(request: web.Request) -> web.Response:
    return web.Response(
        body=_ICON,
        content_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def add_web_routes(
    app: web.Application,
    views: ViewSource,
    *,
    node_label: Callable[[], tuple[str, str]] | None = None,
) -> None:
    """Serve the web client from ``app``: ``/``, ``/profile/{actor}``, ``/post/{did}/{rkey}``.
    ``node_label`` gives the node's URL and DID for the pages' header and footer."""
    app[VIEWS_KEY] = views
    if node_label is not None:
        app[NODE_LABEL_KEY] = node_label
    app.router.add_get("/favicon.svg", icon)
    app.router.add_get("/", _guard("Page", latest_page))
    app.router.add_get("/profile/{actor}", _guard("Profile", profile_page))
    app.router.add_get("/post/{did}/{rkey}", _guard("Post", thread_page))
    app.router.add_get("/settings/moderation", _guard("Page", settings_page))
    app.router.add_post("/settings/moderation", _guard("Page", save_settings))
