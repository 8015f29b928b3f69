"""A node's settings: defaults, a TOML file, and command-line overrides, in that order.

Also the node's own secrets (its ed25519 node key and the token-signing secret),
kept as files in the data directory with mode 0600 and made by ``skyfed node init``
(or on first start).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from protocol.keys import SigningKey

from .datadir import make_data_dir

__all__ = ["NodeConfig", "NodeSecrets", "load_config", "load_or_create_secrets"]


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("skyfed", appauthor=False)) / "node"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node can be told. Field names are the TOML keys."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 2583
    #: The URL clients and peers reach this node at (default: http://host:port).
    public_url: str | None = None
    #: Handle suffixes accounts may take here (atproto's availableUserDomains).
    handle_domains: tuple[str, ...] = (".skyfed.test",)
    #: Firehose events kept for replay.
    replay_window: int = 100_000
    #: Unsent bytes a firehose subscriber may fall behind by before it is dropped.
    subscriber_buffer: int = 4 * 1024 * 1024
    #: Write points per account (create 3, update 2, delete 1).
    points_per_hour: int = 5_000
    points_per_day: int = 35_000
    #: Login / signup attempts per client address: rate per second and burst.
    auth_rate: float = 2.0
    auth_burst: int = 20
    #: Largest request body accepted, in bytes.
    max_body: int = 2 * 1024 * 1024
    #: Largest repository import (``importRepo``) accepted, in bytes; imports run one
    #: at a time and hold the stream in memory.
    max_import_bytes: int = 256 * 1024 * 1024
    #: Repository imports an account may start per hour.
    imports_per_hour: int = 10
    access_token_ttl: int = 2 * 3600
    refresh_token_ttl: int = 90 * 86400
    #: Bearer token for the admin endpoints (node policy); None turns them off.
    admin_token: str | None = None
    #: Admin requests per client address: rate per second and burst.
    admin_rate: float = 1.0
    admin_burst: int = 10
    #: A statement of this node's moderation policy, published with its actions.
    moderation_policy: str | None = None
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
    #: Seconds a misbehaving peer stays cut off.
    peer_cooloff: float = 300.0
    #: Seconds added to the wall clock wherever the node reads it for revs and the
    #: future-rev check (the cluster harness studies nodes with skewed clocks).
    clock_skew: float = 0.0

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
    if "peers" in values:
        values["peers"] = tuple(str(p).rstrip("/") for p in values["peers"])
    if "handle_domains" in values:
        values["handle_domains"] = tuple(
            d if d.startswith(".") else "." + d for d in values["handle_domains"]
        )
    return NodeConfig(**values)


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
    node_key = SigningKey.from_str(key_path.read_text().strip())
    token_secret = bytes.fromhex(secret_path.read_text().strip())
    return NodeSecrets(node_key, token_secret)
