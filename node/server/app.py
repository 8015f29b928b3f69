"""The node's HTTP face: XRPC endpoints under ``/xrpc/<nsid>``, the firehose, metrics.

Handlers are thin: decode and bound the input, call protocol code or the repo
manager, reply with JSON. Errors from the protocol family carry their XRPC name and
status and are answered as ``{"error", "message"}``; anything unexpected becomes a
500 ``InternalServerError`` whose body never holds a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from protocol.car import write_car
from protocol.cid import CID
from protocol.commit import Action
from protocol.encoding import decode
from protocol.errors import RemoteProtocolError, RepoError, SkyfedError
from protocol.handles import INVALID_HANDLE, HandleConfirmation, registration_error
from protocol.identity import did_document, resolve_log
from protocol.jsondata import from_json, to_json
from protocol.keys import SigningKey
from protocol.labels import Label
from protocol.mst import MST
from protocol.records import PROFILE
from protocol.repo import Repo, Write
from protocol.syntax import (
    is_valid_did,
    normalize_handle,
    validate_at_uri,
    validate_did,
    validate_handle,
    validate_nsid,
    validate_record_key,
)

from ..accounts.handles import Handles
from ..accounts.moderation import MODERATION_KEY, Moderation, labels_middleware, moderation_routes
from ..accounts.portability import ROUTES as PORTABILITY_ROUTES
from ..accounts.portability import Portability, create_account_for_did, same_url
from ..appview.views import Views
from ..config import NodeConfig, NodeSecrets, load_or_create_secrets
from ..datadir import tighten
from ..datalock import DataDirLock
from ..limits import (
    LINGER,
    STREAM_CHUNK,
    AddressSlots,
    body_middleware,
    budget_lines,
    memory_budget,
    stream_chunks,
)
from ..logs import LogLimiter, fields
from ..net.federation import Federation, label_row
from ..store.repos import RepoManager, iso_now
from ..store.sqlite import SqliteSessionStore, SqliteStorage
from . import inputs
from .auth import Authenticator, Principal, hash_password, parse_bearer, verify_password
from .firehose import Firehose
from .inputs import InvalidRequest
from .ratelimit import LoginLimiter, RateLimited, RequestLimiter, WriteLimiter, client_key
from .web import add_web_routes

__all__ = ["VERSION", "Node", "PortInUse"]

VERSION = "0.1.0"
log = logging.getLogger("skyfed.node")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_POINTS = {"create": 3, "update": 2, "delete": 1}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # orjson: JSON encoding was a sixth of a timeline page's CPU with the stdlib.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, error: str, message: str, headers: Any = None) -> web.Response:
    return _json({"error": error, "message": message}, status, headers)


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message)


# -- parameter helpers: node/server/inputs.py parses and bounds every one ---------------------

_q_str = inputs.query_str
_q_int = inputs.query_int
_q_bool = inputs.query_bool
_body = inputs.read_json_object


def _b_str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(f'Input must have the property "{name}"')
        return None
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    return value


def _b_cid(body: dict[str, Any], name: str) -> CID | None:
    value = _b_str(body, name, required=False)
    return None if value is None else CID.from_str(value)


# -- the node ------------------------------------------------------------------------


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
        self.storage = SqliteStorage(config.db_path)
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
        self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "skyfed_requests", "XRPC requests", ["nsid", "status"], registry=self.registry
        )
        self.m_commits = Counter("skyfed_commits", "Commits stored", registry=self.registry)
        sub_gauge = Gauge(
            "skyfed_firehose_subscribers", "Firehose subscribers", registry=self.registry
        )
        sub_gauge.set_function(lambda: self.firehose.subscriber_count)
        Gauge(
            "skyfed_firehose_dropped_slow",
            "Firehose subscribers dropped as too slow (ConsumerTooSlow)",
            registry=self.registry,
        ).set_function(lambda: float(self.firehose.dropped_slow))
        queue_gauge = Gauge(
            "skyfed_write_queue_depth", "Writes waiting for the writer", registry=self.registry
        )
        queue_gauge.set_function(lambda: self.storage.queue_depth)
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._accounts: OrderedDict[str, tuple[str, SigningKey]] = OrderedDict()
        self.port: int | None = None
        self.federation = Federation(self)
        self.handles.verified_keys = self.federation.verified_node_keys
        for name, doc, field in (
            ("skyfed_gossip_delivered", "Gossip messages delivered", "delivered"),
            ("skyfed_gossip_duplicates", "Redundant gossip copies received", "duplicates"),
            ("skyfed_gossip_invalid", "Gossip messages refused as invalid", "invalid"),
        ):
            Gauge(name, doc, registry=self.registry).set_function(self._gossip_stat(field))
        Gauge("skyfed_peer_links", "Peer links up", registry=self.registry).set_function(
            lambda: len(self.federation.links)
        )
        Gauge(
            "skyfed_peer_request_retries",
            "Peer requests sent again after the link's round-trip wait ran out",
            registry=self.registry,
        ).set_function(lambda: float(self.federation.retries))
        self.views = Views(self.storage)
        self.repos.on_commit = self.federation.publish_commit
        self.portability = Portability(self)
        self.moderation = Moderation(self)

    def _load_secrets(self) -> NodeSecrets:
        """The node key and token secret, read or made with the data dir locked."""
        if self.lock.held:
            return load_or_create_secrets(self.config.data_dir)
        self.lock.acquire()
        try:
            return load_or_create_secrets(self.config.data_dir)
        finally:
            self.lock.release()  # taken again by start()

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
        except BaseException:
            await self.stop()
            raise
        return self.url

    def _budget_over(self) -> bool:
        return sum(memory_budget(self.config).values()) > self.config.memory_ceiling_mb * 2**20

    async def stop(self) -> None:
        try:
            await self.federation.stop()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._http is not None:
                await self._http.close()
                self._http = None
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
            raise _bad(f"{ident!r} is not a valid handle or DID") from None
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


NODE_KEY = web.AppKey("node", Node)
_server_log = logging.getLogger("aiohttp.server")


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, with what a client got wrong on the wire (a malformed or
    over-long request line or header, a connection dropped mid-request) written as one
    line at INFO: aiohttp logs those as errors with a full traceback, so anyone could
    fill the node's log with tracebacks. Everything else passes through unchanged."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException) and _is_client_fault(exc):
            kwargs.pop("exc_info")
            level = min(level, logging.INFO)
            msg = f"{msg}: %s: %s"
            args = (*args, type(exc).__name__, _one_line(exc))
        super().log(level, msg, *args, **kwargs)


def _is_client_fault(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.http_exceptions.HttpProcessingError):
        return 400 <= (exc.code or 400) < 500
    return isinstance(exc, ConnectionError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "message", "") or exc).split())
    return text[:200]


def _records(source: SqliteStorage, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
    for cid in cids:
        block = source.read_block(cid)
        if block is not None:
            yield cid, block


# -- middleware ----------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    nsid = request.match_info.get("nsid", request.path)
    try:
        response = await handler(request)
    except RemoteProtocolError as e:
        if isinstance(e, RateLimited):
            node.log_limit.log(
                "ratelimit",
                logging.INFO,
                "rate limited",
                client=request.remote,
                nsid=nsid,
                why=e.message[:200],
            )
        headers = getattr(e, "headers", None)
        if callable(headers):
            headers = headers()
        response = _error(e.status, e.error, e.message, headers)
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, "PayloadTooLarge", "request body is too large")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        name = {404: "NotFound", 405: "InvalidRequest"}.get(e.status, "InvalidRequest")
        response = _error(e.status, name, e.reason)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if not _client_gone(request, e):
            log.exception("internal error in %s", nsid)
            response = _error(500, "InternalServerError", "Internal Server Error")
        else:
            # The client hung up mid-request (mid-body, or while we wrote the answer):
            # its fault, not ours, and nobody is left to answer. One line, no traceback,
            # counted as nginx's 499 "client closed request", not as a 500.
            node.log_limit.log(
                "client-gone",
                logging.INFO,
                "client went away",
                client=request.remote,
                nsid=nsid,
                why=str(e)[:200],
            )
            node.m_requests.labels(nsid if nsid in _ROUTES else "other", "499").inc()
            return _error(400, "InvalidRequest", "the connection closed mid-request")
    node.m_requests.labels(nsid if nsid in _ROUTES else "other", str(response.status)).inc()
    return response


def _client_gone(request: web.Request, error: Exception) -> bool:
    """True when ``error`` is the client's connection going away (its transport is
    closed), not a connection of ours to somewhere else failing."""
    if not isinstance(error, ConnectionError | aiohttp.ClientConnectionError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


# -- com.atproto.server --------------------------------------------------------------


async def describe_server(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return _json(
        {
            "did": node.node_did,
            "availableUserDomains": list(node.config.handle_domains),
            "inviteCodeRequired": False,
            "phoneVerificationRequired": False,
            "links": {},
            "contact": {},
        }
    )


def _client_addr(request: web.Request) -> str:
    return client_key(request.remote or "unknown")


def check_new_handle(node: Node, handle: str) -> None:
    """A handle this node may register: one label under one of its handle domains,
    not a reserved name (docs/security.md, Handles)."""
    refused = registration_error(handle, node.config.handle_domains)
    if refused is not None:
        raise RemoteProtocolError(refused[1], error=refused[0])


async def create_account(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    node.auth_limits.check(_client_addr(request))
    body = await _body(request)
    if body.get("did") is not None:  # an existing identity moving here
        return await create_account_for_did(request, body)
    handle_raw = _b_str(body, "handle")
    password = _b_str(body, "password")
    assert handle_raw is not None
    assert password is not None
    email = _b_str(body, "email", required=False)
    recovery = _b_str(body, "recoveryKey", required=False)
    try:
        handle = normalize_handle(handle_raw)
    except SkyfedError:
        raise RemoteProtocolError("handle is not a valid handle", error="InvalidHandle") from None
    check_new_handle(node, handle)
    if recovery is not None:
        from protocol.keys import verify_key

        verify_key(recovery)
    # Taken: registered here, or confirmed to another DID (a shared domain's node).
    if (
        await node.storage.account_by_handle(handle) is not None
        or await node.storage.resolve_handle(handle) is not None
    ):
        raise RemoteProtocolError("handle already taken", error="HandleNotAvailable")
    password_hash = await hash_password(password)
    signing = SigningKey.from_seed(secrets.token_bytes(32))
    rotation = SigningKey.from_seed(secrets.token_bytes(32))
    try:
        did, outcome = await node.repos.create_account(
            handle=handle,
            email=email,
            password_hash=password_hash,
            signing_key=signing,
            rotation_key=rotation,
            user_rotation_key=recovery,
            endpoint=node.url,
        )
    except Exception as e:
        if "UNIQUE constraint failed: accounts.handle" in str(e):
            raise RemoteProtocolError("handle already taken", error="HandleNotAvailable") from e
        raise
    node.m_commits.inc()
    ops = await node.storage.identity_ops(did)
    head = resolve_log(did, ops).state.head
    confirmation = await node.storage.handle_confirmation(did)
    node.federation.publish_identity(did, ops, head, confirmation)
    node.federation.publish_commit(outcome.result.event)
    tokens = await node.auth.create_session(did)
    return _json(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": handle,
            "did": did,
            **await _session_did_doc(node, did),
        }
    )


async def _session_did_doc(node: Node, did: str) -> dict[str, Any]:
    """``{"didDoc": doc}`` for a session answer, or ``{}`` if the document names
    another PDS endpoint than this node's URL: the node's URL changed after the account
    was made, or the account moved away. The atproto SDK moves a session to the
    endpoint the document names, carrying this node's tokens, which no other node
    accepts; without a document it stays here (and ``active`` says what it may do)."""
    doc = await node.did_doc(did)
    if doc is None:
        return {}
    endpoints = [
        s.get("serviceEndpoint") for s in doc.get("service", []) if s.get("id") == "#atproto_pds"
    ]
    if len(endpoints) != 1 or not isinstance(endpoints[0], str):
        return {}
    return {"didDoc": doc} if same_url(endpoints[0], node.url) else {}


async def _activity(node: Node, did: str) -> dict[str, Any]:
    # The lexicon's `active`, with `status` when false: an account that moved away or
    # awaits its migration may log in here but not write.
    if await node.portability.deactivation(did) is None:
        return {"active": True}
    return {"active": False, "status": "deactivated"}


def _email(email: str | None) -> dict[str, Any]:
    # Optional in the lexicon: absent, never null.
    return {} if email is None else {"email": email}


async def create_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    node.auth_limits.check(_client_addr(request))
    body = await _body(request)
    ident = _b_str(body, "identifier")
    password = _b_str(body, "password")
    assert ident is not None
    assert password is not None
    failure = RemoteProtocolError(
        "Invalid identifier or password", error="AuthenticationRequired", status=401
    )
    if ident.startswith("did:"):
        row = await node.storage.account_by_did(ident) if is_valid_did(ident) else None
    else:
        try:
            row = await node.storage.account_by_handle(normalize_handle(ident))
        except SkyfedError:
            row = None
    client = _client_addr(request)
    if row is not None:
        # Guesses at one account spread over many addresses are limited too, but not
        # from addresses that have logged in to it before (node/server/ratelimit.py).
        await node.login_limits.check(row.did, client)
    # An unknown account costs the same time as a wrong password.
    ok = await verify_password(row.password_hash if row else None, password)
    if row is None or not ok:
        if row is not None:
            await node.login_limits.failed(row.did, client)
        raise failure
    await node.login_limits.succeeded(row.did, client)
    node.moderation.check_host(row.did)
    tokens = await node.auth.create_session(row.did)
    return _json(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": row.handle,
            "did": row.did,
            **await _session_did_doc(node, row.did),
            **_email(row.email),
            "emailConfirmed": False,
            **await _activity(node, row.did),
        }
    )


async def refresh_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    token = parse_bearer(request.headers.get("Authorization"))
    tokens = await node.auth.refresh(token)
    principal = await node.auth.verify_access(tokens.access_jwt)
    row = await node.storage.account_by_did(principal.did)
    if row is None:
        raise RemoteProtocolError("account is gone", error="AccountNotFound")
    return _json(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": row.handle,
            "did": row.did,
            **await _session_did_doc(node, row.did),
            **await _activity(node, row.did),
        }
    )


async def get_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    row = await node.storage.account_by_did(p.did)
    if row is None:
        raise RemoteProtocolError("account is gone", error="AccountNotFound")
    return _json(
        {
            "handle": row.handle,
            "did": row.did,
            **_email(row.email),
            "emailConfirmed": False,
            **await _session_did_doc(node, row.did),
            **await _activity(node, row.did),
        }
    )


async def delete_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    token = parse_bearer(request.headers.get("Authorization"))
    await node.auth.revoke(token)
    return _json({})


# -- com.atproto.repo: writes --------------------------------------------------------


async def _writer(request: web.Request, body: dict[str, Any]) -> tuple[str, str, SigningKey]:
    """The authenticated account, checked to be the repo's owner."""
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    repo = _b_str(body, "repo")
    assert repo is not None
    did = await node.resolve_repo(repo)
    if did != p.did:
        raise RemoteProtocolError(
            "you may only write to your own repo", error="Forbidden", status=403
        )
    handle, key = await node.local_account(did)
    return did, handle, key


