"""A scenario's story steps: particular writes by particular accounts, a node's
operator taking an account down, an account moving home, a labeler labelling, and
expectations about who sees what.

The workload writes at random; a story needs "this account posts this, then that
node takes it down, then it moves". Each step runs when its time comes and holds the
schedule until it is done (an ``expect`` until it holds or its ``within`` runs out), so
the steps happen in order. Every step leaves a :class:`Check` for the verdict: an
``expect`` that never held, a post that should have been refused and was not (or the
reverse), or a step that failed outright (a migration the new node refused) fails the
run with the reason; it never crashes it.

An ``expect`` with ``readers`` reads as those accounts, each through its current home
node (a session lives on one node); with ``nodes``, as an anonymous reader on each.
``labelers`` are the labelers the readers subscribe to (the ``atproto-accept-labelers``
header). A post is *visible* to a reader when the view holds it and the reader's
moderation (:meth:`Client.moderate`, default label behaviours: ``spam`` hides) does
not hide it. A view that answers an error (a node refusing the repo, or a node that
is down) shows nothing.

What this module refuses: nothing of its own; the scenario parser has checked every
field (see :mod:`.scenario`).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from protocol.errors import SkyfedError
from protocol.moderation import ModerationPrefs

from ..client import Client, XrpcError, migrate_account
from .harness import Cluster
from .workload import PASSWORD, Account, Workload

__all__ = ["STEPS", "Check", "Steps"]

#: Scenario actions played by :class:`Steps`.
STEPS = frozenset({"post", "follow", "label", "takedown", "reverse", "migrate", "expect"})
#: Pages of 100 an ``expect`` reads of a feed before it calls a post absent.
FEED_PAGES = 10
#: How long a migration waits for the new node's replica to hold every acknowledged
#: write of the account (it imports that replica).
REPLICA_WAIT = 10.0

_FEEDS = {
    "latest": "skyfed.feed.getLatest",
    "timeline": "app.bsky.feed.getTimeline",
    "author": "app.bsky.feed.getAuthorFeed",
}


@dataclass(slots=True)
class Check:
    """One story step's outcome, at ``t`` seconds from the start."""

    t: float
    what: str
    passed: bool
    #: How long the step took (an expect: until it held, or gave up).
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 2),
            "what": self.what,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class _Post:
    uri: str
    cid: str
    author: str


def _why(e: BaseException) -> str:
    if isinstance(e, XrpcError):
        return f"{e.error}: {e.message}" if e.message else e.error
    return f"{type(e).__name__}: {e}"


