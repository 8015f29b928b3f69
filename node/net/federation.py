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

Admission (docs/security.md, "Outbound connections and admission"): a URL learned
from the network is normalized to scheme, host and port (node/net/netpolicy.py) and
dialled only if the dial policy permits its address, checked on the address actually
connected to; only addresses this node has dialled and shaken hands with are passed
on; learned dials are rate-limited in total and back off per address, and the table
of learned addresses is bounded. Inbound links are capped in total and per address
and accepted at a limited rate; a cut-off sticks to the remote address (an IPv6
/64) as well as the node key; and each link may bring only so many identities this
node has never seen per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import secrets
import sqlite3
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

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
    Judgement,
    Verdict,
    check_tree_complete,
    decide_event,
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
    CAP_BLOBS,
    MAX_FRAME,
    MAX_LABELS_PER_ANSWER,
    PROTOCOL_VERSION,
    auth_payload,
    decode_message,
    encode_message,
)
from protocol.plumtree import Deliver, Plumtree, SendGraft, SendIHave, SendPrune, SendPush

from ..logs import LogLimiter
from ..server.ratelimit import RateLimited, RequestLimiter, client_key
from ..store.repos import iso_now
from ..store.sqlite import CommitBatch, EquivocationRow, HeadMoved, LabelRow
from ..workers import WorkerPool
from .netpolicy import AddressError, DialPolicy, PeerAddress, normalize_url
from .rtt import RttEstimator
from .verify import EventVerifier

if TYPE_CHECKING:
    from ..accounts.moderation import Moderation
    from ..accounts.portability import Portability
    from ..config import NodeConfig, NodeSecrets
    from ..server.firehose import Firehose
    from ..store.repos import RepoManager
    from ..store.sqlite import SqliteStorage
    from .blobfetch import BlobFetcher


class FederationHost(Protocol):
    """What federation asks of the rest of the node, and nothing more: the services
    it shares (storage, repos, firehose, identity and carry policy) and a few facts
    and actions. The node (node/wiring.py) is one; a test can pass a small fake."""

    @property
    def config(self) -> NodeConfig: ...
    @property
    def secrets(self) -> NodeSecrets: ...
    @property
    def storage(self) -> SqliteStorage: ...
    @property
    def repos(self) -> RepoManager: ...
    @property
    def firehose(self) -> Firehose: ...
    @property
    def workers(self) -> WorkerPool | None: ...
    @property
    def portability(self) -> Portability: ...
    @property
    def moderation(self) -> Moderation: ...
    @property
    def node_did(self) -> str: ...
    @property
    def url(self) -> str: ...
    def wall_clock(self) -> float: ...
    def http_session(self) -> aiohttp.ClientSession: ...
    async def export_car(
        self, head: CID, root: CID, since_root: CID | None, *, limit: int | None = None
    ) -> bytes | None: ...
    async def take_handle_confirmation(self, did: str, data: bytes) -> bool: ...


__all__ = ["Federation", "FederationHost", "PeerLink", "label_row"]

log = logging.getLogger("skyfed.federation")

_SEND_QUEUE = 4096
_MAX_PENDING = 64
#: Bytes received from one link and not yet handled (waiting in its inbox or being
#: checked), and from all links together: past either, the link is closed.
_INBOX_BYTES = 16 * 1024 * 1024
INBOX_BYTES_TOTAL = 48 * 1024 * 1024
#: ``getrepo`` answers being built at once on this node (each up to a frame), and
#: requests one link may have waiting for one; more are answered ``Busy``. A request
#: waits for room in its own link's send queue (one of the link's at a time) before
#: it takes a slot, and is answered ``Busy`` at once when none is free: a peer that
#: does not read holds no slot.
REPO_ANSWERS_AT_ONCE = 2
_REPO_REQUESTS_PER_LINK = 4
#: getblob requests one link may have waiting for their answers.
BLOB_REQUESTS_PER_LINK = 4
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
#: How long a request (or a negentropy session) may take in all before it is given up.
#: Within it, a request whose answer does not come within the link's round-trip based
#: wait (node/net/rtt.py) is sent again, so one lost message costs about a second, not this.
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
#: Repos whose last ingested head is remembered, to judge their next event without a
#: database read (a hint: a verdict made on it is checked, see ingest_event).
_HEAD_HINTS = 10_000
_PENDING_REPOS = 4096
#: A commit whose signature fails makes us re-fetch its DID's log from the sender at
#: most this often (seconds), waiting at most _REFRESH_TIMEOUT for it.
_REFRESH_EVERY = 5.0
_REFRESH_TIMEOUT = 3.0
#: Bytes of label encodings in one ``labels`` answer: the rest of a frame is headroom.
_LABELS_ANSWER_BYTES = MAX_FRAME - 512 * 1024
#: A learned address whose dial failed waits this long (seconds) before the next try,
#: doubling with each failure up to _LEARNED_BACKOFF_CAP; after a link to it ends,
#: _LEARNED_REDIAL.
_LEARNED_BACKOFF = 30.0
_LEARNED_BACKOFF_CAP = 3600.0
_LEARNED_REDIAL = 30.0
#: Addresses from one ``peers`` message that are looked at (the decoder allows 64).
_URLS_PER_MESSAGE = 32
#: Remembered cut-off addresses (each expires after the cool-off; the oldest go first).
_MAX_BLOCKED_ADDRESSES = 100_000


