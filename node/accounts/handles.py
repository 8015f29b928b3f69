"""The node's handle table: which DID each handle resolves to here, and why.

A log's handle claim resolves only when the handle's authority confirms it
(:mod:`protocol.handles` has the rule). This module keeps the outcome in the
``handles`` table, one row per handle and per DID (both unique: no two DIDs ever
resolve to one handle here), and every read path (``resolveHandle``, ``repo:``
parameters, views, the web pages, admin actions) reads that table only. A DID with
no row shows as ``handle.invalid``.

It is rebuilt for one DID whenever its identity or its confirmation changes
(:meth:`Handles.rebind`, run inside the same write transaction as the change).
Tie rule: when two DIDs both have a confirmed claim to one handle, this node's own
registry (its accounts table, under its own handle domains) wins; otherwise the DID
that held the handle first keeps it until its log stops claiming it. A forger
cannot take part: without the authority's confirmation a claim is never confirmed.

What it stores from the network is bounded: one confirmation per DID, and only one
that confirms the handle the DID's log claims now. It pins nothing on its own: which
issuers it believes for a domain come from the operator (``pinned_handle_issuers``)
and from the peer links this node dialled itself (:attr:`Handles.verified_keys`).
Those links live in memory: a confirmation is judged when it arrives and whenever
its DID's identity changes, so a binding learned from a node verified then stays
until the DID's identity changes while no link to that node is verified.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Collection
from typing import Final

from protocol.errors import SkyfedError
from protocol.handles import (
    HandleConfirmation,
    confirms,
    domain_host,
    handle_domain,
    registration_error,
    under,
)
from protocol.keys import SigningKey, verify_key

__all__ = ["HANDLES_SCHEMA", "Handles", "parse_pins"]

log = logging.getLogger(__name__)

HANDLES_SCHEMA: Final = """
    CREATE TABLE IF NOT EXISTS handles (
        handle TEXT PRIMARY KEY,
        did TEXT NOT NULL UNIQUE
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS handle_confirmations (
        did TEXT PRIMARY KEY,
        handle TEXT NOT NULL,
        issuer TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS handle_confirmations_handle ON handle_confirmations (handle);
    INSERT OR IGNORE INTO handles (handle, did)
        SELECT a.handle, a.did FROM accounts a
        JOIN identities i ON i.did = a.did AND i.handle = a.handle AND i.tombstoned = 0;
"""
#: Bumped when the rule changes, so every identity is judged again at the next start
#: (2: no issuer is pinned on first use any more).
_RULE_VERSION: Final = "2"
#: Other claimants looked at when a handle is released, at most.
_MAX_CLAIMANTS: Final = 16


def parse_pins(pins: tuple[str, ...]) -> dict[str, str]:
    """``("<domain>=<did:key>", ...)`` as {".domain": did:key}; ValueError names a bad
    entry (the node refuses to start with one)."""
    out: dict[str, str] = {}
    for entry in pins:
        domain, sep, issuer = entry.partition("=")
        domain, issuer = domain.strip(), issuer.strip()
        try:
            verify_key(issuer)
        except SkyfedError as e:
            raise ValueError(f"pinned_handle_issuers: {entry!r}: {e}") from e
        if not sep or not domain.strip("."):
            raise ValueError(f"pinned_handle_issuers: {entry!r} is not '<domain>=<did:key>'")
        out[domain if domain.startswith(".") else "." + domain] = issuer
    return out


class Handles:
    """The handle rule with this node's domains and node key; its methods run on
    the storage writer thread (``conn`` is the write transaction)."""

    def __init__(
        self,
        own_domains: tuple[str, ...],
        shared_domains: tuple[str, ...],
        key: SigningKey,
        pins: tuple[str, ...] = (),
    ):
        self.own_domains = own_domains
        self.shared_domains = shared_domains
        self.key = key
        #: Issuers pinned by configuration (``pinned_handle_issuers``), by domain.
        self.pins = parse_pins(pins)
        #: Node keys (did:key) that completed the signed peer handshake at a URL this
        #: node dialled whose host is the given one (the node sets it to the
        #: federation's table, :meth:`Federation.verified_node_keys`). Called on
        #: the storage writer thread. None verified until then.
        self.verified_keys: Callable[[str], Collection[str]] = lambda host: ()

    # -- the rule ------------------------------------------------------------------
    def _registered(self, conn: sqlite3.Connection, handle: str) -> str | None:
        if not under(handle, self.own_domains):
            return None
        row = conn.execute("SELECT did FROM accounts WHERE handle = ?", (handle,)).fetchone()
        return None if row is None else str(row[0])

    def _confirmation(self, conn: sqlite3.Connection, did: str) -> HandleConfirmation | None:
        row = conn.execute("SELECT data FROM handle_confirmations WHERE did = ?", (did,)).fetchone()
        if row is None:
            return None
        try:
            return HandleConfirmation.from_bytes(bytes(row[0]))
        except SkyfedError:  # pragma: no cover - only valid ones are stored
            return None

    def _issuers(self, handle: str) -> Collection[str]:
        """Whom this node believes for ``handle``'s domain: the operator's pin, and
        nodes verified as serving it (dialled at the domain's host)."""
        domain = handle_domain(handle)
        issuers = set(self.verified_keys(domain_host(domain)))
        if domain in self.pins:
            issuers.add(self.pins[domain])
        return issuers

    def _confirmed(
        self,
        conn: sqlite3.Connection,
        handle: str,
        did: str,
        confirmation: HandleConfirmation | None = None,
    ) -> bool:
        return confirms(
            handle,
            did,
            own_domains=self.own_domains,
            shared_domains=self.shared_domains,
            registered=self._registered(conn, handle),
            confirmation=confirmation or self._confirmation(conn, did),
            issuers=self._issuers(handle),
        )

    def _claimed(self, conn: sqlite3.Connection, did: str) -> str | None:
        row = conn.execute(
            "SELECT handle, tombstoned FROM identities WHERE did = ?", (did,)
        ).fetchone()
        return None if row is None or row[1] or row[0] is None else str(row[0])

    # -- keeping the table ------------------------------------------------------------
    def rebind(self, conn: sqlite3.Connection, did: str) -> None:
        """Bring ``did``'s row (and that of a handle it let go) up to date."""
        claimed = self._claimed(conn, did)
        if claimed is not None:
            self._follow_handle_change(conn, did, claimed)
        if claimed is not None and self._registered(conn, claimed) == did:
            self._confirm_own(conn, claimed, did)
        ok = claimed is not None and self._confirmed(conn, claimed, did)
        row = conn.execute("SELECT handle FROM handles WHERE did = ?", (did,)).fetchone()
        if row is not None and (not ok or row[0] != claimed):
            conn.execute("DELETE FROM handles WHERE did = ?", (did,))
            self._reassign(conn, str(row[0]))
        if not ok or claimed is None:
            return
        holder = conn.execute("SELECT did FROM handles WHERE handle = ?", (claimed,)).fetchone()
        if holder is None:
            conn.execute("INSERT INTO handles VALUES (?, ?)", (claimed, did))
        elif holder[0] != did and self._registered(conn, claimed) == did:
            # This node's own registry outranks a binding learned from the network.
            conn.execute("DELETE FROM handles WHERE handle = ?", (claimed,))
            conn.execute("INSERT INTO handles VALUES (?, ?)", (claimed, did))
        # Otherwise the DID that held the handle first keeps it.

    def _follow_handle_change(self, conn: sqlite3.Connection, did: str, claimed: str) -> None:
        """An account active here whose log now claims another handle (an op signed
        by its rotation key: the owner's choice, atproto's updateHandle) gets it
        registered, if this node may register it and it is free. Its old handle is
        released."""
        row = conn.execute("SELECT handle FROM accounts WHERE did = ?", (did,)).fetchone()
        if row is None or row[0] == claimed:
            return
        if conn.execute("SELECT 1 FROM account_deactivations WHERE did = ?", (did,)).fetchone():
            return
        if registration_error(claimed, self.own_domains) is not None:
            return
        if conn.execute("SELECT 1 FROM accounts WHERE handle = ?", (claimed,)).fetchone():
            return
        holder = conn.execute("SELECT did FROM handles WHERE handle = ?", (claimed,)).fetchone()
        if holder is not None and holder[0] != did:
            return
        conn.execute("UPDATE accounts SET handle = ? WHERE did = ?", (claimed, did))

    def _reassign(self, conn: sqlite3.Connection, handle: str) -> None:
        """``handle`` was let go: give it to the next confirmed claimant, if any
        (the registry's first, then by when their confirmation arrived)."""
        registered = self._registered(conn, handle)
        candidates = [registered] if registered is not None else []
        candidates += [
            str(r[0])
            for r in conn.execute(
                "SELECT did FROM handle_confirmations WHERE handle = ? ORDER BY rowid LIMIT ?",
                (handle, _MAX_CLAIMANTS),
            )
        ]
        for did in candidates:
            if self._claimed(conn, did) == handle and self._confirmed(conn, handle, did):
                conn.execute("INSERT OR IGNORE INTO handles VALUES (?, ?)", (handle, did))
                return

    def _confirm_own(self, conn: sqlite3.Connection, handle: str, did: str) -> None:
        """Sign and keep a confirmation for a handle this node registered (it
        travels with the identity, so other nodes can check it)."""
        held = self._confirmation(conn, did)
        if held is not None and (held.handle, held.issuer) == (handle, self.key.did_key()):
            return
        conf = HandleConfirmation.issue(handle, did, self.key)
        conn.execute(
            "INSERT OR REPLACE INTO handle_confirmations VALUES (?, ?, ?, ?)",
            (did, handle, conf.issuer, conf.to_bytes()),
        )

    def take(self, conn: sqlite3.Connection, conf: HandleConfirmation) -> bool:
        """Keep a confirmation learned from the network if it confirms what the
        DID's log claims now (its issuer believed for the domain: nothing is pinned
        here); True if anything changed."""
        if self._claimed(conn, conf.did) != conf.handle:
            return False
        data = conf.to_bytes()
        held = conn.execute(
            "SELECT data FROM handle_confirmations WHERE did = ?", (conf.did,)
        ).fetchone()
        if held is not None and bytes(held[0]) == data:
            return False
        if not self._confirmed(conn, conf.handle, conf.did, conf):
            return False
        if held is not None and self._confirmed(conn, conf.handle, conf.did):
            return False  # the one held already confirms: keep it (first seen)
        conn.execute(
            "INSERT OR REPLACE INTO handle_confirmations VALUES (?, ?, ?, ?)",
            (conf.did, conf.handle, conf.issuer, data),
        )
        self.rebind(conn, conf.did)
        return True

    def fingerprint(self) -> bytes:
        """What the rule depends on besides the data: the node's domains and pins."""
        parts = [
            ",".join(sorted(self.own_domains)),
            ",".join(sorted(self.shared_domains)),
            ",".join(f"{d}={k}" for d, k in sorted(self.pins.items())),
            self.key.did_key(),
            _RULE_VERSION,
        ]
        return "\n".join(parts).encode()

    def confirm_registered(self, conn: sqlite3.Connection) -> None:
        """At start: sign confirmations for accounts registered here without one (a
        database from before confirmations), and judge every identity again if the
        rule's settings changed since the last start (domains, shared domains, pins),
        so no handle stays bound under a rule the node no longer has. Issuers a
        database from before rule 2 pinned on first use are dropped with their table
        (only the operator's pins count)."""
        conn.execute("DROP TABLE IF EXISTS handle_issuers")
        row = conn.execute("SELECT value FROM meta WHERE key = 'handle_rule'").fetchone()
        if row is None or bytes(row[0]) != self.fingerprint():
            dids = conn.execute("SELECT did FROM identities").fetchall()
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('handle_rule', ?)", (self.fingerprint(),)
            )
        else:
            dids = conn.execute(
                "SELECT a.did FROM accounts a LEFT JOIN handle_confirmations c"
                " ON c.did = a.did WHERE c.did IS NULL"
            ).fetchall()
        for (did,) in dids:
            self.rebind(conn, str(did))

    def confirmed_now(self, conn: sqlite3.Connection, handle: str, did: str) -> bool:
        """Whether ``did`` may hold ``handle`` here (for checks before a write)."""
        return self._confirmed(conn, handle, did)