def _record_value(body: dict[str, Any], name: str, collection: str) -> dict[str, Any]:
    raw = body.get(name)
    if not isinstance(raw, dict):
        raise RemoteProtocolError(f"{name} must be an object", error="InvalidRecord")
    value = from_json(raw, path=name)
    assert isinstance(value, dict)
    value.setdefault("$type", collection)
    return value


def _validate_flag(body: dict[str, Any]) -> bool:
    flag = body.get("validate", True)
    if flag is None:
        return True
    if not isinstance(flag, bool):
        raise _bad("validate must be a boolean")
    return flag


async def _commit(
    request: web.Request,
    did: str,
    key: SigningKey,
    writes: list[Write],
    *,
    swap_commit: CID | None = None,
    check: Callable[[Repo], None] | None = None,
    validate: bool = True,
) -> tuple[Any, dict[str, str]]:
    node = request.app[NODE_KEY]
    points = sum(_POINTS[w.action] for w in writes)
    state = node.write_limits.check_and_consume(did, points)
    outcome = await node.repos.write(
        did, writes, key, swap_commit=swap_commit, check=check, validate=validate
    )
    node.m_commits.inc()
    return outcome, state.headers()


def _swap_record_check(path: str, swap: CID | None, present: bool) -> Callable[[Repo], None]:
    def check(repo: Repo) -> None:
        if present and repo.tree.get(path) != swap:
            raise RemoteProtocolError(
                f"record was at {repo.tree.get(path)}", error="InvalidSwap", status=400
            )

    return check


