"""The node's wiring: one skyfed node built from its config (storage, accounts, repos,
firehose, federation, moderation, HTTP server), started and stopped as one."""

from __future__ import annotations

import errno
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from protocol.car import write_car
from protocol.cid import CID
from protocol.errors import RemoteProtocolError, RepoError, SkyfedError
from protocol.handles import HandleConfirmation
from protocol.identity import did_document, resolve_log
from protocol.keys import SigningKey
from protocol.mst import MST
from protocol.serviceauth import make_service_token
from protocol.syntax import (
    normalize_handle,
    validate_did,
)

from . import VERSION
from .accounts.handles import Handles
from .accounts.moderation import (
    Moderation,
)
from .accounts.portability import Portability
from .accounts.preferences import Preferences
from .accounts.reports import Reports
from .appview.feedgens import FeedContext, FeedHost
from .appview.feedgens.service import Feeds
from .appview.feeds import FeedViews
from .appview.graph_views import GraphViews
from .appview.notifications import Notifications
from .appview.render import Renderer
from .appview.search import Search
from .appview.views import Views
from .config import NodeConfig, NodeSecrets, load_or_create_secrets
from .datadir import tighten
from .datalock import DataDirLock
from .limits import (
    LINGER,
    STREAM_CHUNK,
    budget_lines,
    memory_budget,
)
from .logs import LogLimiter, fields
from .net.blobfetch import BlobFetcher
from .net.federation import Federation
from .net.netpolicy import DialPolicy
from .net.remotefeeds import RemoteFeeds
from .server.app import ServerLog, _server_log, make_app
from .server.auth import Authenticator, Principal, parse_bearer
from .server.firehose import Firehose
from .server.inputs import InvalidRequest
from .server.metrics import Metrics
from .server.ratelimit import LoginLimiter, RequestLimiter, WriteLimiter
from .store.blobs import BlobStore
from .store.repos import RepoManager
from .store.sqlite import SqliteSessionStore, SqliteStorage
from .workers import WorkerPool

if TYPE_CHECKING:
    from .atproto.bridge import AtprotoBridge

__all__ = ["VERSION", "Node", "PortInUse"]


log = logging.getLogger("skyfed.node")


