"""Terminal rendering of views and firehose events for the ``skyfed`` command line.

Takes the JSON a node answers (FeedViewPost, ThreadViewPost, ProfileViewDetailed, as
the ``app.bsky`` lexicons shape them) and prints it readably with rich: author name
and handle, relative time ("3m"), wrapped text, reply / repost / like counts, the
AT-URI to act on, and thread indentation. Colour only on a terminal (rich turns it
off when output is piped, and honours ``NO_COLOR``).

Moderation is the reader's: given :class:`ModerationPrefs`, a post whose labels (from
the reader's labelers) say hide is printed as one "hidden" line without its text, and
one they say warn gets a warning line first and its text only with ``reveal``.

Text written by users is always rendered as plain :class:`rich.text.Text`, never
parsed as rich markup, so a post cannot restyle the terminal. Control characters in
it are replaced.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from protocol.cid import CID
from protocol.commit import CommitEvent
from protocol.encoding import decode
from protocol.errors import SkyfedError
from protocol.jsondata import to_json
from protocol.moderation import ModerationPrefs, moderate

from ..counts import format_count

__all__ = [
    "Renderer",
    "event_json",
    "format_count",
    "make_console",
    "parse_time",
    "relative_time",
]

_INDENT = 2  # columns per thread level
_MAX_INDENT_LEVELS = 8  # deeper replies stay at this indentation
_PREVIEW = 80  # characters of post text on a firehose line

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits with status 1 here; a reader that closed the pipe (`| head`) had
        # what it wanted, so let the caller end normally (the docs' "Note on SIGPIPE").
        self.quiet = True
        raise BrokenPipeError


def make_console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (stdout): colour on a terminal, plain text otherwise.
    A closed pipe raises BrokenPipeError to the caller instead of exiting."""
    return _Console(file=file or sys.stdout, highlight=False, emoji=False)


def parse_time(value: object) -> datetime.datetime | None:
    """An atproto datetime as an aware datetime, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=datetime.UTC)


def relative_time(value: object, now: datetime.datetime) -> str:
    """ "now", "42s", "3m", "5h", "6d", then a date ("Mar 4"; "Mar 4, 2023" in another year)."""
    t = parse_time(value)
    if t is None:
        return "?"
    seconds = int((now - t).total_seconds())
    if seconds < 5:
        return "now"  # also for small clock skew into the future
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    if seconds < 7 * 86400:
        return f"{seconds // 86400}d"
    day = f"{_MONTHS[t.month - 1]} {t.day}"
    return day if t.year == now.year else f"{day}, {t.year}"


_RECORD_WITH_MEDIA_VIEW = "app.bsky.embed.recordWithMedia#view"


def _clean(text: object) -> str:
    """User text without control characters (newlines and tabs kept)."""
    s = text if isinstance(text, str) else ""
    return "".join(c if c in "\n\t" or c.isprintable() else "\ufffd" for c in s)


def _map(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a view comes from a node
    (and, through it, from anyone), so any field may hold anything."""
    return value if isinstance(value, dict) else {}


