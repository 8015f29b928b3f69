"""Following atproto PDSes and relays: one task per configured source reads its
``com.atproto.sync.subscribeRepos`` stream and brings what it proves into the node.

Per source (docs/atproto-bridge.md, "Node side"):

* the stream is read from the persisted cursor (the last ``seq`` whose effects are
  stored; written in the same transaction as them), with the WebSocket's message
  size capped at ``firehose.MAX_FRAME``. Events are handled one at a time as they
  are read, so there is no queue to grow: a slow node is a slow reader, and the
  upstream drops it (``ConsumerTooSlow``) rather than the node buffering;
* on a closed or failed connection, and on error frames (``FutureCursor``: the
  cursor is forgotten; ``ConsumerTooSlow``, ``OutdatedCursor``), it reconnects
  after an exponential backoff with jitter (``atproto_reconnect_min`` doubling up
  to ``atproto_reconnect_max``), reset once a connection has stayed up a minute;
* ``#commit``: refused if its ``rev`` is more than :data:`FUTURE_REV` seconds
  ahead of the clock; verified with ``verify_commit_event`` against the account's
  current key (re-resolved once on a bad signature); then ``chain_status`` against
  the stored ``(rev, data)``: NEXT is applied, STALE dropped, GAP (and an account
  first seen mid-history) fetches ``com.atproto.sync.getRepo`` from the account's
  PDS and checks it with ``verify_repo`` (at most ``atproto_max_repo_bytes``;
  one resync per account per ``atproto_resync_interval`` seconds: one asked for
  sooner waits in a pending set, bounded like the accounts, and runs when due);
* ``#sync``: verified; a ``data`` other than ours resyncs; ``#identity``: the DID
  document is fetched again and the handle checked again; ``#account``: an
  inactive account is hidden (``takendown``, ``suspended``, ``deactivated``) or
  removed with its records (``deleted``); ``active`` shows it again;
* a frame that does not decode or verify is refused: counted in ``refused`` and
  logged through the node's LogLimiter (kind ``atproto``).

At most ``atproto_max_accounts`` accounts are followed; commits of others are
counted in ``ignored`` and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from protocol.atproto.cid import CID as AtprotoCID
from protocol.atproto.commit import (
    ChainStatus,
    chain_status,
    verify_commit_event,
    verify_repo,
    verify_sync_event,
)
from protocol.atproto.firehose import (
    MAX_FRAME,
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    decode_frame,
)
from protocol.errors import IdentityError, InvalidSignature, SkyfedError
from protocol.syntax import tid_to_parts

from ..logs import LogLimiter
from . import store
from .identity import DidResolver, ResolvedIdentity

if TYPE_CHECKING:
    from ..store.sqlite import SqliteStorage

__all__ = ["AtprotoBridge", "BridgeStats"]

log = logging.getLogger("skyfed.atproto")

#: A commit whose rev is further ahead of the clock than this (seconds) is refused.
FUTURE_REV = 300.0
#: Seconds between two resyncs (getRepo) of one account (default).
RESYNC_INTERVAL = 30.0
#: A connection up this long (seconds) resets the reconnect backoff.
HEALTHY_AFTER = 60.0


class _Reconnect(Exception):
    """The upstream sent an error frame: end this connection."""


class _TooManyAccounts(IdentityError):
    """``atproto_max_accounts`` are followed: a new account is ignored."""


@dataclass(slots=True)
class BridgeStats:
    frames: int = 0
    commits: int = 0
    refused: int = 0
    ignored: int = 0
    resyncs: int = 0
    connects: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def _now_iso(clock: Callable[[], float]) -> str:
    t = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def stream_url(source: str, cursor: int | None) -> str:
    """The subscribeRepos WebSocket URL of an http(s) source URL."""
    parts = urlsplit(source)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"atproto source must be an http(s) URL: {source!r}")
    url = f"{scheme}://{parts.netloc}/xrpc/com.atproto.sync.subscribeRepos"
    return url if cursor is None else f"{url}?cursor={cursor}"


class AtprotoBridge:
    """The subscribeRepos readers of one node (started and stopped by the node)."""

    def __init__(
        self,
        storage: SqliteStorage,
        sources: tuple[str, ...],
        resolver: DidResolver,
        session: Callable[[], aiohttp.ClientSession],
        log_limit: LogLimiter,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_accounts: int = 10_000,
        max_repo_bytes: int = 64 * 1024 * 1024,
        reconnect_min: float = 1.0,
        reconnect_max: float = 60.0,
        resync_interval: float = RESYNC_INTERVAL,
    ):
        self.storage = storage
        self.sources = sources
        self.resolver = resolver
        self._session = session
        self.log_limit = log_limit
        self.wall_clock = wall_clock
        self.max_accounts = max_accounts
        self.max_repo_bytes = max_repo_bytes
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.stats = BridgeStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_resync: dict[str, float] = {}
        # (host, handle) last stored per account, so a commit costs no identity write.
        self._written: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.resync_interval = resync_interval
        # Resyncs asked for too soon after the last one: did -> (source, identity).
        self._pending: dict[str, tuple[str, ResolvedIdentity]] = {}
        self._pending_set = asyncio.Event()
        #: Set for each source while a connection to it is up (tests wait on it).
        self.connected: dict[str, asyncio.Event] = {s: asyncio.Event() for s in sources}

    async def start(self) -> None:
        for source in self.sources:
            stream_url(source, None)  # refuse a bad URL at start
            self._tasks.append(asyncio.create_task(self._run(source), name=f"atproto {source}"))
        if self.sources:
            self._tasks.append(asyncio.create_task(self._resync_later(), name="atproto resync"))

    async def _resync_later(self) -> None:
        """Run the resyncs that were asked for too soon, once their interval is over
        (a gap is repaired late, never forgotten)."""
        while True:
            await self._pending_set.wait()
            self._pending_set.clear()
            while self._pending:
                now = time.monotonic()
                due = [
                    did
                    for did in self._pending
                    if now - self._last_resync.get(did, 0.0) >= self.resync_interval
                ]
                for did in due:
                    source, res = self._pending.pop(did)
                    await self.resync(source, did, res)
                if self._pending:
                    await asyncio.sleep(min(1.0, self.resync_interval))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # -- connection ------------------------------------------------------------
    async def _run(self, source: str) -> None:
        delay = self.reconnect_min
        while True:
            began = time.monotonic()
            try:
                await self._connect_once(source)
                why = "closed"
            except (aiohttp.ClientError, OSError, TimeoutError, _Reconnect) as e:
                why = f"{type(e).__name__}: {e}"[:300]
            finally:
                self.connected[source].clear()
            if time.monotonic() - began > HEALTHY_AFTER:
                delay = self.reconnect_min
            wait = delay * (0.5 + random.random() / 2)  # jitter: peers do not stampede
            self.log_limit.log(
                "atproto",
                logging.INFO,
                "atproto source disconnected",
                source=source,
                why=why,
                retry_in=round(wait, 2),
            )
            await asyncio.sleep(wait)
            delay = min(self.reconnect_max, delay * 2)

    async def _connect_once(self, source: str) -> None:
        cursor = await self.storage.read(lambda c: store.get_cursor(c, source))
        url = stream_url(source, cursor)
        async with self._session().ws_connect(
            url, max_msg_size=MAX_FRAME, heartbeat=30.0, autoping=True
        ) as ws:
            self.stats.connects += 1
            self.connected[source].set()
            log.info("atproto source connected", extra={"source": source, "cursor": cursor})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await self.handle_message(source, msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise aiohttp.ClientError(str(ws.exception()))
                # Text frames are not part of the protocol: ignored.

    # -- events ----------------------------------------------------------------
    def _refuse(self, source: str, did: str | None, why: Exception | str) -> None:
        self.stats.refused += 1
        self.log_limit.log(
            "atproto",
            logging.WARNING,
            "refused an atproto frame",
            source=source,
            did=did,
            why=str(why)[:300],
        )

    async def handle_message(self, source: str, data: bytes) -> None:
        """One binary WebSocket message from ``source``."""
        self.stats.frames += 1
        try:
            frame = decode_frame(data)
        except SkyfedError as e:
            self._refuse(source, None, e)
            return
        if isinstance(frame, ErrorFrame):
            self.stats.errors[frame.error] = self.stats.errors.get(frame.error, 0) + 1
            if frame.error == "FutureCursor":
                # Our cursor is ahead of the upstream (it was reset): start over.
                await self.storage.write(lambda c: store.put_cursor(c, source, None))
            raise _Reconnect(f"{frame.error}: {frame.message or ''}")
        if isinstance(frame, InfoEvent):
            if frame.name == "OutdatedCursor":
                # Events were missed: commits after the gap resync their accounts.
                self.stats.errors["OutdatedCursor"] = self.stats.errors.get("OutdatedCursor", 0) + 1
            log.info("atproto #info", extra={"source": source, "info": frame.name})
            return
        if isinstance(frame, CommitEvent):
            await self._commit(source, frame)
        elif isinstance(frame, SyncEvent):
            await self._sync(source, frame)
        elif isinstance(frame, IdentityEvent):
            await self._identity(source, frame.did, frame.seq)
        elif isinstance(frame, AccountEvent):
            await self._account(source, frame)
        # UnknownEvent: skipped, as the spec says.

    async def _cursor(self, source: str, seq: int) -> None:
        await self.storage.write(lambda c: store.put_cursor(c, source, seq))

    async def _known(self, did: str) -> store.AccountState | None:
        return await self.storage.read(lambda c: store.account_state(c, did))

    async def _identify(self, source: str, did: str, *, fresh: bool = False) -> ResolvedIdentity:
        """Resolve ``did`` and record its host and checked handle (a new account too,
        unless ``atproto_max_accounts`` are followed: then IdentityError)."""
        res = await self.resolver.resolve(did, fresh=fresh)
        host = urlsplit(res.ident.pds).netloc if res.ident.pds else urlsplit(source).netloc
        if self._written.get(did) == (host, res.handle):
            self._written.move_to_end(did)
            return res  # stored already: no write per commit
        limit = self.max_accounts

        def write(c: sqlite3.Connection) -> bool:
            if store.account_state(c, did) is None and store.account_count(c) >= limit:
                return False
            store.set_identity(c, did, host, res.handle)
            return True

        if not await self.storage.write(write):
            self.stats.ignored += 1
            raise _TooManyAccounts(f"already following {limit} atproto accounts")
        self._written[did] = (host, res.handle)
        while len(self._written) > self.max_accounts:
            self._written.popitem(last=False)
        return res

    async def _commit(self, source: str, ev: CommitEvent) -> None:
        micros, _ = tid_to_parts(ev.rev)
        if micros / 1e6 > self.wall_clock() + FUTURE_REV:
            self._refuse(source, ev.repo, f"rev {ev.rev} is in the future")
            return await self._cursor(source, ev.seq)
        try:
            res = await self._identify(source, ev.repo)
            try:
                done = verify_commit_event(ev, res.ident.signing_key)
            except InvalidSignature:
                res = await self._identify(source, ev.repo, fresh=True)  # the key may have rotated
                done = verify_commit_event(ev, res.ident.signing_key)
        except _TooManyAccounts:
            return await self._cursor(source, ev.seq)  # counted in ``ignored``
        except SkyfedError as e:
            self._refuse(source, ev.repo, e)
            return await self._cursor(source, ev.seq)
        state = await self._known(ev.repo)
        if state is not None and state.status != "active":
            return await self._cursor(source, ev.seq)
        last_data = None
        if state is not None and state.data is not None:
            last_data = AtprotoCID.from_bytes(state.data)
        status = chain_status(ev, state.rev if state else None, last_data)
        if status is ChainStatus.NEXT and (state is None or state.rev is None) and ev.since:
            status = ChainStatus.GAP  # first sight mid-history: fetch the whole repo
        if status is ChainStatus.STALE:
            return await self._cursor(source, ev.seq)
        if status is ChainStatus.GAP:
            await self.resync(source, ev.repo, res)
            return await self._cursor(source, ev.seq)
        writes = []
        for op in done.ops:
            collection, _, rkey = op.path.partition("/")
            block = done.records.get(op.path) if op.cid is not None else None
            cid = op.cid.to_bytes() if op.cid is not None else None
            writes.append(store.Write(collection, rkey, cid, block))
        now = _now_iso(self.wall_clock)
        did, rev, data, seq = ev.repo, ev.rev, done.commit.data.to_bytes(), ev.seq

        def apply(c: sqlite3.Connection) -> None:
            store.apply_writes(c, did, rev, data, writes, now)
            store.put_cursor(c, source, seq)

        await self.storage.write(apply)
        self.stats.commits += 1

    async def resync(self, source: str, did: str, res: ResolvedIdentity) -> bool:
        """Fetch and verify ``did``'s whole repo from its PDS and replace what is held."""
        now = time.monotonic()
        if now - self._last_resync.get(did, -self.resync_interval) < self.resync_interval:
            # Too soon: done later by the resync task (one pending entry per account).
            if did in self._pending or len(self._pending) < self.max_accounts:
                self._pending[did] = (source, res)
                self._pending_set.set()
            return False
        self._pending.pop(did, None)
        self._last_resync[did] = now
        while len(self._last_resync) > self.max_accounts:
            self._last_resync.pop(next(iter(self._last_resync)))
        pds = res.ident.pds
        if pds is None:
            self._refuse(source, did, "no PDS in the DID document: cannot resync")
            return False
        self.stats.resyncs += 1
        url = f"{pds}/xrpc/com.atproto.sync.getRepo?did={did}"
        try:
            async with self._session().get(
                url, timeout=aiohttp.ClientTimeout(total=120), allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    raise IdentityError(f"getRepo: HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_repo_bytes:
                        raise IdentityError(f"getRepo: over {self.max_repo_bytes} bytes")
            key, limit = res.ident.signing_key, self.max_repo_bytes
            commit, records = await asyncio.to_thread(
                verify_repo, bytes(body), did, key, max_total=limit
            )
        except (aiohttp.ClientError, OSError, TimeoutError, SkyfedError) as e:
            self._refuse(source, did, f"resync failed: {e}")
            return False
        writes = []
        for path, (cid, block) in records.items():
            collection, _, rkey = path.partition("/")
            writes.append(store.Write(collection, rkey, cid.to_bytes(), block))
        stamp = _now_iso(self.wall_clock)
        rev, data = commit.rev, commit.data.to_bytes()
        await self.storage.write(lambda c: store.replace_repo(c, did, rev, data, writes, stamp))
        return True

    async def _sync(self, source: str, ev: SyncEvent) -> None:
        try:
            res = await self._identify(source, ev.did)
            commit = verify_sync_event(ev, res.ident.signing_key)
        except SkyfedError as e:
            self._refuse(source, ev.did, e)
            return await self._cursor(source, ev.seq)
        state = await self._known(ev.did)
        if state is None or state.data != commit.data.to_bytes():
            await self.resync(source, ev.did, res)
        await self._cursor(source, ev.seq)

    async def _identity(self, source: str, did: str, seq: int) -> None:
        self.resolver.forget(did)
        # Only accounts already followed: a relay's #identity events for everyone
        # must not fill atproto_max_accounts.
        if await self._known(did) is not None:
            try:
                await self._identify(source, did, fresh=True)
            except SkyfedError as e:
                self._refuse(source, did, e)
        await self._cursor(source, seq)

    async def _account(self, source: str, ev: AccountEvent) -> None:
        did, seq = ev.did, ev.seq
        status = "active" if ev.active else (ev.status or "deactivated")

        if status == "deleted":
            self._written.pop(did, None)

        def write(c: sqlite3.Connection) -> None:
            if status == "deleted":
                store.remove_account(c, did)
            else:
                store.set_status(c, did, status[:64])
            store.put_cursor(c, source, seq)

        await self.storage.write(write)
