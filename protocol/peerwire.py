"""The peer protocol: messages two nodes exchange over their WebSocket link.

Every WebSocket binary message is one canonical msgpack map with a type ``"t"``.
:func:`decode_message` checks the exact fields and types of each type and refuses
anything else with a :class:`~protocol.errors.DecodeError`; :func:`encode_message`
is its inverse. The link starts with a handshake: each side sends ``hello`` with a
fresh 32-byte challenge, and answers the other's with ``auth``: an ed25519 signature
by its node key over :func:`auth_payload`. Nothing else is accepted before both
``auth`` messages verify.

Types (fields besides ``t``):

- ``hello``: ``v`` (protocol version, 1), ``node`` (the node key as did:key), ``url``
  (its public URL or null), ``challenge`` (32 bytes), ``caps`` (list of strings),
  ``share`` (bool: may the receiver tell others about this node).
- ``auth``: ``sig`` (64 bytes).
- ``push``: ``id`` (bytes <= 64), ``kind`` ("commit" | "identity" | "label"), ``data``
  (bytes), ``round`` (int): eager push of a new item (a commit event, an identity log
  or one label).
- ``ihave``: ``ids`` (list of bytes), ``round``: lazy announcement.
- ``graft``: ``ids``: "send me these, and push to me eagerly from now on".
- ``prune``: "stop pushing to me eagerly".
- ``neg``: ``sid`` (int), ``msg`` (bytes): one negentropy message of session ``sid``.
- ``whatis``: ``rid`` (int), ``ids``: "describe these negentropy items".
- ``heads``: ``rid`` (int or null when unsolicited), ``items``: list of
  ``{kind: "repo", did, head: CID bytes, rev}``, ``{kind: "identity", did, head}`` or
  ``{kind: "labels", src, digest: 32 bytes}``.
- ``getrepo``: ``rid``, ``did``, ``since`` (rev or null) -> ``repo``: ``rid``, ``did``,
  ``car`` (bytes: a block stream) | ``error``.
- ``getident``: ``rid``, ``did`` -> ``ident``: ``rid``, ``did``, ``ops`` (list of bytes),
  ``handle`` (the confirmation of the log's handle, :mod:`protocol.handles`, or null).
- ``getlabels``: ``rid``, ``src`` -> ``labels``: ``rid``, ``src``, ``labels`` (list of
  label bytes, at most :data:`MAX_LABELS_PER_ANSWER`).
- ``getblob``: ``rid``, ``did``, ``cid`` (binary CID) -> ``blob``: ``rid``, ``cid``,
  ``data`` (the blob's bytes; the asker checks them against ``cid``) | ``error``.
  Asked only of peers whose ``hello`` caps hold ``"blobs-v1"``.
- ``error``: ``rid``, ``error``, ``message``.
- ``peers``: ``urls`` (list of strings).
"""

from __future__ import annotations

from typing import Any

from .encoding import decode, encode
from .errors import DecodeError

__all__ = [
    "CAP_BLOBS",
    "MAX_FRAME",
    "MAX_LABELS_PER_ANSWER",
    "PROTOCOL_VERSION",
    "auth_payload",
    "decode_message",
    "encode_message",
]

PROTOCOL_VERSION = 1
#: The ``hello`` capability of a node that answers ``getblob``.
CAP_BLOBS = "blobs-v1"
#: Largest peer message accepted (a commit event's blocks are at most 2 MB).
MAX_FRAME = 6 * 1024 * 1024
_MAX_IDS = 4096
_MAX_ITEMS = 4096
_MAX_URLS = 64
#: Labels in one ``labels`` answer (16 KiB each at most, but most are ~300 bytes).
MAX_LABELS_PER_ANSWER = 10_000

_STR, _BYTES, _INT, _BOOL, _LIST, _NONE = str, bytes, int, bool, list, type(None)