class Steps:
    """Plays the story steps of one run against ``cluster``, as ``workload``'s
    accounts; :attr:`checks` holds the outcomes."""

    def __init__(self, cluster: Cluster, workload: Workload, t0: float):
        self.cluster = cluster
        self.workload = workload
        self.t0 = t0
        self.posts: dict[str, _Post] = {}
        self.checks: list[Check] = []
        self._play: dict[str, Callable[[Mapping[str, Any]], Awaitable[tuple[bool, str]]]] = {
            "post": self._post,
            "follow": self._follow,
            "label": self._label,
            "takedown": self._takedown,
            "reverse": self._reverse,
            "migrate": self._migrate,
            "expect": self._expect,
        }

    async def apply(self, action: str, args: Mapping[str, Any], what: str) -> Check:
        """Play one step; its check is also kept in :attr:`checks`."""
        start = time.monotonic()
        try:
            passed, detail = await self._play[action](args)
        except (SkyfedError, aiohttp.ClientError, OSError, TimeoutError) as e:
            passed, detail = False, f"failed: {_why(e)}"
        check = Check(start - self.t0, what, passed, time.monotonic() - start, detail)
        self.checks.append(check)
        return check

    # -- acting as an account ----------------------------------------------------
    def _as(self, account: Account) -> Client:
        """A client of the account's current home node, logged in as it."""
        c = self.cluster.client(account.home)
        c.session = account.client.session
        return c

    async def _create(self, account: Account, collection: str, record: dict[str, Any]) -> _Post:
        c = self._as(account)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out = await c.call(
            "com.atproto.repo.createRecord",
            data={
                "repo": account.did,
                "collection": collection,
                "record": {"$type": collection, **record, "createdAt": now},
            },
        )
        account.client.session = c.session  # a refresh rotates the tokens
        path = out["uri"].split("/", 3)[3]
        kind = "post" if collection == "app.bsky.feed.post" else "follow"
        self.workload.record(account, path, out["cid"], out["commit"]["rev"], kind)
        return _Post(out["uri"], out["cid"], account.did)

    async def _post(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        account = self.workload.accounts[args["account"]]
        text = args.get("text") or f"a post by account {account.index}"
        try:
            post = await self._create(account, "app.bsky.feed.post", {"text": text})
        except XrpcError as e:
            if args.get("refused"):
                return True, f"node {account.home} refused it ({e.error})"
            raise
        if args.get("refused"):
            return False, f"node {account.home} accepted it ({post.uri})"
        if "name" in args:
            self.posts[args["name"]] = post
        return True, f"{post.uri} on node {account.home}"

    async def _follow(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        account = self.workload.accounts[args["account"]]
        subject = self.workload.accounts[args["subject"]].did
        await self._create(account, "app.bsky.graph.follow", {"subject": subject})
        return True, ""

    async def _label(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        labeler = self.workload.accounts[args["labeler"]]
        if "post" in args:
            subject = self.posts[args["post"]].uri
        else:
            subject = self.workload.accounts[args["account"]].did
        c = self._as(labeler)
        label = await c.label(subject, args["value"], neg=bool(args.get("neg")))
        labeler.client.session = c.session
        return True, f"signed by {label['src']} at node {labeler.home}"

    # -- an operator, and an account that leaves ---------------------------------
    async def _takedown(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        did = self.workload.accounts[args["account"]].did
        out = await self.cluster.take_down(args["node"], did, args["reason"], args.get("scopes"))
        return True, f"scopes {','.join(out['scopes'])}: {out['reason']}"

    async def _reverse(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        did = self.workload.accounts[args["account"]].did
        await self.cluster.reverse_takedown(args["node"], did, args["reason"])
        return True, ""

    async def _migrate(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        account = self.workload.accounts[args["account"]]
        to, was = args["to"], account.home
        behind = await self._replica_caught_up(account, to)
        new = self.cluster.client(to)
        if args.get("with_old_node"):
            await migrate_account(new, account.did, PASSWORD, old=self._as(account))
        else:
            await migrate_account(new, account.did, PASSWORD, rotation_key=account.rotation_key)
        account.home, account.client = to, new
        note = f"from node {was} to node {to}"
        return True, note + (f" ({behind})" if behind else "")

    async def _replica_caught_up(self, account: Account, to: int) -> str:
        """Wait (a while) until node ``to`` holds every acknowledged write of the
        account, as a careful user would before importing its replica; "" when it
        does, else what was missing (the migration goes ahead; the verdict will
        count the writes lost)."""
        want = max((r.rev for r in self.workload.acked if r.did == account.did), default="")
        have = ""
        deadline = time.monotonic() + REPLICA_WAIT
        while time.monotonic() < deadline:
            try:
                latest = await self.cluster.call(
                    to, "com.atproto.sync.getLatestCommit", did=account.did
                )
                have = str(latest["rev"])
            except (SkyfedError, aiohttp.ClientError, OSError, TimeoutError):
                have = ""
            if have >= want:
                return ""
            await asyncio.sleep(0.2)  # poll: another process
        return f"its replica stopped at rev {have or 'none'}, short of {want}"

    # -- who sees what -----------------------------------------------------------
    async def _expect(self, args: Mapping[str, Any]) -> tuple[bool, str]:
        post = self.posts[args["post"]]
        prefs = ModerationPrefs()
        for k in args.get("labelers", ()):
            prefs = prefs.subscribe(self.workload.accounts[k].did)
        readers: list[tuple[str, Client]] = []
        for k in args.get("readers", ()):
            account = self.workload.accounts[k]
            readers.append((f"account {k} (node {account.home})", self._as(account)))
        for i in args.get("nodes", ()):
            readers.append((f"node {i}", self.cluster.client(i)))
        for _, c in readers:
            c.moderation = prefs
        want: bool = args["visible"]
        deadline = time.monotonic() + args["within"]
        while True:
            seen = await asyncio.gather(*(self._sees(c, args["view"], post) for _, c in readers))
            wrong = [who for (who, _), s in zip(readers, seen, strict=True) if s != want]
            if not wrong or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)  # poll: the nodes are other processes
        if wrong:
            state = "still does not see it" if want else "still sees it"
            return False, f"{', '.join(wrong)}: {state} after {args['within']:g} s"
        return True, ""

    async def _sees(self, c: Client, view: str, post: _Post) -> bool:
        try:
            items = await self._items(c, view, post)
        except (SkyfedError, aiohttp.ClientError, OSError, TimeoutError):
            return False
        for p in items:
            if p.get("uri") == post.uri:
                return not c.moderate(p).hidden
        return False

    async def _items(self, c: Client, view: str, post: _Post) -> list[dict[str, Any]]:
        if view == "posts":
            return list((await c.posts([post.uri]))["posts"])
        if view == "thread":
            thread = (await c.thread(post.uri, depth=0))["thread"]
            return [thread["post"]] if "post" in thread else []
        params: dict[str, Any] = {"limit": 100}
        if view == "author":
            params["actor"] = post.author
        items: list[dict[str, Any]] = []
        for _ in range(FEED_PAGES):
            page = await c.call(_FEEDS[view], params=params)
            items += [item["post"] for item in page["feed"]]
            if any(p.get("uri") == post.uri for p in items) or not page.get("cursor"):
                break
            params["cursor"] = page["cursor"]
        return items