class PortInUse(OSError):
    """The address a node was told to listen on is taken."""

    def __init__(self, host: str, port: int):
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {host} is already in use (another node?): "
            "pick another with --port, or --port 0 for a free one",
        )
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class Node:
    """One skyfed node: storage, accounts, repos, firehose, HTTP server."""

    def __init__(
        self,
        config: NodeConfig,
        secrets_: NodeSecrets | None = None,
        *,
        lock: DataDirLock | None = None,
    ):
        """``lock``: the data dir's lock, already held by the caller (who releases
        it); without one the node takes it in :meth:`start` and drops it in
        :meth:`stop`, and holds it here too while it reads or makes its key (raising
        :class:`DataDirInUse` if another node holds it), so two nodes made at once on
        a new data dir cannot each make a key of their own."""
        self.config = config
        self._own_lock = lock is None
        self.lock = lock or DataDirLock(config.data_dir)
        self.secrets = secrets_ or self._load_secrets()
        # For lines a client can cause (rate-limit hits): bounded per interval.
        self.log_limit = LogLimiter(log)
        self.storage = make_storage(config)
        self.handles = Handles(
            config.handle_domains,
            config.shared_handle_domains,
            self.secrets.node_key,
            config.pinned_handle_issuers,
        )
        self.storage.handles = self.handles
        self.repos = RepoManager(
            self.storage, clock_id=secrets.randbelow(1024), now=self.wall_clock
        )
        self.firehose = Firehose(
            self.storage,
            buffer_limit=config.subscriber_buffer,
            total_limit=config.firehose_buffer_total,
            behind_timeout=config.subscriber_timeout,
            max_subscribers=config.max_subscribers,
            max_subscribers_per_addr=config.max_subscribers_per_addr,
        )
        self.auth = Authenticator(
            self.secrets.token_secret,
            SqliteSessionStore(self.storage),
            audience=self.node_did,
            access_ttl=config.access_token_ttl,
            refresh_ttl=config.refresh_token_ttl,
        )
        self.write_limits = WriteLimiter(hourly=config.points_per_hour, daily=config.points_per_day)
        self.auth_limits = RequestLimiter(rate=config.auth_rate, burst=config.auth_burst)
        self.login_limits = LoginLimiter(
            config.login_failures_per_account,
            config.login_failure_refill,
            secret=self.secrets.token_secret,
            load=lambda did: self.storage.get_meta("login-known:" + did),
            save=lambda did, known: self.storage.put_meta("login-known:" + did, known),
        )
        self.metrics = Metrics()
        self.m_requests = self.metrics.counter(
            "skyfed_requests", "XRPC requests", ("nsid", "status")
        )
        self.m_commits = self.metrics.counter("skyfed_commits", "Commits stored")
        self.metrics.gauge(
            "skyfed_firehose_subscribers",
            "Firehose subscribers",
            lambda: self.firehose.subscriber_count,
        )
        self.metrics.gauge(
            "skyfed_firehose_dropped_slow",
            "Firehose subscribers dropped as too slow (ConsumerTooSlow)",
            lambda: float(self.firehose.dropped_slow),
        )
        self.metrics.gauge(
            "skyfed_write_queue_depth",
            "Writes waiting for the writer",
            lambda: self.storage.queue_depth,
        )
        self.workers = (
            None
            if config.workers == 0
            else WorkerPool(config.workers, idle_seconds=config.worker_idle_seconds)
        )
        self.metrics.gauge(
            "skyfed_worker_processes",
            "Worker processes running (they start with work and exit when idle)",
            lambda: float(len(self.workers.pids())) if self.workers else 0.0,
        )
        self.metrics.gauge(
            "skyfed_worker_restarts",
            "Worker pools replaced after a worker process died",
            lambda: float(self.workers.restarts) if self.workers else 0.0,
        )
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None
        self._accounts: OrderedDict[str, tuple[str, SigningKey]] = OrderedDict()
        self.port: int | None = None
        self.federation = Federation(self)
        self.handles.verified_keys = self.federation.verified_node_keys
        for name, doc, field in (
            ("skyfed_gossip_delivered", "Gossip messages delivered", "delivered"),
            ("skyfed_gossip_duplicates", "Redundant gossip copies received", "duplicates"),
            ("skyfed_gossip_invalid", "Gossip messages refused as invalid", "invalid"),
        ):
            self.metrics.gauge(name, doc, self._gossip_stat(field))
        self.metrics.gauge("skyfed_peer_links", "Peer links up", lambda: len(self.federation.links))
        self.metrics.gauge(
            "skyfed_peer_request_retries",
            "Peer requests sent again after the link's round-trip wait ran out",
            lambda: float(self.federation.retries),
        )
        verifier = self.federation.verifier
        for name, doc, read in (
            (
                "skyfed_ingest_verified_inline",
                "Commit events from peers verified in the node's own process",
                lambda: verifier.inline,
            ),
            (
                "skyfed_ingest_verified_in_workers",
                "Commit events from peers verified in worker processes",
                lambda: verifier.offloaded,
            ),
            (
                "skyfed_ingest_verify_batches",
                "Batches of commit events sent to worker processes",
                lambda: verifier.batches,
            ),
        ):
            self.metrics.gauge(name, doc, read)
        self.views = Views(self.storage)
        self.views.base_url = lambda: self.url
        #: The busiest read views as JSON, in worker processes under concurrency.
        self.renderer = Renderer(self.storage, self.workers, lambda: self.url)
        self.metrics.gauge(
            "skyfed_views_rendered_inline",
            "Read views rendered in the node's own process (node/appview/render.py)",
            lambda: float(self.renderer.served_inline),
        )
        self.metrics.gauge(
            "skyfed_views_rendered_in_workers",
            "Read views rendered in worker processes, as reads overlapped",
            lambda: float(self.renderer.served_by_workers),
        )
        self.blobs = BlobStore(
            self.storage,
            cache_bytes=config.blob_cache_bytes,
            grace=config.blob_grace,
            clock=self.wall_clock,
        )
        self.blob_fetch = BlobFetcher(self.blobs, self.federation, config)
        self.notifications = Notifications(self.storage)
        self.notifications.base_url = lambda: self.url
        self.search = Search(self.storage)
        self.search.base_url = lambda: self.url
        self.repos.on_commit = self.federation.publish_commit
        self.portability = Portability(self)
        self.moderation = Moderation(self)
        self.remote_feeds = RemoteFeeds(
            address_of=self.federation.address_of,
            policy=DialPolicy.from_config(config),
            sign=self._service_token,
            timeout=config.feed_timeout,
            max_bytes=config.feed_remote_bytes,
        )
        feed_views = FeedViews(self.storage)
        feed_views.base_url = lambda: self.url
        self.feeds = Feeds(
            node_did=self.node_did,
            views=feed_views,
            host=FeedHost.from_settings(
                FeedContext(self.storage.read, time.time),
                builtin=config.builtin_feeds,
                plugins=config.feed_plugins,
                timeout=config.feed_timeout,
                plugin_slots=config.feed_plugin_slots,
            ),
            remote=self.remote_feeds,
            signing_key_of=self._signing_key_of,
            used_tokens=self.portability.used_tokens,
            clock=time.time,
        )
        self.graph = GraphViews(self.storage)
        self.graph.base_url = lambda: self.url
        self.preferences = Preferences(self.storage, config.max_preferences_bytes)
        self.reports = Reports(
            self.storage,
            rate=config.report_rate,
            burst=config.report_burst,
            max_open_per_account=config.max_open_reports_per_account,
            max_open=config.max_open_reports,
        )
        # The atproto bridge is made when first used (at start on a node that follows
        # atproto sources): its libraries then load, and an idle node stays small.
        self._atproto: AtprotoBridge | None = None

    @property
    def atproto(self) -> AtprotoBridge:
        """The atproto bridge (docs/atproto-bridge.md, "Node side")."""
        if self._atproto is None:
            self._atproto = self._make_atproto_bridge()
        return self._atproto

    def _make_atproto_bridge(self) -> AtprotoBridge:
        from .atproto.bridge import AtprotoBridge
        from .atproto.identity import DidResolver

        config = self.config
        bridge = AtprotoBridge(
            self.storage,
            config.atproto_sources,
            DidResolver(
                self.guarded_session,
                config.plc_directory,
                max_entries=config.atproto_did_cache,
                ttl=config.atproto_did_ttl,
            ),
            self.guarded_session,
            self.log_limit,
            wall_clock=self.wall_clock,
            max_accounts=config.atproto_max_accounts,
            max_repo_bytes=config.atproto_max_repo_bytes,
            reconnect_min=config.atproto_reconnect_min,
            reconnect_max=config.atproto_reconnect_max,
            resync_interval=config.atproto_resync_interval,
        )
        for name, doc, stat in (
            ("skyfed_atproto_commits", "atproto commits verified and applied", "commits"),
            ("skyfed_atproto_refused", "atproto frames refused", "refused"),
            ("skyfed_atproto_resyncs", "atproto repos fetched again (getRepo)", "resyncs"),
        ):
            self.metrics.gauge(name, doc, self._atproto_stat(bridge, stat))
        return bridge

    def _load_secrets(self) -> NodeSecrets:
        """The node key and token secret, read or made with the data dir locked."""
        if self.lock.held:
            return load_or_create_secrets(self.config.data_dir)
        self.lock.acquire()
        try:
            return load_or_create_secrets(self.config.data_dir)
        finally:
            self.lock.release()  # taken again by start()

    async def _service_token(self, did: str, aud: str, lxm: str) -> str:
        """A one-minute service token by which hosted account ``did`` vouches for one
        call of ``lxm`` at the node ``aud`` (a feed skeleton it reads)."""
        _, key = await self.local_account(did)
        return make_service_token(
            did=did,
            aud=aud,
            lxm=lxm,
            key=key,
            now=int(time.time()),
            lifetime=60,
            jti=secrets.token_hex(16),
        )

    async def _signing_key_of(self, did: str) -> str | None:
        """``did``'s current signing key from the identity log held here, if any."""
        ops = await self.storage.identity_ops(did)
        if not ops:
            return None
        try:
            state = resolve_log(did, ops).state
        except SkyfedError:
            return None
        return None if state.tombstoned else state.signing_key

    @staticmethod
    def _atproto_stat(bridge: AtprotoBridge, field: str) -> Callable[[], float]:
        return lambda: float(getattr(bridge.stats, field))

    def guarded_session(self) -> aiohttp.ClientSession:
        """A client session under the node's dial policy (for atproto fetches), closed
        on stop."""
        if self._guarded is None:
            self._guarded = DialPolicy.from_config(self.config).session()
        return self._guarded

    def _gossip_stat(self, field: str) -> Callable[[], float]:
        return lambda: float(getattr(self.federation.plumtree.stats, field))

    def wall_clock(self) -> float:
        """Seconds since the epoch, as this node believes (``clock_skew`` added)."""
        return time.time() + self.config.clock_skew

    @property
    def node_did(self) -> str:
        return self.secrets.node_key.did_key()

    @property
    def url(self) -> str:
        if self.config.public_url:
            return self.config.public_url
        return f"http://{self.config.host}:{self.port or self.config.port}"

    # -- life cycle --------------------------------------------------------------
    async def start(self) -> str:
        """Lock the data dir, open storage, bind, link to peers. On failure, undo it all.

        Raises :class:`DataDirInUse` if another node runs on this data dir and
        :class:`PortInUse` if the address is taken."""
        self.lock.acquire()
        try:
            tighten(self.config.data_dir)  # an install from before 0700/0600: logs each change
            await self.storage.open()
            await self.storage.write(self.handles.confirm_registered)
            await self.moderation.load()
            await self.firehose.start()
            app = make_app(self)
            # keepalive_timeout also closes a connection that never sends a request.
            self._runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                keepalive_timeout=self.config.idle_timeout,
                lingering_time=LINGER,
                logger=ServerLog(_server_log),
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.host, self.config.port)
            try:
                await site.start()
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise PortInUse(self.config.host, self.config.port) from e
                raise
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self.config.port
            log.info(
                "node listening",
                extra=fields(node=self.node_did, url=self.url, data_dir=str(self.config.data_dir)),
            )
            lines = list(budget_lines(self.config))
            log.info("memory bounds: %s", "; ".join(lines))
            if self._budget_over():
                log.warning(
                    "the memory bounds add up to more than memory_ceiling_mb (%s): %s",
                    self.config.memory_ceiling_mb,
                    lines[-1],
                )
            await self.federation.start()
            if self.config.atproto_sources:
                await self.atproto.start()
        except BaseException:
            await self.stop()
            raise
        return self.url

    def _budget_over(self) -> bool:
        return sum(memory_budget(self.config).values()) > self.config.memory_ceiling_mb * 2**20

    async def stop(self) -> None:
        try:
            if self._atproto is not None:
                await self._atproto.stop()
            await self.federation.stop()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._http is not None:
                await self._http.close()
                self._http = None
            await self.remote_feeds.close()
            if self._guarded is not None:
                await self._guarded.close()
                self._guarded = None
            await self.renderer.close()
            if self.workers is not None:
                await self.workers.close()
            await self.storage.close()
        finally:
            if self._own_lock:
                self.lock.release()

    def http_session(self) -> aiohttp.ClientSession:
        """The node's own client session (for peers), closed on stop."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def iter_car(self, head: CID, root: CID, old_root: CID | None) -> Iterator[bytes]:
        """A repo as a block stream, whole or only what changed since ``old_root``,
        read from storage as it is consumed. Advance it only on a reader thread
        (:meth:`car_chunks` does): every step may read blocks."""
        source = self.storage
        commit_block = source.read_block(head)
        assert commit_block is not None
        tree = MST.load(source, root)
        if old_root is None:
            # Tree nodes as the walk reaches them, then records in key order: what is
            # held at once is the walk's stack and the loader's bounded node cache.
            blocks: Iterable[tuple[CID, bytes]] = itertools.chain(
                [(head, commit_block)],
                tree.all_blocks(),
                _records(source, (cid for _, cid in tree.items())),
            )
        else:
            # A diff: the changed nodes and keys (CIDs, not blocks) are found first.
            old = MST.load(source, old_root)
            old_nodes = {cid for cid, _ in old.all_blocks()}
            new_nodes = [c for c, _ in tree.all_blocks() if c not in old_nodes]
            wanted = [d.new for d in old.diff(tree) if d.new is not None]
            blocks = itertools.chain(
                [(head, commit_block)], _records(source, itertools.chain(new_nodes, wanted))
            )
        yield from write_car([head], blocks)

    async def car_chunks(
        self, head: CID, root: CID, old_root: CID | None, *, chunk: int = STREAM_CHUNK
    ) -> AsyncGenerator[bytes]:
        """:meth:`iter_car` in pieces of about ``chunk`` bytes, each made on a reader
        thread when the consumer asks for it (so a slow consumer holds one piece)."""
        stream: Iterator[bytes] | None = None

        def step() -> bytes:
            nonlocal stream
            if stream is None:
                stream = self.iter_car(head, root, old_root)
            parts: list[bytes] = []
            size = 0
            for part in stream:
                parts.append(part)
                size += len(part)
                if size >= chunk:
                    break
            return b"".join(parts)

        while True:
            piece = await self.storage.run_in_reader(step)
            if not piece:
                return
            yield piece

    async def export_car(
        self, head: CID, root: CID, old_root: CID | None, *, limit: int | None = None
    ) -> bytes | None:
        """A repo as one block stream in memory (for peers); None if it would pass
        ``limit`` bytes, found before more than ``limit`` is held."""
        out = bytearray()
        async for piece in self.car_chunks(head, root, old_root):
            out += piece
            if limit is not None and len(out) > limit:
                return None
        return bytes(out)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- helpers -----------------------------------------------------------------
    async def principal(self, request: web.Request) -> Principal:
        token = parse_bearer(request.headers.get("Authorization"))
        principal = await self.auth.verify_access(token)
        self.moderation.check_host(principal.did)
        return principal

    async def resolve_repo(self, ident: str) -> str:
        """A DID from a handle or DID naming an account this node knows."""
        if ident.startswith("did:"):
            validate_did(ident)
            return ident
        try:
            handle = normalize_handle(ident)
        except SkyfedError:
            raise InvalidRequest(f"{ident!r} is not a valid handle or DID") from None
        did = await self.storage.resolve_handle(handle)
        if did is None:
            raise RepoError(f"could not find repo: {ident}", error="RepoNotFound")
        return did

    async def local_account(self, did: str) -> tuple[str, SigningKey]:
        """Handle and signing key of an account hosted here (cached: every write
        needs them, and a lookup plus key derivation was a tenth of a write)."""
        hit = self._accounts.get(did)
        if hit is not None:
            self._accounts.move_to_end(did)
            return hit
        row = await self.storage.account_by_did(did)
        if row is None:
            raise RepoError(f"could not find repo: {did}", error="RepoNotFound")
        reason = await self.portability.deactivation(did)
        if reason is not None:
            raise RemoteProtocolError(
                f"account {did} is not active here ({reason})", error="AccountDeactivated"
            )
        hit = (row.handle, SigningKey.from_str(row.signing_key))
        self._accounts[did] = hit
        while len(self._accounts) > 10_000:
            self._accounts.popitem(last=False)
        return hit

    async def take_handle_confirmation(self, did: str, data: bytes) -> bool:
        """Keep a handle confirmation that came with ``did``'s identity, if the
        handle rule accepts it (node/accounts/handles.py); anything else is ignored: a stale
        or forged confirmation only leaves the handle unconfirmed."""
        if await self.storage.handle_confirmation(did) == data:
            return False  # already held (a relayed copy): no write
        try:
            conf = HandleConfirmation.from_bytes(data)
        except SkyfedError as e:
            self.log_limit.log(
                "confirmation",
                logging.INFO,
                "ignored a handle confirmation",
                did=did,
                why=str(e)[:200],
            )
            return False
        if conf.did != did:
            return False
        handles = self.handles
        return await self.storage.write(lambda conn: handles.take(conn, conf))

    def forget_account(self, did: str) -> None:
        """Drop cached account data (after a key rotation or handle change)."""
        self._accounts.pop(did, None)

    async def did_doc(self, did: str) -> dict[str, Any] | None:
        ops = await self.storage.identity_ops(did)
        if not ops:
            return None
        state = resolve_log(did, ops).state
        return did_document(state)


def make_storage(config: NodeConfig) -> SqliteStorage:
    """The storage ``config.storage`` names: SQLite in the data dir, or PostgreSQL."""
    if config.storage.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg is needed only by nodes on PostgreSQL (pip extra
        # ``skyfed[postgresql]``).
        from .store.postgres import PostgresStorage

        return PostgresStorage(config.storage)
    if config.storage != "sqlite":
        raise ValueError(f"storage must be 'sqlite' or a postgresql:// URL, not {config.storage!r}")
    return SqliteStorage(config.db_path)


def _records(source: SqliteStorage, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
    for cid in cids:
        block = source.read_block(cid)
        if block is not None:
            yield cid, block
