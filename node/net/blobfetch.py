"""Blobs between nodes: answering a peer's ``getblob`` and fetching the blobs of
accounts hosted elsewhere when a view needs them (docs/protocol.md §14.2).

A node serves or fetches a blob for an account only if a record of that account it
holds points at the blob (``blob_refs``): a client cannot make it fetch arbitrary
CIDs, and a peer cannot read uploads nobody has posted. Fetches go over the peer
links already up (nothing is dialled for them), to peers that announced
``blobs-v1``, the account's home node first; the answer's bytes must hash to the
CID asked for (a peer that answers other bytes loses score, as for a forgery), be
at most ``blob_max_bytes`` and be an image type the node serves. Good ones go into
the byte-budgeted cache (node/store/blobs.py).

Bounds: ``blob_fetches`` fetches at once (one per CID: askers of a CID being
fetched wait for it), ``blob_fetch_rate`` new fetches per second (token bucket,
``blob_fetch_burst``), ``blob_fetch_timeout`` per peer asked, at most
:data:`PEERS_ASKED` peers per fetch. Past them the view's image answers 503 and the
client tries again later. Answers to peers: :data:`ANSWERS_AT_ONCE` node-wide, each
waiting for room in the asking link's send queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from protocol.blobs import ALLOWED_MIME, sniff_mime
from protocol.cid import CID, cid_for_raw
from protocol.errors import RemoteProtocolError, SkyfedError
from protocol.peerwire import CAP_BLOBS, MAX_FRAME
from protocol.syntax import validate_did

from ..config import NodeConfig
from ..limits import AddressSlots
from ..store.blobs import BlobRow, BlobStore
from .federation import _FORGERY_PENALTY, Federation, PeerError, PeerLink

__all__ = ["ANSWERS_AT_ONCE", "PEERS_ASKED", "BlobFetcher", "FetchBusy"]

log = logging.getLogger("skyfed.blobs")

#: Peers asked for one blob, at most.
PEERS_ASKED = 4
#: getblob answers built at once, node-wide.
ANSWERS_AT_ONCE = 4


class FetchBusy(RemoteProtocolError):
    """Too many blob fetches at once or too fast: try again later."""

    error = "BlobFetchBusy"
    status = 503


class BlobFetcher:
    """Blobs for views and for peers: local uploads, then the cache, then peers."""

    def __init__(
        self,
        store: BlobStore,
        federation: Federation,
        config: NodeConfig,
    ):
        self.store = store
        self.fed = federation
        self.max_bytes = config.blob_max_bytes
        self.timeout = config.blob_fetch_timeout
        self.slots = config.blob_fetches
        self.rate = config.blob_fetch_rate
        self.burst = float(config.blob_fetch_burst)
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self._inflight: dict[CID, asyncio.Future[BlobRow | None]] = {}
        self._answers = asyncio.Semaphore(ANSWERS_AT_ONCE)
        #: Blobs being sent to clients (com.atproto.sync.getBlob).
        self.answers = AddressSlots(
            config.max_blob_answers, config.max_blob_answers_per_addr, "blob answers"
        )
        self.fetched = 0
        self.refused = 0
        federation.blobs = self

    # -- for views -------------------------------------------------------------------
    async def get(self, did: str, cid: CID) -> BlobRow | None:
        """The blob ``cid`` of ``did``, if some record of ``did``'s held here points at
        it; fetched from peers when it lives elsewhere. None: not found."""
        row = await self.store.local(did, cid, referenced=True)
        if row is not None:
            return row
        if not await self.store.referenced(did, cid):
            return None
        # Not uploaded here: an account hosted elsewhere, or one that moved here with
        # records pointing at blobs its old node holds. Either way, from peers.
        row = await self.store.cached(cid)
        if row is not None:
            return row
        pending = self._inflight.get(cid)
        if pending is not None:
            # Wait for the fetch under way without taking it down if this asker goes.
            await asyncio.wait({pending})
            return None if pending.cancelled() else pending.result()
        if len(self._inflight) >= self.slots:
            raise FetchBusy(f"{self.slots} blob fetches under way: try again later")
        self._take_token()
        fut: asyncio.Future[BlobRow | None] = asyncio.get_running_loop().create_future()
        self._inflight[cid] = fut
        try:
            row = await self._fetch(did, cid)
            fut.set_result(row)
            return row
        except asyncio.CancelledError:
            fut.cancel()  # the askers waiting on it find nothing, and may ask again
            raise
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            del self._inflight[cid]

    def _take_token(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1:
            raise FetchBusy("blob fetches are coming too fast: try again later")
        self._tokens -= 1

    async def _peers(self, did: str) -> list[PeerLink]:
        """Links to ask, the account's home node first."""
        links = [
            lk for lk in self.fed.links.values() if CAP_BLOBS in lk.caps and not lk.closed.is_set()
        ]
        ident = await self.store.storage.identity(did)
        home = ident[2].rstrip("/") if ident is not None and ident[2] else None
        links.sort(key=lambda lk: (lk.peer_url or lk.url or "").rstrip("/") != home)
        return links[:PEERS_ASKED]

    async def _fetch(self, did: str, cid: CID) -> BlobRow | None:
        for link in await self._peers(did):
            try:
                reply = await asyncio.wait_for(
                    link.request("getblob", did=did, cid=cid.to_bytes()), self.timeout
                )
            except (TimeoutError, PeerError):
                continue
            if reply["t"] != "blob":
                continue  # BlobNotFound, Busy: ask the next
            row = self._check(link, cid, reply)
            if row is not None:
                await self.store.put_cached(cid, row.mime, row.data)
                self.fetched += 1
                return row
        return None

    def _check(self, link: PeerLink, cid: CID, reply: dict[str, Any]) -> BlobRow | None:
        data: bytes = reply["data"]
        if len(data) > self.max_bytes:
            # Not checked further: the peer may allow bigger uploads than this node.
            self.refused += 1
            return None
        why = None
        if reply["cid"] != cid.to_bytes():
            why = "answered getblob for another CID"
        elif cid_for_raw(data) != cid:
            why = "blob bytes do not hash to the CID asked for"
        if why is not None:
            self.refused += 1
            self.fed.penalize(link, _FORGERY_PENALTY, why)
            return None
        mime = sniff_mime(data)
        if mime not in ALLOWED_MIME:
            # Honest bytes (they hash right) of a type this node does not serve.
            self.refused += 1
            return None
        assert mime is not None
        return BlobRow(cid, mime, data)

    # -- for peers -------------------------------------------------------------------
    async def serve(self, link: PeerLink, msg: dict[str, Any]) -> None:
        """Answer one ``getblob`` (federation.py keeps the per-link count)."""
        rid = msg["rid"]
        try:
            validate_did(msg["did"])
            cid = CID.from_bytes(msg["cid"])
        except SkyfedError:
            link.send("error", rid=rid, error="InvalidRequest", message="bad did or cid")
            return
        did = msg["did"]
        row = None
        if not self.fed._uncarried(did):  # node policy may refuse to carry an account
            row = await self.store.local(did, cid, referenced=True)
            if row is None and await self.store.referenced(did, cid):
                row = await self.store.cached(cid)
        if row is None or len(row.data) > MAX_FRAME - 1024:
            link.send("error", rid=rid, error="BlobNotFound", message=cid.to_str())
            return
        async with self._answers:
            await link.wait_for_room(len(row.data) + 256)
            link.send("blob", rid=rid, cid=msg["cid"], data=row.data)