class PeerError(Exception):
    """The link must close (a protocol breach or a handshake failure)."""


class _Bucket:
    """A token bucket: ``rate`` per second, ``burst`` at once (a peer's messages,
    learned dials, accepted links, a link's new identities)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def available(self) -> bool:
        """Is there a token to take (without taking it)?"""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens >= 1

    def take(self) -> bool:
        if not self.available():
            return False
        self.tokens -= 1
        return True


class _Learned:
    """A learned address's dial record: failures in a row, and when it may be tried."""

    __slots__ = ("failures", "next_try")

    def __init__(self) -> None:
        self.failures = 0
        self.next_try = 0.0


def _in_force(blocks: dict[str, float], key: str) -> bool:
    """Is the block on ``key`` (a monotonic deadline in ``blocks``) still in force? An
    expired one is forgotten."""
    until = blocks.get(key)
    if until is None:
        return False
    if time.monotonic() > until:
        del blocks[key]
        return False
    return True


def _normalized_or_none(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        return normalize_url(url)
    except AddressError:
        return None


class _NoContext(IdentityError):
    """A pushed identity op cannot be judged from the ops sent with it (no genesis,
    a missing link in its chain): the sender's fault, not the op's."""


class PeerLink:
    """One authenticated WebSocket link to another node. ``addr`` is the remote IP
    address, ``url`` the address we dialled (None for an inbound link)."""

    def __init__(
        self, fed: Federation, ws: Any, *, outbound: bool, url: str | None, addr: str = ""
    ):
        self.fed = fed
        self.ws = ws
        self.outbound = outbound
        self.url = url
        self.addr = addr
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
        #: Identities this node has never seen that the link may still bring.
        self.new_identities = _Bucket(fed.new_identity_rate, fed.new_identity_burst)
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
        #: What the peer said it can do (its hello's caps), and its getblob requests
        #: being answered.
        self.caps: frozenset[str] = frozenset()
        self.blob_requests = 0
        #: Held while one of this link's getrepo answers waits for room and is built:
        #: two of its answers never pass the room check together.
        self.repo_answering = asyncio.Lock()
        self.heads_backlog: asyncio.Queue[tuple[list[Any], int]] = asyncio.Queue(_HEADS_BACKLOG)
        self.heads_seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
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
                caps=["plumtree", "negentropy-v1", CAP_BLOBS],
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
        if fed.address_blocked(self.addr):
            raise PeerError("the peer's address is cut off")
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
        # A claim about itself: kept only as a normalized address, never as given.
        self.peer_url = _normalized_or_none(hello["url"])
        if self.peer_url is None and hello["url"] is not None:
            fed.addresses_refused += 1
        self.share = hello["share"]
        self.caps = frozenset(hello["caps"])

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
            self.fed.pushes_in_flight += 1
            self.fed._spawn(self._ordered(did, msg))

    async def _ordered(self, did: str, msg: dict[str, Any]) -> None:
        try:
            async with self.fed.order_lock(did):
                await self.fed.dispatch(self, msg)
        finally:
            self.fed.pushes_in_flight -= 1
            self._handled(msg)
            self.slots.release()


class Federation:
    """A node's peers and everything that travels between them."""

    def __init__(self, node: FederationHost):
        self.node = node
        cfg = node.config
        #: The operator's own peers: dialled whatever their address class, for ever.
        self.static_peers = list(dict.fromkeys(normalize_url(u) for u in cfg.peers))
        #: Those and every address dialled by a local call (not learned): links to them
        #: are not held to the new-identity budget.
        self.operator_peers = set(self.static_peers)
        self.share_peers = cfg.share_peers
        self.max_peers = cfg.max_peers
        self.reconcile_interval = cfg.reconcile_interval
        self.config_rate = float(cfg.peer_message_rate)
        self.cooloff = cfg.peer_cooloff
        self.send_buffer = cfg.peer_send_buffer
        self.buffer_total = cfg.peer_buffer_total
        self.send_timeout = cfg.peer_send_timeout
        #: Bytes queued to all links, and received from all links and not yet handled.
        self.queued_bytes = 0
        self.inbox_bytes = 0
        self.inbound = 0
        self.repo_answers = asyncio.Semaphore(REPO_ANSWERS_AT_ONCE)
        # Remote parties cause these lines (links, forgeries): a bounded number per
        # interval, then one summary.
        self.log_limit = LogLimiter(log)
        self.links: dict[str, PeerLink] = {}
        #: Answers getblob and fetches blobs (node/net/blobfetch.py); None: no blobs.
        self.blobs: BlobFetcher | None = None
        #: What learned addresses may be dialled (node/net/netpolicy.py).
        self.policy = DialPolicy.from_config(cfg)
        self.shared_networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in cfg.shared_networks
        )
        #: Addresses learned from the network (peers messages, hellos): dial candidates,
        #: never passed on. Bounded by ``max_learned_peers``, oldest forgotten first.
        self.learned: OrderedDict[str, _Learned] = OrderedDict()
        self.max_learned = cfg.max_learned_peers
        #: Addresses this node dialled and completed a handshake with: the peer's DID,
        #: and whether it agreed to be shared. The only addresses passed on.
        self.verified: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        #: Node keys met on a link we dialled to one of the operator's own peers.
        self._trusted: OrderedDict[str, None] = OrderedDict()
        self._blocked: dict[str, float] = {}  # node DID or URL -> until (monotonic)
        self._blocked_addrs: OrderedDict[str, float] = OrderedDict()  # client_key -> until
        self._dial_budget = _Bucket(cfg.peer_dial_rate, float(cfg.peer_dial_burst))
        self._accept_budget = _Bucket(cfg.peer_accept_rate, float(cfg.peer_accept_burst))
        self._accept_per_address = RequestLimiter(
            cfg.peer_address_accept_rate, cfg.peer_address_accept_burst, max_keys=10_000
        )
        self.max_inbound = cfg.max_inbound_links
        self.max_per_address = cfg.max_links_per_address
        self.new_identity_burst = float(cfg.peer_new_identities)
        self.new_identity_rate = cfg.peer_new_identities / cfg.peer_new_identities_window
        #: Inbound links held (handshaking or up), and links per address key.
        self.inbound = 0
        self._per_address: Counter[str] = Counter()
        self._guarded: aiohttp.ClientSession | None = None
        #: Refusals, for tests and operators: learned addresses refused (not a peer
        #: address, or the dial policy), learned dials made, inbound links refused,
        #: and identities refused for a link's new-identity budget.
        self.addresses_refused = 0
        self.learned_dials = 0
        self.links_refused = 0
        self.identities_refused = 0
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
        #: The head each repo got from its last ingested event (a hint for the next).
        self._heads: OrderedDict[str, HeadState] = OrderedDict()
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
        #: Commit pushes being checked and stored, all links together.
        self.pushes_in_flight = 0
        #: Verifies commit events, in worker processes when there is a backlog.
        self.verifier = EventVerifier(node.workers, lambda: self.pushes_in_flight, self._spawn)
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
        self._spawn(self._refill())
        for url in self.static_peers:
            self.dial(url)

    async def stop(self) -> None:
        for link in list(self.links.values()):
            link.close("shutting down")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._guarded is not None:
            await self._guarded.close()
            self._guarded = None

    def _own_url(self) -> str | None:
        return _normalized_or_none(self.node.url)

    # -- connections -------------------------------------------------------------
    def dial(self, url: str, *, learned: bool = False) -> None:
        """Keep a link to ``url``. Without ``learned`` it is the operator's choice (the
        config, ``--peer``, a local call): dialled whatever its address class and
        retried for ever with backoff. A ``learned`` address (from the network; see
        :meth:`learn`) is tried once, under the dial policy. Raises AddressError if
        ``url`` is not a peer address (scheme, host, port)."""
        url = normalize_url(url)
        if not learned:
            self.operator_peers.add(url)
        if url in self._dialers or url == self._own_url():
            return
        loop = self._dial_learned(url) if learned else self._dial_loop(url)
        self._dialers[url] = self._spawn(loop)

    async def _dial_loop(self, url: str) -> None:
        """Keep a link to ``url`` up: capped, jittered exponential backoff that
        resets after a healthy period."""
        delay = 0.2
        try:
            while True:
                # Not while the node at this address is linked anyway (it dialled us).
                linked = url in self.verified and self.verified[url][0] in self.links
                if not linked and not self.is_blocked(url):
                    started = time.monotonic()
                    try:
                        await self._connect(url, learned=False)
                    except (
                        OSError,
                        aiohttp.ClientError,
                        PeerError,
                        SkyfedError,
                        TimeoutError,
                    ) as e:
                        log.debug("dial %s failed: %s", url, e)
                        self.verified.pop(url, None)
                    if time.monotonic() - started > 30:
                        delay = 0.2
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)
        finally:
            self._dialers.pop(url, None)

    async def _dial_learned(self, url: str) -> None:
        """One try at a learned address; a failure makes it wait, doubling each time."""
        self.learned_dials += 1
        ok = False
        try:
            ok = await self._connect(url, learned=True)
        except (OSError, aiohttp.ClientError, PeerError, SkyfedError, TimeoutError) as e:
            log.debug("dial of learned %s failed: %s", url, e)
        finally:
            self._dialers.pop(url, None)
            entry = self.learned.get(url)
            if entry is not None:
                if ok:
                    entry.failures = 0
                    entry.next_try = time.monotonic() + _LEARNED_REDIAL
                else:
                    self.verified.pop(url, None)
                    entry.failures += 1
                    wait = _LEARNED_BACKOFF * 2 ** min(entry.failures - 1, 16)
                    wait = min(wait, _LEARNED_BACKOFF_CAP) * random.uniform(0.5, 1.5)
                    entry.next_try = time.monotonic() + wait
        self._fill_peers()

    def _session(self, learned: bool) -> aiohttp.ClientSession:
        """The operator's peers go through the node's session; learned ones through a
        session whose every connect passes the dial policy (after DNS)."""
        if not learned:
            return self.node.http_session()
        if self._guarded is None:
            self._guarded = self.policy.session()
        return self._guarded

    async def _connect(self, url: str, *, learned: bool) -> bool:
        """Dial ``url`` and serve the link until it ends; True if the handshake
        completed."""
        session = self._session(learned)
        async with session.ws_connect(
            url + "/xrpc/skyfed.peer.connect", max_msg_size=MAX_FRAME, heartbeat=30
        ) as ws:
            peer = ws.get_extra_info("peername")
            addr = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            link = PeerLink(self, ws, outbound=True, url=url, addr=addr)
            refusal = self._address_refusal(addr, static=not learned)
            if refusal is not None:
                raise PeerError(refusal)
            key = self._count(addr)
            try:
                return await self._serve_link(link)
            finally:
                self._uncount(key)

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        addr = request.remote or ""
        refusal = self._admission_refusal(addr)
        if refusal is not None:
            self.links_refused += 1
            self.log_limit.log(
                "refused-inbound",
                logging.INFO,
                "inbound peer link refused",
                addr=addr,
                why=refusal[:200],
            )
            status = 403 if "cut off" in refusal else 429
            return web.Response(status=status, text=refusal)
        self.inbound += 1
        key = self._count(addr)
        try:
            ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30)
            await ws.prepare(request)
            link = PeerLink(self, ws, outbound=False, url=None, addr=addr)
            with contextlib.suppress(PeerError, SkyfedError, OSError, TimeoutError):
                await self._serve_link(link)
            return ws
        finally:
            self.inbound -= 1
            self._uncount(key)

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

    # -- admission ---------------------------------------------------------------
    def _shared(self, addr: str) -> bool:
        """Is ``addr`` in a network where many nodes share one address?"""
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self.shared_networks)

    def _count(self, addr: str) -> str | None:
        if not addr or self._shared(addr):
            return None
        key = client_key(addr)
        self._per_address[key] += 1
        return key

    def _uncount(self, key: str | None) -> None:
        if key is not None:
            self._per_address[key] -= 1
            if self._per_address[key] <= 0:
                del self._per_address[key]

    def _address_refusal(self, addr: str, *, static: bool = False) -> str | None:
        """Why a link with ``addr`` may not be held now, or None. ``static``: one of
        the operator's own peers, not held to the per-address cap."""
        if self.address_blocked(addr):
            return "address cut off"
        if static or not addr or self._shared(addr):
            return None
        if self._per_address[client_key(addr)] >= self.max_per_address:
            return f"already {self.max_per_address} links with this address"
        return None

    def _admission_refusal(self, addr: str) -> str | None:
        """Why an inbound link from ``addr`` is refused now (before any work), or None.
        Cut-offs and caps first: a link they refuse takes no token from the accept
        budgets, so a cut-off address cannot spend the node-wide one."""
        refusal = self._address_refusal(addr)
        if refusal is not None:
            return refusal
        if self.inbound >= self.max_inbound:
            return f"already {self.max_inbound} inbound links"
        if not self._shared(addr):
            try:
                self._accept_per_address.check(client_key(addr or "unknown"))
            except RateLimited:
                return "links from this address accepted too fast"
        if not self._accept_budget.take():
            return "inbound links accepted too fast"
        return None

    def address_blocked(self, addr: str) -> bool:
        """Is ``addr`` (an IP address; IPv6 by its /64) cut off?"""
        if not addr or self._shared(addr):
            return False
        return _in_force(self._blocked_addrs, client_key(addr))

    def block_address(self, addr: str, seconds: float) -> None:
        """Refuse links with ``addr`` (its /64 for IPv6) for ``seconds``; not for an
        address in ``shared_networks``."""
        if not addr or self._shared(addr):
            return
        key = client_key(addr)
        self._blocked_addrs[key] = time.monotonic() + seconds
        self._blocked_addrs.move_to_end(key)
        while len(self._blocked_addrs) > _MAX_BLOCKED_ADDRESSES:
            self._blocked_addrs.popitem(last=False)

    def may_bring_identity(self, link: PeerLink) -> bool:
        """May ``link`` bring one more identity this node has never seen? Takes one
        from the link's budget (the operator's own peers have none to spend)."""
        if link.peer_did in self._trusted:
            return True
        if link.new_identities.take():
            return True
        self.identities_refused += 1
        return False

    def _may_ask_identity(self, link: PeerLink) -> bool:
        """Like :meth:`may_bring_identity`, but only looks (before asking for one)."""
        if link.peer_did in self._trusted or link.new_identities.available():
            return True
        self.identities_refused += 1
        return False

    async def _serve_link(self, link: PeerLink) -> bool:
        try:
            await asyncio.wait_for(link.handshake(), 10)
        except BaseException:
            # Also on cancellation (shutdown mid-handshake): an unclosed WebSocket
            # leaks its connection.
            with contextlib.suppress(Exception):
                await asyncio.shield(link.ws.close())
            raise
        if link.url is not None:
            # An address we dialled answered with a signed handshake: it is that
            # node's, and may be passed on if the node agrees.
            self.verified[link.url] = (link.peer_did, link.share)
            self.verified.move_to_end(link.url)
            while len(self.verified) > self.max_learned:
                self.verified.popitem(last=False)
            if link.url in self.operator_peers:
                self._trusted[link.peer_did] = None
                while len(self._trusted) > 4 * len(self.operator_peers):
                    self._trusted.popitem(last=False)
        existing = self.links.get(link.peer_did)
        if existing is not None:
            # Both sides dialled: keep the link the lower node key dialled.
            keep_new = link.outbound == (self.node.node_did < link.peer_did)
            if not keep_new:
                await link.ws.close()
                return True
            existing.close("replaced by a newer link")
            # Forget it now, not when its task ends: the new link takes its place in
            # the tree at once (adding a peer twice is refused).
            del self.links[link.peer_did]
            self.plumtree.remove_peer(link.peer_did)
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
        if link.peer_url and link.share and link.peer_url != link.url:
            self.learn(link.peer_url)
        if self.share_peers:
            link.send("peers", urls=self.shareable(exclude=link))
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
        return True

    def shareable(self, exclude: PeerLink | None = None) -> list[str]:
        """Addresses to pass on: dialled by this node and answered by a handshake, not
        cut off, not the receiving peer's own."""
        skip = {exclude.url, exclude.peer_url} if exclude is not None else set()
        out = []
        for url, (did, share) in reversed(self.verified.items()):  # newest first
            if not share or url in skip or self.is_blocked(url) or self.is_blocked(did):
                continue
            out.append(url)
            if len(out) >= _URLS_PER_MESSAGE:
                break
        return out

    def learn(self, url: str) -> bool:
        """Take note of a peer address heard from the network: kept (normalized) as a
        dial candidate if it is a peer address the dial policy permits. True if kept."""
        try:
            addr = PeerAddress.from_str(url)
        except AddressError:
            self.addresses_refused += 1
            return False
        norm = addr.to_str()
        if norm == self._own_url() or norm in self.operator_peers:
            return False
        if not self.policy.permits_url(addr):
            self.addresses_refused += 1
            return False
        if norm not in self.learned:  # heard again: not moved up, not retried sooner
            self.learned[norm] = _Learned()
            while len(self.learned) > self.max_learned:
                self.learned.popitem(last=False)
        return True

    def _fill_peers(self) -> None:
        """Dial learned addresses while there is room, within the dial budget."""
        if not self.share_peers:
            return
        now = time.monotonic()
        dialled = {lk.url for lk in self.links.values()} | set(self._dialers)
        for url, entry in list(self.learned.items()):
            if len(self.links) + len(self._dialers) >= self.max_peers:
                break
            if url in dialled or entry.next_try > now or self.is_blocked(url):
                continue
            if url in self.verified and self.verified[url][0] in self.links:
                continue  # that node is linked already (it dialled us)
            if not self._dial_budget.take():
                break
            entry.next_try = now + _LEARNED_REDIAL
            self.dial(url, learned=True)

    async def _refill(self) -> None:
        """Look for learned addresses to dial now and then, not only when told some."""
        while True:
            await asyncio.sleep(max(self.reconcile_interval, 1.0))
            self._fill_peers()

    def block(self, who: str, seconds: float = 1e9) -> None:
        """Cut off a peer (node DID or URL) and refuse it until unblocked/expired."""
        self._blocked[who.rstrip("/")] = time.monotonic() + seconds
        for link in list(self.links.values()):
            if who in (link.peer_did, link.peer_url, link.url):
                link.close("blocked")

    def unblock(self, who: str) -> None:
        self._blocked.pop(who.rstrip("/"), None)

    def verified_node_keys(self, host: str) -> frozenset[str]:
        """Node keys that completed the signed handshake at an address this node
        dialled whose host is ``host``: the node serving that name, for the handle
        rule (node/accounts/handles.py). Read from the storage writer thread, so on a copy."""
        try:
            entries = list(self.verified.items())
        except RuntimeError:  # pragma: no cover - changed while copied: none this time
            return frozenset()
        return frozenset(did for url, (did, _) in entries if urlsplit(url).hostname == host)

    def address_of(self, node_did: str) -> str | None:
        """Where the node ``node_did`` serves HTTP, as this node's links know it: an
        address this node dialled that answered the signed handshake with that key
        (newest first), else the address a link authenticated by that key gave for
        itself. None when no link vouches for one, or the node is cut off."""
        if self.is_blocked(node_did):
            return None
        for url, (did, _) in reversed(self.verified.items()):
            if did == node_did and not self.is_blocked(url):
                return url
        link = self.links.get(node_did)
        if link is not None and link.peer_url and not self.is_blocked(link.peer_url):
            return link.peer_url
        return None

    def is_blocked(self, who: str) -> bool:
        return _in_force(self._blocked, who)

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
            # Only what is verified: the node key, a URL we dialled ourselves (the
            # URL in a hello is a claim anyone could make about another node), and
            # the address the link came from, which a cheat cannot mint for free
            # like a key.
            self.block(link.peer_did, self.cooloff)
            if link.url:
                self.block(link.url, self.cooloff)
            self.block_address(link.addr, self.cooloff)
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
        """Node policy (node/accounts/moderation.py): this node does not carry ``did``'s repo
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
        if t in ("repo", "ident", "labels", "blob", "error") or (
            t == "heads" and msg["rid"] is not None
        ):
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
        elif t == "getblob":
            if self.blobs is None or link.blob_requests >= BLOB_REQUESTS_PER_LINK:
                busy = self.blobs is not None
                link.send(
                    "error",
                    rid=msg["rid"],
                    error="Busy" if busy else "BlobNotFound",
                    message="too many getblob" if busy else "this node serves no blobs",
                )
                return
            link.blob_requests += 1
            self._spawn(self._serve_blob(link, msg))
        elif t == "peers":
            if self.share_peers:
                for url in msg["urls"][:_URLS_PER_MESSAGE]:
                    self.learn(url)
                self._fill_peers()
        else:
            self.penalize(link, -_CUTOFF_SCORE, f"unexpected {t} after handshake")

    # -- ingest ------------------------------------------------------------------
    async def _ingest_push(
        self, link: PeerLink, msg_id: bytes, kind: str, data: bytes
    ) -> bool | None:
        """True: valid (forward it); False: forged or malformed (the sender is at
        fault); None: cannot be judged now (no identity to check it against), or a
        refused commit event: its id names only the commit block, and anyone can wrap
        an honest commit in a forged event (rewritten since, ops or blocks), so the id
        must not be marked bad, or the real event under it would never get in. An
        identity push is the same: its id names one op, and the ops around it are the
        relay's to change (drop the genesis, pad or garble them), so it is marked bad
        only when the named op itself is: malformed, badly signed, or a refused fork;
        a push that fails for lack of context (no genesis, a missing link in the
        chain, junk around the op) costs the sender a penalty and is not marked."""
        named_fault = False
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
                    await self.ingest_event(event, link, data)
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
                if not await self.node.storage.identity_ops(did) and not self._may_ask_identity(
                    link
                ):
                    return None  # the link's new-identity budget is spent: not even checked
                if msg_id not in {cid_for_msgpack(op).to_bytes() for op in ops}:
                    raise DecodeError("push id is not one of the identity ops")
                try:
                    if not await self._check_named_op(did, ops, CID.from_bytes(msg_id)):
                        return False  # a refused fork: not passed on, not the sender's fault
                except _NoContext:
                    raise
                except SkyfedError:
                    named_fault = True  # the named op itself is bad
                    raise
                await self.ingest_identity(did, ops, handle=handle, via=link)
        except SkyfedError as e:
            self.rejected += 1
            self.penalize(link, _FORGERY_PENALTY, f"rejected {kind}: {e}")
            if kind == "identity":
                return False if named_fault else None
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
        try:
            resolved = resolve_log(did, [*held, *ops])
        except IdentityError as e:  # no genesis, or too many ops: the rest of the push
            raise _NoContext(f"identity op {named}: {e.message}") from e
        for rejected in resolved.rejected:
            if rejected.cid == named:
                if rejected.reason.startswith(("does not chain", "the log is full")):
                    raise _NoContext(f"identity op {named}: {rejected.reason}")
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
        await self.ingest_identity(did, reply["ops"], handle=reply["handle"], via=link)
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
                await self.ingest_identity(did, reply["ops"], handle=reply["handle"], via=link)
            ident = await self.node.storage.identity(did)
        if ident is None:
            raise PeerError(f"no identity known for {did}")
        return ident[1]

    def _timely(self, label: Label) -> bool:
        """Whether ``label.cts`` is at most ``MAX_CTS_AHEAD`` ahead of our clock."""
        try:
            check_cts(label, iso_now(self.node.wall_clock()))
        except InvalidLabel as e:
            # Not marked seen, so the same label can come again at once: limited.
            self.log_limit.log(
                "label-ahead", logging.INFO, "dropped a label", labeler=label.src, why=str(e)[:200]
            )
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

    async def ingest_event(
        self, event: CommitEvent, link: PeerLink | None, data: bytes | None = None
    ) -> Verdict:
        """Judge and store a commit event from a peer. Given ``data``, the bytes
        ``event`` was parsed from, its signature and proof may be checked in a worker
        process (node/net/verify.py) before the repo is locked."""
        did = event.repo
        key = await self._signing_key(did, link)
        verified = None if data is None else await self.verifier.verify(event, data, key)
        async with self.node.repos.lock(did):
            judged, held, stored = await self._judge_locked(event, link, key, verified)
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
                if not stored and held is None and not self._whole_tree(event, judged.commit):
                    verdict = Verdict.GAP
                else:
                    if not stored:
                        await self._store_event(event, judged.commit, held)
                    self.ingested += 1
                    applied = True
                    self._heads[did] = HeadState(
                        event.commit,
                        judged.commit.rev,
                        judged.commit.data,
                        event.since,
                        judged.commit.prev,
                    )
                    while len(self._heads) > _HEAD_HINTS:
                        self._heads.popitem(last=False)
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

    async def _judge_locked(
        self, event: CommitEvent, link: PeerLink | None, key: str, verified: Commit | None
    ) -> tuple[Judgement, HeadState | None, bool]:
        """Judge ``event`` (``verified`` with ``key``, if not None) against the held
        head; the caller holds the repo's lock. Returns the judgement, the head it was
        made on, and True if the event is already stored.

        The head this node stored from the repo's last ingested event saves a
        database read, but only as a hint: an APPLY on it is stored at once, by a
        write that checks the head is still the hint's (HeadMoved, if not); any other
        verdict, a refusal, or a moved head is judged again on the stored head."""
        did = event.repo
        hint = self._heads.pop(did, None)
        while True:
            held = hint or await self.node.storage.head_state(did)
            now_micros = int(self.node.wall_clock() * 1e6)
            current = await self._signing_key(did, link)
            try:
                if verified is not None and current == key:
                    judged = decide_event(event, verified, held=held, now_micros=now_micros)
                else:  # verified with a key no longer the DID's: again, with its key
                    judged = judge_event(
                        event, signing_key=current, held=held, now_micros=now_micros
                    )
            except SkyfedError:
                if hint is None:
                    raise
                hint = None
                continue
            if hint is None:
                return judged, held, False
            if judged.verdict is Verdict.APPLY:
                try:
                    await self._store_event(event, judged.commit, hint)
                except HeadMoved:
                    pass
                else:
                    return judged, held, True
            hint = None

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

    def _whole_tree(self, event: CommitEvent, commit: Commit) -> bool:
        """A repo held for the first time must come with every tree node and record
        (a first commit's event always does: its ops build the tree from empty)."""
        try:
            check_tree_complete(MemoryBlockStore(event.block_map()), commit)
        except InvalidCommit as e:
            self.log_limit.log(
                "no-tree",
                logging.INFO,
                "first commit lacks its tree",
                did=event.repo,
                why=str(e)[:200],
            )
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
        if did not in self._pending and did not in self._wanted:
            return  # nothing held or wanted (the loop below would find as much)
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
                self.log_limit.log(
                    "held", logging.INFO, "dropped a held commit", did=did, why=str(e)[:200]
                )
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
        link has room to queue it, and refused when it would not fit in a frame.

        One answer per link at a time; its wait for room comes first and holds no
        node-wide slot: a link that asks and never reads waits alone (until
        ``peer_send_timeout`` closes it), not in front of every other peer. With
        room and no free slot: ``Busy`` at once."""
        try:
            async with link.repo_answering:
                await link.wait_for_room(MAX_FRAME)
                if self.repo_answers.locked():
                    link.send("error", rid=rid, error="Busy", message="repo answers busy")
                    return
                async with self.repo_answers:
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
        via: PeerLink | None = None,
    ) -> bool:
        """Merge ops into ``did``'s log; store if the resolved head changed (and with
        ``publish``, gossip the new log before anything follows from it). ``handle``
        is a handle confirmation sent along: kept if it confirms what the log claims
        under this node's rule (node/accounts/handles.py), ignored otherwise. A DID this node
        has never seen, brought by link ``via``, takes one from that link's
        new-identity budget; with none left, PeerError (nothing is stored)."""
        lock = self._ident_locks.get(did)
        if lock is None:
            lock = self._ident_locks[did] = asyncio.Lock()
        async with lock:  # two merges of one log at once could drop each other's op
            changed = await self._ingest_identity(did, ops, publish=publish, via=via)
            if handle is not None:
                await self.node.take_handle_confirmation(did, handle)
            return changed

    async def _ingest_identity(
        self, did: str, ops: list[bytes], *, publish: bool, via: PeerLink | None
    ) -> bool:
        existing = await self.node.storage.identity_ops(did)
        if not existing and via is not None and not self.may_bring_identity(via):
            raise PeerError(f"{via.peer_did} brought too many new identities; {did} not taken")
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
        # Limited: a peer that relinks again and again starts a round each time.
        self.log_limit.log(
            "reconciled",
            logging.INFO if offered or asked else logging.DEBUG,
            "reconciled",
            peer=link.peer_did,
            offered=offered,  # items the peer lacked: their heads sent to it
            asked=asked,  # items we lacked: asked for and considered
            seconds=round(time.monotonic() - started, 3),
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
                    self.log_limit.log(
                        "negentropy",
                        logging.INFO,
                        "negentropy stopped at its bound",
                        peer=link.peer_did,
                    )
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
                if not ops and not self._may_ask_identity(link):
                    continue  # not even asked for: the link's new-identity budget is spent
                if known is None or current != head:
                    backed = None  # unknown, unless the peer answers
                    with contextlib.suppress(PeerError, SkyfedError, TimeoutError):
                        reply = await link.request("getident", did=did)
                        backed = reply["t"] == "ident" and bool(reply["ops"])
                        if reply["t"] == "ident":
                            await self.ingest_identity(
                                did, reply["ops"], handle=reply["handle"], via=link
                            )
                    if unsolicited and backed is False:
                        self.penalize(link, 1, "unsolicited heads it cannot back")
            elif kind == "repo" and isinstance(item.get("rev"), str):
                if self._uncarried(did):
                    continue
                unknown = self._keys.get(did) is None and not await self.node.storage.identity(did)
                if unknown and not self._may_ask_identity(link):
                    continue  # a repo of an unknown DID: its identity could not come
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

    async def _serve_blob(self, link: PeerLink, msg: dict[str, Any]) -> None:
        try:
            if self.blobs is not None:
                await self.blobs.serve(link, msg)
        except PeerError:
            pass  # the link went away meanwhile
        finally:
            link.blob_requests -= 1

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
