"""Federation: peer links, Plumtree gossip, negentropy reconciliation, ingest.

There is no central relay. A node keeps WebSocket links to a few peers (from its
config and ``--peer``, and ones it hears about); each link starts with a signed
handshake naming both node keys. What is new (a local commit, or one that arrived and
verified) is pushed eagerly along a Plumtree spanning tree and announced lazily to
the other peers; anything missed (a dropped link, a restart, a partition) is found by
negentropy over the *heads* of state (one item per repo head, per identity-log head
and per labeler's label set) on connect and periodically, and fetched. Labels travel
the same ways as commits: pushed one by one, and fetched per labeler (``getlabels``)
when reconciliation finds that a label set differs.

Everything that arrives goes through :mod:`protocol.ingest`: signature by the DID's
current key, rev bounds, continuity on the signed ``prev`` (with ``since``/``prevData``
agreeing), the deterministic head rule, and equivocation evidence only from signed
commits. A repo is first held only with its whole tree: a first commit's event, or a
full snapshot, checked block by block. A peer that sends forged or malformed data is
scored down and, past a threshold, cut off for a cool-off period; it never takes the
node down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import sqlite3
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from protocol.car import read_car
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit, CommitEvent
from protocol.encoding import encode
from protocol.errors import (
    DecodeError,
    IdentityError,
    InvalidCommit,
    InvalidLabel,
    InvalidSignature,
    SkyfedError,
)
from protocol.eventstream import encode_frame
from protocol.heads import identity_item, labels_item, repo_item
from protocol.identity import chain_signing_keys, resolve_log
from protocol.ingest import (
    Evidence,
    HeadState,
    Verdict,
    check_tree_complete,
    equivocation_between,
    head_wins,
    judge_event,
    judge_snapshot,
)
from protocol.keys import VerifyKey, verify_key
from protocol.labels import Label, check_cts
from protocol.mst import MST, MemoryBlockStore, MissingBlock
from protocol.negentropy import Negentropy, NegentropyStorageVector
from protocol.peerwire import (
    MAX_FRAME,
    MAX_LABELS_PER_ANSWER,
    PROTOCOL_VERSION,
    auth_payload,
    decode_message,
    encode_message,
)
from protocol.plumtree import Deliver, Plumtree, SendGraft, SendIHave, SendPrune, SendPush

from .logs import LogLimiter, fields
from .repos import iso_now
from .rtt import RttEstimator
from .storage import CommitBatch, EquivocationRow, LabelRow

if TYPE_CHECKING:
    from .app import Node

__all__ = ["Federation", "PeerLink", "label_row"]

log = logging.getLogger("skyfed.federation")

_SEND_QUEUE = 4096
_MAX_PENDING = 64
#: Bytes received from one link and not yet handled (waiting in its inbox or being
#: checked), and from all links together: past either, the link is closed.
_INBOX_BYTES = 16 * 1024 * 1024
INBOX_BYTES_TOTAL = 48 * 1024 * 1024
#: ``getrepo`` answers being built at once on this node (each up to a frame), and
#: requests one link may have waiting for one; more are answered ``Busy``.
REPO_ANSWERS_AT_ONCE = 2
_REPO_REQUESTS_PER_LINK = 4
#: Largest ``repo`` answer: a frame, less room for the message around the stream.
_REPO_ANSWER_BYTES = MAX_FRAME - 64 * 1024
#: Unsolicited ``heads`` messages one link may have waiting to be considered (one is
#: considered at a time; they count, decoded, against the inbox bytes); more are
#: dropped and cost the peer a point each (a later reconciliation round shows them
#: again). A reconciliation round sends one per 4,096 heads the other side lacks.
_HEADS_BACKLOG = 8
#: Decoded heads items take about this many times their encoded size.
_HEADS_DECODED = 4
#: Heads items remembered per link as already considered (not considered again).
_HEADS_SEEN = 16_384
#: A link logs at most one line per this many seconds (plus how many it held back).
_LOG_EVERY = 10.0
#: How long a request (or a negentropy session) may take in all before it is given up.
#: Within it, a request whose answer does not come within the link's round-trip based
#: wait (node/rtt.py) is sent again, so one lost message costs about a second, not this.
_REQUEST_TIMEOUT = 30.0
#: Bounds of the per-link wait for one answer (seconds): the floor keeps a busy peer
#: from being asked twice for everything, the ceiling is the whole budget.
_RTO_INITIAL = 2.0
_RTO_FLOOR = 1.0
#: Session ids of our own negentropy sessions given up on, remembered per link so a late
#: answer in one is dropped rather than taken for the peer opening a session.
_ABANDONED_SESSIONS = 64
_NEG_FRAME_LIMIT = 500_000
_FORGERY_PENALTY = 25
_CUTOFF_SCORE = -50
_MAX_ITEMS = 4096
_PENDING_PER_REPO = 64
#: Commit pushes from one link being checked and stored at once.
_CONCURRENT_PUSHES = 64
_PENDING_REPOS = 4096
#: A commit whose signature fails makes us re-fetch its DID's log from the sender at
#: most this often (seconds), waiting at most _REFRESH_TIMEOUT for it.
_REFRESH_EVERY = 5.0
_REFRESH_TIMEOUT = 3.0
#: Bytes of label encodings in one ``labels`` answer: the rest of a frame is headroom.
_LABELS_ANSWER_BYTES = MAX_FRAME - 512 * 1024


class PeerError(Exception):
    """The link must close (a protocol breach or a handshake failure)."""


class _Bucket:
    """Messages per second a peer may send (token bucket)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PeerLink:
    """One authenticated WebSocket link to another node."""

    def __init__(self, fed: Federation, ws: Any, *, outbound: bool, url: str | None):
        self.fed = fed
        self.ws = ws
        self.outbound = outbound
        self.url = url
        self.peer_did = ""
        self.peer_url: str | None = None
        self.share = True
        self.score = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(_SEND_QUEUE)
        # Work that may itself wait on this link (fetching an identity before a
        # commit can be checked) runs off the reader, so replies can still arrive.
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_SEND_QUEUE)
        self.slots = asyncio.Semaphore(_CONCURRENT_PUSHES)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._rids = itertools.count(1)
        self.bucket = _Bucket(fed.config_rate, fed.config_rate * 2)
        self.neg_sessions: dict[int, Negentropy] = {}
        self.abandoned: OrderedDict[int, None] = OrderedDict()
        self.rtt = RttEstimator(initial=_RTO_INITIAL, floor=_RTO_FLOOR, ceiling=_REQUEST_TIMEOUT)
        #: Set when something sent on this link went unanswered: whatever else was lost
        #: with it (a push, an IHAVE, a heads) is only found by reconciling, so do it soon.
        self.reconcile_soon = asyncio.Event()
        self.retries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = asyncio.Event()
        #: Bytes queued to send, and set whenever some of them went out.
        self.queued_bytes = 0
        self.sent_some = asyncio.Event()
        #: Bytes received and not yet handled (inbox and pushes being checked).
        self.inbox_bytes = 0
        self.repo_requests = 0
        self.heads_backlog: asyncio.Queue[tuple[list[Any], int]] = asyncio.Queue(_HEADS_BACKLOG)
        self.heads_seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._log_at = 0.0
        self._log_held = 0
        self.close_reason = "connection ended"

    def send(self, t: str, **fields: Any) -> None:
        data = encode_message(t, **fields)
        fed = self.fed
        if self.closed.is_set():
            return
        if self.queued_bytes + len(data) > fed.send_buffer:
            # A peer that cannot keep up is dropped, not buffered without bound.
            self.close(
                f"send queue over {fed.send_buffer} bytes: the peer does not read",
                level=logging.WARNING,
            )
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.close("send queue full")
            return
        self.queued_bytes += len(data)
        fed.queued_bytes += len(data)
        if fed.queued_bytes > fed.buffer_total:
            fed.shed_send_queues()

    async def wait_for_room(self, size: int) -> None:
        """Wait until ``size`` more bytes fit in the send queue (or it is empty); the
        link is closed if the peer takes nothing for ``peer_send_timeout`` seconds."""
        limit = self.fed.send_buffer
        while self.queued_bytes and self.queued_bytes + size > limit and not self.closed.is_set():
            self.sent_some.clear()
            try:
                await asyncio.wait_for(self.sent_some.wait(), self.fed.send_timeout)
            except TimeoutError:
                self.close(
                    f"the peer took nothing for {self.fed.send_timeout:.0f}s",
                    level=logging.WARNING,
                )
        if self.closed.is_set():
            raise PeerError("link closed")

    def note(self, level: int, message: str, *args: Any) -> None:
        """Log about this link, at most one line per ``_LOG_EVERY`` seconds: a peer
        that misbehaves thousands of times a second must not flood the log."""
        now = time.monotonic()
        if now - self._log_at < _LOG_EVERY:
            self._log_held += 1
            return
        if self._log_held:
            message += f" (and {self._log_held} more like it held back)"
        self._log_at, self._log_held = now, 0
        log.log(level, message, *args)

    def close(self, why: str, *, level: int = logging.INFO) -> None:
        if not self.closed.is_set():
            self.close_reason = why  # logged with "peer unlinked"
            self.closed.set()

    def lost(self) -> None:
        """An answer did not come in time: ask again sooner or later, and look for
        whatever else went missing."""
        self.rtt.backoff(time.monotonic())
        self.retries += 1
        self.fed.retries += 1
        self.reconcile_soon.set()

    async def request(self, t: str, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its answer, sending it again (same ``rid``: every
        request is a read, and whichever copy is answered first will do) each time the
        link's wait runs out, for at most ``_REQUEST_TIMEOUT`` in all."""
        if len(self.pending) >= _MAX_PENDING:
            raise PeerError("too many outstanding requests")
        rid = next(self._rids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        started = time.monotonic()
        deadline = started + _REQUEST_TIMEOUT
        try:
            self.send(t, rid=rid, **fields)
            resent = False
            while True:
                wait = min(self.rtt.timeout, deadline - time.monotonic())
                if wait > 0:
                    await asyncio.wait((fut,), timeout=wait)
                if fut.done():
                    if not resent:
                        self.rtt.sample(time.monotonic() - started)
                    return fut.result()
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer to {t} in {_REQUEST_TIMEOUT:.0f}s")
                self.lost()
                self.send(t, rid=rid, **fields)
                resent = True
        finally:
            self.pending.pop(rid, None)

    async def _send_raw(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.fed.bytes_out += len(data)
        await self.ws.send_bytes(data)

    async def _receive(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type in (aiohttp.WSMsgType.BINARY, web.WSMsgType.BINARY):
            data: bytes = msg.data
            self.bytes_in += len(data)
            self.fed.bytes_in += len(data)
            return data
        raise PeerError(f"link ended ({msg.type.name})")

    async def handshake(self) -> None:
        fed = self.fed
        challenge = secrets.token_bytes(32)
        await self._send_raw(
            encode_message(
                "hello",
                v=PROTOCOL_VERSION,
                node=fed.node.node_did,
                url=fed.node.url,
                challenge=challenge,
                caps=["plumtree", "negentropy-v1"],
                share=fed.share_peers,
            )
        )
        hello = decode_message(await self._receive())
        if hello["t"] != "hello" or hello["v"] != PROTOCOL_VERSION:
            raise PeerError("expected hello with protocol version 1")
        peer_did = hello["node"]
        peer_key = verify_key(peer_did)
        if peer_did == fed.node.node_did:
            raise PeerError("connected to itself")
        if fed.is_blocked(peer_did):
            raise PeerError("peer is cut off")
        await self._send_raw(
            encode_message(
                "auth",
                sig=fed.node.secrets.node_key.sign(
                    auth_payload(hello["challenge"], fed.node.node_did, peer_did)
                ),
            )
        )
        auth = decode_message(await self._receive())
        if auth["t"] != "auth":
            raise PeerError("expected auth")
        peer_key.verify(auth["sig"], auth_payload(challenge, peer_did, fed.node.node_did))
        self.peer_did = peer_did
        self.peer_url = hello["url"]
        self.share = hello["share"]

    async def run(self) -> None:
        sender = asyncio.create_task(self._sender())
        reader = asyncio.create_task(self._reader())
        worker = asyncio.create_task(self._worker())
        heads = asyncio.create_task(self._heads_worker())
        closer = asyncio.create_task(self.closed.wait())
        tasks = (sender, reader, worker, heads, closer)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            try:
                # gather, not a suppress(CancelledError) per task: that would also
                # swallow a cancellation of this task arriving meanwhile (shutdown),
                # and the dial loop above it would go on for ever.
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(PeerError("link closed"))
                self.fed.queued_bytes -= self.queued_bytes
                self.fed.inbox_bytes -= self.inbox_bytes
                self.queued_bytes = self.inbox_bytes = 0
                self.closed.set()
                try:
                    async with asyncio.timeout(5):
                        # The reason goes in the close frame (a close frame holds
                        # 123 bytes of it), for a peer that still reads.
                        await self.ws.close(message=self.close_reason.encode()[:120])
                except Exception:
                    # A peer that does not read would hold the close (and what is
                    # buffered for it) for ever.
                    _abort(self.ws)

    async def _sender(self) -> None:
        while True:
            data = await self.queue.get()
            try:
                async with asyncio.timeout(self.fed.send_timeout):
                    await self._send_raw(data)
            except TimeoutError:
                self.close(
                    f"the peer took no message for {self.fed.send_timeout:.0f}s",
                    level=logging.WARNING,
                )
                return
            self.queued_bytes -= len(data)
            self.fed.queued_bytes -= len(data)
            self.sent_some.set()

    async def _reader(self) -> None:
        while True:
            data = await self._receive()
            if not self.bucket.take():
                self.fed.penalize(self, 5, "message rate over the limit")
                continue
            try:
                msg = decode_message(data)
            except SkyfedError as e:
                self.fed.penalize(self, -_CUTOFF_SCORE, f"malformed message: {e}")
                return
            if self.fed.answer(self, msg):
                continue
            if msg["t"] == "heads":  # unsolicited (answers were taken above)
                self._offer_heads(msg["items"], len(data) * _HEADS_DECODED)
                continue
            size = len(data)
            if (
                self.inbox_bytes + size > _INBOX_BYTES
                or self.fed.inbox_bytes + size > INBOX_BYTES_TOTAL
            ):
                self.close(
                    "peer sends faster than we can process (inbox bytes)", level=logging.WARNING
                )
                return
            msg["_size"] = size
            try:
                self.inbox.put_nowait(msg)
            except asyncio.QueueFull:
                self.close("peer sends faster than we can process")
                return
            self.inbox_bytes += size
            self.fed.inbox_bytes += size

    def _handled(self, msg: dict[str, Any]) -> None:
        size = msg.pop("_size", 0)
        if not self.closed.is_set():
            self.inbox_bytes -= size
            self.fed.inbox_bytes -= size

    def _offer_heads(self, items: list[Any], size: int) -> None:
        """Queue an unsolicited heads message to be considered, dropping what this
        link has shown before; one is considered at a time, a few may wait, and a
        peer that sends them faster loses a point per message dropped."""
        fresh = []
        for item in items[:_MAX_ITEMS]:
            mark = _heads_mark(item)
            if mark is None or mark in self.heads_seen:
                continue
            self.heads_seen[mark] = None
            fresh.append(item)
        while len(self.heads_seen) > _HEADS_SEEN:
            self.heads_seen.popitem(last=False)
        if not fresh:
            return
        fed = self.fed
        if (
            self.heads_backlog.full()
            or self.inbox_bytes + size > _INBOX_BYTES
            or fed.inbox_bytes + size > INBOX_BYTES_TOTAL
        ):
            for item in fresh:  # not considered: may be shown again
                mark = _heads_mark(item)
                self.heads_seen.pop(mark, None)  # type: ignore[arg-type]
            fed.penalize(self, 1, "unsolicited heads faster than they can be considered")
            return
        self.heads_backlog.put_nowait((fresh, size))
        self.inbox_bytes += size
        fed.inbox_bytes += size

    async def _heads_worker(self) -> None:
        while True:
            items, size = await self.heads_backlog.get()
            try:
                await self.fed._consider_heads(self, items, unsolicited=True)
            finally:
                self._handled({"_size": size})
                # Only what is waiting or being considered is skipped as a repeat: a
                # later round may show the same head again, and must be heard.
                for item in items:
                    self.heads_seen.pop(_heads_mark(item), None)  # type: ignore[arg-type]

    async def _worker(self) -> None:
        while True:
            msg = await self.inbox.get()
            did = _commit_repo(msg)
            if did is None:
                try:
                    await self.fed.dispatch(self, msg)
                finally:
                    self._handled(msg)
                continue
            # Commits for different repos are checked and stored concurrently, so the
            # writer can group-commit them; per repo they keep their arrival order
            # (the task takes the repo's order lock before anything else, and
            # asyncio locks are first come, first served).
            await self.slots.acquire()
            self.fed._spawn(self._ordered(did, msg))

    async def _ordered(self, did: str, msg: dict[str, Any]) -> None:
        try:
            async with self.fed.order_lock(did):
                await self.fed.dispatch(self, msg)
        finally:
            self._handled(msg)
            self.slots.release()


class Federation:
    """A node's peers and everything that travels between them."""

    def __init__(self, node: Node):
        self.node = node
        cfg = node.config
        self.static_peers = [u.rstrip("/") for u in cfg.peers]
        self.share_peers = cfg.share_peers
        self.max_peers = cfg.max_peers
        self.reconcile_interval = cfg.reconcile_interval
        self.config_rate = float(cfg.peer_message_rate)
        self.cooloff = cfg.peer_cooloff
        self.send_buffer = cfg.peer_send_buffer
        self.buffer_total = cfg.peer_buffer_total
        self.send_timeout = cfg.peer_send_timeout
        self.max_inbound = cfg.max_inbound_peers
        #: Bytes queued to all links, and received from all links and not yet handled.
        self.queued_bytes = 0
        self.inbox_bytes = 0
        self.inbound = 0
        self.repo_answers = asyncio.Semaphore(REPO_ANSWERS_AT_ONCE)
        # Remote parties cause these lines (links, forgeries): a bounded number per
        # interval, then one summary.
        self.log_limit = LogLimiter(log)
        self.links: dict[str, PeerLink] = {}
        self.known_urls: OrderedDict[str, None] = OrderedDict((u, None) for u in self.static_peers)
        self._blocked: dict[str, float] = {}  # node DID or URL -> until (monotonic)
        # Three passes over the announcers: a lost GRAFT (or its answer) is asked again
        # within about a second instead of waiting for the next reconciliation.
        self.plumtree = Plumtree(rng=random.Random(secrets.randbits(64)), graft_passes=3)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._resyncing: set[str] = set()
        # Commit events that arrived before the one they follow, by repo and since.
        self._pending: OrderedDict[str, dict[str, CommitEvent]] = OrderedDict()
        self._wanted: dict[str, str] = {}
        self._item_cache: (
            tuple[tuple[int, int], NegentropyStorageVector, dict[bytes, dict[str, Any]]] | None
        ) = None
        self._label_fetches: set[str] = set()
        self._sids = itertools.count(1)
        self._neg_replies: dict[tuple[str, int], asyncio.Queue[bytes]] = {}
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._order_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._ident_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._refreshed: OrderedDict[str, float] = OrderedDict()
        self.bytes_in = 0
        self.bytes_out = 0
        self.rejected = 0
        self.ingested = 0
        #: Requests sent again and negentropy sessions restarted after a wait ran out.
        self.retries = 0

    # -- life cycle --------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        self._spawn(self._ticker())
        for url in self.static_peers:
            self.dial(url)

    async def stop(self) -> None:
        for link in list(self.links.values()):
            link.close("shutting down")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- connections -------------------------------------------------------------
    def dial(self, url: str) -> None:
        if url in self._dialers or url == self.node.url:
            return
        self._dialers[url] = self._spawn(self._dial_loop(url))

    async def _dial_loop(self, url: str) -> None:
        """Keep a link to ``url`` up: capped, jittered exponential backoff that
        resets after a healthy period."""
        delay = 0.2
        try:
            while True:
                if not self.is_blocked(url):
                    started = time.monotonic()
                    try:
                        await self._connect(url)
                    except (
                        OSError,
                        aiohttp.ClientError,
                        PeerError,
                        SkyfedError,
                        TimeoutError,
                    ) as e:
                        log.debug("dial %s failed: %s", url, e)
                    if time.monotonic() - started > 30:
                        delay = 0.2
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)
        finally:
            self._dialers.pop(url, None)

    async def _connect(self, url: str) -> None:
        session = self.node.http_session()
        async with session.ws_connect(
            url + "/xrpc/skyfed.peer.connect", max_msg_size=MAX_FRAME, heartbeat=30
        ) as ws:
            await self._serve_link(PeerLink(self, ws, outbound=True, url=url))

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        if self.inbound >= self.max_inbound:
            # Every link may hold up to its send and inbox bounds: their number is
            # what makes those bounds a bound on the node.
            return web.json_response(
                {"error": "TooManyLinks", "message": "this node takes no more peer links"},
                status=503,
            )
        self.inbound += 1
        try:
            ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30)
            await ws.prepare(request)
            link = PeerLink(self, ws, outbound=False, url=None)
            with contextlib.suppress(PeerError, SkyfedError, OSError, TimeoutError):
                await self._serve_link(link)
            return ws
        finally:
            self.inbound -= 1

    def shed_send_queues(self) -> None:
        """All links together queue more than ``peer_buffer_total``: close the ones
        furthest behind until the rest fit (their queues go when their links end)."""
        total = sum(lk.queued_bytes for lk in self.links.values() if not lk.closed.is_set())
        for link in sorted(self.links.values(), key=lambda lk: lk.queued_bytes, reverse=True):
            if total <= self.buffer_total:
                return
            if link.closed.is_set() or not link.queued_bytes:
                continue
            total -= link.queued_bytes
            link.close(
                f"all peers' send queues over {self.buffer_total} bytes; furthest behind",
                level=logging.WARNING,
            )

    async def _serve_link(self, link: PeerLink) -> None:
        try:
            await asyncio.wait_for(link.handshake(), 10)
        except BaseException:
            # Also on cancellation (shutdown mid-handshake): an unclosed WebSocket
            # leaks its connection.
            with contextlib.suppress(Exception):
                await asyncio.shield(link.ws.close())
            raise
        existing = self.links.get(link.peer_did)
        if existing is not None:
            # Both sides dialled: keep the link the lower node key dialled.
            keep_new = link.outbound == (self.node.node_did < link.peer_did)
            if not keep_new:
                await link.ws.close()
                return
            existing.close("replaced by a newer link")
        self.links[link.peer_did] = link
        self.plumtree.add_peer(link.peer_did)
        self.log_limit.log(
            "link",
            logging.INFO,
            "peer linked",
            peer=link.peer_did,
            url=link.url or link.peer_url,
            direction="out" if link.outbound else "in",
            links=len(self.links),
        )
        if link.peer_url and link.share:
            self.known_urls[link.peer_url] = None
        if self.share_peers:
            urls = [u for u in self.known_urls if u != link.peer_url][:32]
            link.send("peers", urls=urls)
        rounds = self._spawn(self._reconcile_link(link)) if link.outbound else None
        try:
            await link.run()
        finally:
            if rounds is not None:
                # Not awaited here: that could swallow this task's own cancellation
                # (shutdown). It is one of self._tasks, which stop() awaits.
                rounds.cancel()
            if self.links.get(link.peer_did) is link:
                del self.links[link.peer_did]
                self.plumtree.remove_peer(link.peer_did)
                self.log_limit.log(
                    "link",
                    logging.INFO,
                    "peer unlinked",
                    peer=link.peer_did,
                    url=link.url or link.peer_url,
                    reason=link.close_reason,
                    links=len(self.links),
                )

    def block(self, who: str, seconds: float = 1e9) -> None:
        """Cut off a peer (node DID or URL) and refuse it until unblocked/expired."""
        self._blocked[who.rstrip("/")] = time.monotonic() + seconds
        for link in list(self.links.values()):
            if who in (link.peer_did, link.peer_url, link.url):
                link.close("blocked")

    def unblock(self, who: str) -> None:
        self._blocked.pop(who.rstrip("/"), None)

    def is_blocked(self, who: str) -> bool:
        until = self._blocked.get(who)
        if until is None:
            return False
        if time.monotonic() > until:
            del self._blocked[who]
            return False
        return True

    def penalize(self, link: PeerLink, points: int, why: str) -> None:
        link.score -= points
        self.log_limit.log(
            "refused",
            logging.WARNING,
            "peer refused",
            peer=link.peer_did,
            why=why[:200],
            score=link.score,
        )
        if link.score <= _CUTOFF_SCORE:
            self.log_limit.log(
                "cutoff",
                logging.WARNING,
                "peer cut off",
                peer=link.peer_did,
                url=link.url,
                seconds=self.cooloff,
            )
            # Only what is verified: the node key, and a URL we dialled ourselves
            # (the URL in a hello is a claim anyone could make about another node).
            self.block(link.peer_did, self.cooloff)
            if link.url:
                self.block(link.url, self.cooloff)
            link.close(f"cut off for {self.cooloff:.0f}s: {why}")

    # -- gossip ------------------------------------------------------------------
    def _run_actions(self, actions: Iterable[Any]) -> None:
        for action in actions:
            if isinstance(action, SendPush):
                link = self.links.get(action.peer)
                if link is not None:
                    kind, data = _unpack_payload(action.payload)
                    link.send("push", id=action.msg_id, kind=kind, data=data, round=action.round)
            elif isinstance(action, SendIHave):
                link = self.links.get(action.peer)
                if link is not None:
                    link.send("ihave", ids=list(action.msg_ids), round=action.round)
            elif isinstance(action, SendGraft):
                link = self.links.get(action.peer)
                if link is not None:
                    link.send("graft", ids=list(action.msg_ids))
            elif isinstance(action, SendPrune):
                link = self.links.get(action.peer)
                if link is not None:
                    link.send("prune")
            elif isinstance(action, Deliver):
                pass  # delivery happens where the payload is ingested
        self._wake.set()

    async def _ticker(self) -> None:
        while True:
            deadline = self.plumtree.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._run_actions(self.plumtree.tick(time.monotonic()))

    def publish_commit(self, event: CommitEvent) -> None:
        """A local commit is durable: spread it."""
        if self.plumtree.has_seen(event.commit.to_bytes()) or self._uncarried(event.repo):
            return
        payload = _pack_payload("commit", event.to_bytes())
        self._run_actions(
            self.plumtree.broadcast(event.commit.to_bytes(), payload, time.monotonic())
        )

    def publish_identity(
        self, did: str, ops: Sequence[bytes], head: CID, handle: bytes | None = None
    ) -> None:
        """Spread ``did``'s log, with the confirmation of its handle if one is held
        (protocol/handles.py: other nodes need it to resolve the handle)."""
        if self.plumtree.has_seen(head.to_bytes()):
            return
        body: dict[str, Any] = {"did": did, "ops": list(ops)}
        if handle is not None:
            body["handle"] = handle
        payload = _pack_payload("identity", encode(body))
        self._run_actions(self.plumtree.broadcast(head.to_bytes(), payload, time.monotonic()))

    def publish_label(self, label: Label) -> None:
        """A label this node made is durable: spread it."""
        msg_id = label.label_cid.to_bytes()
        if self.plumtree.has_seen(msg_id):
            return
        payload = _pack_payload("label", label.to_bytes())
        self._run_actions(self.plumtree.broadcast(msg_id, payload, time.monotonic()))

    def _uncarried(self, did: str) -> bool:
        """Node policy (node/moderation.py): this node does not carry ``did``'s repo
        to or from peers."""
        return self.node.moderation.refuses("carry", did)

    def forget_items(self) -> None:
        """Rebuild the reconciliation set next time (what this node carries changed)."""
        self._item_cache = None

    def order_lock(self, did: str) -> asyncio.Lock:
        lock = self._order_locks.get(did)
        if lock is None:
            lock = asyncio.Lock()
            self._order_locks[did] = lock
        return lock

    def answer(self, link: PeerLink, msg: dict[str, Any]) -> bool:
        """Handle replies inline (they resolve a waiting request); True if handled."""
        t = msg["t"]
        if t in ("repo", "ident", "labels", "error") or (t == "heads" and msg["rid"] is not None):
            fut = link.pending.get(msg["rid"]) if msg["rid"] is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return True
        if t == "neg":
            box = self._neg_replies.get((link.peer_did, msg["sid"]))
            if box is not None and -msg["sid"] in link.neg_sessions:
                if box.empty():  # one answer per message sent; more is the peer's noise
                    box.put_nowait(msg["msg"])  # an answer in our own session
                return True
            if msg["sid"] in link.abandoned:
                return True  # a late answer in a session we gave up on
        return False

    async def dispatch(self, link: PeerLink, msg: dict[str, Any]) -> None:
        t = msg["t"]
        now = time.monotonic()
        if t == "push":
            if self.plumtree.has_seen(msg["id"]):
                self._run_actions(
                    self.plumtree.on_push(
                        link.peer_did, msg["id"], b"", msg["round"], now, valid=True
                    )
                )
                return
            valid = await self._ingest_push(link, msg["id"], msg["kind"], msg["data"])
            if valid is None:
                return  # not marked seen: a later copy or reconciliation can bring it
            if self.links.get(link.peer_did) is not link:
                return  # the link went away meanwhile: the tree no longer has it
            payload = _pack_payload(msg["kind"], msg["data"])
            self._run_actions(
                self.plumtree.on_push(
                    link.peer_did, msg["id"], payload, msg["round"], time.monotonic(), valid=valid
                )
            )
        elif t == "ihave":
            self._run_actions(self.plumtree.on_ihave(link.peer_did, msg["ids"], msg["round"], now))
        elif t == "graft":
            self._run_actions(self.plumtree.on_graft(link.peer_did, msg["ids"], now))
        elif t == "prune":
            self._run_actions(self.plumtree.on_prune(link.peer_did))
        elif t == "neg":
            await self._on_neg(link, msg["sid"], msg["msg"])
        elif t == "whatis":
            link.send("heads", rid=msg["rid"], items=await self._describe(msg["ids"]))
        elif t == "heads":
            link._offer_heads(msg["items"], 0)
        elif t == "getrepo":
            if link.repo_requests >= _REPO_REQUESTS_PER_LINK:
                link.send("error", rid=msg["rid"], error="Busy", message="too many getrepo")
                return
            link.repo_requests += 1
            self._spawn(self._serve_repo(link, msg["rid"], msg["did"], msg["since"]))
        elif t == "getident":
            ops = await self.node.storage.identity_ops(msg["did"])
            handle = await self.node.storage.handle_confirmation(msg["did"])
            link.send("ident", rid=msg["rid"], did=msg["did"], ops=ops, handle=handle)
        elif t == "getlabels":
            self._spawn(self._serve_labels(link, msg["rid"], msg["src"]))
        elif t == "peers":
            for url in msg["urls"][:32]:
                url = url.rstrip("/")
                if url.startswith(("http://", "https://")) and url != self.node.url:
                    self.known_urls[url] = None
            while len(self.known_urls) > 256:
                self.known_urls.popitem(last=False)
            self._fill_peers()
        else:
            self.penalize(link, -_CUTOFF_SCORE, f"unexpected {t} after handshake")

    def _fill_peers(self) -> None:
        if not self.share_peers:
            return
        connected = {lk.peer_url for lk in self.links.values()} | set(self._dialers)
        for url in list(self.known_urls):
            if len(self.links) + len(self._dialers) >= self.max_peers:
                break
            if url not in connected and not self.is_blocked(url):
                self.dial(url)

    # -- ingest ------------------------------------------------------------------
    async def _ingest_push(
        self, link: PeerLink, msg_id: bytes, kind: str, data: bytes
    ) -> bool | None:
        """True: valid (forward it); False: forged or malformed (the sender is at
        fault); None: cannot be judged now (no identity to check it against), or a
        refused commit event: its id names only the commit block, and anyone can wrap
        an honest commit in a forged event (rewritten since, ops or blocks), so the id
        must not be marked bad, or the real event under it would never get in."""
        try:
            if kind == "commit":
                event = CommitEvent.from_bytes(data)
                # The id names the payload: a forger must not be able to poison a
                # real commit's id by sending junk under it.
                if event.commit.to_bytes() != msg_id:
                    raise DecodeError("push id is not the commit's CID")
                if self._uncarried(event.repo):
                    return None  # node policy: neither stored nor passed on from here
                try:
                    await self.ingest_event(event, link)
                except InvalidSignature:
                    # Signed by a key we do not know yet? The identity op naming it
                    # may have taken another path: ask this peer, then judge again.
                    if not await self._refresh_identity(event.repo, link):
                        raise
                    await self.ingest_event(event, link)
            elif kind == "label":
                label = Label.from_bytes(data)
                if label.label_cid.to_bytes() != msg_id:
                    raise DecodeError("push id is not the label's CID")
                if not self._timely(label):
                    # Dated too far ahead: not stored or passed on, not the sender's
                    # fault; not marked seen either, so it can come back once it is due.
                    return None
                await self.ingest_labels([label], link)
            else:
                did, ops, handle = _decode_identity(data)
                if msg_id not in {cid_for_msgpack(op).to_bytes() for op in ops}:
                    raise DecodeError("push id is not one of the identity ops")
                if not await self._check_named_op(did, ops, CID.from_bytes(msg_id)):
                    return False  # a refused fork: not passed on, not the sender's fault
                await self.ingest_identity(did, ops, handle=handle)
        except SkyfedError as e:
            self.rejected += 1
            self.penalize(link, _FORGERY_PENALTY, f"rejected {kind}: {e}")
            return None if kind == "commit" else False
        except (PeerError, TimeoutError) as e:
            self.log_limit.log(
                "unjudged",
                logging.INFO,
                "cannot judge a push yet",
                peer=link.peer_did,
                push=kind,
                error=str(e)[:200],
            )
            return None
        return True

    async def _check_named_op(self, did: str, ops: list[bytes], named: CID) -> bool:
        """The op a push is named for must take part in the log (head, history or a
        losing fork): one that the log rejects (a forged rotation, an op by a key that
        is not a rotation key of its prev) makes the push a forgery. False: the op is
        a fork the first-seen rule refuses (``admit_ops``)."""
        held = await self.node.storage.identity_ops(did)
        if self.node.portability.refuses(did, held, ops, named):
            return False
        resolved = resolve_log(did, [*held, *ops])
        for rejected in resolved.rejected:
            if rejected.cid == named:
                if rejected.reason.startswith("not signed"):
                    raise InvalidSignature(f"identity op {named}: {rejected.reason}")
                raise IdentityError(f"identity op {named}: {rejected.reason}")
        return True

    async def _refresh_identity(self, did: str, link: PeerLink) -> bool:
        """Fetch ``did``'s log from ``link``; True if it changed the signing key.

        At most once per DID every few seconds, and briefly: a peer that sends badly
        signed commits must not make us wait on it, or ask it again and again."""
        now = time.monotonic()
        last = self._refreshed.get(did)
        if last is not None and now - last < _REFRESH_EVERY:
            return False
        self._refreshed[did] = now
        while len(self._refreshed) > _PENDING_REPOS:
            self._refreshed.popitem(last=False)
        before = await self.node.storage.identity(did)
        try:
            reply = await asyncio.wait_for(link.request("getident", did=did), _REFRESH_TIMEOUT)
        except (PeerError, TimeoutError):
            return False
        if reply["t"] != "ident" or not reply["ops"]:
            return False
        await self.ingest_identity(did, reply["ops"], handle=reply["handle"])
        after = await self.node.storage.identity(did)
        return after is not None and (before is None or before[1] != after[1])

    async def _signing_key(self, did: str, link: PeerLink | None) -> str:
        """The DID's current signing key (did:key), fetching its identity log from
        ``link`` if unknown. Cached: every ingested commit needs it, and a storage
        read per commit was a thread round trip."""
        cached = self._keys.get(did)
        if cached is not None:
            self._keys.move_to_end(did)
            return cached
        key = await self._load_signing_key(did, link)
        self._keys[did] = key
        while len(self._keys) > 100_000:
            self._keys.popitem(last=False)
        return key

    async def _load_signing_key(self, did: str, link: PeerLink | None) -> str:
        ident = await self.node.storage.identity(did)
        if ident is None and link is not None:
            reply = await link.request("getident", did=did)
            if reply["t"] == "ident" and reply["ops"]:
                await self.ingest_identity(did, reply["ops"], handle=reply["handle"])
            ident = await self.node.storage.identity(did)
        if ident is None:
            raise PeerError(f"no identity known for {did}")
        return ident[1]

    def _timely(self, label: Label) -> bool:
        """Whether ``label.cts`` is at most ``MAX_CTS_AHEAD`` ahead of our clock."""
        try:
            check_cts(label, iso_now(self.node.wall_clock()))
        except InvalidLabel as e:
            log.info("dropped a label of %s: %s", label.src, e)
            return False
        return True

    async def ingest_labels(self, labels: Sequence[Label], link: PeerLink | None) -> int:
        """Check each label's signature by a signing key its labeler's log has named
        (a label outlives a rotation or a move; the log is fetched from ``link`` if
        unknown) and store those that verify. Returns how many were new; if any did
        not verify, raises InvalidSignature after storing the rest. A label dated
        more than ``MAX_CTS_AHEAD`` ahead of our clock is dropped, not stored (as a
        commit with a future rev is; the peer that passed it on may be honest)."""
        labels = [label for label in labels if self._timely(label)]
        keys: dict[str, list[VerifyKey]] = {}
        for label in labels:
            if label.src not in keys:
                await self._signing_key(label.src, link)  # fetches the log if unknown
                named = chain_signing_keys(
                    label.src, await self.node.storage.identity_ops(label.src)
                )
                keys[label.src] = [verify_key(k) for k in reversed(named)]  # newest first

        def check() -> tuple[list[LabelRow], int]:
            # Thousands of ed25519 verifies are too long for the event loop.
            rows: list[LabelRow] = []
            for label in labels:
                if any(_label_signed_by(label, key) for key in keys[label.src]):
                    rows.append(label_row(label))
            return rows, len(labels) - len(rows)

        rows, bad = await asyncio.to_thread(check)
        added = await self.node.storage.put_labels(rows) if rows else 0
        self.ingested += added
        if bad:
            raise InvalidSignature(f"{bad} of {len(labels)} labels not signed by their labeler")
        return added

    async def ingest_event(self, event: CommitEvent, link: PeerLink | None) -> Verdict:
        """Judge and store a commit event from a peer."""
        did = event.repo
        key = await self._signing_key(did, link)
        async with self.node.repos.lock(did):
            held = await self.node.storage.head_state(did)
            judged = judge_event(
                event, signing_key=key, held=held, now_micros=int(self.node.wall_clock() * 1e6)
            )
            verdict = judged.verdict
            if judged.evidence is not None and held is not None:
                await self._record_equivocation(
                    did,
                    (event.commit, event.block_map()[event.commit]),
                    held,
                    judged.evidence,
                    new_wins=verdict is Verdict.SWITCH,
                )
            applied = False
            if verdict is Verdict.APPLY:
                if held is None and not self._whole_tree(event, judged.commit):
                    verdict = Verdict.GAP
                else:
                    await self._store_event(event, judged.commit, held)
                    self.ingested += 1
                    applied = True
            elif verdict is Verdict.SWITCH:
                assert held is not None
                applied = await self._switch(did, event, judged.commit, held)
                if not applied:
                    verdict = Verdict.GAP
        if applied:
            await self._drain_pending(did)
        elif verdict is Verdict.GAP:
            # Gossip takes several paths, so the commit before this one may simply be
            # late: keep this one to apply when it lands, and fetch what is missing.
            self._hold(event)
            await self.node.storage.set_repo_status(did, "desynchronized", iso_now())
            if link is not None:
                self._spawn(self._catch_up(did, link))
        return verdict

    async def _record_equivocation(
        self,
        did: str,
        new: tuple[CID, bytes],
        held: HeadState,
        evidence: Evidence,
        *,
        new_wins: bool,
    ) -> None:
        """Keep both signed commits (the new one's CID and block, and the held head's):
        the evidence must re-verify anywhere (protocol.ingest.check_equivocation)."""
        held_block = (await self.node.storage.get_blocks([held.head])).get(held.head)
        if held_block is None:
            return
        theirs = (held.head, held_block)
        kept, dropped = (new, theirs) if new_wins else (theirs, new)
        await self.node.storage.record_equivocation(
            EquivocationRow(
                did=did,
                reason=evidence,
                kept=kept[0],
                kept_commit=kept[1],
                dropped=dropped[0],
                dropped_commit=dropped[1],
                seen_at=iso_now(),
            )
        )

    @staticmethod
    def _whole_tree(event: CommitEvent, commit: Commit) -> bool:
        """A repo held for the first time must come with every tree node and record
        (a first commit's event always does: its ops build the tree from empty)."""
        try:
            check_tree_complete(MemoryBlockStore(event.block_map()), commit)
        except InvalidCommit as e:
            log.info("first commit of %s lacks its tree: %s", event.repo, e)
            return False
        return True

    def _hold(self, event: CommitEvent) -> None:
        held = self._pending.setdefault(event.repo, {})
        self._pending.move_to_end(event.repo)
        if event.since is not None and len(held) < _PENDING_PER_REPO:
            held[event.since] = event
        wanted = self._wanted.get(event.repo)
        if wanted is None or event.rev > wanted:
            self._wanted[event.repo] = event.rev
        while len(self._pending) > _PENDING_REPOS:
            gone, _ = self._pending.popitem(last=False)
            self._wanted.pop(gone, None)

    async def _drain_pending(self, did: str) -> None:
        """Apply held events that now chain onto the head, in order."""
        while True:
            waiting = self._pending.get(did)
            held = await self.node.storage.head_state(did)
            if held is not None and self._wanted.get(did, "") <= held.rev:
                self._pending.pop(did, None)
                self._wanted.pop(did, None)
                return
            event = waiting.pop(held.rev, None) if waiting and held else None
            if event is None:
                return
            try:
                verdict = await self.ingest_event(event, None)
            except SkyfedError as e:
                # Held before it could be judged; whoever sent it is long gone, and the
                # peer whose commit let us judge it is not at fault.
                log.info("dropped a held commit of %s: %s", did, e)
                return
            if verdict is not Verdict.APPLY:
                return

    async def _catch_up(self, did: str, first: PeerLink) -> None:
        """Resync ``did`` until its head reaches the newest rev we have seen for it,
        asking the link that showed it first, then the others."""
        if did in self._resyncing:
            return
        self._resyncing.add(did)
        try:
            tried: set[str] = set()
            candidates = [first, *(lk for lk in self.links.values() if lk is not first)]
            for link in candidates:
                wanted = self._wanted.get(did)
                held = await self.node.storage.head_state(did)
                if wanted is None or (held is not None and held.rev >= wanted):
                    break
                if link.peer_did in tried or link.closed.is_set():
                    continue
                tried.add(link.peer_did)
                if await self.resync(did, link):
                    await self._drain_pending(did)
        finally:
            self._resyncing.discard(did)

    async def _store_event(
        self, event: CommitEvent, commit: Commit, held: HeadState | None
    ) -> None:
        body = event.to_value()
        changes = []
        for op in event.ops:
            collection, _, rkey = op.path.partition("/")
            changes.append((collection, rkey, op.cid))
        await self.node.storage.apply_commit(
            CommitBatch(
                did=event.repo,
                commit_cid=event.commit,
                rev=commit.rev,
                root=commit.data,
                prev_head=None if held is None else held.head,
                blocks=event.block_map(),
                record_changes=changes,
                frame_kind="#commit",
                frame=lambda seq: encode_frame("#commit", {**body, "seq": seq}),
                since=event.since,
                local=False,
            )
        )
        self.node.repos.forget(event.repo)

    async def _switch(self, did: str, event: CommitEvent, commit: Commit, held: HeadState) -> bool:
        """A winning sibling of our head: rebuild on the tree it was made from."""
        blocks = event.block_map()
        return await self._apply_snapshot(
            did, event.commit, commit, blocks, held, since=event.since
        )

    async def _apply_snapshot(
        self,
        did: str,
        commit_cid: CID,
        commit: Commit,
        blocks: dict[CID, bytes],
        held: HeadState | None,
        *,
        since: str | None,
        full: bool = False,
    ) -> bool:
        storage = self.node.storage

        def build() -> list[tuple[str, str, CID | None]] | None:
            source = _Overlay(blocks, storage)
            new = MST.load(source, commit.data)
            try:
                if held is None:
                    # Held for the first time: the whole tree and every record, or
                    # nothing (negentropy would never show what is missing).
                    check_tree_complete(source, commit)
                    old = MST.empty()
                else:
                    if full:
                        new.verify_structure()
                    old = MST.load(storage, held.data)
                diff = old.diff(new)
                # Against a held (complete) tree, the nodes diff does not load are
                # shared with it, so checking what changed checks the whole tree.
                for d in diff:
                    if d.new is not None and source.get_block(d.new) is None:
                        return None
            except MissingBlock:
                return None
            out = []
            for d in diff:
                collection, _, rkey = d.key.partition("/")
                out.append((collection, rkey, d.new))
            return out

        changes = await storage.run_in_reader(build)
        if changes is None:
            return False
        commit_block = blocks[commit_cid]
        await storage.apply_commit(
            CommitBatch(
                did=did,
                commit_cid=commit_cid,
                rev=commit.rev,
                root=commit.data,
                prev_head=None if held is None else held.head,
                blocks=blocks,
                record_changes=changes,
                frame_kind="#sync",
                frame=lambda seq: encode_frame(
                    "#sync",
                    {
                        "blocks": commit_block,
                        "did": did,
                        "rev": commit.rev,
                        "seq": seq,
                        "time": iso_now(),
                    },
                ),
                since=since,
                local=False,
            )
        )
        self.node.repos.forget(did)
        return True

    async def resync(self, did: str, link: PeerLink) -> bool:
        """Fetch ``did``'s repo from ``link`` (since our rev when we can) and apply it
        if its head beats ours. True if it moved our head."""
        if self._uncarried(did):
            return False
        try:
            for attempt_since in (True, False):
                held = await self.node.storage.head_state(did)
                since = held.rev if (held is not None and attempt_since) else None
                reply = await link.request("getrepo", did=did, since=since)
                if reply["t"] != "repo":
                    if since is None:
                        return False
                    continue
                roots, blocks = read_car(reply["car"])
                commit = Commit.from_bytes(blocks[roots[0]])
                if commit.did != did:
                    raise PeerError("snapshot is for another repo")
                key = await self._signing_key(did, link)
                if not _signed_by(commit, key) and await self._refresh_identity(did, link):
                    key = await self._signing_key(did, link)
                async with self.node.repos.lock(did):
                    held = await self.node.storage.head_state(did)
                    verdict = judge_snapshot(
                        commit,
                        roots[0],
                        signing_key=key,
                        held=held,
                        now_micros=int(self.node.wall_clock() * 1e6),
                    )
                    evidence = (
                        None if held is None else equivocation_between(commit, roots[0], held)
                    )
                    if (
                        evidence is not None
                        and held is not None
                        and verdict in (Verdict.SWITCH, Verdict.STALE)
                    ):
                        # A sibling met by reconciliation rather than by a push: the
                        # signed prev (or rev) proves it all the same.
                        await self._record_equivocation(
                            did,
                            (roots[0], blocks[roots[0]]),
                            held,
                            evidence,
                            new_wins=verdict is Verdict.SWITCH,
                        )
                    if verdict not in (Verdict.APPLY, Verdict.SWITCH):
                        return False
                    # The rev the snapshot's head was made on is unknown (its signed
                    # prev is in its block): stored as "".
                    ok = await self._apply_snapshot(
                        did, roots[0], commit, blocks, held, since="", full=since is None
                    )
                if ok:
                    self.ingested += 1
                    return True
        except (PeerError, SkyfedError, TimeoutError, KeyError, IndexError) as e:
            self.log_limit.log(
                "resync",
                logging.INFO,
                "resync failed",
                did=did,
                peer=link.peer_did,
                error=str(e)[:200],
            )
            if isinstance(e, SkyfedError):
                self.rejected += 1
                self.penalize(link, _FORGERY_PENALTY, f"bad snapshot: {e}")
        return False

    async def _serve_repo(self, link: PeerLink, rid: int, did: str, since: str | None) -> None:
        """Answer a getrepo: a few at a time on the node, each built only when the
        link has room to queue it, and refused when it would not fit in a frame."""
        try:
            async with self.repo_answers:
                await link.wait_for_room(MAX_FRAME)
                await self._answer_repo(link, rid, did, since)
        except PeerError:
            pass  # the link went away meanwhile
        finally:
            link.repo_requests -= 1

    async def _answer_repo(self, link: PeerLink, rid: int, did: str, since: str | None) -> None:
        storage = self.node.storage
        head = await storage.get_head(did)
        if head is None or self._uncarried(did):
            link.send("error", rid=rid, error="RepoNotFound", message=did)
            return
        old_root = None
        if since is not None:
            at = await storage.commit_at(did, since)
            if at is None:
                link.send("error", rid=rid, error="UnknownRev", message=since)
                return
            old_root = at[1]
        car = await self.node.export_car(head.head, head.root, old_root, limit=_REPO_ANSWER_BYTES)
        if car is None:
            link.send(
                "error", rid=rid, error="RepoTooLarge", message=f"over {_REPO_ANSWER_BYTES} bytes"
            )
            return
        link.send("repo", rid=rid, did=did, car=car)

    async def ingest_identity(
        self,
        did: str,
        ops: list[bytes],
        *,
        publish: bool = False,
        handle: bytes | None = None,
    ) -> bool:
        """Merge ops into ``did``'s log; store if the resolved head changed (and with
        ``publish``, gossip the new log before anything follows from it). ``handle``
        is a handle confirmation sent along: kept if it confirms what the log claims
        under this node's rule (node/handles.py), ignored otherwise."""
        lock = self._ident_locks.get(did)
        if lock is None:
            lock = self._ident_locks[did] = asyncio.Lock()
        async with lock:  # two merges of one log at once could drop each other's op
            changed = await self._ingest_identity(did, ops, publish=publish)
            if handle is not None:
                await self.node.take_handle_confirmation(did, handle)
            return changed

    async def _ingest_identity(self, did: str, ops: list[bytes], *, publish: bool) -> bool:
        existing = await self.node.storage.identity_ops(did)
        ops = self.node.portability.admit(did, existing, ops)  # first seen wins
        merged = list(dict.fromkeys([*existing, *ops]))
        resolved = resolve_log(did, merged)
        state = resolved.state
        known = await self.node.storage.identity(did)
        old_head = None
        if existing:
            old_head = resolve_log(did, existing).state.head
        if known is not None and old_head == state.head:
            return False
        # Keep the chain and a bounded sample of nullified ops (evidence), nothing else:
        # a flood of rejected or nullified ops must not grow storage until no op fits
        # (protocol §11.2). The chain goes last: its last op is the head.
        by_cid = {cid_for_msgpack(op): op for op in merged}
        ordered = [(cid, by_cid[cid]) for cid in resolved.evidence]
        ordered += [(cid, by_cid[cid]) for cid in resolved.chain]
        await self.node.storage.put_identity(
            did,
            ordered,
            None if state.tombstoned else state.handle,
            state.signing_key,
            state.endpoint,
            state.tombstoned,
            time=iso_now(),
        )
        self._keys.pop(did, None)  # a rotated key takes effect at once
        if publish:
            confirmation = await self.node.storage.handle_confirmation(did)
            self.publish_identity(did, [op for _, op in ordered], state.head, confirmation)
        # Peers should hear of the op before of the commit a new key may sign next.
        await self.node.portability.identity_changed(did, state)
        return True

    # -- reconciliation ----------------------------------------------------------
    async def _items(self) -> tuple[NegentropyStorageVector, dict[bytes, dict[str, Any]]]:
        """The negentropy set over every head held, built on a reader thread and
        reused until the firehose moves (any new head or identity bumps its seq)."""
        version = (self.node.firehose.last_seq, self.node.storage.label_version)
        if self._item_cache is not None and self._item_cache[0] == version:
            return self._item_cache[1], self._item_cache[2]

        def build(
            conn: sqlite3.Connection,
        ) -> tuple[NegentropyStorageVector, dict[bytes, dict[str, Any]]]:
            vec = NegentropyStorageVector()
            described: dict[bytes, dict[str, Any]] = {}
            for did, head_raw, rev in conn.execute("SELECT did, head, rev FROM repos"):
                if did in uncarried:
                    continue
                head = CID.from_bytes(head_raw)
                ts, item_id = repo_item(did, head, rev)
                vec.insert(ts, item_id)
                described[item_id] = {"kind": "repo", "did": did, "head": head_raw, "rev": rev}
            for did, head_raw in conn.execute("SELECT did, head FROM identities"):
                ts, item_id = identity_item(did, CID.from_bytes(head_raw))
                vec.insert(ts, item_id)
                described[item_id] = {"kind": "identity", "did": did, "head": head_raw}
            for src, digest in conn.execute("SELECT src, digest FROM label_sets"):
                ts, item_id = labels_item(src, digest)
                vec.insert(ts, item_id)
                described[item_id] = {"kind": "labels", "src": src, "digest": digest}
            vec.seal()
            return vec, described

        uncarried = {t.did for t in self.node.moderation.active() if t.covers("carry")}
        vec, described = await self.node.storage.read(build)
        self._item_cache = (version, vec, described)
        return vec, described

    async def _reconcile_link(self, link: PeerLink) -> None:
        """Reconcile with a peer we dialled: on connect, every ``reconcile_interval``,
        and soon after something sent on the link went unanswered. Each link has its
        own rounds, so a slow or lossy peer holds up no other link's."""
        while True:
            link.reconcile_soon.clear()
            await self._reconcile_quietly(link)
            try:
                await asyncio.wait_for(link.reconcile_soon.wait(), self.reconcile_interval)
            except TimeoutError:
                continue
            # Not at once: a link that loses everything must not be reconciled in a loop.
            await asyncio.sleep(min(link.rtt.timeout, self.reconcile_interval))

    async def _reconcile_quietly(self, link: PeerLink) -> None:
        started = time.monotonic()
        try:
            offered, asked = await self.reconcile(link)
        except (PeerError, SkyfedError, TimeoutError, ConnectionError, KeyError) as e:
            # One peer's failure must not end reconciliation with every other peer.
            self.log_limit.log(
                "reconcile",
                logging.INFO,
                "reconcile failed",
                peer=link.peer_did,
                error=str(e)[:200],
            )
            return
        # A round that found nothing to do is the common case: only at debug level.
        log.log(
            logging.INFO if offered or asked else logging.DEBUG,
            "reconciled",
            extra=fields(
                peer=link.peer_did,
                offered=offered,  # items the peer lacked: their heads sent to it
                asked=asked,  # items we lacked: asked for and considered
                seconds=round(time.monotonic() - started, 3),
            ),
        )

    async def reconcile(self, link: PeerLink) -> tuple[int, int]:
        """Run negentropy with ``link`` as the initiator; fetch what we lack and tell
        the peer what it lacks. Returns (have, need) counts."""
        vec, described = await self._items()
        deadline = time.monotonic() + _REQUEST_TIMEOUT
        while True:
            found = await self._negotiate(link, vec, deadline)
            if found is not None:
                have, need = found
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no negentropy session completed in {_REQUEST_TIMEOUT:.0f}s")
            link.lost()
        have = list(dict.fromkeys(have))
        need = list(dict.fromkeys(need))
        items = [described[i] for i in have if i in described]
        for i in range(0, len(items), _MAX_ITEMS):  # the decoder's bound per message
            link.send("heads", rid=None, items=items[i : i + _MAX_ITEMS])
        for i in range(0, len(need), _MAX_ITEMS):
            reply = await link.request("whatis", ids=need[i : i + _MAX_ITEMS])
            if reply["t"] != "heads":
                raise PeerError(f"whatis answered with {reply['t']}")
            await self._consider_heads(link, reply["items"])
        return len(have), len(need)

    async def _negotiate(
        self, link: PeerLink, vec: NegentropyStorageVector, deadline: float
    ) -> tuple[list[bytes], list[bytes]] | None:
        """One negentropy session as the initiator: (have, need), or None if an answer
        did not come within the link's wait. The caller then starts a new session
        rather than repeat a message: the server would answer both copies, and the two
        answers could not be told apart."""
        neg = Negentropy(vec, _NEG_FRAME_LIMIT)
        sid = next(self._sids)
        reply_box: asyncio.Queue[bytes] = asyncio.Queue(1)
        link.neg_sessions[-sid] = neg  # marks the session as ours
        self._neg_replies[(link.peer_did, sid)] = reply_box
        have: list[bytes] = []
        need: list[bytes] = []
        out: bytes | None = neg.initiate(now=time.monotonic())
        try:
            while out is not None:
                link.send("neg", sid=sid, msg=out)
                sent = time.monotonic()
                wait = min(link.rtt.timeout, deadline - sent)
                try:
                    msg = await asyncio.wait_for(reply_box.get(), max(wait, 0.0))
                except TimeoutError:
                    link.abandoned[sid] = None
                    while len(link.abandoned) > _ABANDONED_SESSIONS:
                        link.abandoned.popitem(last=False)
                    return None
                link.rtt.sample(time.monotonic() - sent)
                # Bounded in rounds and time (MAX_ROUNDS, MAX_SESSION_SECONDS): past
                # them the step has no next message and what was found stands.
                step = neg.reconcile_client(msg, now=time.monotonic())
                have.extend(step.have_ids)
                need.extend(step.need_ids)
                out = step.next_message
                if neg.stopped_early:
                    log.info("negentropy with %s stopped at its bound", link.peer_did)
        finally:
            link.neg_sessions.pop(-sid, None)
            self._neg_replies.pop((link.peer_did, sid), None)
        return have, need

    async def _on_neg(self, link: PeerLink, sid: int, msg: bytes) -> None:
        if sid <= 0:
            self.penalize(link, -_CUTOFF_SCORE, "negentropy session ids are positive")
            return
        # Only the dialling side initiates on a link, so every neg that is not an
        # answer in one of our sessions (see answer()) opens or continues the peer's.
        neg = link.neg_sessions.get(sid)
        if neg is None:
            if len(link.neg_sessions) >= 4:
                link.neg_sessions.pop(next(iter(link.neg_sessions)))
            vec, _ = await self._items()
            neg = Negentropy(vec, _NEG_FRAME_LIMIT)
            link.neg_sessions[sid] = neg
        try:
            # Refuses a session past MAX_ROUNDS answers or MAX_SESSION_SECONDS.
            answer = neg.reconcile(msg, now=time.monotonic())
        except SkyfedError as e:
            link.neg_sessions.pop(sid, None)
            self.penalize(link, 10, f"bad negentropy message: {e}")
            return
        link.send("neg", sid=sid, msg=answer)

    async def _describe(self, ids: list[bytes]) -> list[dict[str, Any]]:
        _, described = await self._items()
        return [described[i] for i in ids if i in described]

    async def _consider_heads(
        self, link: PeerLink, items: list[Any], *, unsolicited: bool = False
    ) -> None:
        """The peer holds these heads: fetch any that beat ours. A peer that shows
        heads unasked and then answers that it has no log for an identity it named
        loses a point for each."""
        for item in items:
            if link.closed.is_set():
                return
            if not isinstance(item, dict):
                continue
            if item.get("kind") == "labels":
                src, digest = item.get("src"), item.get("digest")
                if isinstance(src, str) and isinstance(digest, bytes):
                    await self._consider_labels(link, src, digest)
                continue
            kind, did = item.get("kind"), item.get("did")
            if not isinstance(did, str):
                continue
            try:
                head = CID.from_bytes(item.get("head"))  # type: ignore[arg-type]
            except SkyfedError:
                continue
            if kind == "identity":
                known = await self.node.storage.identity(did)
                ops = await self.node.storage.identity_ops(did)
                current = resolve_log(did, ops).state.head if ops else None
                if known is None or current != head:
                    backed = None  # unknown, unless the peer answers
                    with contextlib.suppress(PeerError, SkyfedError, TimeoutError):
                        reply = await link.request("getident", did=did)
                        backed = reply["t"] == "ident" and bool(reply["ops"])
                        if reply["t"] == "ident":
                            await self.ingest_identity(did, reply["ops"], handle=reply["handle"])
                    if unsolicited and backed is False:
                        self.penalize(link, 1, "unsolicited heads it cannot back")
            elif kind == "repo" and isinstance(item.get("rev"), str):
                if self._uncarried(did):
                    continue
                held = await self.node.storage.head_state(did)
                behind = held is None or head_wins(item["rev"], head, held.rev, held.head)
                if behind and did not in self._resyncing:
                    self._resyncing.add(did)
                    try:
                        if await self.resync(did, link):
                            await self._drain_pending(did)
                    finally:
                        self._resyncing.discard(did)

    async def _consider_labels(self, link: PeerLink, src: str, digest: bytes) -> None:
        """The peer's label set from ``src`` differs from ours: fetch it and keep the
        labels we lack. Label sets only grow (a retraction is one more label), so
        both sides fetching from each other converge on the union."""
        if src in self._label_fetches or await self.node.storage.label_digest(src) == digest:
            return
        self._label_fetches.add(src)
        try:
            reply = await link.request("getlabels", src=src)
            if reply["t"] != "labels":
                return
            held = await self.node.storage.label_cids(src)
            fresh: list[Label] = []
            for data in reply["labels"]:
                if cid_for_msgpack(data).to_bytes() in held:
                    continue
                label = Label.from_bytes(data)
                if label.src != src:
                    raise DecodeError(f"getlabels for {src} answered with a label from {label.src}")
                fresh.append(label)
            await self.ingest_labels(fresh, link)
        except SkyfedError as e:
            self.rejected += 1
            self.penalize(link, _FORGERY_PENALTY, f"bad labels from {src}: {e}")
        except (PeerError, TimeoutError) as e:
            self.log_limit.log(
                "labels",
                logging.INFO,
                "fetching labels failed",
                labeler=src,
                peer=link.peer_did,
                error=str(e)[:200],
            )
        finally:
            self._label_fetches.discard(src)

    async def _serve_labels(self, link: PeerLink, rid: int, src: str) -> None:
        found = await self.node.storage.labels_for(src, MAX_LABELS_PER_ANSWER)
        out: list[bytes] = []
        size = 0
        for data in found:
            size += len(data) + 3  # msgpack bin header
            if size > _LABELS_ANSWER_BYTES:
                break
            out.append(data)
        link.send("labels", rid=rid, src=src, labels=out)


def _heads_mark(item: Any) -> tuple[Any, ...] | None:
    """What makes a heads item the same item again (None: not an item at all)."""
    if not isinstance(item, dict):
        return None
    mark = tuple(item.get(k) for k in ("kind", "did", "src", "head", "digest", "rev"))
    return mark if all(isinstance(v, str | bytes | None) for v in mark) else None


def _abort(ws: Any) -> None:
    """Drop a WebSocket's connection and whatever is buffered for it, server or client."""
    request = getattr(ws, "_req", None)
    transport = getattr(request, "transport", None)
    if transport is None:
        response = getattr(ws, "_response", None)
        connection = getattr(response, "connection", None)
        transport = getattr(connection, "transport", None)
    if transport is not None:
        transport.abort()


def _label_signed_by(label: Label, key: VerifyKey) -> bool:
    try:
        label.verify(key)
    except InvalidSignature:
        return False
    return True


def _signed_by(commit: Commit, did_key: str) -> bool:
    try:
        commit.verify(verify_key(did_key))
    except SkyfedError:
        return False
    return True


def label_row(label: Label) -> LabelRow:
    """What storage keeps of a (verified) label."""
    data = label.to_bytes()
    cid = cid_for_msgpack(data)
    return (cid, data, label.src, label.uri, label.val, label.neg, label.cts, label.exp)


class _Overlay:
    def __init__(self, blocks: dict[CID, bytes], base: Any):
        self.blocks = blocks
        self.base = base

    def get_block(self, cid: CID) -> bytes | None:
        block = self.blocks.get(cid)
        return block if block is not None else self.base.get_block(cid)


_PAYLOAD_TAGS = {"commit": b"c", "identity": b"i", "label": b"l"}
_PAYLOAD_KINDS = {tag: kind for kind, tag in _PAYLOAD_TAGS.items()}


def _pack_payload(kind: str, data: bytes) -> bytes:
    return _PAYLOAD_TAGS[kind] + data


def _unpack_payload(payload: bytes) -> tuple[str, bytes]:
    return _PAYLOAD_KINDS[payload[:1]], payload[1:]


def _decode_identity(data: bytes) -> tuple[str, list[bytes], bytes | None]:
    """An identity push: ``{did, ops, handle?}`` (``handle``: the confirmation of
    the log's handle, protocol/handles.py)."""
    from protocol.encoding import decode
    from protocol.errors import DecodeError

    value = decode(data)
    if (
        not isinstance(value, dict)
        or set(value) - {"handle"} != {"did", "ops"}
        or not isinstance(value["did"], str)
        or not isinstance(value["ops"], list)
        or not all(isinstance(o, bytes) for o in value["ops"])
        or len(value["ops"]) > 1000
        or not isinstance(value.get("handle", b""), bytes)
    ):
        raise DecodeError("identity push must be {did, ops: [bytes], handle?: bytes}")
    handle = value.get("handle")
    return value["did"], value["ops"], handle  # type: ignore[return-value]


def _commit_repo(msg: dict[str, Any]) -> str | None:
    """The repo a pushed commit is for, or None (not a commit push, or malformed:
    the ordinary path will judge it)."""
    if msg["t"] != "push" or msg["kind"] != "commit":
        return None
    try:
        return CommitEvent.from_bytes(msg["data"]).repo
    except SkyfedError:
        return None
