"""An account's app preferences (app.bsky.actor.getPreferences / putPreferences).

Stored on the account's own node, readable only with that account's session, never
put in a repo or sent to a peer. Each preference is kept exactly as the client gave
it: skyfed reads none of them, so types it does not know (``$type`` of any
namespace) round-trip unchanged, in order.

What it refuses (``InvalidRequest``): a ``preferences`` that is not a list, an item
that is not an object with a non-empty string ``$type`` (at most
:data:`MAX_TYPE_CHARS` characters), more than :data:`MAX_PREFERENCES` items, and a
list whose JSON encoding is over the node's ``max_preferences_bytes``
(``PayloadTooLarge``, 413). A refused put changes nothing.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import orjson

from protocol.errors import RemoteProtocolError

from ..store.repos import iso_now
from ..store.sqlite import SqliteStorage

__all__ = ["MAX_PREFERENCES", "MAX_TYPE_CHARS", "Preferences"]

#: Items one account's preferences may hold (Bluesky's app keeps about a dozen).
MAX_PREFERENCES: Final = 1_000
MAX_TYPE_CHARS: Final = 256


def validate(value: Any, max_bytes: int) -> bytes:
    """The preferences as stored bytes, or :class:`RemoteProtocolError`."""
    if not isinstance(value, list):
        raise RemoteProtocolError('Input must have the property "preferences" (a list)')
    if len(value) > MAX_PREFERENCES:
        raise RemoteProtocolError(f"preferences: at most {MAX_PREFERENCES} items")
    for i, item in enumerate(value):
        kind = item.get("$type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_CHARS:
            raise RemoteProtocolError(f"preferences[{i}] must be an object with a $type")
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as e:
        raise RemoteProtocolError(f"preferences are not JSON data: {e}") from None
    if len(data) > max_bytes:
        raise RemoteProtocolError(
            f"preferences are {len(data)} bytes; this node keeps at most {max_bytes}",
            error="PayloadTooLarge",
            status=413,
        )
    return data


class Preferences:
    """Per-account preferences in the node's database."""

    def __init__(self, storage: SqliteStorage, max_bytes: int):
        self.storage = storage
        self.max_bytes = max_bytes

    async def get(self, did: str) -> list[Any]:
        row = await self.storage.read(
            lambda conn: conn.execute(
                "SELECT data FROM preferences WHERE did = ?", (did,)
            ).fetchone()
        )
        if row is None:
            return []
        value = orjson.loads(row[0])
        return value if isinstance(value, list) else []

    async def put(self, did: str, value: Any) -> None:
        data = validate(value, self.max_bytes)

        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO preferences VALUES (?, ?, ?)", (did, data, iso_now())
            )

        await self.storage.write(w)
