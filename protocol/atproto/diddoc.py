"""A ``did:plc`` / ``did:web`` DID document to what atproto needs from it.

Fetching the document is the node's job (from the PLC directory for ``did:plc``,
``https://<host>/.well-known/did.json`` for ``did:web``); this module turns the
fetched JSON into an :class:`AtprotoIdentity`:

* ``signing_key`` -- the verification method whose ``id`` is ``#atproto`` (or
  ``<did>#atproto``): type ``Multikey`` with a k256 / p256 multikey, or one of the
  legacy types ``EcdsaSecp256k1VerificationKey2019`` /
  ``EcdsaSecp256r1VerificationKey2019`` with the bare point (:mod:`.crypto`).
* ``pds`` -- the ``serviceEndpoint`` of the service whose ``id`` is
  ``#atproto_pds`` (or ``<did>#atproto_pds``) and type
  ``AtprotoPersonalDataServer``: an ``https`` (or ``http``) URL with a host and
  nothing else (no user info, path, query or fragment), returned without a
  trailing ``/``. ``None`` if the document names none.
* ``handle`` -- from the first ``at://`` entry of ``alsoKnownAs``, lower-cased;
  ``None`` if there is none or it is not a valid handle (the handle is then
  "invalid" in atproto's terms). A handle here is only a *claim*: the node must
  check that the handle resolves back to the DID before showing it.

Refused (:class:`~protocol.errors.IdentityError`): input over ``max_size`` bytes or
nested too deep, a document that is not a JSON object, an ``id`` that is not a
``did:plc`` / ``did:web`` DID or not the DID asked for, a missing or malformed
``#atproto`` key, two methods or two services with the same atproto id, and a
malformed ``#atproto_pds`` entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import IdentityError, InvalidSyntax
from ..syntax import validate_did, validate_handle
from .crypto import Curve, PublicKey, parse_legacy_multibase, parse_multikey

__all__ = ["MAX_DOCUMENT", "AtprotoIdentity", "parse_did_document", "parse_did_document_json"]

#: Bound on a DID document's JSON (real ones are under 2 KiB).
MAX_DOCUMENT = 64 * 1024
_PLC_RE = re.compile(r"did:plc:[a-z2-7]{24}")
# did:web in atproto: a hostname, with a percent-encoded port only for localhost.
_WEB_RE = re.compile(r"did:web:([a-z0-9.-]+)(%3[aA][0-9]{1,5})?")
_LEGACY: dict[str, Curve] = {
    "EcdsaSecp256k1VerificationKey2019": "k256",
    "EcdsaSecp256r1VerificationKey2019": "p256",
}
_MAX_ITEMS = 64


@dataclass(frozen=True, slots=True)
class AtprotoIdentity:
    """What a DID document says about an atproto account."""

    did: str
    signing_key: PublicKey
    pds: str | None
    handle: str | None


def parse_did_document_json(
    data: bytes | str, *, did: str | None = None, max_size: int = MAX_DOCUMENT
) -> AtprotoIdentity:
    """Parse the JSON text of a DID document, then :func:`parse_did_document`."""
    if len(data) > max_size:
        raise IdentityError(f"DID document over {max_size} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise IdentityError("DID document is not JSON") from e
    return parse_did_document(doc, did=did)


def _validate_atproto_did(value: object) -> str:
    if not isinstance(value, str):
        raise IdentityError("DID document id must be a string")
    try:
        validate_did(value)
    except InvalidSyntax as e:
        raise IdentityError(f"DID document id: {e.message}") from e
    if _PLC_RE.fullmatch(value) is None and _WEB_RE.fullmatch(value) is None:
        raise IdentityError("only did:plc and hostname did:web DIDs are atproto DIDs")
    m = _WEB_RE.fullmatch(value)
    if m is not None and m.group(2) is not None and m.group(1) != "localhost":
        raise IdentityError("did:web with a port is only for localhost")
    return value


def _find(items: object, did: str, name: str, what: str) -> dict[str, object] | None:
    if items is None:
        return None
    if not isinstance(items, list) or len(items) > _MAX_ITEMS:
        raise IdentityError(f"DID document {what} must be a list of at most {_MAX_ITEMS}")
    found: dict[str, object] | None = None
    for item in items:
        if not isinstance(item, dict):
            raise IdentityError(f"DID document {what} entries must be objects")
        if item.get("id") in (f"#{name}", f"{did}#{name}"):
            if found is not None:
                raise IdentityError(f"DID document has two #{name} entries")
            found = item
    return found


def parse_did_document(doc: object, *, did: str | None = None) -> AtprotoIdentity:
    """The atproto view of a parsed DID document (see the module doc)."""
    if not isinstance(doc, dict):
        raise IdentityError("DID document must be a JSON object")
    doc_did = _validate_atproto_did(doc.get("id"))
    if did is not None and doc_did != did:
        raise IdentityError("DID document is for another DID")
    method = _find(doc.get("verificationMethod"), doc_did, "atproto", "verificationMethod")
    if method is None:
        raise IdentityError("DID document has no #atproto verification method")
    controller = method.get("controller")
    if controller is not None and controller != doc_did:
        raise IdentityError("#atproto key's controller is not the DID")
    kind, multibase = method.get("type"), method.get("publicKeyMultibase")
    if not isinstance(multibase, str):
        raise IdentityError("#atproto key needs a publicKeyMultibase string")
    try:
        if kind == "Multikey":
            key = parse_multikey(multibase)
        elif isinstance(kind, str) and kind in _LEGACY:
            key = parse_legacy_multibase(_LEGACY[kind], multibase)
        else:
            raise IdentityError(f"#atproto key has an unknown type {str(kind)[:60]!r}")
    except InvalidSyntax as e:
        raise IdentityError(f"#atproto key: {e.message}") from e
    return AtprotoIdentity(doc_did, key, _pds(doc, doc_did), _handle(doc))


def _pds(doc: dict[str, object], did: str) -> str | None:
    service = _find(doc.get("service"), did, "atproto_pds", "service")
    if service is None:
        return None
    if service.get("type") != "AtprotoPersonalDataServer":
        raise IdentityError("#atproto_pds must be of type AtprotoPersonalDataServer")
    url = service.get("serviceEndpoint")
    if not isinstance(url, str) or len(url) > 512:
        raise IdentityError("#atproto_pds serviceEndpoint must be a URL string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise IdentityError("#atproto_pds serviceEndpoint is not a URL") from e
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "#" in url
        or "?" in url
        or not url.isascii()
        or any(c.isspace() for c in url)
    ):
        raise IdentityError("#atproto_pds serviceEndpoint must be http(s)://host[:port]")
    del port
    return url.rstrip("/")


def _handle(doc: dict[str, object]) -> str | None:
    aka = doc.get("alsoKnownAs")
    if aka is None:
        return None
    if not isinstance(aka, list) or len(aka) > _MAX_ITEMS:
        raise IdentityError(f"alsoKnownAs must be a list of at most {_MAX_ITEMS}")
    for entry in aka:
        if isinstance(entry, str) and entry.startswith("at://"):
            handle = entry[len("at://") :]
            try:
                validate_handle(handle)
            except InvalidSyntax:
                return None
            return handle.lower()
    return None
