"""atproto identities: DID documents from a PLC directory or did:web, with handles
checked both ways, cached with bounds.

Every fetch goes through the node's dial policy (``DialPolicy.session``): a DID
document names a PDS and a handle names a host, and both come from the network. A
document is read up to ``diddoc.MAX_DOCUMENT`` bytes and no further. The cache
holds at most ``max_entries`` identities (least recently used go first), each for
``ttl`` seconds; ``#identity`` events and a failed signature refresh an entry at once.

A handle in ``alsoKnownAs`` is only a claim. It is shown only if
``https://<handle>/.well-known/atproto-did`` or the DNS TXT record
``_atproto.<handle>`` names the same DID; otherwise the account's handle is None
(shown as ``handle.invalid``). Nothing else about the claim is believed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import dns.asyncresolver
import dns.exception

from protocol.atproto.diddoc import MAX_DOCUMENT, AtprotoIdentity, parse_did_document_json
from protocol.errors import IdentityError

__all__ = ["DidResolver", "ResolvedIdentity"]

#: Seconds one DID-document or handle fetch may take.
FETCH_TIMEOUT = 10.0
#: Names reserved by RFC 6761 / 6762 / 2606: a handle under one can never resolve on
#: the internet, so it is unverified at once (no fetch, no DNS wait).
RESERVED_TLDS = (".test", ".invalid", ".localhost", ".example", ".local", ".arpa")


@dataclass(frozen=True, slots=True)
class ResolvedIdentity:
    ident: AtprotoIdentity
    #: The handle, if it resolves back to the DID; None otherwise.
    handle: str | None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    out = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        out += chunk
        if len(out) > limit:
            raise IdentityError(f"response over {limit} bytes")
    return bytes(out)


class DidResolver:
    """Resolves atproto DIDs (and checks their handles) with a bounded cache."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        plc_directory: str,
        *,
        max_entries: int = 10_000,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._session = session
        self.plc_directory = plc_directory.rstrip("/")
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, ResolvedIdentity]] = OrderedDict()
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self, did: str) -> None:
        self._cache.pop(did, None)

    async def resolve(self, did: str, *, fresh: bool = False) -> ResolvedIdentity:
        """The identity of ``did``; raises IdentityError if it cannot be had."""
        hit = None if fresh else self._cache.get(did)
        now = self.clock()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(did)
            return hit[1]
        ident = await self._fetch_doc(did)
        handle = None
        if ident.handle is not None and await self._handle_names(ident.handle, did):
            handle = ident.handle
        out = ResolvedIdentity(ident, handle)
        self._cache[did] = (now + self.ttl, out)
        self._cache.move_to_end(did)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out

    async def _get(self, url: str, limit: int) -> bytes:
        self.fetches += 1
        try:
            async with self._session().get(
                url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT), allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    raise IdentityError(f"{url}: HTTP {resp.status}")
                return await _read_capped(resp, limit)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise IdentityError(f"{url}: {type(e).__name__}: {e}"[:300]) from e

    async def _fetch_doc(self, did: str) -> AtprotoIdentity:
        if did.startswith("did:plc:"):
            url = f"{self.plc_directory}/{quote(did, safe=':')}"
        elif did.startswith("did:web:"):
            host = did[len("did:web:") :].replace("%3A", ":").replace("%3a", ":")
            url = f"https://{host}/.well-known/did.json"
        else:
            raise IdentityError(f"unsupported DID method: {did[:100]}")
        body = await self._get(url, MAX_DOCUMENT)
        return parse_did_document_json(body, did=did)

    async def _handle_names(self, handle: str, did: str) -> bool:
        """Does ``handle`` resolve back to ``did`` (HTTPS well-known, then DNS TXT)?"""
        if handle.endswith(RESERVED_TLDS):
            return False
        try:
            body = await self._get(f"https://{handle}/.well-known/atproto-did", 2048)
            if body.decode("utf-8", "replace").strip() == did:
                return True
        except IdentityError:
            pass
        try:
            resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = 3.0
            answer = await resolver.resolve(f"_atproto.{handle}", "TXT")
        except (dns.exception.DNSException, OSError):
            return False
        for rdata in answer:
            text = b"".join(rdata.strings).decode("utf-8", "replace")
            if text == f"did={did}":
                return True
        return False