# type -> {field: allowed types}
_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {
        "v": (_INT,),
        "node": (_STR,),
        "url": (_STR, _NONE),
        "challenge": (_BYTES,),
        "caps": (_LIST,),
        "share": (_BOOL,),
    },
    "auth": {"sig": (_BYTES,)},
    "push": {"id": (_BYTES,), "kind": (_STR,), "data": (_BYTES,), "round": (_INT,)},
    "ihave": {"ids": (_LIST,), "round": (_INT,)},
    "graft": {"ids": (_LIST,)},
    "prune": {},
    "neg": {"sid": (_INT,), "msg": (_BYTES,)},
    "whatis": {"rid": (_INT,), "ids": (_LIST,)},
    "heads": {"rid": (_INT, _NONE), "items": (_LIST,)},
    "getrepo": {"rid": (_INT,), "did": (_STR,), "since": (_STR, _NONE)},
    "repo": {"rid": (_INT,), "did": (_STR,), "car": (_BYTES,)},
    "getident": {"rid": (_INT,), "did": (_STR,)},
    "ident": {"rid": (_INT,), "did": (_STR,), "ops": (_LIST,), "handle": (_BYTES, _NONE)},
    "getlabels": {"rid": (_INT,), "src": (_STR,)},
    "labels": {"rid": (_INT,), "src": (_STR,), "labels": (_LIST,)},
    "getblob": {"rid": (_INT,), "did": (_STR,), "cid": (_BYTES,)},
    "blob": {"rid": (_INT,), "cid": (_BYTES,), "data": (_BYTES,)},
    "error": {"rid": (_INT, _NONE), "error": (_STR,), "message": (_STR,)},
    "peers": {"urls": (_LIST,)},
}
_KINDS = frozenset({"commit", "identity", "label"})


def auth_payload(challenge: bytes, signer_did: str, verifier_did: str) -> bytes:
    """What a node signs to answer ``challenge``: binds both node identities, so a
    signature cannot be replayed on another link."""
    return b"\0".join(
        [b"skyfed-peer-auth-v1", challenge, signer_did.encode(), verifier_did.encode()]
    )


def encode_message(t: str, **fields: Any) -> bytes:
    if t not in _SCHEMAS:
        raise ValueError(f"unknown peer message type {t!r}")
    return encode({"t": t, **fields})


def _list_of(value: list[Any], kind: type, limit: int, what: str) -> None:
    if len(value) > limit:
        raise DecodeError(f"{what}: more than {limit} entries")
    for item in value:
        if type(item) is not kind:
            raise DecodeError(f"{what}: every entry must be {kind.__name__}")


def decode_message(data: bytes) -> dict[str, Any]:
    """Decode and check one peer message. Raises DecodeError."""
    if len(data) > MAX_FRAME:
        raise DecodeError(f"peer message over {MAX_FRAME} bytes")
    raw = decode(data, max_size=MAX_FRAME)
    if type(raw) is not dict:
        raise DecodeError("peer message must be a map")
    msg: dict[str, Any] = raw
    t = msg.get("t")
    if type(t) is not str:
        raise DecodeError("peer message needs a string type 't'")
    schema = _SCHEMAS.get(t)
    if schema is None:
        raise DecodeError(f"unknown peer message type {t!r}")
    if set(msg) != {"t", *schema}:
        raise DecodeError(f"{t}: fields must be exactly {sorted(schema)}")
    for name, kinds in schema.items():
        if type(msg[name]) not in kinds:
            raise DecodeError(f"{t}.{name} has the wrong type")
    if t == "push":
        if msg["kind"] not in _KINDS:
            raise DecodeError(f"push.kind must be one of {sorted(_KINDS)}")
        if len(msg["id"]) > 64:
            raise DecodeError("push.id is too long")
    if t in ("ihave", "graft", "whatis"):
        _list_of(msg["ids"], bytes, _MAX_IDS, f"{t}.ids")
        if any(len(i) > 64 for i in msg["ids"]):
            raise DecodeError(f"{t}.ids: an id is too long")
    if t == "hello" and len(msg["challenge"]) != 32:
        raise DecodeError("hello.challenge must be 32 bytes")
    if t == "hello":
        _list_of(msg["caps"], str, 32, "hello.caps")
    if t == "peers":
        _list_of(msg["urls"], str, _MAX_URLS, "peers.urls")
    if t == "ident":
        _list_of(msg["ops"], bytes, 1000, "ident.ops")
    if t == "labels":
        _list_of(msg["labels"], bytes, MAX_LABELS_PER_ANSWER, "labels.labels")
    if t == "heads":
        _list_of(msg["items"], dict, _MAX_ITEMS, "heads.items")
    if t in ("getblob", "blob") and len(msg["cid"]) > 64:
        raise DecodeError(f"{t}.cid is too long")
    return msg
