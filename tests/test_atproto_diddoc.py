"""DID documents: the atproto signing key, PDS endpoint and handle, strictly."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from protocol.atproto.crypto import SigningKey, parse_did_key
from protocol.atproto.diddoc import parse_did_document, parse_did_document_json
from protocol.errors import IdentityError

from .atproto_vectors import load

DID = "did:plc:yk4dd2qkboz2yv6tpubpc6co"
KEY = SigningKey.from_seed("k256", b"doc").public

DOC: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/did/v1",
        "https://w3id.org/security/multikey/v1",
        "https://w3id.org/security/suites/secp256k1-2019/v1",
    ],
    "id": DID,
    "alsoKnownAs": ["at://Alice.Example.COM"],
    "verificationMethod": [
        {
            "id": f"{DID}#atproto",
            "type": "Multikey",
            "controller": DID,
            "publicKeyMultibase": KEY.to_multikey(),
        }
    ],
    "service": [
        {
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": "https://pds.example.com",
        }
    ],
}


def with_(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    change(doc)
    return doc


def test_plc_document() -> None:
    ident = parse_did_document(DOC, did=DID)
    assert ident.did == DID
    assert ident.signing_key == KEY
    assert ident.pds == "https://pds.example.com"
    assert ident.handle == "alice.example.com"
    assert parse_did_document_json(json.dumps(DOC).encode(), did=DID) == ident


def test_web_document_with_relative_ids_and_trailing_slash() -> None:
    doc = with_(lambda d: d.update(id="did:web:example.com"))
    doc["verificationMethod"][0]["id"] = "#atproto"
    doc["verificationMethod"][0]["controller"] = "did:web:example.com"
    doc["service"][0]["serviceEndpoint"] = "https://pds.example.com:8443/"
    ident = parse_did_document(doc, did="did:web:example.com")
    assert ident.pds == "https://pds.example.com:8443"


@pytest.mark.parametrize(
    "vector",
    [v for v in load("crypto/signature-fixtures.json") if v["validSignature"]],
    ids=lambda v: v["didDocSuite"],
)
def test_legacy_verification_methods(vector: dict[str, Any]) -> None:
    doc = with_(lambda d: None)
    doc["verificationMethod"][0]["type"] = vector["didDocSuite"]
    doc["verificationMethod"][0]["publicKeyMultibase"] = vector["publicKeyMultibase"]
    ident = parse_did_document(doc)
    assert ident.signing_key == parse_did_key(vector["publicKeyDid"])


def test_optional_parts() -> None:
    bare = with_(lambda d: [d.pop("service"), d.pop("alsoKnownAs")])
    ident = parse_did_document(bare)
    assert ident.pds is None
    assert ident.handle is None
    other = with_(lambda d: d.update(alsoKnownAs=["https://x.example", "at://bad handle"]))
    assert parse_did_document(other).handle is None
    first = with_(lambda d: d.update(alsoKnownAs=["at://one.example", "at://two.example"]))
    assert parse_did_document(first).handle == "one.example"


def _vm(d: dict[str, Any], **kw: Any) -> None:
    d["verificationMethod"][0].update(kw)


def _svc(d: dict[str, Any], **kw: Any) -> None:
    d["service"][0].update(kw)


BAD = {
    "not-object": lambda d: d.clear(),
    "id-missing": lambda d: d.pop("id"),
    "id-other-method": lambda d: d.update(id="did:key:" + KEY.to_multikey()),
    "id-plc-short": lambda d: d.update(id="did:plc:abc"),
    "id-web-path": lambda d: d.update(id="did:web:example.com:user:alice"),
    "id-web-port-not-localhost": lambda d: d.update(id="did:web:example.com%3A8080"),
    "no-atproto-key": lambda d: _vm(d, id=f"{DID}#other"),
    "two-atproto-keys": lambda d: d["verificationMethod"].append(
        dict(d["verificationMethod"][0], id="#atproto")
    ),
    "key-ed25519": lambda d: _vm(
        d, publicKeyMultibase="z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    ),
    "key-type-unknown": lambda d: _vm(d, type="JsonWebKey2020"),
    "key-no-multibase": lambda d: d["verificationMethod"][0].pop("publicKeyMultibase"),
    "key-garbage": lambda d: _vm(d, publicKeyMultibase="zzzz"),
    "controller-other": lambda d: _vm(d, controller="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
    "methods-not-list": lambda d: d.update(verificationMethod={}),
    "pds-wrong-type": lambda d: _svc(d, type="BskyFeedGenerator"),
    "pds-ftp": lambda d: _svc(d, serviceEndpoint="ftp://pds.example.com"),
    "pds-path": lambda d: _svc(d, serviceEndpoint="https://pds.example.com/xrpc"),
    "pds-query": lambda d: _svc(d, serviceEndpoint="https://pds.example.com?a=b"),
    "pds-userinfo": lambda d: _svc(d, serviceEndpoint="https://user@pds.example.com"),
    "pds-no-host": lambda d: _svc(d, serviceEndpoint="https://"),
    "pds-bad-port": lambda d: _svc(d, serviceEndpoint="https://pds.example.com:99999"),
    "pds-object": lambda d: _svc(d, serviceEndpoint={"uri": "https://pds.example.com"}),
    "pds-space": lambda d: _svc(d, serviceEndpoint="https://pds.example.com /"),
    "two-pds": lambda d: d["service"].append(dict(d["service"][0])),
    "aka-not-list": lambda d: d.update(alsoKnownAs="at://alice.example.com"),
    "too-many-methods": lambda d: d.update(
        verificationMethod=[{"id": f"#k{i}"} for i in range(100)]
    ),
}


@pytest.mark.parametrize("change", list(BAD.values()), ids=list(BAD))
def test_bad_documents(change: Any) -> None:
    with pytest.raises(IdentityError):
        parse_did_document(with_(change))


def test_document_for_another_did() -> None:
    with pytest.raises(IdentityError, match="another"):
        parse_did_document(DOC, did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")


def test_json_bounds() -> None:
    with pytest.raises(IdentityError, match="over"):
        parse_did_document_json(b" " * 70_000)
    with pytest.raises(IdentityError):
        parse_did_document_json(b"[" * 30_000 + b"]" * 30_000)  # under the size bound
    with pytest.raises(IdentityError):
        parse_did_document_json(b"{not json")
    with pytest.raises(IdentityError):
        parse_did_document_json(json.dumps([DOC]))