def _commit_meta(outcome: Any) -> dict[str, str]:
    return {"cid": str(outcome.result.commit_cid), "rev": outcome.result.commit.rev}


def _new_rkey(node: Node, collection: str) -> str:
    # The profile's key is the literal "self" (the atproto SDK's profile.create sends
    # none); everything else gets a fresh TID.
    return "self" if collection == PROFILE else node.repos._next_rev(None)


async def create_record(request: web.Request) -> web.Response:
    body = await _body(request)
    did, _, key = await _writer(request, body)
    node = request.app[NODE_KEY]
    collection = _b_str(body, "collection")
    assert collection is not None
    validate_nsid(collection)
    rkey = _b_str(body, "rkey", required=False) or _new_rkey(node, collection)
    validate_record_key(rkey)
    record = _record_value(body, "record", collection)
    validate = _validate_flag(body)
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write("create", collection, rkey, record)],
        swap_commit=_b_cid(body, "swapCommit"),
        validate=validate,
    )
    cid = outcome.result.written[0]
    return _json(
        {
            "uri": f"at://{did}/{collection}/{rkey}",
            "cid": str(cid),
            "commit": _commit_meta(outcome),
            "validationStatus": "valid" if validate else "unknown",
        },
        headers=headers,
    )


def _record_path(body: dict[str, Any]) -> tuple[str, str]:
    """The (collection, rkey) a write names, both checked."""
    collection = _b_str(body, "collection")
    rkey = _b_str(body, "rkey")
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    return collection, rkey


