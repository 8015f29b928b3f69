"""Hostile nodes: peers that attack the honest cluster over the real peer wire.

A scenario's ``[[hostile]]`` tables each start one :class:`HostileNode`: an asyncio
task in the harness process that speaks the peer protocol (``protocol/peerwire.py``:
the signed hello/auth handshake, then peer messages) to the honest nodes it
``links_to``, with its own node keys. It is not one of the cluster's nodes: it has
no data dir, no HTTP server and no topology links, and the verdict never asks it to
agree. What it does is chosen per scenario from these behaviours, each with rates
and bounds (see :mod:`.scenario` for the fields and defaults):

- ``flood``: unsolicited ``heads`` of thousands of made-up repos, ``ihave`` of
  made-up ids, freshly made self-signed identities pushed one after another, more
  links under fresh node keys, and requests (``getrepo`` of real repos, ``whatis``,
  ``getident``, ``getlabels``) it never needed.
- ``forge``: commits the honest nodes must not take as they are, in turn:
  ``bad-signature`` (an honest account's next commit signed by a wrong key),
  ``no-tree`` (a new repo's first commit, ``since`` null, whose tree was never sent
  and does not exist), ``wrapped`` (an honest account's real newest commit wrapped
  as a first commit: ``since`` null, no ops, no tree), ``fake-since`` (a validly
  signed commit whose ``since`` is a rev that never existed) and ``no-op`` (valid
  commits of its own repo that change nothing). The bad-signature and no-tree
  commits go into :attr:`Cluster.forged`: no honest node may ever take one (as a
  head, or on its firehose).
- ``replay``: pushes it received from honest nodes (commits, identities, labels)
  sent again, oldest first, to every node it links to, a while later.
- ``poison``: ``peers`` messages naming URLs that are no peer's: a path, a query and
  fragment, userinfo, loopback under other spellings (``localhost``, ``127.1``,
  ``2130706433``, ``[::ffff:127.0.0.1]``) and a bare address that never completed a
  handshake; and its own ``hello.url`` is one more, with a path and a query. Each spelling is
  a listener of its own on 127.0.0.1 that answers 404 and counts who connects (the
  connecting process is found with psutil) and what it asked for. Only loopback
  spellings are used, so no dial leaves the machine; whether a node refuses private
  ranges is for unit tests of its dial policy.
- ``hold``: connections that ask for something and never read (``getRepo`` of the
  largest repo, firehose subscriptions, peer links that send ``getrepo`` requests),
  and slowloris requests that declare a 1 GiB body and send one byte every
  ``drip`` seconds, or their headers one byte at a time.

Its connections come from a loopback address of its own (127.0.0.2 for the first),
so per-address admission and penalties can tell it from the honest nodes, which all
connect from 127.0.0.1.

Everything is bounded in count, rate and time: a hostile node starts ``start``
seconds into the workload, stops at ``stop`` (or the end of the workload), then
closes every connection it opened. Only its poison listeners stay up until the
cluster closes, to count dials made later. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import random
import secrets
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil

from protocol.car import read_car
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit, CommitEvent
from protocol.encoding import encode
from protocol.errors import SkyfedError
from protocol.identity import IdentityOp, did_for_genesis
from protocol.keys import SigningKey
from protocol.mst import MST, MemoryBlockStore
from protocol.peerwire import MAX_FRAME, auth_payload, decode_message, encode_message
from protocol.repo import Repo, Write
from protocol.syntax import TidClock

from ..client import Client
from ..store.repos import iso_now

if TYPE_CHECKING:
    from .harness import Cluster

__all__ = [
    "BEHAVIOURS",
    "FORGE_KINDS",
    "MAX_REPLAY_KEEP",
    "PEER_PATH",
    "POISON_FORMS",
    "Dial",
    "FloodSpec",
    "ForgeSpec",
    "HoldSpec",
    "HostileNode",
    "HostileSpec",
    "PoisonSpec",
    "ReplaySpec",
    "read_ws_frame",
    "source_address",
    "ws_frame",
]

BEHAVIOURS = ("flood", "forge", "replay", "poison", "hold")
FORGE_KINDS = ("bad-signature", "no-tree", "wrapped", "fake-since", "no-op")
#: Poisoned peer URL spellings; ``{port}`` is a listener of the hostile node's.
POISON_FORMS: dict[str, str] = {
    "path-query-fragment": "http://127.0.0.1:{port}/internal/admin?token=x#",
    "path": "http://127.0.0.1:{port}/some/path",
    "userinfo": "http://admin:secret@127.0.0.1:{port}",
    "localhost": "http://localhost:{port}",
    "short": "http://127.1:{port}",
    "decimal": "http://2130706433:{port}",
    "mapped": "http://[::ffff:127.0.0.1]:{port}",
    # An address that never completed a handshake: not to be passed on.
    "never-a-peer": "http://127.0.0.1:{port}",
    # Only in its own hello (a node takes a connected link's URL as dialled already).
    "hello": "http://127.0.0.1:{port}/internal/hello?token=y#",
}
#: The path every honest dial of a peer asks for; anything else was dialled as given.
PEER_PATH = "/xrpc/skyfed.peer.connect"
#: Dials attributed to a process (psutil) at most; later ones are counted, not traced.
_TRACE_DIALS = 500
#: Pushes remembered for replay, at most (ReplaySpec.keep is capped by it).
MAX_REPLAY_KEEP = 10_000
#: A link the hostile node reopens under a fresh key after an honest node closed it,
#: at most this many times in all.
_REOPENS = 50
_HANDSHAKE_LIMIT = 10.0
#: Seconds before another try at a link a node refused.
_REOPEN_WAIT = 0.5
#: The hostile node's own big repo (``hold.repo_mb``): records of this size, in a
#: collection no view reads.
_BLOB_COLLECTION = "test.skyfed.hostile.blob"
_BLOB_BYTES = 1_000_000
#: Distinct unsolicited ``heads`` messages a flood makes and sends in turn.
_HEADS_POOL = 8
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


# -- the spec (parsed and checked by scenario.py) ---------------------------------------


@dataclass(frozen=True, slots=True)
class FloodSpec:
    #: Flood messages per second on each link.
    rate: float = 5.0
    #: Flood messages in all (heads, ihave, identity pushes and requests, in turn).
    messages: int = 200
    #: Made-up repos in one unsolicited ``heads`` (the decoder allows 4096).
    heads_items: int = 4096
    #: Made-up ids in one ``ihave`` (the decoder allows 4096).
    ihave_ids: int = 1024
    #: Fresh self-signed identities pushed, in all.
    identities: int = 100
    #: More links opened under fresh node keys, in all (one per flood tick).
    keys: int = 10
    #: Requests it never needed, in all.
    requests: int = 100


@dataclass(frozen=True, slots=True)
class ForgeSpec:
    #: Forged commits per second (over all links).
    rate: float = 1.0
    #: Forged commits in all, cycling through ``kinds``.
    count: int = 20
    kinds: tuple[str, ...] = FORGE_KINDS


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    #: Replayed pushes per second on each link.
    rate: float = 5.0
    #: Replayed pushes in all.
    count: int = 200
    #: Pushes remembered to replay (the oldest go first).
    keep: int = 500
    #: Seconds after the hostile node starts before replaying begins.
    after: float = 3.0


@dataclass(frozen=True, slots=True)
class PoisonSpec:
    #: ``peers`` messages per second on each link.
    rate: float = 1.0
    #: ``peers`` messages in all.
    count: int = 20
    #: Dials of one poisoned address (stripped to scheme, host and port) by one honest
    #: node that the verdict tolerates (0: none). A node whose dial policy permits
    #: loopback (the harness's) may try a learned loopback address once per back-off
    #: window (15-45 s). A dial that carries a poisoned path, query or userinfo, or one
    #: by a node the hostile node never linked to (the URL was passed on), always
    #: fails the verdict.
    max_dials: int = 0


@dataclass(frozen=True, slots=True)
class HoldSpec:
    #: Per target node: requests never read (getRepo of the largest repo, and
    #: firehose subscriptions, half each).
    connections: int = 10
    #: Per target node: peer links that send ``getrepo`` requests and never read.
    links: int = 2
    #: ``getrepo`` requests on each of those links.
    requests: int = 20
    #: Per target node: slowloris requests (half drip a body, half their headers).
    slowloris: int = 10
    #: Seconds between slowloris bytes.
    drip: float = 2.0
    #: MB of a repo of the hostile node's own (pushed first, one 1 MB record per
    #: commit) that the held requests ask for; 0: the busiest honest repo instead.
    repo_mb: int = 0


@dataclass(frozen=True, slots=True)
class HostileSpec:
    behaviours: tuple[str, ...]
    links_to: tuple[int, ...]
    #: Seconds into the workload when it starts, and when it stops (None: the end).
    start: float = 1.0
    stop: float | None = None
    flood: FloodSpec | None = None
    forge: ForgeSpec | None = None
    replay: ReplaySpec | None = None
    poison: PoisonSpec | None = None
    hold: HoldSpec | None = None

    def describe(self) -> str:
        return f"hostile ({', '.join(self.behaviours)}) linked to nodes {list(self.links_to)}"


# -- what it saw ----------------------------------------------------------------------


@dataclass(slots=True)
class Dial:
    """One connection to a poison listener."""

    t: float
    form: str
    #: The honest node whose process made it (psutil), or None if not found.
    node: int | None
    #: The request line's target ("" if none came within 2 s).
    target: str
    #: True when the dial carried the poisoned URL as given (another path, a query,
    #: or userinfo as an Authorization header): a server-side request forgery.
    as_given: bool
    #: An Authorization header came along (the userinfo of the URL).
    credentials: bool = False


@dataclass(slots=True)
class _Held:
    kind: str
    opened: float
    closed_by_node: float | None = None


@dataclass(slots=True)
class Stats:
    sent: Counter[str] = field(default_factory=Counter)
    links_opened: int = 0
    #: Times an honest node closed one of its links (cut it off), and when first.
    links_closed: int = 0
    first_cut: float | None = None
    #: Links it tried to open that a node refused (before or during the handshake).
    handshakes_refused: int = 0
    held: list[_Held] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


# -- a peer link ----------------------------------------------------------------------


class _Link:
    """One authenticated link to an honest node, answering what it is asked."""

    def __init__(
        self, owner: HostileNode, node: int, ws: aiohttp.ClientWebSocketResponse, key: SigningKey
    ):
        self.owner = owner
        self.node = node
        self.ws = ws
        self.key = key
        self.rids = 1 << 20
        self.reader: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, t: str, **fields: Any) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(encode_message(t, **fields))
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False
        self.owner.stats.sent[t] += 1
        return True

    async def request(self, t: str, **fields: Any) -> bool:
        self.rids += 1
        return await self.send(t, rid=self.rids, **fields)

    async def push(self, kind: str, msg_id: bytes, data: bytes) -> bool:
        return await self.send("push", id=msg_id, kind=kind, data=data, round=0)

    async def read(self) -> None:
        """Answer requests from what the hostile node holds; remember pushes to replay."""
        owner = self.owner
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            try:
                m = decode_message(msg.data)
            except SkyfedError:
                continue
            t = m["t"]
            if t == "push":
                owner.remember(m["kind"], m["id"], m["data"])
            elif t == "getident":
                ops = owner.identities.get(m["did"])
                if ops:
                    await self.send("ident", rid=m["rid"], did=m["did"], ops=ops)
                else:
                    await self.send("error", rid=m["rid"], error="NotFound", message=m["did"])
            elif t == "getrepo":
                await self.send("error", rid=m["rid"], error="RepoNotFound", message=m["did"])
            elif t == "getlabels":
                await self.send("labels", rid=m["rid"], src=m["src"], labels=[])
            elif t == "whatis":
                await self.send("heads", rid=m["rid"], items=[])
        if not self.closing:
            owner.link_lost()


# -- the hostile node -------------------------------------------------------------------


class HostileNode:
    """One hostile node of a scenario; see the module docstring."""

    def __init__(self, index: int, spec: HostileSpec, cluster: Cluster, *, seed: int = 0):
        self.index = index
        self.spec = spec
        self.cluster = cluster
        self.rng = random.Random(seed * 7919 + index)
        self.stats = Stats()
        self.dials: list[Dial] = []
        #: Every honest node it ever linked to (a poisoned dial by another was passed on).
        self.linked: set[int] = set()
        #: did -> identity ops it made (answered to ``getident``).
        self.identities: dict[str, list[bytes]] = {}
        #: What it forged (CIDs), by kind sent.
        self.forged: set[str] = set()
        self.forged_kinds: Counter[str] = Counter()
        self.poison_urls: dict[str, str] = {}
        self._listeners: list[asyncio.Server] = []
        self._links: list[_Link] = []
        #: Links under fresh keys opened by ``flood`` (not reopened when cut).
        self._extra: list[_Link] = []
        self._replay_buffer: deque[tuple[str, bytes, bytes]] = deque(
            maxlen=min(spec.replay.keep if spec.replay else 1, MAX_REPLAY_KEEP)
        )
        self._replay_ids: set[bytes] = set()
        self._http: aiohttp.ClientSession | None = None
        self._t0 = time.monotonic()
        self._stop_at = 0.0
        self._clock = TidClock(self.rng.randrange(1024))
        self._own: tuple[str, SigningKey, Repo] | None = None
        self._reopens = 0
        #: node -> when to try again to reopen its cut link.
        self._lost: dict[int, float] = {}
        self._socks: list[socket.socket] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._trace_slots = _TRACE_DIALS
        #: The loopback address its connections come from (see :func:`source_address`).
        self.source = source_address(index)

    # -- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Open the poison listeners (before anything runs: their URLs go in hellos)."""
        if "poison" not in self.spec.behaviours:
            return
        for form, template in POISON_FORMS.items():
            on_dial = functools.partial(self._on_dial, form)
            server = await asyncio.start_server(on_dial, "127.0.0.1", 0)
            self._listeners.append(server)
            port = server.sockets[0].getsockname()[1]
            self.poison_urls[form] = template.format(port=port)

    async def run(self, t0: float, duration: float) -> None:
        """Play the behaviours from ``t0 + start`` until ``t0 + stop``; everything
        opened is closed before this returns."""
        spec = self.spec
        self._t0 = t0
        stop = spec.stop if spec.stop is not None else duration
        self._stop_at = t0 + stop
        wait = t0 + spec.start - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if time.monotonic() >= self._stop_at:
            return
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(local_addr=(self.source, 0)),
        )
        try:
            # Bounded as a whole: a node that stops reading must not hang the run.
            async with asyncio.timeout(max(0.0, self._stop_at - time.monotonic()) + 5.0):
                for i in spec.links_to:
                    await self._open_link(i)
                if self._wants_own_repo():
                    await self._make_own_repo()
                async with asyncio.TaskGroup() as tg:
                    for b in spec.behaviours:
                        tg.create_task(self._guard(b, getattr(self, f"_{b}")))
        except TimeoutError:
            self.stats.errors["ran over its stop time"] += 1
        finally:
            await self._close_attack()

    async def _guard(self, name: str, behaviour: Callable[[], Awaitable[None]]) -> None:
        """One behaviour; a failure of the harness's own is counted, never raised (a
        hostile node that breaks must not stop the run), and the behaviour ends."""
        try:
            await behaviour()
        except Exception as e:  # counted in the report (errors), never raised
            self.stats.errors[f"{name}: {type(e).__name__}: {e}"[:200]] += 1

    async def close(self) -> None:
        await self._close_attack()
        for server in self._listeners:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._listeners.clear()

    async def _close_attack(self) -> None:
        for link in [*self._links, *self._extra]:
            link.closing = True
            with contextlib.suppress(Exception):
                await link.ws.close()
            if link.reader is not None:
                link.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.reader
        self._links.clear()
        self._extra.clear()
        for sock in self._socks:
            sock.close()
        self._socks.clear()
        for w in self._writers:
            w.close()
        self._writers.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _running(self) -> bool:
        return time.monotonic() < self._stop_at

    async def _tick(self, rate: float) -> bool:
        """Wait one period of ``rate``; False once the stop time has come."""
        await asyncio.sleep(1.0 / rate if rate > 0 else 1.0)
        return self._running()

    # -- links ---------------------------------------------------------------------
    def _node_url(self, i: int) -> str | None:
        node = self.cluster.nodes[i]
        return node.url if node.alive else None

    async def _open_link(self, i: int, *, extra: bool = False) -> _Link | None:
        """A link to honest node ``i`` under a fresh node key (the hello may carry a
        poisoned URL)."""
        url = self._node_url(i)
        if url is None or self._http is None:
            return None
        key = SigningKey.from_seed(secrets.token_bytes(32))
        hello_url = self.poison_urls.get("hello")
        try:
            ws = await self._http.ws_connect(url + PEER_PATH, max_msg_size=MAX_FRAME)
        except (aiohttp.ClientError, OSError) as e:
            self.stats.handshakes_refused += 1  # refused before the upgrade (or down)
            self.stats.errors[f"dial node {i}: {type(e).__name__}"] += 1
            return None
        try:
            async with asyncio.timeout(_HANDSHAKE_LIMIT):
                await ws.send_bytes(
                    encode_message(
                        "hello",
                        v=1,
                        node=key.did_key(),
                        url=hello_url,
                        challenge=secrets.token_bytes(32),
                        caps=["plumtree", "negentropy-v1"],
                        share=hello_url is not None,
                    )
                )
                hello = decode_message((await ws.receive()).data)
                sig = key.sign(auth_payload(hello["challenge"], key.did_key(), hello["node"]))
                await ws.send_bytes(encode_message("auth", sig=sig))
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise ConnectionRefusedError("closed during the handshake")
                if decode_message(msg.data)["t"] != "auth":
                    raise ConnectionRefusedError("no auth")
        except (TimeoutError, ConnectionError, SkyfedError, TypeError, KeyError) as e:
            self.stats.handshakes_refused += 1
            self.stats.errors[f"handshake with node {i}: {type(e).__name__}"] += 1
            await ws.close()
            return None
        link = _Link(self, i, ws, key)
        link.closing = extra  # an extra link's loss is not a main link's cut
        link.reader = asyncio.create_task(link.read())
        (self._extra if extra else self._links).append(link)
        self.linked.add(i)
        self.stats.links_opened += 1
        self.stats.sent["link" if not extra else "link (fresh key)"] += 1
        return link

    def link_lost(self) -> None:
        self.stats.links_closed += 1
        if self.stats.first_cut is None:
            self.stats.first_cut = self.now()

    async def _live_links(self) -> list[_Link]:
        """The open main links; a closed one is reopened at once under a fresh key
        (as a cut-off peer would), at most ``_REOPENS`` times in all."""
        out = []
        for link in list(self._links):
            if not link.closed:
                out.append(link)
                continue
            self._links.remove(link)
            self._lost.setdefault(link.node, 0.0)
        now = time.monotonic()
        for i, at in list(self._lost.items()):
            if at > now or self._reopens >= _REOPENS or not self._running():
                continue
            self._reopens += 1
            fresh = await self._open_link(i)
            if fresh is None:
                self._lost[i] = now + _REOPEN_WAIT  # refused: try again a little later
                continue
            del self._lost[i]
            out.append(fresh)
        return out

    # -- own identities and repo -------------------------------------------------------
    def _new_identity(self) -> tuple[str, SigningKey, bytes]:
        key = SigningKey.from_seed(secrets.token_bytes(32))
        handle = f"h{secrets.token_hex(6)}.hostile.test"
        op = IdentityOp.create(
            [key.did_key()], key.did_key(), handle, "https://hostile.test", None, key
        )
        did = did_for_genesis(op)
        data = op.to_bytes()
        self.identities[did] = [data]
        return did, key, data

    async def _push_identity(self, link: _Link, did: str, op: bytes) -> bool:
        payload = encode({"did": did, "ops": [op]})
        return await link.push("identity", cid_for_msgpack(op).to_bytes(), payload)

    def _rev(self) -> str:
        return self._clock.next(int(time.time() * 1e6))

    def _wants_own_repo(self) -> bool:
        hold = self.spec.hold
        return bool(
            {"forge", "replay"} & set(self.spec.behaviours) or (hold is not None and hold.repo_mb)
        )

    async def _make_own_repo(self) -> None:
        """An identity and a repo of its own, known to every node it links to: the
        ground for no-op updates, fabricated ``since`` and replays of its own, and
        (``hold.repo_mb``) a big repo to ask for and never read."""
        did, key, op = self._new_identity()
        made = Repo.create(did, key, rev=self._rev(), time=iso_now())
        self._own = (did, key, made.repo)
        for link in self._links:
            await self._push_identity(link, did, op)
            await link.push("commit", made.commit_cid.to_bytes(), made.event.to_bytes())
        self.remember("commit", made.commit_cid.to_bytes(), made.event.to_bytes())
        size = self.spec.hold.repo_mb if self.spec.hold is not None else 0
        repo = made.repo
        for _ in range(size):
            # One record of about 1 MB per commit (a record may be 1 MiB, a commit's
            # blocks 2 MiB); a collection no view reads.
            rkey = self._rev()
            record = {"$type": _BLOB_COLLECTION, "data": os.urandom(_BLOB_BYTES)}
            w = Write("create", _BLOB_COLLECTION, rkey, record)
            grown = repo.apply_writes([w], key, rev=self._rev(), time=iso_now(), validate=False)
            repo = grown.repo
            for link in self._links:
                await link.push("commit", grown.commit_cid.to_bytes(), grown.event.to_bytes())
            self.stats.sent["push (big repo, 1 MB)"] += 1
        self._own = (did, key, repo)

    def remember(self, kind: str, msg_id: bytes, data: bytes) -> None:
        if self.spec.replay is None or msg_id in self._replay_ids:
            return
        if len(self._replay_buffer) == self._replay_buffer.maxlen:
            self._replay_ids.discard(self._replay_buffer[0][1])
        self._replay_buffer.append((kind, msg_id, data))
        self._replay_ids.add(msg_id)

    # -- honest repos, read the way anyone can (public XRPC) ---------------------------
    async def _honest_dids(self, i: int) -> list[str]:
        url = self._node_url(i)
        if url is None or self._http is None:
            return []
        out = []
        async for repo in Client(url, session=self._http).paginate(
            "com.atproto.sync.listRepos", "repos", {"limit": 1000}
        ):
            if repo["did"] not in self.identities:
                out.append(repo["did"])
            if len(out) >= 1000:
                break
        return out

    async def _honest_repo(self, i: int, did: str) -> tuple[Repo, bytes] | None:
        url = self._node_url(i)
        if url is None or self._http is None:
            return None
        car = await Client(url, session=self._http).call(
            "com.atproto.sync.getRepo", params={"did": did}
        )
        roots, blocks = read_car(car)
        block = blocks[roots[0]]
        commit = Commit.from_bytes(block)
        return Repo(did, MST.load(MemoryBlockStore(blocks), commit.data), commit, roots[0]), block

    # -- flood ---------------------------------------------------------------------------
    def _fake_did(self) -> str:
        return "did:skyfed:" + base64.b32encode(os.urandom(15)).decode().lower()[:24]

    def _fake_heads(self, n: int) -> bytes:
        rev = self._rev()
        items = [
            {
                "kind": "repo",
                "did": self._fake_did(),
                "head": cid_for_msgpack(os.urandom(16)).to_bytes(),
                "rev": rev,
            }
            for _ in range(n)
        ]
        return encode_message("heads", rid=None, items=items)

    async def _flood(self) -> None:
        spec = self.spec.flood or FloodSpec()
        # A few distinct heads messages, made once and sent in turn: making one of
        # 4,096 items takes tens of milliseconds of the harness's own CPU.
        pool = [
            self._fake_heads(spec.heads_items)
            for _ in range(min(_HEADS_POOL, max(1, spec.messages // 4)))
        ]
        identities, keys, requests = spec.identities, spec.keys, spec.requests
        dids: list[str] = []
        sent = 0
        turn = 0
        while sent < spec.messages and self._running():
            if keys > 0:
                keys -= 1
                await self._open_link(self.rng.choice(self.spec.links_to), extra=True)
            for link in await self._live_links():
                if sent >= spec.messages:
                    break
                kind = ("heads", "ihave", "identity", "request")[turn % 4]
                turn += 1
                if kind == "identity" and identities <= 0:
                    kind = "heads"
                if kind == "request" and requests <= 0:
                    kind = "ihave"
                if kind == "heads":
                    if link.closed:
                        continue
                    with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                        await link.ws.send_bytes(pool[turn % len(pool)])
                        self.stats.sent["heads (unsolicited)"] += 1
                elif kind == "ihave":
                    ids = [os.urandom(36) for _ in range(spec.ihave_ids)]
                    await link.send("ihave", ids=ids, round=0)
                elif kind == "identity":
                    identities -= 1
                    did, _, op = self._new_identity()
                    await self._push_identity(link, did, op)
                else:
                    requests -= 1
                    if not dids:
                        dids = await self._honest_dids(link.node) or [self._fake_did()]
                    did = self.rng.choice(dids)
                    which = self.rng.randrange(4)
                    if which == 0:
                        await link.request("getrepo", did=did, since=None)
                    elif which == 1:
                        await link.request("getident", did=did)
                    elif which == 2:
                        await link.request("getlabels", src=did)
                    else:
                        ids = [os.urandom(36) for _ in range(spec.ihave_ids)]
                        await link.request("whatis", ids=ids)
                sent += 1
            if not await self._tick(spec.rate):
                break

    # -- forge ---------------------------------------------------------------------------
    async def _forge(self) -> None:
        spec = self.spec.forge or ForgeSpec()
        dids: list[str] = []
        for n in range(spec.count):
            if not await self._tick(spec.rate):
                break
            links = await self._live_links()
            if not links:
                continue
            link = links[n % len(links)]
            kind = spec.kinds[n % len(spec.kinds)]
            if not dids:
                dids = await self._honest_dids(link.node)
            if kind in ("bad-signature", "wrapped") and not dids:
                continue
            did = dids[n % len(dids)] if dids else ""
            if await self._forge_one(kind, link, did):
                self.forged_kinds[kind] += 1

    async def _forge_one(self, kind: str, link: _Link, did: str) -> bool:
        if kind == "bad-signature":
            got = await self._honest_repo(link.node, did)
            if got is None:
                return False
            repo, _ = got
            clock = TidClock(self.rng.randrange(1024))
            clock.observe(repo.rev)
            impostor = SigningKey.from_seed(secrets.token_bytes(32))
            record = {"$type": "app.bsky.feed.post", "text": "forged", "createdAt": iso_now()}
            rev = clock.next(int(time.time() * 1e6))
            w = Write("create", "app.bsky.feed.post", rev, record)
            event = repo.apply_writes([w], impostor, rev=rev, time=iso_now()).event
            self._forged(event.commit)
            return await link.push("commit", event.commit.to_bytes(), event.to_bytes())
        if kind == "no-tree":
            own, key, op = self._new_identity()
            await self._push_identity(link, own, op)
            nowhere = cid_for_msgpack(os.urandom(32))  # a tree that does not exist
            commit = Commit.sign(own, nowhere, self._rev(), key, prev=None)
            event = self._bare_event(commit, since=None)
            self._forged(event.commit)
            return await link.push("commit", event.commit.to_bytes(), event.to_bytes())
        if kind == "wrapped":
            got = await self._honest_repo(link.node, did)
            if got is None:
                return False
            event = self._bare_event(got[0].commit, since=None)
            return await link.push("commit", event.commit.to_bytes(), event.to_bytes())
        if self._own is None:
            return False
        own, key, repo = self._own
        made = repo.apply_writes([], key, rev=self._rev(), time=iso_now())
        if kind == "fake-since":
            # Validly signed, but it claims to follow a rev that never existed.
            fake = TidClock(self.rng.randrange(1024))
            fake.observe(repo.rev)
            since = fake.next(int(time.time() * 1e6) - 1_000_000)
            if not since < made.repo.rev:
                since = repo.rev[:-1] + ("2" if repo.rev[-1] != "2" else "3")
            event = CommitEvent(
                repo=own,
                rev=made.event.rev,
                since=since,
                commit=made.event.commit,
                ops=(),
                blocks=made.event.blocks,
                prev_data=made.event.prev_data,
                time=made.event.time,
            )
            return await link.push("commit", event.commit.to_bytes(), event.to_bytes())
        # no-op: a valid commit that changes nothing, sent to every link.
        self._own = (own, key, made.repo)
        self.remember("commit", made.commit_cid.to_bytes(), made.event.to_bytes())
        ok = False
        for each in self._links:
            ok = await each.push("commit", made.commit_cid.to_bytes(), made.event.to_bytes()) or ok
        return ok

    def _bare_event(self, commit: Commit, *, since: str | None) -> CommitEvent:
        """``commit`` as an event with no ops and no tree: only the commit block."""
        block = commit.to_bytes()
        return CommitEvent(
            repo=commit.did,
            rev=commit.rev,
            since=since,
            commit=cid_for_msgpack(block),
            ops=(),
            blocks=(block,),
            prev_data=commit.data,
            time=iso_now(),
        )

    def _forged(self, cid: CID) -> None:
        self.forged.add(str(cid))
        self.cluster.forged.add(str(cid))

    # -- replay --------------------------------------------------------------------------
    async def _replay(self) -> None:
        spec = self.spec.replay or ReplaySpec()
        await asyncio.sleep(spec.after)
        sent = 0
        k = 0
        while sent < spec.count and self._running():
            links = await self._live_links()
            if self._replay_buffer and links:
                kind, msg_id, data = self._replay_buffer[k % len(self._replay_buffer)]
                k += 1
                for link in links:
                    if sent >= spec.count:
                        break
                    if await link.push(kind, msg_id, data):
                        self.stats.sent["replayed"] += 1
                        sent += 1
            if not await self._tick(spec.rate):
                break

    # -- poison --------------------------------------------------------------------------
    async def _poison(self) -> None:
        spec = self.spec.poison or PoisonSpec()
        urls = [url for form, url in self.poison_urls.items() if form != "hello"]
        sent = 0
        while sent < spec.count and self._running():
            for link in await self._live_links():
                if sent < spec.count and await link.send("peers", urls=urls):
                    sent += 1
            if not await self._tick(spec.rate):
                break

    async def _on_dial(
        self, form: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A connection to a poisoned address: who made it, and what it asked for."""
        t = self.now()
        peer = writer.get_extra_info("peername")
        node = None
        if self._trace_slots > 0 and isinstance(peer, tuple) and len(peer) >= 2:
            # Now, while the dialler's socket is open: it may hang up on the 404.
            self._trace_slots -= 1
            node = await asyncio.to_thread(self._who, int(peer[1]))
        target, auth = "", False
        try:
            async with asyncio.timeout(2.0):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            target = parts[1] if len(parts) >= 2 else lines[0][:200]
            auth = any(h.lower().startswith("authorization:") for h in lines[1:])
            writer.write(_NOT_FOUND)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
        as_given = bool(target) and (target != PEER_PATH or auth)
        self.dials.append(Dial(t, form, node, target, as_given, auth))

    def _who(self, port: int) -> int | None:
        """The honest node whose process has a socket on local ``port``."""
        for n in self.cluster.nodes:
            if n.pid is None or not n.alive:
                continue
            try:
                conns = psutil.Process(n.pid).net_connections(kind="inet")
            except psutil.Error:
                continue
            if any(c.laddr and c.laddr.port == port for c in conns):
                return n.index
        return None

    # -- hold ----------------------------------------------------------------------------
    async def _hold(self) -> None:
        spec = self.spec.hold or HoldSpec()
        biggest = ""
        tasks: list[asyncio.Task[None]] = []
        try:
            for i in self.spec.links_to:
                node = self.cluster.nodes[i]
                if not node.alive or node.process is None:
                    continue
                port = node.process.port
                if self._own is not None and spec.repo_mb:
                    biggest = self._own[0]
                    await self._until_held(i, self._own[2])
                elif not biggest:
                    dids = await self._honest_dids(i)
                    biggest = await self._biggest(i, dids)
                for k in range(spec.connections):
                    if not self._running():
                        break
                    if k % 2 == 0:
                        req = f"GET /xrpc/com.atproto.sync.getRepo?did={biggest} HTTP/1.1\r\n"
                        req += f"Host: 127.0.0.1:{port}\r\n\r\n"
                        await self._never_read(port, req.encode(), "getRepo never read")
                    else:
                        key = base64.b64encode(os.urandom(16)).decode()
                        req = "GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\n"
                        req += f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                        req += f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        req += "Sec-WebSocket-Version: 13\r\n\r\n"
                        await self._never_read(port, req.encode(), "firehose never read")
                for _ in range(spec.links):
                    if self._running():
                        await self._link_never_read(port, biggest, spec.requests)
                for k in range(spec.slowloris):
                    if self._running():
                        tasks.append(asyncio.create_task(self._slowloris(port, k % 2 == 0, spec)))
            wait = self._stop_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _until_held(self, i: int, repo: Repo, limit: float = 15.0) -> None:
        """Wait (up to ``limit`` s) until node ``i`` holds ``repo`` at its head."""
        url = self._node_url(i)
        if url is None or self._http is None:
            return
        client = Client(url, session=self._http)
        deadline = min(time.monotonic() + limit, self._stop_at)
        while time.monotonic() < deadline:
            with contextlib.suppress(SkyfedError, aiohttp.ClientError):
                got = await client.call(
                    "com.atproto.sync.getLatestCommit", params={"did": repo.did}
                )
                if got["rev"] >= repo.rev:
                    return
            await asyncio.sleep(0.2)  # poll: another process
        self.stats.errors[f"node {i} did not take the big repo in {limit:g} s"] += 1

    async def _biggest(self, i: int, dids: Sequence[str]) -> str:
        """The repo with the most commits among ``dids`` (its rev count is not public:
        the newest rev stands in for activity), else any."""
        url = self._node_url(i)
        if not dids or url is None or self._http is None:
            return self._fake_did()
        best, best_rev = dids[0], ""
        client = Client(url, session=self._http)
        for did in dids[:50]:
            with contextlib.suppress(SkyfedError, aiohttp.ClientError):
                got = await client.call("com.atproto.sync.getLatestCommit", params={"did": did})
                if got["rev"] > best_rev:
                    best, best_rev = did, got["rev"]
        return best

    async def _small_socket(self, port: int) -> socket.socket:
        """A connected socket with a small receive buffer (so "never read" pushes
        back on the sender at once)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((self.source, 0))
        sock.setblocking(False)
        try:
            async with asyncio.timeout(5.0):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        self._socks.append(sock)
        return sock

    async def _never_read(self, port: int, request: bytes, kind: str) -> None:
        sock = await self._small_socket(port)
        await asyncio.get_running_loop().sock_sendall(sock, request)
        self.stats.held.append(_Held(kind, self.now()))
        self.stats.sent[kind] += 1

    async def _link_never_read(self, port: int, did: str, requests: int) -> None:
        """A peer link (handshake done by hand over a raw socket) that asks for
        ``did``'s whole repo ``requests`` times and never reads an answer."""
        sock = await self._small_socket(port)
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        self._socks.remove(sock)
        self._writers.append(writer)
        key = SigningKey.from_seed(secrets.token_bytes(32))
        ws_key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {PEER_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        try:
            async with asyncio.timeout(_HANDSHAKE_LIMIT):
                head = await reader.readuntil(b"\r\n\r\n")
                if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                    raise ConnectionRefusedError("no upgrade")
                hello_out = encode_message(
                    "hello",
                    v=1,
                    node=key.did_key(),
                    url=None,
                    challenge=secrets.token_bytes(32),
                    caps=[],
                    share=False,
                )
                writer.write(ws_frame(hello_out))
                hello = decode_message(await read_ws_frame(reader))
                sig = key.sign(auth_payload(hello["challenge"], key.did_key(), hello["node"]))
                writer.write(ws_frame(encode_message("auth", sig=sig)))
                decode_message(await read_ws_frame(reader))
        except (TimeoutError, ConnectionError, SkyfedError, asyncio.IncompleteReadError) as e:
            self.stats.handshakes_refused += 1
            self.stats.errors[f"hold link: {type(e).__name__}"] += 1
            return
        for rid in range(1, requests + 1):
            writer.write(ws_frame(encode_message("getrepo", rid=rid, did=did, since=None)))
        await writer.drain()
        self.stats.held.append(_Held("peer link never read", self.now()))
        self.stats.sent["getrepo never read"] += requests

    async def _slowloris(self, port: int, body: bool, spec: HoldSpec) -> None:
        """A request that declares 1 GiB (``body``) or sends its headers, one byte
        every ``drip`` seconds; records when the node hangs up."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(self.source, 0)
        )
        self._writers.append(writer)
        head = (
            f"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        ).encode()
        held = _Held("slowloris body" if body else "slowloris headers", self.now())
        self.stats.held.append(held)
        self.stats.sent[held.kind] += 1
        drip = head[len(head) // 2 :] if not body else b"{" + b" " * 10_000
        if body:
            writer.write(head)
        else:
            writer.write(head[: len(head) // 2])

        async def hung_up() -> None:
            while await reader.read(4096):
                pass

        watcher = asyncio.create_task(hung_up())
        try:
            for byte in drip:
                if watcher.done() or not self._running():
                    break
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(watcher), spec.drip)
            if watcher.done() and held.closed_by_node is None:
                held.closed_by_node = self.now()
        except (ConnectionError, OSError):
            held.closed_by_node = self.now()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    # -- the report ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        by_form: dict[str, dict[str, Any]] = {}
        for form in self.poison_urls:
            mine = [d for d in self.dials if d.form == form]
            by_form[form] = {
                "url": self.poison_urls[form],
                "dials": len(mine),
                "as_given": sum(d.as_given for d in mine),
                "by_nodes": sorted({d.node for d in mine if d.node is not None}),
            }
        held = self.stats.held
        closed = [h for h in held if h.closed_by_node is not None]
        return {
            "hostile": self.index,
            "behaviours": list(self.spec.behaviours),
            "links_to": list(self.spec.links_to),
            "sent": dict(sorted(self.stats.sent.items())),
            "links_opened": self.stats.links_opened,
            "links_cut_by_nodes": self.stats.links_closed,
            "first_cut": None if self.stats.first_cut is None else round(self.stats.first_cut, 2),
            "handshakes_refused": self.stats.handshakes_refused,
            "forged": dict(self.forged_kinds),
            "held": dict(Counter(h.kind for h in held)),
            "held_closed_by_nodes": len(closed),
            "held_longest_before_close": (
                round(max(h.closed_by_node - h.opened for h in closed if h.closed_by_node), 2)
                if closed
                else None
            ),
            "poison": by_form,
            "poison_dials": len(self.dials),
            "errors": dict(self.stats.errors),
        }


def source_address(index: int) -> str:
    """Hostile node ``index`` connects from 127.0.0.(2 + index), so a node that judges
    peers by address as well as by key can tell it from the honest nodes (all on
    127.0.0.1); 127.0.0.1 where the system cannot bind that address. Only the source
    differs: every connection still goes to 127.0.0.1."""
    address = f"127.0.0.{2 + index % 250}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return "127.0.0.1"
    return address


# -- a WebSocket frame by hand (RFC 6455 section 5.2) -----------------------------------


def ws_frame(payload: bytes) -> bytes:
    """One masked binary frame, as a client sends it."""
    mask = os.urandom(4)
    n = len(payload)
    head = b"\x82"
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def read_ws_frame(reader: asyncio.StreamReader, limit: int = 1 << 20) -> bytes:
    """The payload of the next data frame from a server (control frames skipped)."""
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        if n > limit:
            raise ConnectionError(f"a frame of {n} bytes")
        mask = await reader.readexactly(4) if b1 & 0x80 else b""
        data = await reader.readexactly(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        opcode = b0 & 0x0F
        if opcode == 0x8:
            raise ConnectionError("closed")
        if opcode in (0x1, 0x2):
            return data
