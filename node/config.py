"""A node's settings: defaults, a TOML file, and command-line overrides, in that order.

Also the node's own secrets (its ed25519 node key and the token-signing secret),
kept as files in the data directory with mode 0600 and made by ``skyfed node init``
(or on first start).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import secrets
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import SkyfedError
from protocol.keys import SigningKey, verify_key

from .datadir import make_data_dir, write_private_text

__all__ = [
    "NodeConfig",
    "NodeSecrets",
    "describe_settings",
    "load_config",
    "load_or_create_secrets",
]


def default_data_dir() -> Path:
    import platformdirs  # only where no data dir was given

    return Path(platformdirs.user_data_dir("skyfed", appauthor=False)) / "node"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node can be told. Field names are the TOML keys."""

    data_dir: Path = field(default_factory=default_data_dir)
    #: Where the node's database lives: "sqlite" (``node.sqlite3`` in the data
    #: directory), or a PostgreSQL URL, ``"postgresql://user@host/dbname"`` (see
    #: docs/postgresql.md; a password is better kept in ``~/.pgpass`` than here).
    storage: str = "sqlite"
    host: str = "127.0.0.1"
    port: int = 2583
    #: The URL clients and peers reach this node at (default: http://host:port).
    public_url: str | None = None
    #: Handle suffixes accounts may take here (atproto's availableUserDomains). This
    #: node is the only authority for handles under them (docs/security.md, Handles).
    handle_domains: tuple[str, ...] = (".skyfed.test",)
    #: Handle domains several nodes serve (a local harness's ``.skyfed.test``): a
    #: handle under one is confirmed by whichever node registered it, first seen
    #: wins. A public node lists only domains it shares with nodes it trusts. The
    #: default may stay ``.skyfed.test``: ``.test`` is reserved for testing (RFC
    #: 6761) and can never be a real domain.
    shared_handle_domains: tuple[str, ...] = (".skyfed.test",)
    #: Issuers pinned in advance for other nodes' handle domains, each
    #: ``"<domain>=<node did:key>"``: that key confirms handles under the domain. A
    #: domain not listed is confirmed only by a node this node dialled at the
    #: domain's name (``.b.test``: ``http(s)://b.test[:port]``) and handshook with;
    #: nothing is pinned on first use.
    pinned_handle_issuers: tuple[str, ...] = ()
    #: Firehose events kept for replay.
    replay_window: int = 100_000
    #: Unsent bytes a firehose subscriber may fall behind by before it is dropped.
    subscriber_buffer: int = 4 * 1024 * 1024
    #: Unsent firehose bytes held for all subscribers together: past it, the ones
    #: furthest behind are dropped (ConsumerTooSlow) until the total is under it.
    firehose_buffer_total: int = 64 * 1024 * 1024
    #: Seconds a subscriber may stay behind (unsent bytes waiting) before it is dropped.
    subscriber_timeout: float = 60.0
    #: Firehose subscribers at once: in all, and from one client address.
    max_subscribers: int = 256
    max_subscribers_per_addr: int = 16
    #: Write points per account (create 3, update 2, delete 1).
    points_per_hour: int = 5_000
    points_per_day: int = 35_000
    #: Login / signup attempts per client address: rate per second and burst.
    auth_rate: float = 2.0
    auth_burst: int = 20
    #: Largest request body accepted, in bytes.
    max_body: int = 2 * 1024 * 1024
    #: Seconds a client may take to send a request body (408 after).
    body_timeout: float = 20.0
    #: Requests receiving a body at once (a body is held whole): in all, and from one
    #: client address; more are answered 503 / 429 at once.
    max_body_readers: int = 32
    max_body_readers_per_addr: int = 8
    #: Seconds an idle HTTP connection (no request yet, or between requests) is kept.
    idle_timeout: float = 30.0
    #: Repository streams (``getRepo``) at once: in all, and to one client address.
    max_repo_streams: int = 16
    max_repo_streams_per_addr: int = 4
    #: Seconds a response stream may wait for a reader to take its next chunk before
    #: the connection is cut (getRepo; a reader that never reads holds nothing longer).
    send_timeout: float = 20.0
    #: Largest repository import (``importRepo``) accepted, in bytes; imports run one
    #: at a time and are parsed in memory.
    max_import_bytes: int = 64 * 1024 * 1024
    #: Seconds an import may take to send its body (the import slot is freed after).
    import_timeout: float = 120.0
    #: Repository imports an account may start per hour.
    imports_per_hour: int = 10
    #: Identities new to this node (DIDs it holds no log for) that ``submitOp`` may
    #: bring, node-wide, per ``submit_new_identities_window`` seconds (a token bucket:
    #: this many at once, refilled evenly). Each is stored and gossiped, and peers
    #: charge it to this node's link budget (``peer_new_identities``); past it,
    #: 429 ``RateLimitExceeded`` and nothing is stored. Ops for DIDs the node holds,
    #: and accounts it hosts (``createAccount``), are not charged.
    submit_new_identities: int = 100
    submit_new_identities_window: float = 3600.0
    access_token_ttl: int = 2 * 3600
    refresh_token_ttl: int = 90 * 86400
    #: Bearer token for the admin endpoints (node policy); None turns them off.
    admin_token: str | None = None
    #: Admin requests per client address: rate per second and burst.
    admin_rate: float = 1.0
    admin_burst: int = 10
    #: A statement of this node's moderation policy, published with its actions.
    moderation_policy: str | None = None
    #: Bytes of JSON one account's app preferences (putPreferences) may take.
    max_preferences_bytes: int = 64 * 1024
    #: Reports (createReport) per account: rate per second and burst.
    report_rate: float = 0.01
    report_burst: int = 10
    #: Open (unresolved) reports one account may have queued here, and the node.
    max_open_reports_per_account: int = 100
    max_open_reports: int = 100_000
    #: Peer node URLs to keep links to.
    peers: tuple[str, ...] = ()
    #: Tell peers about other peers (and accept being told about).
    share_peers: bool = True
    #: Links this node dials at most (static peers always).
    max_peers: int = 8
    #: Seconds between negentropy rounds with each peer.
    reconcile_interval: float = 30.0
    #: Messages per second a peer may send.
    peer_message_rate: float = 5000.0
    #: Seconds a misbehaving peer stays cut off (its node key and its address).
    peer_cooloff: float = 300.0
    #: Bytes queued to one peer before its link is closed (it does not read); one
    #: largest peer message (6 MiB) must fit.
    peer_send_buffer: int = 8 * 1024 * 1024
    #: Bytes queued to all peers together: past it, the link furthest behind is closed.
    peer_buffer_total: int = 64 * 1024 * 1024
    #: Seconds one message may wait for a peer to take it before the link is closed.
    peer_send_timeout: float = 30.0
    #: The memory this node is built to stay under, in MiB: the sum of the bounds
    #: above at their defaults plus an idle node's working set (see
    #: :func:`node.limits.memory_budget` and docs/security.md, "Memory bounds"). Most
    #: of it is one 6 MiB frame (three copies) that every peer link may be sent,
    #: before its handshake too: lower ``max_inbound_links`` to lower it.
    memory_ceiling_mb: int = 1536
    # -- worker processes (node/workers.py) ------------------------------------------
    #: Worker processes for CPU work off the event loop (verifying commits that peers
    #: send, rendering read views): at most this many; unset means the machine's
    #: core count, 0 none (all work in the node's own process). None start before
    #: there is work, and they exit after ``worker_idle_seconds`` without any; each
    #: process may have 64 tasks waiting for it at most.
    workers: int | None = None
    worker_idle_seconds: float = 60.0
    # -- outbound connections and admission (docs/security.md) ---------------------
    #: Which addresses learned from the network may be dialled: "public" (globally
    #: routable only), "private" (also 10/8, 172.16/12, 192.168/16, 100.64/10,
    #: fc00::/7) or "loopback" (also 127/8 and ::1: a local harness). Link-local,
    #: multicast and unspecified addresses never are. See node/net/netpolicy.py.
    dial_policy: str = "public"
    #: Extra networks (CIDR) that may be dialled whatever ``dial_policy`` says.
    dial_allow: tuple[str, ...] = ()
    #: Peer addresses learned from the network kept as dial candidates.
    max_learned_peers: int = 256
    #: Dials of learned addresses per second, all addresses together (token bucket),
    #: and the burst; each address also backs off exponentially after a failure.
    peer_dial_rate: float = 1.0
    peer_dial_burst: int = 8
    #: Inbound peer links held at once (handshaking or up).
    max_inbound_links: int = 32
    #: Peer links (inbound and outbound) per remote address (IPv4 address or IPv6 /64).
    max_links_per_address: int = 4
    #: Inbound peer links accepted per second (all addresses), and the burst.
    peer_accept_rate: float = 5.0
    peer_accept_burst: int = 20
    #: Inbound peer links accepted per second from one address, and the burst.
    peer_address_accept_rate: float = 0.2
    peer_address_accept_burst: int = 4
    #: Networks (CIDR) where many honest nodes share one address (a NAT, a local test
    #: cluster on 127.0.0.1): links from there are not capped per address, and a peer
    #: cut off there is refused by node key only, not by address.
    shared_networks: tuple[str, ...] = ()
    #: Identities this node has never seen (new DIDs) that one peer link may bring,
    #: per ``peer_new_identities_window`` seconds (a token bucket: this many at once,
    #: refilled evenly over the window). Links to the operator's own ``peers`` (and
    #: addresses dialled by a local call) are exempt, so a node bootstraps from them.
    peer_new_identities: int = 1000
    peer_new_identities_window: float = 3600.0
    #: Failed logins to one account, counted across all addresses, from addresses
    #: that have never logged in to it: this many at once, then one more every
    #: ``login_failure_refill`` seconds. Addresses that have logged in to the account
    #: before are not held to it, so an attacker cannot lock the owner out.
    login_failures_per_account: int = 10
    login_failure_refill: float = 60.0
    # -- blobs (images): node/store/blobs.py, node/net/blobfetch.py ----------------
    #: Largest blob an account may upload, in bytes (Bluesky's image limit).
    blob_max_bytes: int = 1_000_000
    #: Seconds an upload may wait for a record to point at it, and an upload no record
    #: points at any longer is kept, before garbage collection deletes it.
    blob_grace: float = 3600.0
    #: Seconds between garbage-collection passes (each looks at 500 candidates at most).
    blob_gc_interval: float = 60.0
    #: Bytes of other nodes' blobs kept on disk (least recently used go first).
    blob_cache_bytes: int = 256 * 1024 * 1024
    #: Blob fetches from peers at once (each holds one blob in memory), and fetches
    #: started per second with their burst: past them, a view's image answers 503.
    blob_fetches: int = 8
    blob_fetch_rate: float = 20.0
    blob_fetch_burst: int = 40
    #: Seconds a blob fetch from one peer may take.
    blob_fetch_timeout: float = 10.0
    #: Blobs being sent to clients at once (each held whole while it is sent): in all,
    #: and to one client address; more are answered 503 / 429 at once.
    max_blob_answers: int = 16
    max_blob_answers_per_addr: int = 4
    #: Seconds added to the wall clock wherever the node reads it for revs and the
    #: future-rev check (the cluster harness studies nodes with skewed clocks).
    clock_skew: float = 0.0
    # -- feed generators (docs/feed-generators.md) ------------------------------------
    #: Host the built-in feeds (quiet-posters, follows-popular, mutuals).
    builtin_feeds: bool = True
    #: Feed generator plugins to host, each a dotted path to a class or object
    #: (``"mypkg.feeds:Cats"``), loaded at start.
    feed_plugins: tuple[str, ...] = ()
    #: Seconds one skeleton may take, from a hosted generator or another node's.
    feed_timeout: float = 2.0
    #: Plugin calls running at once (each on its own thread); a plugin that never
    #: returns keeps its slot, so at most this many threads are ever stuck.
    feed_plugin_slots: int = 4
    #: Largest skeleton answer read from another node, in bytes.
    feed_remote_bytes: int = 256 * 1024
    # -- the atproto bridge (docs/atproto-bridge.md, "Node side") --------------------
    #: atproto PDSes or relays to follow (http(s) URLs): the node reads each one's
    #: com.atproto.sync.subscribeRepos, verifies every commit and shows the posts.
    #: Every fetch follows ``dial_policy``.
    atproto_sources: tuple[str, ...] = ()
    #: The PLC directory did:plc identities are resolved at.
    plc_directory: str = "https://plc.directory"
    #: atproto accounts followed at most (commits of others are dropped and counted).
    atproto_max_accounts: int = 10_000
    #: atproto DID documents cached, and for how many seconds.
    atproto_did_cache: int = 10_000
    atproto_did_ttl: float = 3600.0
    #: Largest repository fetched to resync an atproto account (getRepo), in bytes.
    atproto_max_repo_bytes: int = 64 * 1024 * 1024
    #: Seconds between two resyncs (getRepo) of one atproto account: a hostile host
    #: can cause gaps on purpose. A resync asked for sooner runs when this has passed.
    atproto_resync_interval: float = 30.0
    #: Seconds before the first reconnect to an atproto source; doubled after each
    #: failure (with jitter) up to ``atproto_reconnect_max``.
    atproto_reconnect_min: float = 1.0
    atproto_reconnect_max: float = 60.0

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.sqlite3"

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)