async def put_record(request: web.Request) -> web.Response:
    body = await _body(request)
    did, _, key = await _writer(request, body)
    collection, rkey = _record_path(body)
    record = _record_value(body, "record", collection)
    validate = _validate_flag(body)
    path = f"{collection}/{rkey}"
    has_swap = "swapRecord" in body
    swap = _b_cid(body, "swapRecord")
    node = request.app[NODE_KEY]
    current = (await node.repos.head(did)).tree.get(path)
    action: Action = "update" if current is not None else "create"
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write(action, collection, rkey, record)],
        swap_commit=_b_cid(body, "swapCommit"),
        check=_swap_record_check(path, swap, has_swap),
        validate=validate,
    )
    return _json(
        {
            "uri": f"at://{did}/{path}",
            "cid": str(outcome.result.written[0]),
            "commit": _commit_meta(outcome),
            "validationStatus": "valid" if validate else "unknown",
        },
        headers=headers,
    )


async def delete_record(request: web.Request) -> web.Response:
    body = await _body(request)
    did, _, key = await _writer(request, body)
    collection, rkey = _record_path(body)
    path = f"{collection}/{rkey}"
    node = request.app[NODE_KEY]
    if (await node.repos.head(did)).tree.get(path) is None and "swapRecord" not in body:
        # Deleting what is not there is a no-op, as in atproto.
        return _json({})
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write("delete", collection, rkey)],
        swap_commit=_b_cid(body, "swapCommit"),
        check=_swap_record_check(path, _b_cid(body, "swapRecord"), "swapRecord" in body),
    )
    return _json({"commit": _commit_meta(outcome)}, headers=headers)


_WRITE_TYPES: dict[str, Action] = {
    "com.atproto.repo.applyWrites#create": "create",
    "com.atproto.repo.applyWrites#update": "update",
    "com.atproto.repo.applyWrites#delete": "delete",
}


async def apply_writes(request: web.Request) -> web.Response:
    body = await _body(request)
    did, _, key = await _writer(request, body)
    node = request.app[NODE_KEY]
    raw = body.get("writes")
    if not isinstance(raw, list) or not raw:
        raise _bad("writes must be a non-empty list")
    if len(raw) > 200:
        raise _bad("at most 200 writes")
    writes: list[Write] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _bad(f"writes[{i}] must be an object")
        kind = item.get("$type")
        action = _WRITE_TYPES.get(kind) if isinstance(kind, str) else None
        if action is None:
            raise _bad(f"writes[{i}] has an unknown $type")
        collection = _b_str(item, "collection")
        assert collection is not None
        validate_nsid(collection)
        rkey = _b_str(item, "rkey", required=action != "create") or _new_rkey(node, collection)
        validate_record_key(rkey)
        value = None if action == "delete" else _record_value(item, "value", collection)
        writes.append(Write(action, collection, rkey, value))
    outcome, headers = await _commit(
        request,
        did,
        key,
        writes,
        swap_commit=_b_cid(body, "swapCommit"),
        validate=_validate_flag(body),
    )
    results = []
    for w, cid in zip(writes, outcome.result.written, strict=True):
        kind = f"com.atproto.repo.applyWrites#{w.action}Result"
        if w.action == "delete":
            results.append({"$type": kind})
        else:
            results.append(
                {
                    "$type": kind,
                    "uri": f"at://{did}/{w.path}",
                    "cid": str(cid),
                    "validationStatus": "valid",
                }
            )
    return _json({"commit": _commit_meta(outcome), "results": results}, headers=headers)