def _maps(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects in ``value`` if it is a list (anything else is skipped)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


_count = format_count

#: What a notification's reason says after its author's name.
_REASON_TEXT = {
    "like": "liked your post",
    "repost": "reposted your post",
    "follow": "followed you",
    "reply": "replied to you",
    "mention": "mentioned you",
    "quote": "quoted your post",
}
#: Reasons whose record is a post (its text is shown).
_HAS_TEXT = ("reply", "mention", "quote")


class Renderer:
    """Prints views to a rich console. ``now`` is fixed per renderer (for tests);
    ``moderation`` is the reader's settings; ``reveal`` shows warned posts' text."""

    def __init__(
        self,
        console: Console,
        *,
        now: datetime.datetime | None = None,
        moderation: ModerationPrefs | None = None,
        reveal: bool = False,
    ):
        self.console = console
        self.now = now or datetime.datetime.now(datetime.UTC)
        self.moderation = moderation or ModerationPrefs()
        self.reveal = reveal

    # -- pieces --------------------------------------------------------------------
    def author(self, author: Mapping[str, Any], *, bold: bool = True) -> Text:
        """``Display Name @handle`` (or just ``@handle``, or the DID)."""
        author = _map(author)
        out = Text()
        name = _clean(author.get("displayName", "")).strip()
        handle = author.get("handle")
        if name:
            out.append(name, style="bold" if bold else "")
            out.append(" ")
        if isinstance(handle, str) and handle and handle != "handle.invalid":
            out.append(f"@{handle}", style="cyan")
        else:
            out.append(str(author.get("did", "?")), style="cyan")
        return out

    def post(
        self,
        view: Mapping[str, Any],
        *,
        level: int = 0,
        note: Text | None = None,
        anchor: bool = False,
    ) -> None:
        """One PostView: header, optional context note, text, quote, counts, URI."""
        view = _map(view)
        body = Text()
        if note is not None:
            body.append_text(note)
            body.append("\n")
        decision = moderate(view, self.moderation)
        if decision.hidden:
            body.append(
                f"[hidden by your moderation settings: {decision.reason()}]\n", "italic dim"
            )
            body.append(str(view.get("uri", "")), style="dim")
            self._emit(body, level)
            return
        if decision.warned:
            body.append(f"⚠ content warning: {decision.reason()}", style="bold yellow")
            body.append("\n")
            if not self.reveal:
                body.append("(text not shown; --reveal shows it)\n", style="italic dim")
                body.append(str(view.get("uri", "")), style="dim")
                self._emit(body, level)
                return
        record = _map(view.get("record"))
        body.append_text(self.author(view.get("author", {})))
        when = view.get("indexedAt") or record.get("createdAt")
        body.append(f" · {relative_time(when, self.now)}", style="dim")
        via = _map(view.get("via"))
        if via.get("protocol") == "atproto":  # bridged (docs/atproto-bridge.md)
            body.append(
                f" · via atproto {_clean(via.get('host', '')).replace(chr(10), ' ')}", style="dim"
            )
        body.append("\n")
        text = _clean(record.get("text", ""))
        if text:
            body.append(text, style="bold" if anchor else "")
            body.append("\n")
        embed = view.get("embed")
        if isinstance(embed, dict) and embed.get("$type") == _RECORD_WITH_MEDIA_VIEW:
            media, embed = self.media(embed.get("media")), embed.get("record")
        else:
            media = self.media(embed)
        if media is not None:
            body.append_text(media)
            body.append("\n")
        quote = self._quote(embed)
        if quote is not None:
            body.append_text(quote)
            body.append("\n")
        body.append_text(self.counts(view))
        body.append("\n")
        body.append(str(view.get("uri", "")), style="dim")
        self._emit(body, level)

    def counts(self, view: Mapping[str, Any]) -> Text:
        """``2 replies · 1 repost · 3 likes``, and what the viewer did."""
        out = Text(style="dim")
        view = _map(view)
        out.append(_count(view.get("replyCount"), "reply", "replies"))
        out.append(" · ")
        out.append(_count(view.get("repostCount"), "repost", "reposts"))
        out.append(" · ")
        out.append(_count(view.get("likeCount"), "like", "likes"))
        quotes = view.get("quoteCount")
        if isinstance(quotes, int) and quotes:
            out.append(" · ")
            out.append(_count(quotes, "quote", "quotes"))
        viewer = _map(view.get("viewer"))
        mine = [w for w, key in (("liked", "like"), ("reposted", "repost")) if viewer.get(key)]
        if mine:
            out.append("  (you " + " and ".join(mine) + ")", style="magenta")
        return out

    def media(self, embed: object) -> Text | None:
        """Images (alt text and the URL that serves each) and link cards, as lines."""
        if not isinstance(embed, dict):
            return None
        kind = embed.get("$type")
        out = Text()
        if kind == "app.bsky.embed.images#view":
            for image in _maps(embed.get("images"))[:4]:
                alt = _clean(image.get("alt"))[:300]
                out.append("🖼  ", style="dim")
                out.append(f"[{alt}] " if alt else "[image, no alt text] ", style="italic")
                out.append(_clean(image.get("fullsize"))[:2048], style="blue underline")
                out.append("\n")
        elif kind == "app.bsky.embed.external#view":
            ext = _map(embed.get("external"))
            out.append("🔗 ", style="dim")
            out.append(_clean(ext.get("title"))[:300] + " ", style="bold")
            out.append(_clean(ext.get("uri"))[:2048], style="blue underline")
            out.append("\n")
        if not out.plain:
            return None
        out.rstrip()
        return out

    def _quote(self, embed: object) -> Text | None:
        if not isinstance(embed, dict):
            return None
        inner = embed.get("record")
        if not isinstance(inner, dict):
            return None
        out = Text("┃ ", style="dim")
        if inner.get("notFound") or inner.get("blocked"):
            out.append("quoted post unavailable ", style="italic dim")
            out.append(str(inner.get("uri", "")), style="dim")
            return out
        quoted = moderate(inner, self.moderation)
        if quoted.hidden or (quoted.warned and not self.reveal):
            out.append(f"quoted post {'hidden' if quoted.hidden else 'behind a warning'}: ")
            out.append(quoted.reason(), style="italic dim")
            return out
        if "value" in inner:  # app.bsky.embed.record#viewRecord
            out.append("quoting ", style="dim")
            out.append_text(self.author(inner.get("author", {}), bold=False))
            value = inner.get("value")
            text = _clean(value.get("text", "")) if isinstance(value, dict) else ""
            if text:
                out.append("\n┃ ", style="dim")
                out.append(text.replace("\n", "\n┃ "), style="italic")
            return out
        if "uri" in inner:  # the raw record embed, not hydrated
            out.append(f"quoting {inner['uri']}", style="dim")
            return out
        return None

    def _emit(self, body: Text, level: int) -> None:
        # Wrapped here, not by a rich Padding: that pads every line with spaces to the
        # full width, which is noise in a pipe or a file.
        indent = min(level, _MAX_INDENT_LEVELS) * _INDENT
        prefix = Text(" " * (indent - _INDENT) + "│ ", style="dim") if indent else Text()
        for line in body.wrap(self.console, max(20, self.console.width - indent)):
            line.rstrip()
            self.console.print(prefix + line, soft_wrap=True)
        self.console.print()

    # -- views -----------------------------------------------------------------------
    def feed(self, page: Mapping[str, Any]) -> None:
        """A ``{feed: [FeedViewPost], cursor?}`` page."""
        items = _maps(_map(page).get("feed"))
        if not items:
            self.console.print("(nothing here yet)", style="dim")
        for item in items:
            self.feed_item(item)
        cursor = _map(page).get("cursor")
        if cursor:
            self.console.print(Text(f"more: --cursor {cursor}", style="dim"), soft_wrap=True)

    def feed_item(self, item: Mapping[str, Any]) -> None:
        item = _map(item)
        note: Text | None = None
        reason = item.get("reason")
        if isinstance(reason, dict) and str(reason.get("$type", "")).endswith("#reasonRepost"):
            note = Text("⟲ reposted by ", style="green")
            note.append_text(self.author(reason.get("by", {}), bold=False))
        reply = item.get("reply")
        if isinstance(reply, dict):
            parent = reply.get("parent", {})
            line = Text("↳ replying to ", style="dim")
            if isinstance(parent, dict) and isinstance(parent.get("author"), dict):
                line.append_text(self.author(parent["author"], bold=False))
            else:
                line.append("a post this node does not have", style="dim italic")
            note = line if note is None else note + Text("\n") + line
        self.post(_map(item.get("post")), note=note)

    def thread(self, page: Mapping[str, Any]) -> None:
        """A ``{thread: ThreadViewPost}``: parents above, the post, replies indented."""
        page = _map(page)
        node = _map(page.get("thread", page))
        parents: list[Mapping[str, Any]] = []
        up = node.get("parent")
        while isinstance(up, dict):
            parents.append(up)
            up = up.get("parent")
        for parent in reversed(parents):
            self._thread_post(parent, level=0)
        if node:
            self._thread_post(node, level=0, anchor=bool(parents))
            self._replies(node)

    def _replies(self, root: Mapping[str, Any]) -> None:
        # Depth first, in order, without recursion: a thread may nest deeper than
        # Python's stack (its indentation stops at _MAX_INDENT_LEVELS anyway).
        stack = [(reply, 1) for reply in reversed(_maps(root.get("replies")))]
        while stack:
            node, level = stack.pop()
            self._thread_post(node, level=level)
            stack.extend((reply, level + 1) for reply in reversed(_maps(node.get("replies"))))

    def _thread_post(self, node: Mapping[str, Any], *, level: int, anchor: bool = False) -> None:
        uri = Text(str(node.get("uri", "")), style="dim")
        if node.get("notFound"):
            self._emit(Text("[post not found] ", style="italic dim") + uri, level)
        elif node.get("blocked"):
            self._emit(Text("[blocked post] ", style="italic red") + uri, level)
        elif isinstance(node.get("post"), dict):
            self.post(node["post"], level=level, anchor=anchor)

    def profile(self, view: Mapping[str, Any]) -> None:
        """A ProfileViewDetailed (with a line for what the reader's labelers say)."""
        view = _map(view)
        out = Text()
        decision = moderate(view, self.moderation)
        if decision.action != "show":
            verb = "hidden by" if decision.hidden else "a warning from"
            out.append(f"⚠ labels ({verb} your moderation settings): {decision.reason()}\n")
        name = _clean(view.get("displayName", "")).strip()
        if name:
            out.append(name + "\n", style="bold")
        out.append(f"@{view.get('handle', '?')}", style="cyan")
        out.append(f"  {view.get('did', '')}\n", style="dim")
        description = _clean(view.get("description", "")).strip()
        if description:
            out.append(description + "\n")
        out.append(_count(view.get("followersCount"), "follower", "followers"), style="bold")
        out.append(" · ")
        out.append(_count(view.get("followsCount"), "following", "following"), style="bold")
        out.append(" · ")
        out.append(_count(view.get("postsCount"), "post", "posts"), style="bold")
        viewer = _map(view.get("viewer"))
        flags = [
            text
            for key, text in (
                ("following", "you follow"),
                ("followedBy", "follows you"),
                ("blocking", "you block"),
                ("blockedBy", "blocks you"),
            )
            if viewer.get(key)
        ]
        if flags:
            out.append("\n" + " · ".join(flags), style="magenta")
        self.console.print(out)

    def notifications(self, page: Mapping[str, Any]) -> None:
        """A listNotifications page: who did what, newest first, unread marked ●."""
        page = _map(page)
        items = _maps(page.get("notifications"))
        if not items:
            self.console.print("(no notifications)", style="dim")
        for item in items:
            out = Text("● " if item.get("isRead") is False else "  ", style="bold blue")
            out.append_text(self.author(item.get("author", {})))
            reason = str(item.get("reason", ""))
            out.append(f" {_REASON_TEXT.get(reason, _clean(reason)[:40])}")
            out.append(f" · {relative_time(item.get('indexedAt'), self.now)}", style="dim")
            record = _map(item.get("record"))
            text = _clean(record.get("text", "")).strip() if reason in _HAS_TEXT else ""
            if text:
                out.append("\n" + text)
            subject = item.get("reasonSubject")
            link = subject if reason in ("like", "repost") else item.get("uri")
            if isinstance(link, str) and reason != "follow":
                out.append("\n" + _clean(link), style="dim")
            self._emit(out, 0)
        cursor = page.get("cursor")
        if cursor:
            self.console.print(Text(f"more: --cursor {cursor}", style="dim"), soft_wrap=True)

    def search_posts(self, page: Mapping[str, Any]) -> None:
        """A searchPosts page of PostViews."""
        page = _map(page)
        posts = _maps(page.get("posts"))
        if not posts:
            self.console.print("(no posts found)", style="dim")
        for view in posts:
            self.post(view)
        cursor = page.get("cursor")
        if cursor:
            self.console.print(Text(f"more: --cursor {cursor}", style="dim"), soft_wrap=True)

    def actors(self, actors: list[Mapping[str, Any]]) -> None:
        """A list of ProfileViews, one a line."""
        if not actors:
            self.console.print("(nobody yet)", style="dim")
        for actor in _maps(actors):
            line = self.author(actor)
            description = _clean(actor.get("description", "")).split("\n", 1)[0]
            if description:
                line.append(f"  {description}", style="dim")
            self.console.print(line, no_wrap=True, overflow="ellipsis")

    # -- the firehose ------------------------------------------------------------------
    def event(
        self,
        header: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        handles: Mapping[str, str] | None = None,
    ) -> None:
        """One firehose frame as one line; ``handles`` (DID -> handle) names authors."""
        line = Text()
        if header.get("op") == -1:
            line.append("error ", style="bold red")
            line.append(f"{body.get('error', '?')}: {_clean(body.get('message', ''))}")
            self.console.print(line, soft_wrap=True)
            return
        kind = str(header.get("t", "?"))
        line.append(f"{body.get('seq', '-'):>6} ", style="dim")
        line.append(f"{_clock(body.get('time'))} ", style="dim")
        line.append(f"{kind:<9} ", style="bold")
        if kind == "#commit":
            repo = str(body.get("repo", "?"))
            handle = (handles or {}).get(repo)
            line.append(f"@{handle}" if handle else repo, style="cyan")
            for action, path, record in _commit_ops(body)[:3]:
                colour = {"create": "green", "update": "yellow", "delete": "red"}.get(action, "")
                line.append(f"  {action} ", style=colour)
                line.append(path)
                summary = _record_summary(record)
                if summary:
                    line.append(f" {summary}", style="italic")
            extra = len(body.get("ops") or []) - 3
            if extra > 0:
                line.append(f"  (+{extra} more)", style="dim")
        elif kind in ("#identity", "#account", "#sync"):
            line.append(str(body.get("did", "?")), style="cyan")
            if body.get("handle"):
                line.append(f"  @{body['handle']}")
            if "active" in body:
                line.append("  active" if body["active"] else "  inactive")
            if body.get("status"):
                line.append(f" ({body['status']})")
        elif kind == "#info":
            line.append(f"{body.get('name', '')}: {_clean(body.get('message', ''))}")
        self.console.print(line, soft_wrap=True)


def _clock(value: object) -> str:
    """Local wall-clock time of a live event (relative times say nothing there)."""
    t = parse_time(value)
    return "--:--:--" if t is None else t.astimezone().strftime("%H:%M:%S")


def _commit_ops(body: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(action, path, record value or None) for each op of a #commit body."""
    try:
        event = CommitEvent.from_value(dict(body))
        blocks = event.block_map()
    except SkyfedError:
        return [
            (str(op.get("action", "?")), str(op.get("path", "?")), None)
            for op in body.get("ops") or []
            if isinstance(op, dict)
        ]
    out: list[tuple[str, str, Any]] = []
    for op in event.ops:
        record = None
        block = blocks.get(op.cid) if op.cid is not None else None
        if block is not None:
            try:
                record = decode(block)
            except SkyfedError:
                record = None
        out.append((op.action, op.path, record))
    return out


def _record_summary(record: Any) -> str:
    if not isinstance(record, dict):
        return ""
    text = record.get("text")
    if isinstance(text, str):
        one_line = " ".join(_clean(text).split())
        if len(one_line) > _PREVIEW:
            one_line = one_line[: _PREVIEW - 1] + "…"
        return f'"{one_line}"'
    subject = record.get("subject")
    if isinstance(subject, dict):
        subject = subject.get("uri")
    if isinstance(subject, str):
        return f"→ {subject}"
    name = record.get("displayName")
    return f'"{_clean(name)}"' if isinstance(name, str) else ""


def event_json(header: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """A firehose frame as JSON for scripts: CIDs as strings, each op's record decoded
    (instead of the raw blocks), other bytes as ``{"$bytes": ...}``."""
    if header.get("op") == -1:
        return {"error": body.get("error"), "message": body.get("message")}
    out: dict[str, Any] = {"$type": header.get("t")}
    if header.get("t") != "#commit":
        converted = to_json(dict(body))
        out.update(converted if isinstance(converted, dict) else {})
        return out
    records = {path: record for _, path, record in _commit_ops(body)}
    for key, value in body.items():
        if key == "blocks":
            continue
        if key in ("commit", "prevData") and isinstance(value, bytes):
            out[key] = _cid_str(value)
        elif key == "ops" and isinstance(value, list):
            ops = []
            for op in value:
                if not isinstance(op, dict):
                    continue
                item = {
                    k: _cid_str(v) if isinstance(v, bytes) else v
                    for k, v in op.items()
                    if k in ("action", "path", "cid", "prev")
                }
                record = records.get(str(op.get("path")))
                if record is not None:
                    item["record"] = to_json(record)
                ops.append(item)
            out["ops"] = ops
        else:
            out[key] = to_json(value)
    return out


def _cid_str(raw: bytes) -> str:
    try:
        return str(CID.from_bytes(raw))
    except SkyfedError:
        return raw.hex()