def load_config(path: Path | None, **overrides: Any) -> NodeConfig:
    """Defaults, then the TOML file (if any), then non-None ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        names = {f.name for f in dataclasses.fields(NodeConfig)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"{path}: unknown settings: {', '.join(sorted(unknown))}")
        values.update(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    if "atproto_sources" in values:
        values["atproto_sources"] = tuple(str(p).rstrip("/") for p in values["atproto_sources"])
    if "peers" in values:
        values["peers"] = tuple(str(p).rstrip("/") for p in values["peers"])
    for name in ("handle_domains", "shared_handle_domains"):
        if name in values:
            values[name] = tuple(d if d.startswith(".") else "." + d for d in values[name])
    for name in ("dial_allow", "shared_networks", "feed_plugins"):
        if name in values:
            values[name] = tuple(str(n) for n in values[name])
    return NodeConfig(**values)


def _field_comments() -> dict[str, str]:
    """Each field's ``#:`` comment in :class:`NodeConfig`'s source (empty if no source)."""
    try:
        source = inspect.getsource(NodeConfig)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(inspect.cleandoc("\n" + source) if source[:1].isspace() else source)
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    comments: dict[str, str] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        doc: list[str] = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#:"):
            doc.insert(0, lines[i].strip().removeprefix("#:").strip())
            i -= 1
        comments[node.target.id] = " ".join(doc)
    return comments


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return "[" + ", ".join(_default_value_text(v) for v in value) + "]"
    return _default_value_text(value)


def _default_value_text(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    import tomli_w  # only for --help and `node init`

    return tomli_w.dumps({"x": value}).strip().removeprefix("x = ")


def describe_settings() -> str:
    """Every setting the TOML file takes, with its default and what it does.

    Made from :class:`NodeConfig` itself (names, defaults, ``#:`` comments), so the
    list in ``skyfed node start --help`` cannot drift from what the loader accepts."""
    comments = _field_comments()
    out = []
    for f in dataclasses.fields(NodeConfig):
        out.append(f"  {f.name} = {_default_text(f)}")
        if comments.get(f.name):
            out.extend(
                textwrap.wrap(
                    comments[f.name], 84, initial_indent=" " * 6, subsequent_indent=" " * 6
                )
            )
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class NodeSecrets:
    node_key: SigningKey
    token_secret: bytes


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def load_or_create_secrets(data_dir: Path) -> NodeSecrets:
    """Read the node key and token secret, creating them (mode 0600) if absent."""
    make_data_dir(data_dir)
    key_path = data_dir / "node.key"
    secret_path = data_dir / "token.secret"
    if not key_path.exists():
        _write_secret(key_path, SigningKey.from_seed(secrets.token_bytes(32)).to_str())
    if not secret_path.exists():
        _write_secret(secret_path, secrets.token_hex(32))
    node_key = _node_key(key_path, data_dir / NODE_PUBLIC_KEY_FILE)
    token_secret = bytes.fromhex(secret_path.read_text().strip())
    return NodeSecrets(node_key, token_secret)


#: The node key's public half (its ``did:key``), kept beside ``node.key`` so a start
#: need not load ``cryptography`` to know it (protocol/keys.py); the first signature
#: checks it against the secret, and a missing or unreadable one is written again.
NODE_PUBLIC_KEY_FILE = "node.pub"


def _node_key(key_path: Path, public_path: Path) -> SigningKey:
    secret = key_path.read_text().strip()
    try:
        public = verify_key(public_path.read_text().strip()).raw
    except (OSError, SkyfedError):
        key = SigningKey.from_str(secret)  # derives the public key (cryptography)
        tmp = public_path.with_suffix(".pub.tmp")
        tmp.unlink(missing_ok=True)  # left by a start that died between the two lines
        write_private_text(tmp, key.did_key() + "\n")  # 0600 like every file here
        os.replace(tmp, public_path)
        return key
    return SigningKey.from_str(secret, public=public)