# -- com.atproto.repo: reads ---------------------------------------------------------


def _record_json(did: str, collection: str, rkey: str, cid: CID, value: bytes) -> dict[str, Any]:
    return {
        "uri": f"at://{did}/{collection}/{rkey}",
        "cid": str(cid),
        "value": to_json(decode(value)),
    }


async def get_record(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = _q_str(request, "repo")
    collection = _q_str(request, "collection")
    rkey = _q_str(request, "rkey")
    assert repo is not None
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    row = await node.storage.get_record(did, collection, rkey)
    want = _q_str(request, "cid", required=False)
    if row is None or (want is not None and str(row.cid) != want):
        raise RepoError(
            f"could not locate record: at://{did}/{collection}/{rkey}", error="RecordNotFound"
        )
    return _json(_record_json(did, collection, rkey, row.cid, row.value))


async def list_records(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = _q_str(request, "repo")
    collection = _q_str(request, "collection")
    assert repo is not None
    assert collection is not None
    validate_nsid(collection)
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    if cursor is not None:
        validate_record_key(cursor)
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    rows = await node.storage.list_records(
        did, collection, limit, cursor, _q_bool(request, "reverse")
    )
    out: dict[str, Any] = {
        "records": [_record_json(did, collection, r.rkey, r.cid, r.value) for r in rows]
    }
    if len(rows) == limit:
        out["cursor"] = rows[-1].rkey
    return _json(out)


async def describe_repo(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = _q_str(request, "repo")
    assert repo is not None
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    ident = await node.storage.identity(did)
    if ident is None or await node.storage.get_head(did) is None:
        raise RepoError(f"could not find repo: {repo}", error="RepoNotFound")
    handle = await node.storage.confirmed_handle(did)
    return _json(
        {
            "handle": handle or INVALID_HANDLE,
            "did": did,
            "didDoc": await node.did_doc(did),
            "collections": await node.storage.list_collections(did),
            "handleIsCorrect": handle is not None,
        }
    )


# -- com.atproto.sync ----------------------------------------------------------------


async def _head_or_404(node: Node, did: str) -> Any:
    validate_did(did)
    head = await node.storage.get_head(did)
    if head is None:
        raise RepoError(f"could not find repo for DID: {did}", error="RepoNotFound")
    if head.status == "takendown":
        raise RepoError(f"repo has been taken down: {did}", error="RepoTakendown")
    node.moderation.check_serve(did)
    return head


async def _car_response(request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


REPO_STREAMS_KEY = web.AppKey("repo_streams", AddressSlots)


async def sync_get_repo(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    did = _q_str(request, "did")
    assert did is not None
    head = await _head_or_404(node, did)
    since = _q_str(request, "since", required=False)
    old_root: CID | None = None
    if since is not None:
        at = await node.storage.commit_at(did, since)
        if at is None:
            raise _bad(f"no commit at rev {since}")
        old_root = at[1]
    # Streamed from storage a chunk at a time, each waiting for the reader: a
    # client that never reads holds one chunk, for send_timeout, then is cut off.
    streams = request.app[REPO_STREAMS_KEY]
    key = streams.acquire(request.remote)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        await response.prepare(request)
        chunks = node.car_chunks(head.head, head.root, old_root)
        try:
            await stream_chunks(request, response, chunks, node.config.send_timeout)
        finally:
            await chunks.aclose()
        return response
    finally:
        streams.release(key)


async def sync_get_latest_commit(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    did = _q_str(request, "did")
    assert did is not None
    head = await _head_or_404(node, did)
    return _json({"cid": str(head.head), "rev": head.rev})


async def sync_list_repos(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit = _q_int(request, "limit", 500, 1, 1000)
    cursor = _q_str(request, "cursor", required=False)
    heads = await node.storage.list_repos(cursor, limit)
    repos = []
    for h in heads:
        item: dict[str, Any] = {"did": h.did, "head": str(h.head), "rev": h.rev, "active": h.active}
        if h.status:
            item["status"] = h.status
        repos.append(item)
    out: dict[str, Any] = {"repos": repos}
    if len(heads) == limit:
        out["cursor"] = heads[-1].did
    return _json(out)


async def sync_get_record(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    did = _q_str(request, "did")
    collection = _q_str(request, "collection")
    rkey = _q_str(request, "rkey")
    assert did is not None
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    head = await _head_or_404(node, did)
    path = f"{collection}/{rkey}"

    def proof() -> list[bytes]:
        source = node.storage
        commit_block = source.read_block(head.head)
        assert commit_block is not None
        tree = MST.load(source, head.root)
        blocks = [(head.head, commit_block), *tree.proof(path).items()]
        cid = tree.get(path)
        if cid is not None:
            record = source.read_block(cid)
            if record is not None:
                blocks.append((cid, record))
        return list(write_car([head.head], blocks))

    return await _car_response(request, await node.storage.run_in_reader(proof))


async def sync_get_repo_status(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    did = _q_str(request, "did")
    assert did is not None
    validate_did(did)
    head = await node.storage.get_head(did)
    if head is None:
        raise RepoError(f"could not find repo for DID: {did}", error="RepoNotFound")
    out: dict[str, Any] = {"did": did, "active": head.active, "rev": head.rev}
    if head.status:
        out["status"] = head.status
    return _json(out)


async def subscribe_repos(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    cursor = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise _bad("subscribeRepos is a WebSocket endpoint")
    return await node.firehose.serve(request, cursor)


# -- identity ------------------------------------------------------------------------


async def resolve_handle(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    handle = _q_str(request, "handle")
    assert handle is not None
    validate_handle(handle)
    did = await node.storage.resolve_handle(normalize_handle(handle))
    if did is None:
        raise RemoteProtocolError("Unable to resolve handle", error="HandleNotFound")
    return _json({"did": did})


async def get_identity_log(request: web.Request) -> web.Response:
    """skyfed.identity.getLog: an account's signed identity ops, oldest first."""
    node = request.app[NODE_KEY]
    did = _q_str(request, "did")
    assert did is not None
    validate_did(did)
    ops = await node.storage.identity_ops(did)
    if not ops:
        raise RemoteProtocolError(f"no identity log for {did}", error="DidNotFound")
    state = resolve_log(did, ops).state
    return _json(
        {
            "did": did,
            "ops": [base64.b64encode(op).decode("ascii") for op in ops],
            "didDoc": did_document(state),
        }
    )


# -- node ----------------------------------------------------------------------------


async def peer_connect(request: web.Request) -> web.StreamResponse:
    """skyfed.peer.connect: the WebSocket another node links to."""
    node = request.app[NODE_KEY]
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise _bad("skyfed.peer.connect is a WebSocket endpoint")
    return await node.federation.handle_inbound(request)


async def list_peers(request: web.Request) -> web.Response:
    """skyfed.node.listPeers: the links this node holds now."""
    node = request.app[NODE_KEY]
    fed = node.federation
    return _json(
        {
            "peers": [
                {
                    "did": link.peer_did,
                    "url": link.peer_url,
                    "outbound": link.outbound,
                    "score": link.score,
                    "bytesIn": link.bytes_in,
                    "bytesOut": link.bytes_out,
                    "retries": link.retries,
                }
                for link in fed.links.values()
            ],
            "eager": sorted(fed.plumtree.eager_peers),
            "lazy": sorted(fed.plumtree.lazy_peers),
            "gossip": dataclasses.asdict(fed.plumtree.stats),
            "bytesIn": fed.bytes_in,
            "bytesOut": fed.bytes_out,
            "ingested": fed.ingested,
            "rejected": fed.rejected,
            "retries": fed.retries,
            # Outbound connections and admission (docs/security.md).
            "admission": {
                "learnedAddresses": len(fed.learned),
                "learnedDials": fed.learned_dials,
                "addressesRefused": fed.addresses_refused,
                "inbound": fed.inbound,
                "linksRefused": fed.links_refused,
                "identitiesRefused": fed.identities_refused,
            },
        }
    )


async def list_equivocations(request: web.Request) -> web.Response:
    """skyfed.sync.listEquivocations: evidence of authors who signed two histories.
    Each entry carries both signed commit blocks (base64), so anyone can re-verify it
    (``protocol.ingest.check_equivocation``)."""
    node = request.app[NODE_KEY]
    rows = await node.storage.equivocations(_q_int(request, "limit", 50, 1, 500))
    return _json(
        {
            "equivocations": [
                {
                    "did": e.did,
                    "reason": e.reason,
                    "kept": str(e.kept),
                    "dropped": str(e.dropped),
                    "keptCommit": base64.b64encode(e.kept_commit).decode("ascii"),
                    "droppedCommit": base64.b64encode(e.dropped_commit).decode("ascii"),
                    "seenAt": e.seen_at,
                }
                for e in rows
            ]
        }
    )


# -- app.bsky views -----------------------------------------------------------------


async def _viewer(request: web.Request) -> str | None:
    """The reader, if the request carries an access token (views work without)."""
    if "Authorization" not in request.headers:
        return None
    return (await request.app[NODE_KEY].principal(request)).did


_q_list = inputs.query_list


def _q_uri(request: web.Request, name: str = "uri") -> str:
    uri = _q_str(request, name)
    assert uri is not None
    validate_at_uri(uri)
    return uri


async def _did_uri(node: Node, uri: str) -> str:
    """``uri`` with a handle authority replaced by its DID, as Bluesky's AppView does
    (links copied from an app name the handle). An unknown handle stays as it is and
    so finds nothing."""
    authority, sep, path = uri[len("at://") :].partition("/")
    if authority.startswith("did:"):
        return uri
    try:
        did = await node.storage.resolve_handle(normalize_handle(authority))
    except SkyfedError:
        return uri
    return uri if did is None else f"at://{did}{sep}{path}"


async def _q_post_uri(request: web.Request) -> str:
    return await _did_uri(request.app[NODE_KEY], _q_uri(request))


async def get_timeline(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    limit = _q_int(request, "limit", 50, 1, 100)
    return _json(
        await node.views.timeline(viewer, limit, _q_str(request, "cursor", required=False))
    )


async def get_author_feed(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = _q_str(request, "actor")
    assert actor is not None
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    filter_ = _q_str(request, "filter", required=False) or "posts_with_replies"
    viewer = await _viewer(request)
    return _json(await node.views.author_feed(actor, viewer, limit, cursor, filter_))


async def get_latest(request: web.Request) -> web.Response:
    """skyfed.feed.getLatest: every post this node holds, newest first."""
    node = request.app[NODE_KEY]
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    return _json(await node.views.latest(await _viewer(request), limit, cursor))


#: getPostThread takes the lexicon's ``depth`` and ``parentHeight`` (0..1000, as
#: Bluesky's) but serves at most this many levels below and above the post, as
#: Bluesky's AppView caps depth by its config. A thread nests two JSON levels per
#: reply level and one per parent, and JSON encoders and parsers stop at a few hundred
#: levels (orjson at 255): 1,000 levels would be a 500 and a hazard to clients.
MAX_THREAD_DEPTH = 100
MAX_THREAD_PARENT_HEIGHT = 200


async def get_post_thread(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await _q_post_uri(request)
    depth = min(_q_int(request, "depth", 6, 0, 1000), MAX_THREAD_DEPTH)
    height = min(_q_int(request, "parentHeight", 80, 0, 1000), MAX_THREAD_PARENT_HEIGHT)
    out = await node.views.thread(uri, await _viewer(request), depth, height)
    if out["thread"].get("notFound"):
        raise RemoteProtocolError(f"Post not found: {uri}", error="NotFound")
    return _json(out)


async def get_posts(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uris = _q_list(request, "uris", 25)
    for uri in uris:
        validate_at_uri(uri)
    uris = [await _did_uri(node, uri) for uri in uris]
    return _json(await node.views.posts(uris, await _viewer(request)))


async def get_likes(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await _q_post_uri(request)
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    return _json(await node.views.likes(uri, await _viewer(request), limit, cursor))


async def get_reposted_by(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await _q_post_uri(request)
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    return _json(await node.views.reposted_by(uri, await _viewer(request), limit, cursor))


async def get_profile(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = _q_str(request, "actor")
    assert actor is not None
    return _json(await node.views.profile(actor, await _viewer(request)))


async def get_profiles(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actors = _q_list(request, "actors", 25)
    return _json(await node.views.profiles(actors, await _viewer(request)))


async def _follow_list(request: web.Request, *, followers: bool) -> web.Response:
    node = request.app[NODE_KEY]
    actor = _q_str(request, "actor")
    assert actor is not None
    limit = _q_int(request, "limit", 50, 1, 100)
    cursor = _q_str(request, "cursor", required=False)
    viewer = await _viewer(request)
    return _json(await node.views.follows(actor, viewer, limit, cursor, followers=followers))


async def get_follows(request: web.Request) -> web.Response:
    return await _follow_list(request, followers=False)


async def get_followers(request: web.Request) -> web.Response:
    return await _follow_list(request, followers=True)


# -- labels --------------------------------------------------------------------------

_MAX_CREATE_LABELS = 100
_MAX_LABEL_PATTERNS = 64


async def create_labels(request: web.Request) -> web.Response:
    """skyfed.label.createLabels: the authenticated account labels subjects, as a
    labeler; the node signs with the account's key and gossips the labels."""
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    body = await _body(request)
    specs = body.get("labels")
    if not isinstance(specs, list) or not specs:
        raise _bad("labels must be a non-empty array")
    if len(specs) > _MAX_CREATE_LABELS:
        raise _bad(f"labels: at most {_MAX_CREATE_LABELS} per request")
    _, key = await node.local_account(p.did)
    cts = iso_now()
    labels = []
    for spec in specs:
        if not isinstance(spec, dict) or not set(spec) <= {"uri", "cid", "val", "neg", "exp"}:
            raise _bad("each label is {uri, cid?, val, neg?, exp?}")
        neg = spec.get("neg", False)
        if not isinstance(neg, bool):
            raise _bad("neg must be a boolean")
        uri, val = _b_str(spec, "uri"), _b_str(spec, "val")
        assert uri is not None
        assert val is not None
        label = Label(
            src=p.did,
            uri=uri,
            cid=_b_str(spec, "cid", required=False),
            val=val,
            neg=neg,
            # A negation ties a held label dated ahead of us, and wins (protocol §12).
            cts=await node.moderation.retraction_cts(p.did, uri, val, cts) if neg else cts,
            exp=_b_str(spec, "exp", required=False),
        )
        labels.append(label.sign(key))
    state = node.write_limits.check_and_consume(p.did, len(labels))
    await node.storage.put_labels([label_row(label) for label in labels])
    for label in labels:
        node.federation.publish_label(label)
    return _json({"labels": [label.to_json() for label in labels]}, headers=state.headers())


async def query_labels(request: web.Request) -> web.Response:
    """com.atproto.label.queryLabels: labels on subjects matching any of uriPatterns
    (a trailing ``*`` is a prefix match), optionally only from some labelers."""
    node = request.app[NODE_KEY]
    patterns = _q_list(request, "uriPatterns", _MAX_LABEL_PATTERNS)
    for pattern in patterns:
        if not pattern or len(pattern) > 8192 or "*" in pattern[:-1]:
            raise _bad("a uriPattern is a URI, or a prefix ending in one '*'")
    sources = request.query.getall("sources", [])
    if len(sources) > _MAX_LABEL_PATTERNS:
        raise _bad(f"sources: at most {_MAX_LABEL_PATTERNS} values")
    for source in sources:
        validate_did(source)
    limit = _q_int(request, "limit", 50, 1, 250)
    cursor = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    rows = await node.storage.query_labels(patterns, sources, limit, cursor)
    out: dict[str, Any] = {"labels": [Label.from_bytes(data).to_json() for _, data in rows]}
    if len(rows) == limit:
        out["cursor"] = str(rows[-1][0])
    return _json(out)


async def health(request: web.Request) -> web.Response:
    return _json({"version": VERSION})


async def node_info(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    cfg = node.config
    return _json(
        {
            "version": VERSION,
            "did": node.node_did,
            "url": node.url,
            "accounts": await node.storage.account_count(),
            "uptime": int(time.time() - node.started_at),
            "firehose": {
                "subscribers": node.firehose.subscriber_count,
                "lastSeq": node.firehose.last_seq,
                "replayWindow": cfg.replay_window,
            },
            "limits": {
                "maxBody": cfg.max_body,
                "pointsPerHour": cfg.points_per_hour,
                "pointsPerDay": cfg.points_per_day,
                "maxOpsPerCommit": 200,
                "maxRecordBytes": 1024 * 1024,
            },
            "handleDomains": list(cfg.handle_domains),
            "moderation": await node.moderation.info(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.Response(
        body=generate_latest(node.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


_ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.server.describeServer": ("GET", describe_server),
    "com.atproto.server.createAccount": ("POST", create_account),
    "com.atproto.server.createSession": ("POST", create_session),
    "com.atproto.server.refreshSession": ("POST", refresh_session),
    "com.atproto.server.getSession": ("GET", get_session),
    "com.atproto.server.deleteSession": ("POST", delete_session),
    "com.atproto.repo.createRecord": ("POST", create_record),
    "com.atproto.repo.putRecord": ("POST", put_record),
    "com.atproto.repo.deleteRecord": ("POST", delete_record),
    "com.atproto.repo.applyWrites": ("POST", apply_writes),
    "com.atproto.repo.getRecord": ("GET", get_record),
    "com.atproto.repo.listRecords": ("GET", list_records),
    "com.atproto.repo.describeRepo": ("GET", describe_repo),
    "com.atproto.sync.getRepo": ("GET", sync_get_repo),
    "com.atproto.sync.getLatestCommit": ("GET", sync_get_latest_commit),
    "com.atproto.sync.listRepos": ("GET", sync_list_repos),
    "com.atproto.sync.getRecord": ("GET", sync_get_record),
    "com.atproto.sync.getRepoStatus": ("GET", sync_get_repo_status),
    "com.atproto.sync.subscribeRepos": ("GET", subscribe_repos),
    "com.atproto.identity.resolveHandle": ("GET", resolve_handle),
    "skyfed.identity.getLog": ("GET", get_identity_log),
    "com.atproto.label.queryLabels": ("GET", query_labels),
    "skyfed.label.createLabels": ("POST", create_labels),
    "app.bsky.feed.getTimeline": ("GET", get_timeline),
    "app.bsky.feed.getAuthorFeed": ("GET", get_author_feed),
    "app.bsky.feed.getPostThread": ("GET", get_post_thread),
    "app.bsky.feed.getPosts": ("GET", get_posts),
    "app.bsky.feed.getLikes": ("GET", get_likes),
    "app.bsky.feed.getRepostedBy": ("GET", get_reposted_by),
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.actor.getProfiles": ("GET", get_profiles),
    "app.bsky.graph.getFollows": ("GET", get_follows),
    "app.bsky.graph.getFollowers": ("GET", get_followers),
    "skyfed.feed.getLatest": ("GET", get_latest),
    "skyfed.node.getInfo": ("GET", node_info),
    "skyfed.node.listPeers": ("GET", list_peers),
    "skyfed.peer.connect": ("GET", peer_connect),
    "skyfed.sync.listEquivocations": ("GET", list_equivocations),
    "_health": ("GET", health),
}
_ROUTES.update(PORTABILITY_ROUTES)
_ROUTES.update(moderation_routes())


async def _dispatch(request: web.Request) -> web.StreamResponse:
    nsid = request.match_info["nsid"]
    route = _ROUTES.get(nsid)
    if route is None:
        raise RemoteProtocolError(
            f"{nsid} is not served here", error="MethodNotImplemented", status=501
        )
    method, handler = route
    if request.method != method and not (method == "GET" and request.method == "HEAD"):
        raise RemoteProtocolError(
            f"{nsid} takes {method}, not {request.method}", error="InvalidRequest", status=405
        )
    return await handler(request)


async def _trim_events(node: Node) -> None:
    """Keep the firehose replay window at its configured size."""
    while True:
        await asyncio.sleep(30)
        last = node.firehose.last_seq
        if last > node.config.replay_window:
            with contextlib.suppress(Exception):
                await node.storage.trim_events(last - node.config.replay_window)


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_trim_events(app[NODE_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_streams(app: web.Application) -> None:
    await app[NODE_KEY].firehose.close_all()


def make_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[body_middleware(node.config), _errors, labels_middleware],
        client_max_size=node.config.max_body,
    )
    app[NODE_KEY] = node
    app[REPO_STREAMS_KEY] = AddressSlots(
        node.config.max_repo_streams, node.config.max_repo_streams_per_addr, "repo streams"
    )
    app[MODERATION_KEY] = node.moderation
    app.router.add_route("*", "/xrpc/{nsid}", _dispatch)
    add_web_routes(app, node.views, node_label=lambda: (node.url, node.node_did))
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_streams)
    return app
