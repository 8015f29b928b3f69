"""Regenerate every known-answer vector file in ``tests/vectors/`` from fixed seeds.

Run ``python tests/vectors/generate.py`` from anywhere: it rewrites ``keys.json``,
``encoding.json``, ``cids.json``, ``tids.json``, ``records.json``, ``mst.json``,
``commits.json``, ``commit_events.json``, ``car.json``, ``identity.json``,
``labels.json``, ``ingest.json``, ``handles.json``, ``feedgen.json`` and
``peerwire.json``. Nothing
here reads the clock or a random source: keys come from
``SigningKey.from_seed(bytes([n]) * 32)``, times and TIDs are constants, so two runs
write identical bytes.

Every vector is checked against the implementation while it is generated (a valid
vector must decode, verify and re-encode to the same bytes; a negative one must be
refused with the error class written down), so a file that this script writes is
always consistent with the code that wrote it. ``tests/test_vectors.py`` replays them.

Conventions shared by all files: bytes are lower-case hex (``*_hex`` fields); a value
written as JSON uses atproto's JSON form, where ``{"$bytes": "<base64, no padding>"}``
is a byte string and every other object is a map (``{"$link": ...}`` included);
CIDs are in their ``b...`` string form unless the field says ``_hex``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

import base58  # noqa: E402
import msgpack  # noqa: E402

from protocol.car import read_car, varint, write_car  # noqa: E402
from protocol.cid import CID, CODEC_MSGPACK, CODEC_RAW, cid_for_msgpack, cid_for_raw  # noqa: E402
from protocol.commit import (  # noqa: E402
    Commit,
    CommitEvent,
    RepoOp,
    blocks_for_ops,
    verify_commit_event,
)
from protocol.encoding import MAX_DEPTH, Value, decode, encode  # noqa: E402
from protocol.errors import LocalProtocolError, RemoteProtocolError, SkyfedError  # noqa: E402
from protocol.keys import SigningKey, VerifyKey  # noqa: E402
from protocol.mst import MST, MemoryBlockStore, key_height  # noqa: E402
from protocol.records import validate_record  # noqa: E402
from protocol.repo import Repo, Write  # noqa: E402
from protocol.syntax import tid_from_parts, tid_to_parts  # noqa: E402
from tests.seeds import seeded_key  # noqa: E402

# -- fixed inputs ------------------------------------------------------------------------

#: 2026-01-01T00:00:00Z in microseconds: the base of every TID below.
BASE_MICROS = 1_767_225_600_000_000
CLOCK_ID = 7
#: The account of the vectors: rotation keys seeds 1 and 2, signing key seed 3.
HANDLE = "alice.example.com"
ENDPOINT = "https://pds.example.com"
SIGNING_SEED = 3
MESSAGE = b"skyfed known-answer vector"


def tid(n: int) -> str:
    """The n-th fixed TID (one second apart, clock id 7)."""
    return tid_from_parts(BASE_MICROS + n * 1_000_000, CLOCK_ID)


def when(n: int) -> str:
    """The datetime matching :func:`tid` ``n`` (an informational event time)."""
    return f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z"


# -- JSON helpers ------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def to_json(value: Any) -> Any:
    """A data-model value in atproto's JSON form (bytes as ``{"$bytes": ...}``)."""
    if isinstance(value, bytes):
        return {"$bytes": b64(value)}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    """The reverse of :func:`to_json`."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            text = value["$bytes"]
            return base64.b64decode(text + "=" * (-len(text) % 4))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def refusal(fn: Callable[[], object]) -> dict[str, Any]:
    """Run ``fn``, which must raise a remote protocol error; describe the error."""
    try:
        fn()
    except RemoteProtocolError as e:
        return {
            "error": type(e).__name__,
            "xrpc_error": e.error,
            "status": e.status,
            "message": e.message,
        }
    except SkyfedError as e:  # a local error here means the vector is wrong
        raise AssertionError(f"expected a remote error, got {e!r}") from e
    raise AssertionError("expected a refusal, but the input was accepted")


def write(name: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    (HERE / name).write_text(text, encoding="utf-8")


#: Vectors that state the protocol but that the code does not honour yet: the test
#: marks them as expected failures (strict), so fixing the code flags them.
#: (Empty now: "ext-timestamp" was one until protocol/encoding.py refused Timestamps.)
KNOWN_BUGS: dict[str, str] = {}


# -- encoding.json -----------------------------------------------------------------------


def nested(n: int) -> Value:
    """``n`` lists nested inside each other."""
    v: Value = []
    for _ in range(n - 1):
        v = [v]
    return v


def gen_encoding() -> dict[str, Any]:
    values: list[tuple[str, Value]] = [
        ("nil", None),
        ("false", False),
        ("true", True),
        ("int-0", 0),
        ("int-127-positive-fixint", 127),
        ("int-128-uint8", 128),
        ("int-255-uint8", 255),
        ("int-256-uint16", 256),
        ("int-65535-uint16", 65535),
        ("int-65536-uint32", 65536),
        ("int-2p32-uint64", 2**32),
        ("int-max-int64", 2**63 - 1),
        ("int-minus-1-negative-fixint", -1),
        ("int-minus-32-negative-fixint", -32),
        ("int-minus-33-int8", -33),
        ("int-minus-128-int8", -128),
        ("int-minus-129-int16", -129),
        ("int-minus-32769-int32", -32769),
        ("int-minus-2p31-minus-1-int64", -(2**31) - 1),
        ("int-min-int64", -(2**63)),
        ("str-empty", ""),
        ("str-ascii", "hello"),
        ("str-31-fixstr", "a" * 31),
        ("str-32-str8", "a" * 32),
        ("str-256-str16", "b" * 256),
        ("str-utf8", "héllo 😀"),
        ("bin-empty", b""),
        ("bin-3", b"\x00\x01\xff"),
        ("array-empty", []),
        ("array-mixed", [1, "a", None, True, b"\x02"]),
        ("array-16-array16", list(range(16))),
        ("map-empty", {}),
        ("map-sorted-bytewise", {"b": 1, "aa": 2, "a": 3}),
        ("map-sorted-utf8-not-utf16", {"\U0001f600": 1, "\uffff": 2, "z": 3, "é": 4}),
        ("map-16-map16", {f"k{i:02d}": i for i in range(16)}),
        ("map-nested", {"outer": {"z": [], "a": {"$link": "not a CID type: a plain map"}}}),
        ("nesting-at-max-depth", nested(MAX_DEPTH)),
    ]
    valid = []
    for vid, value in values:
        data = encode(value)
        assert decode(data) == value
        valid.append({"id": vid, "value": to_json(value), "hex": data.hex()})

    depth_over = bytes([0x91] * MAX_DEPTH + [0x90])
    invalid_cases: list[tuple[str, bytes, str, int | None]] = [
        ("empty-input", b"", "no document at all", None),
        ("truncated-array", bytes.fromhex("9201"), "array of 2 with one element", None),
        ("trailing-bytes", bytes.fromhex("c0c0"), "a second document after the first", None),
        ("reserved-c1", bytes.fromhex("c1"), "0xc1 is never used", None),
        ("uint8-for-fixint", bytes.fromhex("cc05"), "5 must be a positive fixint", None),
        ("uint16-for-uint8", bytes.fromhex("cd00ff"), "255 must be uint8", None),
        ("uint64-for-small", bytes.fromhex("cf0000000000000001"), "1 in 9 bytes", None),
        (
            "uint64-over-int64",
            bytes.fromhex("cfffffffffffffffff"),
            "2**64-1 is outside signed 64-bit",
            None,
        ),
        ("int8-for-positive", bytes.fromhex("d005"), "non-negative ints use the uint family", None),
        ("int8-for-negative-fixint", bytes.fromhex("d0ff"), "-1 must be a negative fixint", None),
        ("int16-for-int8", bytes.fromhex("d1ff80"), "-128 must be int8", None),
        ("float32", bytes.fromhex("ca3f800000"), "no floats", None),
        ("float64", bytes.fromhex("cb3ff0000000000000"), "no floats", None),
        ("str8-for-fixstr", bytes.fromhex("d90161"), '"a" must be a fixstr', None),
        ("bin16-for-bin8", bytes.fromhex("c5000161"), "3-byte string must be bin8", None),
        ("str-invalid-utf8", bytes.fromhex("a1ff"), "strings are UTF-8", None),
        ("str-lone-surrogate", bytes.fromhex("a3eda080"), "a surrogate is not UTF-8", None),
        ("array16-for-fixarray", bytes.fromhex("dc000101"), "1 element needs a fixarray", None),
        ("map16-for-fixmap", bytes.fromhex("de0001a16101"), "1 pair needs a fixmap", None),
        ("map-unsorted", bytes.fromhex("82a16201a16102"), 'keys "b","a" out of order', None),
        (
            "map-length-first-order",
            bytes.fromhex("82a16201a2616102"),
            'DAG-CBOR order ("b" before "aa") is not ours',
            None,
        ),
        ("map-duplicate-key", bytes.fromhex("82a16101a16102"), "key twice", None),
        ("map-int-key", bytes.fromhex("810102"), "keys are strings", None),
        ("map-bin-key", bytes.fromhex("81c4016101"), "keys are strings, not bin", None),
        ("ext-fixext1", bytes.fromhex("d40100"), "no ext types", None),
        ("ext-timestamp", bytes.fromhex("d6ff00000000"), "no timestamps either", None),
        ("nesting-over-max-depth", depth_over, f"{MAX_DEPTH + 1} nested arrays", None),
        (
            "over-max-size",
            bytes.fromhex("c410") + bytes(16),
            "18-byte document decoded with max_size 17",
            17,
        ),
    ]
    invalid = []
    for vid, data, reason, max_size in invalid_cases:
        entry: dict[str, Any] = {"id": vid, "hex": data.hex(), "reason": reason}
        if vid in KNOWN_BUGS:
            # Written down as it must be; the test expects it to fail until fixed.
            assert decode(data) is not None
            entry["known_bug"] = KNOWN_BUGS[vid]
            entry.update({"error": "DecodeError", "xrpc_error": "InvalidRequest", "status": 400})
        elif max_size is None:
            entry.update(refusal(lambda data=data: decode(data)))  # type: ignore[misc]
        else:
            entry["max_size"] = max_size
            assert decode(data) is not None
            entry.update(refusal(lambda d=data, m=max_size: decode(d, max_size=m)))  # type: ignore[misc]
        invalid.append(entry)
    # Values encode() refuses (LocalProtocolError: a caller that takes them from a
    # client turns that into its own remote error, as Repo.apply_writes does). Carried
    # as ASCII JSON text, since a lone surrogate cannot be written as UTF-8.
    unencodable_values: list[tuple[str, Any, str]] = [
        ("lone-surrogate-string", {"text": "\ud800"}, "a string holding a lone surrogate"),
        ("lone-surrogate-map-key", {"\udc00": 1}, "a map key holding a lone surrogate"),
        ("lone-surrogate-nested", {"a": [{"b": ["x\udfff"]}]}, "a lone surrogate deep inside"),
        ("int-2p63", 2**63, "one past the signed 64-bit range"),
        ("int-below-min", -(2**63) - 1, "one below the signed 64-bit range"),
    ]
    unencodable = []
    for vid, value, reason in unencodable_values:
        try:
            encode(value)
        except LocalProtocolError:
            pass
        else:  # pragma: no cover
            raise AssertionError(f"{vid} encoded")
        unencodable.append(
            {
                "id": vid,
                "json": json.dumps(value, ensure_ascii=True),
                "reason": reason,
                "error": "LocalProtocolError",
            }
        )
    return {
        "description": "Canonical msgpack: value (JSON form) -> exact bytes, bytes "
        "that decode() must refuse, and values (as JSON text) that encode() refuses.",
        "max_depth": MAX_DEPTH,
        "valid": valid,
        "invalid": invalid,
        "unencodable": unencodable,
    }


# -- cids.json ---------------------------------------------------------------------------


def gen_cids() -> dict[str, Any]:
    blocks: list[tuple[str, int, bytes]] = [
        ("msgpack-empty-tree-node", CODEC_MSGPACK, encode({"e": [], "l": None})),
        ("msgpack-empty-map", CODEC_MSGPACK, encode({})),
        (
            "msgpack-record",
            CODEC_MSGPACK,
            encode({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": when(0)}),
        ),
        ("raw-empty", CODEC_RAW, b""),
        ("raw-hello", CODEC_RAW, b"hello world"),
    ]
    valid = []
    for vid, codec, block in blocks:
        cid = cid_for_msgpack(block) if codec == CODEC_MSGPACK else cid_for_raw(block)
        assert CID.from_str(cid.to_str()) == cid == CID.from_bytes(cid.to_bytes())
        valid.append(
            {
                "id": vid,
                "codec": codec,
                "block_hex": block.hex(),
                "cid_hex": cid.to_bytes().hex(),
                "cid": cid.to_str(),
            }
        )

    digest = hashlib.sha256(b"hello world").digest()
    good = cid_for_raw(b"hello world")
    good_str = good.to_str()

    def b32(raw: bytes) -> str:
        return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    bad_strings = [
        ("upper-case-multibase", "B" + good_str[1:].upper(), "base32upper ('B') is not ours"),
        ("mixed-case", good_str[:10] + good_str[10:].upper(), "one spelling: lower case"),
        ("base58btc", "z" + base58.b58encode(good.to_bytes()).decode(), "only base32 ('b')"),
        ("cidv0", base58.b58encode(b"\x12\x20" + digest).decode(), "CIDv0 ('Qm...')"),
        ("dag-cbor-codec", b32(b"\x01\x71\x12\x20" + digest), "codec 0x71 is not ours"),
        ("sha2-512", b32(b"\x01\x55\x13\x40" + hashlib.sha512(b"x").digest()), "only sha2-256"),
        ("short-digest", b32(b"\x01\x55\x12\x20" + digest[:31]), "31-byte digest"),
        ("padded", good_str + "====", "no base32 padding"),
        ("empty-body", "b", "no bytes"),
    ]
    invalid_strings = []
    for vid, text, reason in bad_strings:
        entry: dict[str, Any] = {"id": vid, "cid": text, "reason": reason}
        entry.update(refusal(lambda t=text: CID.from_str(t)))  # type: ignore[misc]
        invalid_strings.append(entry)
    bad_bytes = [
        ("cidv0-multihash", b"\x12\x20" + digest, "a bare multihash"),
        ("dag-cbor-codec", b"\x01\x71\x12\x20" + digest, "codec 0x71"),
        ("truncated", good.to_bytes()[:-1], "one byte short"),
        ("trailing-byte", good.to_bytes() + b"\x00", "one byte long"),
        ("msgpack-codec-non-minimal-varint", b"\x01\x81\x84\x00\x12\x20" + digest, "0x0201 padded"),
    ]
    invalid_bytes = []
    for vid, raw, reason in bad_bytes:
        entry = {"id": vid, "cid_hex": raw.hex(), "reason": reason}
        entry.update(refusal(lambda r=raw: CID.from_bytes(r)))  # type: ignore[misc]
        invalid_bytes.append(entry)
    return {
        "description": "CIDv1 sha2-256, codecs 0x0201 (msgpack) and 0x55 (raw): block -> "
        "binary and string CID; strings and bytes that must be refused.",
        "valid": valid,
        "invalid_strings": invalid_strings,
        "invalid_bytes": invalid_bytes,
    }


# -- keys.json ---------------------------------------------------------------------------


def gen_keys() -> dict[str, Any]:
    valid = []
    for n in (1, 2, 3, 7, 255):
        key = seeded_key(n)
        sig = key.sign(MESSAGE)
        assert SigningKey.from_str(key.to_str()).seed == key.seed
        assert VerifyKey.from_did_key(key.did_key()).raw == key.public.raw
        key.public.verify(sig, MESSAGE)
        valid.append(
            {
                "id": f"seed-{n:02x}",
                "seed_hex": key.seed.hex(),
                "public_hex": key.public.raw.hex(),
                "did_key": key.did_key(),
                "secret": key.to_str(),
                "message_hex": MESSAGE.hex(),
                "signature_hex": sig.hex(),
            }
        )
    pub = seeded_key(1).public.raw
    bad_did_keys = [
        ("secp256k1", "did:key:z" + base58.b58encode(b"\xe7\x01\x02" + bytes(32)).decode()),
        ("p256", "did:key:z" + base58.b58encode(b"\x80\x24\x02" + bytes(32)).decode()),
        ("no-multibase-prefix", "did:key:" + base58.b58encode(b"\xed\x01" + pub).decode()),
        ("short-key", "did:key:z" + base58.b58encode(b"\xed\x01" + pub[:31]).decode()),
        ("leading-zero-byte", "did:key:z1" + base58.b58encode(b"\xed\x01" + pub).decode()),
        ("not-base58", "did:key:z6Mk0OIl"),
        ("did-web", "did:web:example.com"),
    ]
    # The small-order points (RFC 8032 accepts R = identity, s = 0 from them for every
    # message) and non-canonical encodings (y >= p), each as a did:key.
    p = 2**255 - 19
    bad_points = [
        ("small-order-identity", (1).to_bytes(32, "little")),
        ("small-order-2", (p - 1).to_bytes(32, "little")),
        ("small-order-4", bytes(32)),
        ("small-order-4-negative", bytes(31) + b"\x80"),
        (
            "small-order-8a",
            bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        ),
        (
            "small-order-8b",
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        ),
        (
            "small-order-8b-negative",
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
        ),
        ("non-canonical-y-p", p.to_bytes(32, "little")),
        ("non-canonical-y-p-plus-1", (p + 1).to_bytes(32, "little")),
        ("small-order-identity-negative", (1 + (1 << 255)).to_bytes(32, "little")),
        ("non-canonical-y-max", (2**255 - 1).to_bytes(32, "little")),
    ]
    bad_did_keys += [
        (vid, "did:key:z" + base58.b58encode(b"\xed\x01" + raw).decode()) for vid, raw in bad_points
    ]
    invalid_did_keys = []
    for vid, text in bad_did_keys:
        entry: dict[str, Any] = {"id": vid, "did_key": text}
        entry.update(refusal(lambda t=text: VerifyKey.from_did_key(t)))  # type: ignore[misc]
        invalid_did_keys.append(entry)
    seed = bytes([1]) * 32
    bad_secrets = [
        ("public-key-as-secret", seeded_key(1).did_key()[len("did:key:") :]),
        ("public-codec", "z" + base58.b58encode(b"\xed\x01" + seed).decode()),
        ("short-seed", "z" + base58.b58encode(b"\x80\x26" + seed[:31]).decode()),
        ("no-multibase-prefix", base58.b58encode(b"\x80\x26" + seed).decode()),
    ]
    invalid_secrets = []
    for vid, text in bad_secrets:
        entry = {"id": vid, "secret": text}
        entry.update(refusal(lambda t=text: SigningKey.from_str(t)))  # type: ignore[misc]
        invalid_secrets.append(entry)
    k1 = seeded_key(1)
    sig = k1.sign(MESSAGE)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    bad_sigs = [
        ("flipped-bit", k1.did_key(), MESSAGE, flipped),
        ("other-key", seeded_key(2).did_key(), MESSAGE, sig),
        ("other-message", k1.did_key(), MESSAGE + b"!", sig),
        ("short-signature", k1.did_key(), MESSAGE, sig[:63]),
        # R = the identity, s = k * a: RFC 8032's equation holds (OpenSSL accepts it);
        # refused because R is of small order (docs/protocol.md section 3).
        ("small-order-r", k1.did_key(), MESSAGE, _small_order_r_signature(bytes([1]) * 32)),
    ]
    invalid_signatures = []
    for vid, did_key, msg, s in bad_sigs:
        entry = {"id": vid, "did_key": did_key, "message_hex": msg.hex(), "signature_hex": s.hex()}
        entry.update(
            refusal(lambda d=did_key, m=msg, s=s: VerifyKey.from_did_key(d).verify(s, m))  # type: ignore[misc]
        )
        invalid_signatures.append(entry)
    return {
        "description": "ed25519 keys from seed bytes([n]) * 32: did:key, secret export and "
        "a signature over message_hex; did:keys, secrets and signatures to refuse.",
        "valid": valid,
        "invalid_did_keys": invalid_did_keys,
        "invalid_secrets": invalid_secrets,
        "invalid_signatures": invalid_signatures,
    }


def _small_order_r_signature(seed: bytes) -> bytes:
    """A signature over MESSAGE whose R is the identity point and whose s satisfies
    [s]B = R + [k]A for the seed's key: valid by the bare equation, of small order."""
    import hashlib

    order = 2**252 + 27742317777372353535851937790883648493
    h = hashlib.sha512(seed).digest()
    a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    public = SigningKey.from_seed(seed).public.raw
    r = (1).to_bytes(32, "little")
    k = int.from_bytes(hashlib.sha512(r + public + MESSAGE).digest(), "little") % order
    return r + (k * a % order).to_bytes(32, "little")


# -- tids.json ---------------------------------------------------------------------------


def gen_tids() -> dict[str, Any]:
    cases = [
        ("zero", 0, 0),
        ("vector-base", BASE_MICROS, CLOCK_ID),
        ("vector-base-clock-0", BASE_MICROS, 0),
        ("vector-base-clock-1023", BASE_MICROS, 1023),
        ("vector-base-plus-1us", BASE_MICROS + 1, CLOCK_ID),
        ("max", 2**53 - 1, 1023),
    ]
    valid = []
    for vid, micros, clock in cases:
        t = tid_from_parts(micros, clock)
        assert tid_to_parts(t) == (micros, clock)
        valid.append({"id": vid, "micros": micros, "clock_id": clock, "tid": t})
    return {
        "description": "TIDs: 13 chars of base32-sortable over (micros << 10) | clock_id.",
        "valid": valid,
    }


# -- records.json ------------------------------------------------------------------------

ACCOUNT_DID = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
OTHER_DID = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
POST_URI = f"at://{OTHER_DID}/app.bsky.feed.post/{tid(1)}"
POST_CID = cid_for_msgpack(
    encode({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": when(0)})
).to_str()
REF = {"uri": POST_URI, "cid": POST_CID}
AVATAR = {
    "$type": "blob",
    "ref": {"$link": cid_for_raw(b"avatar image bytes").to_str()},
    "mimeType": "image/png",
    "size": 18,
}


def post(text: str, **extra: Any) -> dict[str, Any]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": when(0), **extra}


def gen_records() -> dict[str, Any]:
    text = "Hi @bob.example.com, see https://example.com #skyfed 😀"
    tb = text.encode("utf-8")

    def span(sub: str) -> dict[str, int]:
        start = tb.index(sub.encode("utf-8"))
        return {"byteStart": start, "byteEnd": start + len(sub.encode("utf-8"))}

    facets = [
        {
            "index": span("@bob.example.com"),
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": OTHER_DID}],
        },
        {
            "index": span("https://example.com"),
            "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}],
        },
        {
            "index": span("#skyfed"),
            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "skyfed"}],
        },
    ]
    valid_cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("post-minimal", "app.bsky.feed.post", tid(1), post("hello world")),
        ("post-facets", "app.bsky.feed.post", tid(2), post(text, facets=facets)),
        (
            "post-reply",
            "app.bsky.feed.post",
            tid(3),
            post("yes", reply={"root": REF, "parent": REF}),
        ),
        (
            "post-quote",
            "app.bsky.feed.post",
            tid(4),
            post("look", embed={"$type": "app.bsky.embed.record", "record": REF}),
        ),
        (
            "post-langs-tags",
            "app.bsky.feed.post",
            tid(5),
            post("salut", langs=["fr", "en-GB"], tags=["a", "b"]),
        ),
        ("post-300-graphemes", "app.bsky.feed.post", tid(6), post("👍🏽" * 300)),
        ("post-unknown-field-kept", "app.bsky.feed.post", tid(7), post("x", via="client")),
        (
            "like",
            "app.bsky.feed.like",
            tid(8),
            {"$type": "app.bsky.feed.like", "subject": REF, "createdAt": when(0)},
        ),
        (
            "repost",
            "app.bsky.feed.repost",
            tid(9),
            {"$type": "app.bsky.feed.repost", "subject": REF, "createdAt": when(0)},
        ),
        (
            "follow",
            "app.bsky.graph.follow",
            tid(10),
            {"$type": "app.bsky.graph.follow", "subject": OTHER_DID, "createdAt": when(0)},
        ),
        (
            "block",
            "app.bsky.graph.block",
            tid(11),
            {"$type": "app.bsky.graph.block", "subject": OTHER_DID, "createdAt": when(0)},
        ),
        (
            "profile",
            "app.bsky.actor.profile",
            "self",
            {
                "$type": "app.bsky.actor.profile",
                "displayName": "Alice",
                "description": "Writes vectors.",
                "avatar": AVATAR,
            },
        ),
        ("profile-empty", "app.bsky.actor.profile", "self", {"$type": "app.bsky.actor.profile"}),
        (
            "unknown-collection-with-bytes",
            "com.example.note",
            "any-key",
            {"$type": "com.example.note", "body": b"\x00\x01\x02"},
        ),
    ]
    valid = []
    for vid, coll, rkey, record in valid_cases:
        validate_record(coll, record, rkey)
        block = encode(record)
        valid.append(
            {
                "id": vid,
                "collection": coll,
                "rkey": rkey,
                "record": to_json(record),
                "hex": block.hex(),
                "cid": cid_for_msgpack(block).to_str(),
            }
        )

    bad = "app.bsky.feed.post"
    invalid_cases: list[tuple[str, str, str, Any]] = [
        ("post-301-graphemes", bad, tid(1), post("a" * 301)),
        ("post-3001-bytes", bad, tid(1), post("é" * 1500 + "a")),
        ("post-missing-createdAt", bad, tid(1), {"$type": bad, "text": "x"}),
        ("post-bad-createdAt", bad, tid(1), post("x", createdAt="2026-01-01 00:00:00")),
        ("post-missing-type", bad, tid(1), {"text": "x", "createdAt": when(0)}),
        ("post-wrong-type", bad, tid(1), {**post("x"), "$type": "app.bsky.feed.like"}),
        ("post-null-optional", bad, tid(1), post("x", embed=None)),
        ("post-float", bad, tid(1), post("x", score=1.5)),
        ("post-text-not-string", bad, tid(1), post(5)),  # type: ignore[arg-type]
        (
            "post-facet-past-text",
            bad,
            tid(1),
            post("abc", facets=[{"index": {"byteStart": 0, "byteEnd": 4}, "features": []}]),
        ),
        (
            "post-facet-empty-range",
            bad,
            tid(1),
            post("abc", facets=[{"index": {"byteStart": 2, "byteEnd": 2}, "features": []}]),
        ),
        (
            "post-mention-not-did",
            bad,
            tid(1),
            post(
                "abc",
                facets=[
                    {
                        "index": {"byteStart": 0, "byteEnd": 1},
                        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "bob"}],
                    }
                ],
            ),
        ),
        (
            "post-link-facet-bad-authority",
            bad,
            tid(1),
            post(
                "http://[",
                facets=[
                    {
                        "index": {"byteStart": 0, "byteEnd": 8},
                        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "http://["}],
                    }
                ],
            ),
        ),
        ("post-4-langs", bad, tid(1), post("x", langs=["en", "fr", "de", "es"])),
        ("post-bad-lang", bad, tid(1), post("x", langs=["english!"])),
        ("post-9-tags", bad, tid(1), post("x", tags=[str(i) for i in range(9)])),
        (
            "post-reply-bad-cid",
            bad,
            tid(1),
            post("x", reply={"root": REF, "parent": {**REF, "cid": "x"}}),
        ),
        ("post-reply-missing-root", bad, tid(1), post("x", reply={"parent": REF})),
        ("post-rkey-not-tid", bad, "hello", post("x")),
        (
            "like-subject-bad-uri",
            "app.bsky.feed.like",
            tid(1),
            {
                "$type": "app.bsky.feed.like",
                "subject": {**REF, "uri": "https://x.com"},
                "createdAt": when(0),
            },
        ),
        (
            "follow-subject-not-did",
            "app.bsky.graph.follow",
            tid(1),
            {"$type": "app.bsky.graph.follow", "subject": "bob.example.com", "createdAt": when(0)},
        ),
        (
            "profile-rkey-not-self",
            "app.bsky.actor.profile",
            tid(1),
            {"$type": "app.bsky.actor.profile"},
        ),
        (
            "profile-display-name-65-graphemes",
            "app.bsky.actor.profile",
            "self",
            {"$type": "app.bsky.actor.profile", "displayName": "x" * 65},
        ),
        (
            "unknown-collection-wrong-type",
            "com.example.note",
            "k",
            {"$type": "com.example.other"},
        ),
        ("collection-not-nsid", "notansid", "k", {"$type": "notansid"}),
    ]
    invalid = []
    for vid, coll, rkey, record in invalid_cases:
        entry: dict[str, Any] = {
            "id": vid,
            "collection": coll,
            "rkey": rkey,
            "record": to_json(record),
        }
        try:
            validate_record(coll, record, rkey)
        except RemoteProtocolError as e:
            entry.update({"error": type(e).__name__, "xrpc_error": e.error, "status": e.status})
            entry["field"] = getattr(e, "field", "")
            entry["message"] = e.message
        else:
            raise AssertionError(f"record vector {vid} was accepted")
        invalid.append(entry)
    return {
        "description": "Records: valid ones with their canonical bytes and CID; invalid ones "
        "with the field validate_record() names.",
        "valid": valid,
        "invalid": invalid,
    }


# -- mst.json ----------------------------------------------------------------------------


def leaf_value(key: str) -> CID:
    """The value every MST vector stores under ``key``: the CID of encode(key)."""
    return cid_for_msgpack(encode(key))


def build(keys: list[str]) -> MST:
    tree = MST.empty()
    for k in keys:
        tree = tree.set(k, leaf_value(k))
    return tree


def key_at(prefix: str, height: int, start: int = 0) -> str:
    """The first key ``prefix + str(n)`` (n from ``start``) at ``height``."""
    n = start
    while key_height(f"{prefix}{n:06d}") != height:
        n += 1
    return f"{prefix}{n:06d}"


def node_blocks(tree: MST) -> list[dict[str, str]]:
    return [{"cid": c.to_str(), "hex": b.hex()} for c, b in tree.all_blocks()]


def gen_mst() -> dict[str, Any]:
    heights = [
        "",
        "asdf",
        "blue",
        "2653ae71",
        "88bfafc7",
        "2a92d355",
        "884976f5",
        "app.bsky.feed.post/454397e440ec",
        "app.bsky.feed.post/9adeb165882c",
    ]
    key_heights = [{"key": k, "height": key_height(k)} for k in heights]

    letters = [key_at(f"{c}{h}/", h) for c in "ABCD" for h in range(4)]
    big = [f"app.bsky.feed.post/{tid(i)}" for i in range(250)] + [
        f"app.bsky.feed.like/{tid(i)}" for i in range(50)
    ]
    trees_in: list[tuple[str, list[str], bool]] = [
        ("empty", [], True),
        ("one-key", ["app.bsky.feed.post/" + tid(0)], True),
        (
            "two-keys-shared-prefix",
            ["app.bsky.feed.post/" + tid(0), "app.bsky.feed.post/" + tid(1)],
            True,
        ),
        (
            "atproto-heights-4-and-8",
            ["app.bsky.feed.post/454397e440ec", "app.bsky.feed.post/9adeb165882c"],
            True,
        ),
        ("letters-heights-0-to-3", letters, True),
        ("three-hundred-keys", big, False),
    ]
    trees = []
    for tid_, keys, with_nodes in trees_in:
        forward = build(keys)
        assert build(list(reversed(keys))).root() == forward.root()
        entry: dict[str, Any] = {
            "id": tid_,
            "keys": keys,
            "root": forward.root().to_str(),
            "root_layer": max((key_height(k) for k in keys), default=0),
            "node_count": sum(1 for _ in forward.all_blocks()),
        }
        if with_nodes:
            entry["nodes"] = node_blocks(forward)
        trees.append(entry)
    # Deleting keys gives the tree of the rest, whatever the history.
    deleted = big[::3]
    after = build(big)
    for k in deleted:
        after = after.delete(k)
    rest = [k for k in big if k not in set(deleted)]
    assert after.root() == build(rest).root()
    trees.append(
        {
            "id": "three-hundred-keys-minus-every-third",
            "keys": rest,
            "root": after.root().to_str(),
            "root_layer": max(key_height(k) for k in rest),
            "node_count": sum(1 for _ in after.all_blocks()),
        }
    )

    invalid = gen_mst_invalid()
    return {
        "description": "Merkle Search Tree: key heights; roots for key sets (the value of "
        "key k is the CID of encode(k), a msgpack str); node blocks root first; trees "
        "the loader must refuse.",
        "value_rule": "cid_for_msgpack(encode(key))",
        "key_heights": key_heights,
        "trees": trees,
        "invalid_trees": invalid,
    }


def _node(left: CID | None, entries: list[tuple[bytes, int, CID | None, CID]]) -> bytes:
    return encode(
        {
            "e": [
                {"k": k, "p": p, "t": None if t is None else t.to_bytes(), "v": v.to_bytes()}
                for k, p, t, v in entries
            ],
            "l": None if left is None else left.to_bytes(),
        }
    )


def gen_mst_invalid() -> list[dict[str, Any]]:
    h0a = key_at("com.example.a/", 0)
    h0b = key_at("com.example.b/", 0)
    h0z = key_at("com.example.z/", 0)
    h1 = key_at("com.example.m/", 1)
    v = leaf_value("x")
    cases: list[tuple[str, str, list[bytes], bytes | None]] = []

    def add(vid: str, reason: str, blocks: list[bytes], root: bytes | None = None) -> None:
        cases.append((vid, reason, blocks, root))

    a, b = h0a.encode(), h0b.encode()
    shared = len("com.example.")
    add(
        "keys-unsorted",
        "layer-0 keys out of order",
        [_node(None, [(b, 0, None, v), (a[shared:], shared, None, v)])],
    )
    add(
        "duplicate-key",
        "the same key twice",
        [_node(None, [(a, 0, None, v), (b"", len(a), None, v)])],
    )
    add(
        "prefix-not-longest",
        "second key written with p=0 though it shares 'com.example.'",
        [_node(None, [(a, 0, None, v), (b, 0, None, v)])],
    )
    add("first-prefix-nonzero", "the first entry has p=3", [_node(None, [(a[3:], 3, None, v)])])
    add(
        "prefix-longer-than-previous-key",
        "p exceeds the previous key's length",
        [_node(None, [(a, 0, None, v), (b[shared:], len(a) + 1, None, v)])],
    )
    add(
        "mixed-heights",
        "a height-0 and a height-1 key in one node",
        [_node(None, [(a, 0, None, v), (h1.encode()[shared:], shared, None, v)])],
    )
    leaf = _node(None, [(a, 0, None, v)])
    add(
        "layer-0-points-down",
        "a node of height-0 keys with a subtree",
        [_node(None, [(b, 0, cid_for_msgpack(leaf), v)]), leaf],
    )
    add(
        "root-entry-less-over-subtree",
        "the root must hold the highest keys, not just point down",
        [_node(cid_for_msgpack(leaf), []), leaf],
    )
    empty = _node(None, [])
    add(
        "empty-inner-node",
        "an entry-less node with no subtree below the root",
        [_node(cid_for_msgpack(empty), [(h1.encode(), 0, None, v)]), empty],
    )
    wrong = _node(None, [(a, 0, None, v)])
    top = key_at("com.example.q/", 2)
    add(
        "child-skips-a-layer",
        "a height-2 root whose left subtree is a node of height-0 keys (layer 1 skipped)",
        [_node(cid_for_msgpack(wrong), [(top.encode(), 0, None, v)]), wrong],
    )
    low = _node(None, [(h0z.encode(), 0, None, v)])
    add(
        "key-outside-subtree-range",
        "the left subtree of a key holds a greater key",
        [_node(cid_for_msgpack(low), [(h1.encode(), 0, None, v)]), low],
    )
    e_low = _node(None, [(h0z.encode(), 0, None, v)])
    entry_less = _node(cid_for_msgpack(e_low), [])
    add(
        "key-outside-range-under-entry-less-node",
        "a height-2 root [K] over an entry-less layer-1 node over a leaf holding a key "
        "above K: the range passes through the entry-less node",
        [
            _node(cid_for_msgpack(entry_less), [(top.encode(), 0, None, v)]),
            entry_less,
            e_low,
        ],
    )
    add(
        "value-not-binary-cid",
        "v is a CID string",
        [
            encode(
                {
                    "e": [{"k": a, "p": 0, "t": None, "v": v.to_str()}],
                    "l": None,
                }
            )
        ],
    )
    add(
        "extra-entry-field",
        "an entry with a fifth field",
        [
            encode(
                {
                    "e": [{"k": a, "p": 0, "t": None, "v": v.to_bytes(), "x": 1}],
                    "l": None,
                }
            )
        ],
    )
    add(
        "key-bad-character",
        "a space in the record key",
        [_node(None, [(b"com.example.a/x y", 0, None, v)])],
    )
    add(
        "key-without-collection",
        "a key with no '/'",
        [_node(None, [(b"blue", 0, None, v)])],
    )
    add(
        "node-keys-out-of-canonical-order",
        "'l' written before 'e'",
        [msgpack.packb({"l": None, "e": []})],
    )
    add(
        "missing-block",
        "the subtree's block is not supplied",
        [_node(cid_for_msgpack(leaf), [(h1.encode(), 0, None, v)])],
    )
    add(
        "block-does-not-hash-to-cid",
        "the root CID names other bytes",
        [leaf],
        cid_for_msgpack(empty).to_bytes(),
    )
    out = []
    for vid, reason, blocks, root_raw in cases:
        root = CID.from_bytes(root_raw) if root_raw is not None else cid_for_msgpack(blocks[0])
        store = MemoryBlockStore()
        for i, block in enumerate(blocks):
            # The hash mismatch case stores the first block under the root's CID.
            store.blocks[root if (i == 0 and root_raw is not None) else cid_for_msgpack(block)] = (
                block
            )
        entry: dict[str, Any] = {
            "id": vid,
            "reason": reason,
            "root": root.to_str(),
            "blocks_hex": [b.hex() for b in blocks],
        }
        if root_raw is not None:
            entry["root_block_index"] = 0
        entry.update(refusal(lambda s=store, r=root: MST.load(s, r).verify_structure()))  # type: ignore[misc]
        out.append(entry)
    return out


# -- identity.json -----------------------------------------------------------------------


def gen_identity() -> dict[str, Any] | None:
    try:
        from protocol.identity import (
            MAX_CHAIN_OPS,
            MAX_EVIDENCE_OPS,
            MAX_LOG_OPS,
            MAX_RESOLVE_OPS,
            IdentityOp,
            did_document,
            did_for_genesis,
            resolve_log,
        )
    except ImportError:  # pragma: no cover - the module has not landed
        return None
    k = [seeded_key(i) for i in range(6)]
    rot = [k[1].did_key(), k[2].did_key()]
    genesis = IdentityOp.create(rot, k[SIGNING_SEED].did_key(), HANDLE, ENDPOINT, None, k[1])
    did = did_for_genesis(genesis)
    assert did == ACCOUNT_DID, did
    update = IdentityOp.create(
        rot, k[4].did_key(), "alice2.example.com", ENDPOINT, genesis.cid, k[2]
    )
    # A fork at genesis: key 1 (index 0) beats key 2's update above.
    recovery = IdentityOp.create(
        rot, k[SIGNING_SEED].did_key(), HANDLE, "https://new.example.com", genesis.cid, k[1]
    )
    tomb = IdentityOp.tombstone(recovery.cid, k[1])

    def op_entry(vid: str, op: Any, signer: int) -> dict[str, Any]:
        again = IdentityOp.from_bytes(op.to_bytes())
        assert again == op
        return {
            "id": vid,
            "signer_seed": signer,
            "unsigned_hex": op.unsigned_bytes().hex(),
            "sig_hex": op.sig.hex(),
            "hex": op.to_bytes().hex(),
            "cid": op.cid.to_str(),
        }

    ops = [
        op_entry("genesis", genesis, 1),
        op_entry("update-signing-key-and-handle", update, 2),
        op_entry("recovery-fork-by-higher-priority-key", recovery, 1),
        op_entry("tombstone", tomb, 1),
    ]

    names = {
        genesis.cid: "genesis",
        update.cid: "update-signing-key-and-handle",
        recovery.cid: "recovery-fork-by-higher-priority-key",
        tomb.cid: "tombstone",
    }

    def log_entry(vid: str, members: list[Any]) -> dict[str, Any]:
        res = resolve_log(did, [m.to_bytes() for m in members])
        s = res.state
        return {
            "id": vid,
            "did": did,
            "ops": [names.get(m.cid, m.to_bytes().hex()) for m in members],
            "chain": [c.to_str() for c in res.chain],
            "nullified": [c.to_str() for c in res.nullified],
            "evidence": [c.to_str() for c in res.evidence],
            "rejected": [r.cid.to_str() for r in res.rejected],
            "state": {
                "handle": s.handle,
                "signing_key": s.signing_key,
                "rotation_keys": list(s.rotation_keys),
                "endpoint": s.endpoint,
                "head": s.head.to_str(),
                "tombstoned": s.tombstoned,
            },
        }

    bad_sig = IdentityOp.create(rot, k[4].did_key(), HANDLE, ENDPOINT, genesis.cid, k[5])
    flood = [
        IdentityOp.create(rot, k[4].did_key(), f"flood{i}.example.com", ENDPOINT, genesis.cid, k[2])
        for i in range(4)
    ]
    flood.append(IdentityOp.create(rot, k[4].did_key(), HANDLE, ENDPOINT, flood[0].cid, k[2]))
    logs = [
        log_entry("genesis-only", [genesis]),
        log_entry("genesis-then-update", [update, genesis]),
        log_entry("fork-higher-priority-wins", [genesis, update, recovery]),
        log_entry("tombstoned", [genesis, recovery, tomb, update]),
        log_entry("op-by-non-rotation-key-rejected", [genesis, bad_sig]),
        # Key index 1 floods the genesis with siblings, one of them with a child; the
        # index-0 key forks there too. Evidence keeps one loser per (fork point, key).
        log_entry("flood-of-forks-keeps-one-per-key", [genesis, recovery, *flood]),
    ]
    document = did_document(resolve_log(did, [genesis.to_bytes()]).state)

    value: dict[str, Any] = msgpack.unpackb(genesis.to_bytes(), raw=False)
    bad: list[tuple[str, bytes]] = [
        ("unknown-field", encode({**value, "extra": 1})),
        ("missing-services", encode({k2: v for k2, v in value.items() if k2 != "services"})),
        ("prev-as-string", encode({**value, "prev": genesis.cid.to_str()})),
        ("prev-raw-codec", encode({**value, "prev": cid_for_raw(b"x").to_bytes()})),
        ("plc-type", encode({**value, "type": "plc_operation"})),
        ("upper-case-handle", encode({**value, "alsoKnownAs": ["at://Alice.example.com"]})),
        (
            "two-handles",
            encode({**value, "alsoKnownAs": ["at://a.example.com", "at://b.example.com"]}),
        ),
        (
            "six-rotation-keys",
            encode({**value, "rotationKeys": [seeded_key(i).did_key() for i in range(10, 16)]}),
        ),
        ("duplicate-rotation-key", encode({**value, "rotationKeys": [rot[0], rot[0]]})),
        (
            "p256-signing-key",
            encode(
                {
                    **value,
                    "verificationMethods": {
                        "atproto": "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169"
                    },
                }
            ),
        ),
        (
            "endpoint-with-query",
            encode(
                {
                    **value,
                    "services": {
                        "atproto_pds": {
                            "endpoint": ENDPOINT + "/?x=1",
                            "type": "AtprotoPersonalDataServer",
                        }
                    },
                }
            ),
        ),
        ("sig-63-bytes", encode({**value, "sig": value["sig"][:63]})),
        ("keys-unsorted", msgpack.packb(dict(reversed(value.items())))),
    ]
    invalid = []
    for vid, data in bad:
        entry: dict[str, Any] = {"id": vid, "hex": data.hex()}
        entry.update(refusal(lambda d=data: IdentityOp.from_bytes(d)))  # type: ignore[misc]
        invalid.append(entry)
    forged = IdentityOp.create(rot, k[4].did_key(), HANDLE, ENDPOINT, None, k[1])
    forged_value: dict[str, Any] = msgpack.unpackb(forged.to_bytes(), raw=False)
    forged_bytes = encode({**forged_value, "sig": k[5].sign(forged.unsigned_bytes())})
    invalid_genesis = {"id": "genesis-not-self-signed", "hex": forged_bytes.hex()}
    invalid_genesis.update(refusal(lambda: did_for_genesis(IdentityOp.from_bytes(forged_bytes))))
    return {
        "description": "did:skyfed identity ops (rotation keys seeds 1, 2; signing key seed "
        "3, later 4): bytes, CIDs, the DID; logs and their resolution; ops to refuse.",
        "did": did,
        "ops": ops,
        "logs": logs,
        "did_document": document,
        "bounds": {
            "MAX_LOG_OPS": MAX_LOG_OPS,
            "MAX_CHAIN_OPS": MAX_CHAIN_OPS,
            "MAX_EVIDENCE_OPS": MAX_EVIDENCE_OPS,
            "MAX_RESOLVE_OPS": MAX_RESOLVE_OPS,
        },
        "invalid_ops": invalid,
        "invalid_genesis": [invalid_genesis],
    }


# -- handles.json ------------------------------------------------------------------------


def gen_handles() -> dict[str, Any]:
    """Handle confirmations (protocol/handles.py): one signed by the node key of seed
    9, its bytes, and confirmations to refuse."""
    from protocol.handles import HandleConfirmation

    node = seeded_key(9)
    did = "did:skyfed:" + "a" * 24
    conf = HandleConfirmation.issue("alice.skyfed.test", did, node)
    data = conf.to_bytes()
    HandleConfirmation.from_bytes(data)  # a valid vector verifies
    value: dict[str, Any] = msgpack.unpackb(data, raw=False)
    flipped = bytearray(data)
    flipped[data.index(conf.sig) + 10] ^= 1  # one bit of the signature
    other = HandleConfirmation.issue("bob.skyfed.test", did, node)
    bad: list[tuple[str, bytes]] = [
        ("sig-flipped", bytes(flipped)),
        ("handle-changed", encode({**value, "handle": "bob.skyfed.test"})),
        (
            "signed-by-another-key",
            encode({**value, "sig": seeded_key(10).sign(other.unsigned_bytes())}),
        ),
        ("uppercase-handle", encode({**value, "handle": "Alice.skyfed.test"})),
        ("not-a-skyfed-did", encode({**value, "did": "did:plc:abc"})),
        ("issuer-not-a-did-key", encode({**value, "issuer": "did:web:example.com"})),
        ("unknown-field", encode({**value, "time": "2026-01-01T00:00:00Z"})),
        ("wrong-type", encode({**value, "type": "skyfed_op"})),
        ("sig-63-bytes", encode({**value, "sig": value["sig"][:63]})),
        ("keys-unsorted", msgpack.packb(dict(reversed(value.items())))),
        ("too-large", encode({**value, "handle": "a" * 1100})),
    ]
    invalid = []
    for vid, raw in bad:
        entry: dict[str, Any] = {"id": vid, "hex": raw.hex()}
        entry.update(refusal(lambda d=raw: HandleConfirmation.from_bytes(d)))  # type: ignore[misc]
        invalid.append(entry)
    return {
        "description": "handle confirmations: a node key (seed 9) says a handle names a "
        "DID; bytes and the fields they hold; confirmations to refuse.",
        "confirmations": [
            {
                "id": "alice",
                "handle": conf.handle,
                "did": conf.did,
                "issuer": conf.issuer,
                "hex": data.hex(),
                "unsigned_hex": conf.unsigned_bytes().hex(),
            }
        ],
        "invalid": invalid,
    }


# -- labels.json -------------------------------------------------------------------------


def gen_labels() -> dict[str, Any] | None:
    try:
        from protocol.labels import MAX_CTS_AHEAD, Label, check_cts, current_labels
    except ImportError:  # pragma: no cover - the module has not landed
        return None
    key = seeded_key(7)
    uri = f"at://{ACCOUNT_DID}/app.bsky.feed.post/{tid(1)}"
    cases = [
        ("minimal", Label(src=OTHER_DID, uri=uri, val="!warn", cts=when(0))),
        (
            "all-fields",
            Label(
                src=OTHER_DID,
                uri=uri,
                cid=POST_CID,
                val="spam",
                neg=True,
                cts=when(1),
                exp=when(59),
            ),
        ),
        ("account-label", Label(src=OTHER_DID, uri=ACCOUNT_DID, val="!hide", cts=when(2))),
    ]
    valid = []
    for vid, unsigned in cases:
        signed = unsigned.sign(key)
        data = signed.to_bytes()
        again = Label.from_bytes(data)
        again.verify(key.public)
        assert Label.from_json(signed.to_json()) == signed
        valid.append(
            {
                "id": vid,
                "signer_did_key": key.did_key(),
                "json": signed.to_json(),
                "unsigned_hex": signed.unsigned_bytes().hex(),
                "hex": data.hex(),
                "cid": signed.label_cid.to_str(),
            }
        )
    base = cases[0][1].sign(key)
    value: dict[str, Any] = msgpack.unpackb(base.to_bytes(), raw=False)
    bad: list[tuple[str, bytes]] = [
        ("ver-2", encode({**value, "ver": 2})),
        ("neg-false-written", encode({**value, "neg": False})),
        ("val-129-bytes", encode({**value, "val": "x" * 129})),
        ("val-empty", encode({**value, "val": ""})),
        ("src-not-did", encode({**value, "src": "alice.example.com"})),
        ("uri-https", encode({**value, "uri": "https://example.com"})),
        ("cts-not-datetime", encode({**value, "cts": "yesterday"})),
        ("unknown-field", encode({**value, "x": 1})),
        ("null-optional", encode({**value, "exp": None})),
        ("sig-63-bytes", encode({**value, "sig": value["sig"][:63]})),
    ]
    invalid = []
    for vid, data in bad:
        entry: dict[str, Any] = {"id": vid, "hex": data.hex()}
        entry.update(refusal(lambda d=data: Label.from_bytes(d)))  # type: ignore[misc]
        invalid.append(entry)
    tampered = encode({**value, "val": "!hide"})
    bad_sig = {
        "id": "value-changed-after-signing",
        "hex": tampered.hex(),
        "signer_did_key": key.did_key(),
    }
    bad_sig.update(refusal(lambda: Label.from_bytes(tampered).verify(key.public)))

    # Time and ties. The receiver's clock is `now`; seed 8 is the labeler's old key
    # (rotated away), seed 7 its current one.
    old = seeded_key(8)
    now = when(10)
    later = MAX_CTS_AHEAD + 10  # seconds after `now` of the edge of the window

    def lab(signer: SigningKey, cts: str, *, neg: bool = False) -> Label:
        return Label(src=OTHER_DID, uri=ACCOUNT_DID, val="!takedown", neg=neg, cts=cts).sign(signer)

    edge, past_edge = when(later), when(later + 1)
    ahead = lab(old, past_edge)
    too_far = {
        "id": "cts-past-the-window",
        "hex": ahead.to_bytes().hex(),
        "now": now,
        "max_cts_ahead": MAX_CTS_AHEAD,
    }
    too_far.update(refusal(lambda: check_cts(ahead, now)))
    check_cts(lab(old, edge), now)  # the edge itself is in
    current_keys = {OTHER_DID: key.did_key()}
    sets = [
        ("negation-by-current-key-wins-tie", [lab(old, edge), lab(key, edge, neg=True)], True),
        ("negation-by-old-key-loses-tie", [lab(key, edge), lab(old, edge, neg=True)], True),
        (
            "tie-without-current-keys-positive-wins",
            [lab(old, edge), lab(key, edge, neg=True)],
            False,
        ),
        ("cts-past-the-window-ignored", [lab(old, when(0), neg=True), ahead], True),
        ("cts-at-the-edge-counts", [lab(old, when(0), neg=True), lab(old, edge)], True),
    ]
    current = []
    for vid, members, with_keys in sets:
        keys = current_keys if with_keys else None
        current.append(
            {
                "id": vid,
                "now": now,
                "current_keys": keys,
                "labels": [m.to_bytes().hex() for m in members],
                "in_force": [
                    m.label_cid.to_str() for m in current_labels(members, now, current_keys=keys)
                ],
            }
        )
    return {
        "description": "Signed labels (labeler key seed 7, its old key seed 8): msgpack "
        "bytes, JSON form, CID; labels to refuse; cts bounded by the receiver's clock; "
        "the labels in force, ties included.",
        "valid": valid,
        "invalid": invalid,
        "invalid_signatures": [bad_sig],
        "too_far_ahead": [too_far],
        "current": current,
    }


# -- commits, commit events and the CAR --------------------------------------------------


def _event_entry(
    vid: str,
    event: CommitEvent,
    signer: VerifyKey,
    prev_data: CID | None,
    prev_rev: str | None,
    note: str,
) -> dict[str, Any]:
    data = event.to_bytes()
    signed_prev = Commit.from_bytes(event.block_map()[event.commit]).prev
    prev_commit = None if prev_rev is None else signed_prev
    commit = verify_commit_event(
        CommitEvent.from_bytes(data),
        signer,
        prev_data=prev_data,
        prev_rev=prev_rev,
        prev_commit=prev_commit,
    )
    blocks = [cid_for_msgpack(b).to_str() for b in event.blocks]
    return {
        "id": vid,
        "note": note,
        "hex": data.hex(),
        "signer_did_key": signer.to_did_key(),
        "receiver_prev_data": None if prev_data is None else prev_data.to_str(),
        "receiver_prev_rev": prev_rev,
        "receiver_prev_commit": None if prev_commit is None else prev_commit.to_str(),
        "commit": event.commit.to_str(),
        "rev": event.rev,
        "since": event.since,
        "data": commit.data.to_str(),
        "ops": [
            {
                "action": op.action,
                "path": op.path,
                "cid": None if op.cid is None else op.cid.to_str(),
                "prev": None if op.prev is None else op.prev.to_str(),
            }
            for op in event.ops
        ],
        "block_cids": blocks,
    }


def _resign(event: CommitEvent, key: SigningKey, **changes: Any) -> CommitEvent:
    """Re-sign the event's commit with ``key`` (and commit field ``changes``)."""
    blocks = event.block_map()
    old = Commit.from_bytes(blocks[event.commit])
    fields = {"did": old.did, "data": old.data, "rev": old.rev, "prev": old.prev, **changes}
    new = Commit.sign(fields["did"], fields["data"], fields["rev"], key, prev=fields["prev"])
    new_block = new.to_bytes()
    others = tuple(b for c, b in blocks.items() if c != event.commit)
    return _replace(event, commit=new.cid, blocks=(new_block, *others))


def _replace(event: CommitEvent, **changes: Any) -> CommitEvent:
    fields = {
        "repo": event.repo,
        "rev": event.rev,
        "since": event.since,
        "commit": event.commit,
        "ops": event.ops,
        "blocks": event.blocks,
        "prev_data": event.prev_data,
        "time": event.time,
        **changes,
    }
    return CommitEvent(**fields)


def _forged_tree_events(
    key: SigningKey,
) -> list[tuple[str, str, CommitEvent, CID | None, str | None]]:
    """Events whose signed tree is not canonical though inverting the ops lands on
    prevData (issue 12, finding 4): refused by the key-range check (§7.4, §9.4)."""
    v = leaf_value("x")
    out = []

    def event(vid: str, note: str, root: bytes, nodes: list[bytes], prev: CID, ops: list[RepoOp]):
        since, rev = tid(900 + 2 * len(out)), tid(901 + 2 * len(out))
        # Signed on a previous commit the receiver holds (its CID is a stand-in).
        prev_commit = cid_for_msgpack(encode({"stand-in previous commit": since}))
        commit = Commit.sign(ACCOUNT_DID, cid_for_msgpack(root), rev, key, prev=prev_commit)
        block = commit.to_bytes()
        records = [encode(op.path) for op in ops if op.cid is not None]
        ev = CommitEvent(
            repo=ACCOUNT_DID,
            rev=rev,
            since=since,
            commit=commit.cid,
            ops=tuple(ops),
            blocks=(block, *records, root, *nodes),
            prev_data=prev,
            time=when(900),
        )
        out.append((vid, note, ev, prev, since))

    # A root [K] (height 1) whose left leaf holds X > K; deleting K gives {X}.
    k = key_at("com.example.m/", 1)
    x = key_at("com.example.z/", 0)
    leaf = _node(None, [(x.encode(), 0, None, v)])
    event(
        "tree-key-outside-subtree-range",
        "the new root's left subtree holds a key above the root's key; inverting the "
        "create lands on prevData {X}",
        _node(cid_for_msgpack(leaf), [(k.encode(), 0, None, leaf_value(k))]),
        [leaf],
        cid_for_msgpack(leaf),
        [RepoOp("create", k, leaf_value(k))],
    )
    # Old tree {a, b, K}: [K] (height 2) over an entry-less node E over [a, b]. The
    # new tree puts K2 < a in K's place, E still on its left. Inverting (delete K2,
    # which lifts E; put K back) rebuilds the old tree exactly: only the check of the
    # new tree's ranges against the old one refuses it.
    k2 = key_at("com.example.b/", 2)
    k_hi = key_at("com.example.y/", 2)
    a = key_at("com.example.c/", 0)
    b = key_at("com.example.d/", 0)
    low = _node(None, [(a.encode(), 0, None, v), (b.encode()[12:], 12, None, v)])
    e = _node(cid_for_msgpack(low), [])
    old_root = _node(cid_for_msgpack(e), [(k_hi.encode(), 0, None, leaf_value(k_hi))])
    event(
        "subtree-moved-outside-its-range",
        "K (height 2) deleted and K2 < a created with the entry-less node over [a, b] "
        "left of K2: inverting gives prevData, but a and b are above K2",
        _node(cid_for_msgpack(e), [(k2.encode(), 0, None, leaf_value(k2))]),
        [e, low],
        cid_for_msgpack(old_root),
        [RepoOp("delete", k_hi, None, leaf_value(k_hi)), RepoOp("create", k2, leaf_value(k2))],
    )
    return out


def gen_repo() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    key = seeded_key(SIGNING_SEED)
    pub = key.public
    store = MemoryBlockStore()
    n = 0

    def step() -> tuple[str, str]:
        nonlocal n
        n += 1
        return tid(100 + n), when(n)

    rev, t = step()
    created = Repo.create(ACCOUNT_DID, key, rev=rev, time=t, source=store)
    store.update(created.blocks)
    repo = created.repo
    history: list[tuple[str, str, CommitEvent, CID, str | None]] = [
        (
            "genesis-empty-repo",
            "first commit: empty tree, since null, no ops",
            created.event,
            repo.commit.data,
            None,
        )
    ]

    def apply(vid: str, note: str, writes: list[Write]) -> CommitEvent:
        nonlocal repo
        before_root, before_rev = repo.commit.data, repo.commit.rev
        rev, t = step()
        res = repo.apply_writes(writes, key, rev=rev, time=t)
        store.update(res.blocks)
        repo = res.repo
        history.append((vid, note, res.event, before_root, before_rev))
        return res.event

    def p(rkey_n: int, text: str) -> Write:
        return Write("create", "app.bsky.feed.post", tid(rkey_n), post(text))

    profile = {"$type": "app.bsky.actor.profile", "displayName": "Alice"}
    apply("create-post", "one create", [p(1, "first post")])
    apply("create-second-post", "one create", [p(2, "second post")])
    apply(
        "create-profile",
        "create with a literal record key",
        [Write("create", "app.bsky.actor.profile", "self", profile)],
    )
    apply(
        "update-profile",
        "update: op carries cid and prev",
        [Write("update", "app.bsky.actor.profile", "self", {**profile, "description": "hi"})],
    )
    multi = [p(10 + i, f"post {i}") for i in range(8)] + [
        Write(
            "create",
            "app.bsky.feed.like",
            tid(40),
            {"$type": "app.bsky.feed.like", "subject": REF, "createdAt": when(0)},
        ),
        Write(
            "create",
            "app.bsky.graph.follow",
            tid(41),
            {"$type": "app.bsky.graph.follow", "subject": OTHER_DID, "createdAt": when(0)},
        ),
        Write("update", "app.bsky.feed.post", tid(2), post("second post, edited")),
        Write("delete", "app.bsky.feed.post", tid(1)),
    ]
    apply("multi-op", "10 creates, an update and a delete in one commit", multi)
    apply(
        "delete-post",
        "one delete: no record block",
        [Write("delete", "app.bsky.feed.post", tid(12))],
    )
    apply(
        "delete-several",
        "three deletes",
        [Write("delete", "app.bsky.feed.post", tid(10 + i)) for i in (3, 5, 7)],
    )
    apply(
        "create-and-update",
        "a create and an update (the base of the tampered events below)",
        [p(60, "late post"), Write("update", "app.bsky.actor.profile", "self", profile)],
    )

    events = []
    for vid, note, event, before_root, before_rev in history:
        prev = None if before_rev is None else before_root
        events.append(_event_entry(vid, event, pub, prev, before_rev, note))

    # Tampered events, all derived from the last (small) event.
    vid, _, base, base_root, base_rev = history[-1]
    assert vid == "create-and-update"
    bmap = base.block_map()
    commit_block = bmap[base.commit]
    record_cids = {op.cid for op in base.ops if op.cid is not None}
    node_cids = [c for c in bmap if c != base.commit and c not in record_cids]
    base_data = Commit.from_bytes(commit_block).data
    base_prev = Commit.from_bytes(commit_block).prev
    genesis = history[0][2]
    untouched = MST.load(store, base_data).get("app.bsky.feed.post/" + tid(2))
    assert untouched is not None
    other = seeded_key(4)
    tampered: list[tuple[str, str, CommitEvent, CID | None, str | None]] = [
        ("signed-by-other-key", "commit re-signed by seed 4", _resign(base, other), None, None),
        (
            "commit-block-missing",
            "the commit block is left out",
            _replace(base, blocks=tuple(b for c, b in bmap.items() if c != base.commit)),
            None,
            None,
        ),
        (
            "commit-for-other-repo",
            "the event's repo differs from the commit's did",
            _replace(base, repo=OTHER_DID),
            None,
            None,
        ),
        (
            "rev-differs-from-commit",
            "event rev != commit rev",
            _replace(base, rev=tid(999)),
            None,
            None,
        ),
        ("since-not-below-rev", "since >= rev", _replace(base, since=base.rev), None, None),
        (
            "record-block-missing",
            "a created record's block is left out",
            _replace(base, blocks=tuple(b for c, b in bmap.items() if c != base.ops[0].cid)),
            None,
            None,
        ),
        (
            "tree-node-missing",
            "a tree node the inversion reads is left out",
            _replace(base, blocks=tuple(b for c, b in bmap.items() if c != node_cids[-1])),
            None,
            None,
        ),
        (
            "op-left-out",
            "the last op (an update) is not listed",
            _replace(base, ops=base.ops[:-1]),
            None,
            None,
        ),
        (
            "op-cid-wrong",
            "a create names another record's CID",
            _replace(
                base, ops=(RepoOp("create", base.ops[0].path, base.ops[1].cid), *base.ops[1:])
            ),
            None,
            None,
        ),
        (
            "op-twice",
            "the same path in two ops",
            _replace(base, ops=(*base.ops, base.ops[0])),
            None,
            None,
        ),
        (
            "prev-data-wrong",
            "prevData is not the root before the commit",
            _replace(base, prev_data=leaf_value("x")),
            None,
            None,
        ),
        (
            "desynchronized-prev-data",
            "receiver holds another root than prevData",
            base,
            leaf_value("x"),
            base_rev,
        ),
        (
            "desynchronized-since",
            "receiver holds another rev than since",
            base,
            base_root,
            tid(50),
        ),
        (
            "first-commit-wrapping-a-later-one",
            "the signed commit re-sent as a first commit: since null, prevData its own "
            "data, no ops, only the commit block and the root node",
            _replace(
                base,
                since=None,
                prev_data=base_data,
                ops=(),
                blocks=(commit_block, bmap[base_data]),
            ),
            None,
            None,
        ),
        (
            "first-commit-prev-data-not-empty",
            "since null on a real first commit, but prevData is not the empty tree",
            _replace(genesis, prev_data=leaf_value("x")),
            None,
            None,
        ),
        (
            "since-set-on-a-first-commit",
            "a first commit (prev null) with a since",
            _replace(genesis, since=tid(50)),
            None,
            None,
        ),
        (
            "signed-on-another-commit",
            "receiver holds another head (prev_commit) than the commit's signed prev",
            base,
            base_root,
            base_rev,
        ),
        (
            "since-disagrees-with-signed-prev",
            "receiver holds the commit signed as prev, but since was rewritten",
            _replace(base, since=tid(50)),
            base_root,
            base_rev,
        ),
        (
            "too-many-ops",
            "201 ops",
            _replace(
                base,
                ops=tuple(RepoOp("delete", f"a.b/{i}", None, leaf_value("x")) for i in range(201)),
                blocks=(),
            ),
            None,
            None,
        ),
    ]
    tampered += _forged_tree_events(key)
    assert len(commit_block) > 0
    # The head a receiver holds, where the vector names one (checked against prev).
    prev_commits = {
        "signed-on-another-commit": leaf_value("x"),
        "since-disagrees-with-signed-prev": base_prev,
    }
    bad_events = []
    for vid, note, ev, pd, pr in tampered:
        data = ev.to_bytes()
        pc = prev_commits.get(vid)
        entry: dict[str, Any] = {
            "id": vid,
            "note": note,
            "hex": data.hex(),
            "signer_did_key": pub.to_did_key(),
            "receiver_prev_data": None if pd is None else pd.to_str(),
            "receiver_prev_rev": pr,
            "receiver_prev_commit": None if pc is None else pc.to_str(),
        }
        entry.update(
            refusal(
                lambda d=data, pd=pd, pr=pr, pc=pc: verify_commit_event(  # type: ignore[misc]
                    CommitEvent.from_bytes(d), pub, prev_data=pd, prev_rev=pr, prev_commit=pc
                )
            )
        )
        bad_events.append(entry)
    # The event time is not signed: another time verifies all the same.
    retimed = _replace(base, time="2030-12-31T23:59:59.999Z")
    events.append(
        _event_entry(
            "create-and-update-other-time",
            retimed,
            pub,
            base_root,
            base_rev,
            "the last event with another time: still valid (time is not signed)",
        )
    )
    oversize = {
        "id": "blocks-over-2mb",
        "note": "the create-and-update event plus one extra block of 2 MiB zero bytes",
        "base": "create-and-update",
        "extra_block_size": 2 * 1024 * 1024,
    }
    big_block = bytes(2 * 1024 * 1024)
    oversize.update(
        refusal(lambda: verify_commit_event(_replace(base, blocks=(*base.blocks, big_block)), pub))
    )
    bad_events.append(oversize)
    # A relay adds an update that changes nothing (cid == prev) for an untouched record:
    # RepoOp refuses to build one, so the event is written out by hand.
    no_op = base.to_value()
    assert isinstance(no_op["ops"], list)
    no_op["ops"] = [
        *no_op["ops"],
        {
            "action": "update",
            "cid": untouched.to_bytes(),
            "path": "app.bsky.feed.post/" + tid(2),
            "prev": untouched.to_bytes(),
        },
    ]
    untouched_block = store.get_block(untouched)
    assert untouched_block is not None
    assert isinstance(no_op["blocks"], list)
    no_op["blocks"] = [*no_op["blocks"], untouched_block]
    no_op_bytes = encode(no_op)
    entry = {
        "id": "update-changes-nothing",
        "note": "a relay added an update with cid == prev for a record the commit left alone",
        "hex": no_op_bytes.hex(),
        "signer_did_key": pub.to_did_key(),
        "receiver_prev_data": None,
        "receiver_prev_rev": None,
        "receiver_prev_commit": None,
    }
    entry.update(refusal(lambda: verify_commit_event(CommitEvent.from_bytes(no_op_bytes), pub)))
    bad_events.append(entry)
    noncanon = base.to_bytes()
    value: dict[str, Any] = msgpack.unpackb(noncanon, raw=False)
    reordered: bytes = msgpack.packb(dict(reversed(value.items())))
    entry = {
        "id": "event-not-canonical",
        "note": "event map keys in reverse order",
        "hex": reordered.hex(),
        "signer_did_key": pub.to_did_key(),
        "receiver_prev_data": None,
        "receiver_prev_rev": None,
        "receiver_prev_commit": None,
    }
    entry.update(refusal(lambda: CommitEvent.from_bytes(reordered)))
    bad_events.append(entry)
    # An op path that is not an MST key: a DecodeError like every other malformed
    # field of an event (§9.1; §9.4 step 3 once said RepoError).
    bad_path_value = base.to_value()
    bad_ops = list(bad_path_value["ops"])  # type: ignore[arg-type]
    bad_ops[0] = {**bad_ops[0], "path": "app.bsky.feed.post/has space"}  # type: ignore[dict-item]
    bad_path_value["ops"] = bad_ops
    bad_path = encode(bad_path_value)
    entry = {
        "id": "op-path-not-a-key",
        "note": "the first op's path has a space in its record key",
        "hex": bad_path.hex(),
        "signer_did_key": pub.to_did_key(),
        "receiver_prev_data": None,
        "receiver_prev_rev": None,
    }
    entry.update(refusal(lambda: CommitEvent.from_bytes(bad_path)))
    assert entry["error"] == "DecodeError"
    bad_events.append(entry)
    # seq is outside the signed 64-bit range (a uint64): the strict integer rule holds
    # for events too, though they are decoded against an exact schema.
    with_seq = {**base.to_value(), "seq": 2**64 - 1}
    big_seq: bytes = msgpack.packb(dict(sorted(with_seq.items())))
    entry = {
        "id": "seq-over-int64",
        "note": "the event with seq 2^64-1 (uint64 cf ff..ff)",
        "hex": big_seq.hex(),
        "signer_did_key": pub.to_did_key(),
        "receiver_prev_data": None,
        "receiver_prev_rev": None,
    }
    entry.update(refusal(lambda: CommitEvent.from_bytes(big_seq)))
    bad_events.append(entry)

    events_doc = {
        "description": "Commit events of one repository (DID " + ACCOUNT_DID + ", signing key "
        "seed 3), in order; each verifies with the receiver state given. Tampered events "
        "must be refused.",
        "did": ACCOUNT_DID,
        "valid": events,
        "invalid": bad_events,
    }

    # commits.json: the commits of that history, plus commit blocks to refuse.
    commits = []
    for vid, _, event, _, _ in history:
        block = event.block_map()[event.commit]
        c = Commit.from_bytes(block)
        c.verify(pub)
        commits.append(
            {
                "id": vid,
                "did": c.did,
                "rev": c.rev,
                "data": c.data.to_str(),
                "prev": None if c.prev is None else c.prev.to_str(),
                "signer_did_key": pub.to_did_key(),
                "unsigned_hex": c.unsigned_bytes().hex(),
                "sig_hex": c.sig.hex(),
                "hex": block.hex(),
                "cid": event.commit.to_str(),
            }
        )
    first = Commit.from_bytes(history[0][2].block_map()[history[0][2].commit])
    fv: dict[str, Any] = msgpack.unpackb(first.to_bytes(), raw=False)
    bad_commits: list[tuple[str, bytes]] = [
        ("version-2", encode({**fv, "version": 2})),
        ("version-3", encode({**fv, "version": 3})),
        ("prev-key-missing", encode({k: v for k, v in fv.items() if k != "prev"})),
        ("extra-field", encode({**fv, "x": 1})),
        ("sig-missing", encode({k: v for k, v in fv.items() if k != "sig"})),
        ("sig-not-bytes", encode({**fv, "sig": fv["sig"].hex()})),
        ("data-as-string", encode({**fv, "data": first.data.to_str()})),
        ("rev-not-tid", encode({**fv, "rev": "2026-01-01"})),
        ("did-not-did", encode({**fv, "did": "alice.example.com"})),
        ("keys-unsorted", msgpack.packb(dict(reversed(fv.items())))),
    ]
    invalid_commits = []
    for vid, data in bad_commits:
        e: dict[str, Any] = {"id": vid, "hex": data.hex()}
        e.update(refusal(lambda d=data: Commit.from_bytes(d)))  # type: ignore[misc]
        invalid_commits.append(e)
    wrong_key = {
        "id": "verify-with-other-key",
        "hex": first.to_bytes().hex(),
        "signer_did_key": seeded_key(4).did_key(),
    }
    wrong_key.update(refusal(lambda: first.verify(seeded_key(4).public)))
    flipped_sig = bytearray(first.to_bytes())
    flipped_sig[-20] ^= 0x01  # inside sig? checked below
    flipped = bytes(flipped_sig)
    bad_flip = {
        "id": "flipped-signature-bit",
        "hex": flipped.hex(),
        "signer_did_key": pub.to_did_key(),
    }
    bad_flip.update(refusal(lambda: Commit.from_bytes(flipped).verify(pub)))
    commits_doc = {
        "description": "Signed commits {data, did, prev, rev, sig, version: 4}: bytes, CID, "
        "signature over unsigned_hex (the same map without sig); prev is the CID of the "
        "commit before (null for the first); blocks to refuse.",
        "valid": commits,
        "invalid": invalid_commits,
        "invalid_signatures": [wrong_key, bad_flip],
    }

    # car.json: an export of the repository as of "update-profile" (small on purpose),
    # and streams to refuse.
    export_event = history[4][2]
    assert history[4][0] == "update-profile"
    repo = Repo.load(store, export_event.commit)
    blocks: list[tuple[CID, bytes]] = [(repo.commit_cid, repo.commit.to_bytes())]
    blocks.extend(repo.tree.all_blocks())
    for _, value_cid in repo.tree.items():
        record = store.get_block(value_cid)
        assert record is not None
        blocks.append((value_cid, record))
    car = b"".join(write_car([repo.commit_cid], blocks))
    roots, got = read_car(car)
    assert roots == [repo.commit_cid]
    assert got == dict(blocks)
    header_len = car[0]
    first_block = car[1 + header_len :]
    bad_cars: list[tuple[str, bytes, str]] = [
        ("truncated", car[:-1], "the last block is one byte short"),
        (
            "block-hash-mismatch",
            car[:-1] + bytes([car[-1] ^ 1]),
            "the last block's bytes do not hash to its CID",
        ),
        (
            "header-version-2",
            _car_header({"roots": [repo.commit_cid.to_bytes()], "version": 2}) + first_block,
            "version must be 1",
        ),
        ("no-roots", _car_header({"roots": [], "version": 1}) + first_block, "at least one root"),
        (
            "header-version-true",
            _car_header({"roots": [repo.commit_cid.to_bytes()], "version": True}) + first_block,
            "version must be the integer 1, not true",
        ),
        (
            "header-not-canonical",
            _raw_header(msgpack.packb({"version": 1, "roots": [repo.commit_cid.to_bytes()]}))
            + first_block,
            "header keys out of order",
        ),
        ("over-long-varint", bytes([0x80] * 9 + [0x01]), "a varint of ten bytes"),
        ("non-minimal-varint", bytes([0x80, 0x00]), "a varint padded with a zero digit"),
        (
            "unsupported-cid",
            car[: 1 + header_len] + varint(4 + 32 + 1) + b"\x01\x71\x12\x20" + bytes(33),
            "a block under a dag-cbor CID",
        ),
    ]
    invalid_cars = []
    for vid, data, reason in bad_cars:
        e = {"id": vid, "hex": data.hex(), "reason": reason}
        e.update(refusal(lambda d=data: read_car(d)))  # type: ignore[misc]
        invalid_cars.append(e)
    car_doc = {
        "description": "Block streams: CARv1 framing with a canonical msgpack header. The "
        "valid stream exports the repository of commit_events.json as of its "
        "update-profile event (commit, tree nodes root first, records in key order); "
        "streams to refuse.",
        "valid": [
            {
                "id": "repo-export",
                "hex": car.hex(),
                "roots": [repo.commit_cid.to_str()],
                "block_cids": [c.to_str() for c, _ in blocks],
                "record_count": len(list(repo.tree.items())),
            }
        ],
        "invalid": invalid_cars,
    }
    return commits_doc, events_doc, car_doc


# -- peerwire.json -----------------------------------------------------------------------

#: Node keys of the peer-link vectors: node A is seed 11, node B seed 12.
NODE_A_SEED = 11
NODE_B_SEED = 12
#: Negentropy's frame size limit on a peer link (node/net/federation.py).
NEG_FRAME_LIMIT = 500_000


def repo_item_id(did: str, head: CID) -> bytes:
    """The negentropy id of a repository head: sha256("repo" 0 did 0 head)."""
    return hashlib.sha256(b"repo\0" + did.encode() + b"\0" + head.to_bytes()).digest()


def ident_item_id(did: str, head: CID) -> bytes:
    """The negentropy id of an identity-log head: sha256("ident" 0 did 0 head)."""
    return hashlib.sha256(b"ident\0" + did.encode() + b"\0" + head.to_bytes()).digest()


def labels_item_id(src: str, digest: bytes) -> bytes:
    """The negentropy id of a labeler's label set: sha256("labels" 0 src 0 digest)."""
    return hashlib.sha256(b"labels\0" + src.encode() + b"\0" + digest).digest()


def label_set_digest(cids: list[CID]) -> bytes:
    """sha256 over the sorted binary CIDs of a labeler's labels, concatenated."""
    return hashlib.sha256(b"".join(sorted({c.to_bytes() for c in cids}))).digest()


def gen_peerwire(
    heads: list[tuple[str, CID, str]],
    ident_heads: list[tuple[str, CID]],
    label_sets: list[tuple[str, list[CID]]],
) -> dict[str, Any]:
    from protocol.negentropy import Negentropy, NegentropyStorageVector
    from protocol.peerwire import MAX_FRAME, auth_payload, decode_message, encode_message

    node_a, node_b = seeded_key(NODE_A_SEED), seeded_key(NODE_B_SEED)
    did_a, did_b = node_a.did_key(), node_b.did_key()
    challenge_a = bytes(range(32))
    challenge_b = bytes(range(32, 64))
    cid1 = heads[0][1].to_bytes()
    cid2 = heads[1][1].to_bytes()
    car = b"".join(
        write_car(
            [cid_for_msgpack(encode({"vector": 1}))],
            [(cid_for_msgpack(encode({"vector": 1})), encode({"vector": 1}))],
        )
    )
    samples: list[tuple[str, str, dict[str, Any]]] = [
        (
            "hello",
            "hello",
            {
                "v": 1,
                "node": did_a,
                "url": "https://a.example.com",
                "challenge": challenge_a,
                "caps": ["plumtree", "negentropy-v1"],
                "share": True,
            },
        ),
        (
            "hello-no-url",
            "hello",
            {
                "v": 1,
                "node": did_b,
                "url": None,
                "challenge": challenge_b,
                "caps": [],
                "share": False,
            },
        ),
        ("auth", "auth", {"sig": bytes(64)}),
        (
            "push-commit",
            "push",
            {"id": cid1, "kind": "commit", "data": b"<commit event bytes>", "round": 0},
        ),
        (
            "push-identity",
            "push",
            {
                "id": cid2,
                "kind": "identity",
                "data": encode({"did": ACCOUNT_DID, "ops": [b"<op>"]}),
                "round": 3,
            },
        ),
        (
            "push-label",
            "push",
            {"id": cid1, "kind": "label", "data": b"<label bytes>", "round": 1},
        ),
        ("ihave", "ihave", {"ids": [cid1, cid2], "round": 1}),
        ("graft", "graft", {"ids": [cid1]}),
        ("prune", "prune", {}),
        ("neg", "neg", {"sid": 1, "msg": bytes([0x61])}),
        ("whatis", "whatis", {"rid": 7, "ids": [repo_item_id(ACCOUNT_DID, heads[0][1])]}),
        (
            "heads-reply",
            "heads",
            {
                "rid": 7,
                "items": [
                    {"kind": "repo", "did": ACCOUNT_DID, "head": cid1, "rev": heads[0][2]},
                ],
            },
        ),
        (
            "heads-unsolicited",
            "heads",
            {"rid": None, "items": [{"kind": "identity", "did": ACCOUNT_DID, "head": cid2}]},
        ),
        ("getrepo-since", "getrepo", {"rid": 8, "did": ACCOUNT_DID, "since": heads[0][2]}),
        ("getrepo-whole", "getrepo", {"rid": 9, "did": ACCOUNT_DID, "since": None}),
        ("repo", "repo", {"rid": 9, "did": ACCOUNT_DID, "car": car}),
        ("getident", "getident", {"rid": 10, "did": ACCOUNT_DID}),
        (
            "ident",
            "ident",
            {"rid": 10, "did": ACCOUNT_DID, "ops": [b"<op 1>", b"<op 2>"], "handle": None},
        ),
        (
            "ident-with-handle",
            "ident",
            {"rid": 11, "did": ACCOUNT_DID, "ops": [b"<op 1>"], "handle": b"<confirmation>"},
        ),
        (
            "heads-labels",
            "heads",
            {
                "rid": 11,
                "items": [{"kind": "labels", "src": ACCOUNT_DID, "digest": bytes(range(32))}],
            },
        ),
        ("getlabels", "getlabels", {"rid": 12, "src": ACCOUNT_DID}),
        ("labels", "labels", {"rid": 12, "src": ACCOUNT_DID, "labels": [b"<label 1>"]}),
        ("labels-none", "labels", {"rid": 13, "src": ACCOUNT_DID, "labels": []}),
        (
            "getblob",
            "getblob",
            {"rid": 14, "did": ACCOUNT_DID, "cid": cid_for_raw(b"<image>").to_bytes()},
        ),
        (
            "blob",
            "blob",
            {"rid": 14, "cid": cid_for_raw(b"<image>").to_bytes(), "data": b"<image>"},
        ),
        ("error", "error", {"rid": 8, "error": "UnknownRev", "message": heads[0][2]}),
        ("error-no-rid", "error", {"rid": None, "error": "Oops", "message": ""}),
        ("peers", "peers", {"urls": ["https://a.example.com", "http://127.0.0.1:2583"]}),
    ]
    messages = []
    for vid, t, fields in samples:
        data = encode_message(t, **fields)
        assert decode_message(data) == {"t": t, **fields}
        messages.append({"id": vid, "t": t, "fields": to_json(fields), "hex": data.hex()})

    hello: dict[str, Any] = {
        "v": 1,
        "node": did_a,
        "url": None,
        "challenge": challenge_a,
        "caps": [],
        "share": True,
    }
    bad: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("not-msgpack", b"\xc1"),
        ("not-a-map", encode(["t", "prune"])),
        ("no-type", encode({"sig": bytes(64)})),
        ("type-not-a-string", encode({"t": 1})),
        ("unknown-type", encode({"t": "gossip"})),
        ("missing-field", encode({"t": "auth"})),
        ("extra-field", encode({"t": "prune", "x": 1})),
        ("wrong-field-type", encode({"t": "graft", "ids": cid1})),
        ("bool-is-not-int", encode({"t": "ihave", "ids": [], "round": True})),
        (
            "null-not-allowed",
            encode({"t": "getrepo", "rid": None, "did": ACCOUNT_DID, "since": None}),
        ),
        (
            "non-canonical-int",
            encode({"t": "getident", "rid": 7, "did": ACCOUNT_DID}).replace(
                b"\xa3rid\x07", b"\xa3rid\xcc\x07"
            ),
        ),
        ("trailing-bytes", encode({"t": "prune"}) + b"\xc0"),
        ("keys-unsorted", msgpack.packb({"t": "graft", "ids": []})),
        ("hello-challenge-31-bytes", encode({"t": "hello", **hello, "challenge": bytes(31)})),
        ("hello-caps-not-strings", encode({"t": "hello", **hello, "caps": [1]})),
        ("hello-33-caps", encode({"t": "hello", **hello, "caps": ["c"] * 33})),
        (
            "push-unknown-kind",
            encode({"t": "push", "id": cid1, "kind": "labels", "data": b"", "round": 0}),
        ),
        (
            "push-id-65-bytes",
            encode({"t": "push", "id": bytes(65), "kind": "commit", "data": b"", "round": 0}),
        ),
        ("ihave-id-not-bytes", encode({"t": "ihave", "ids": ["x"], "round": 0})),
        ("graft-id-65-bytes", encode({"t": "graft", "ids": [bytes(65)]})),
        ("whatis-4097-ids", encode({"t": "whatis", "rid": 1, "ids": [b""] * 4097})),
        ("heads-item-not-a-map", encode({"t": "heads", "rid": None, "items": [cid1]})),
        ("heads-4097-items", encode({"t": "heads", "rid": None, "items": [{}] * 4097})),
        (
            "getblob-cid-65-bytes",
            encode({"t": "getblob", "rid": 1, "did": ACCOUNT_DID, "cid": bytes(65)}),
        ),
        (
            "ident-op-not-bytes",
            encode({"t": "ident", "rid": 1, "did": ACCOUNT_DID, "ops": ["op"], "handle": None}),
        ),
        (
            "ident-1001-ops",
            encode(
                {"t": "ident", "rid": 1, "did": ACCOUNT_DID, "ops": [b""] * 1001, "handle": None}
            ),
        ),
        (
            "ident-without-handle",
            encode({"t": "ident", "rid": 1, "did": ACCOUNT_DID, "ops": []}),
        ),
        ("getlabels-src-null", encode({"t": "getlabels", "rid": 1, "src": None})),
        (
            "labels-label-not-bytes",
            encode({"t": "labels", "rid": 1, "src": ACCOUNT_DID, "labels": ["x"]}),
        ),
        (
            "labels-10001-labels",
            encode({"t": "labels", "rid": 1, "src": ACCOUNT_DID, "labels": [b""] * 10001}),
        ),
        ("peers-url-not-string", encode({"t": "peers", "urls": [b"https://a.example.com"]})),
        ("peers-65-urls", encode({"t": "peers", "urls": ["u"] * 65})),
    ]
    invalid = []
    for vid, data in bad:
        entry: dict[str, Any] = {"id": vid, "hex": data.hex()}
        entry.update(refusal(lambda d=data: decode_message(d)))  # type: ignore[misc]
        invalid.append(entry)
    # Too large to store: a push whose data makes the message one byte over MAX_FRAME.
    overhead = len(encode_message("push", id=b"", kind="commit", data=bytes(MAX_FRAME), round=0))
    size = MAX_FRAME - (overhead - MAX_FRAME) + 1
    big = encode_message("push", id=b"", kind="commit", data=bytes(size), round=0)
    assert len(big) == MAX_FRAME + 1
    entry = {"id": "over-max-frame", "push_data_size": size, "length": len(big)}
    entry.update(refusal(lambda: decode_message(big)))
    invalid.append(entry)

    auth: list[dict[str, Any]] = []
    for vid, signer, verifier, challenge in (
        ("a-answers-b", node_a, did_b, challenge_b),
        ("b-answers-a", node_b, did_a, challenge_a),
    ):
        payload = auth_payload(challenge, signer.did_key(), verifier)
        sig = signer.sign(payload)
        signer.public.verify(sig, payload)
        auth.append(
            {
                "id": vid,
                "challenge_hex": challenge.hex(),
                "signer_seed": NODE_A_SEED if signer is node_a else NODE_B_SEED,
                "signer_did_key": signer.did_key(),
                "verifier_did_key": verifier,
                "payload_hex": payload.hex(),
                "sig_hex": sig.hex(),
                "message_hex": encode_message("auth", sig=sig).hex(),
            }
        )
    # The same signature presented on a link where the roles are swapped must fail.
    replay = auth[0]
    wrong_payload = auth_payload(challenge_b, did_b, did_a)
    bad_auth: dict[str, Any] = {
        "id": "signature-replayed-with-roles-swapped",
        "signer_did_key": did_a,
        "payload_hex": wrong_payload.hex(),
        "sig_hex": replay["sig_hex"],
    }
    bad_auth.update(
        refusal(lambda: node_a.public.verify(bytes.fromhex(replay["sig_hex"]), wrong_payload))
    )

    items = []
    vec = NegentropyStorageVector()
    for did, head, rev in heads:
        item_id = repo_item_id(did, head)
        ts = tid_to_parts(rev)[0]
        vec.insert(ts, item_id)
        items.append(
            {
                "kind": "repo",
                "did": did,
                "head": head.to_str(),
                "rev": rev,
                "timestamp": ts,
                "id_hex": item_id.hex(),
            }
        )
    for did, head in ident_heads:
        item_id = ident_item_id(did, head)
        vec.insert(0, item_id)
        items.append(
            {
                "kind": "identity",
                "did": did,
                "head": head.to_str(),
                "timestamp": 0,
                "id_hex": item_id.hex(),
            }
        )
    for src, cids in label_sets:
        digest = label_set_digest(cids)
        item_id = labels_item_id(src, digest)
        vec.insert(0, item_id)
        items.append(
            {
                "kind": "labels",
                "src": src,
                "label_cids": [c.to_str() for c in cids],
                "digest_hex": digest.hex(),
                "timestamp": 0,
                "id_hex": item_id.hex(),
            }
        )
    vec.seal()
    initiate = Negentropy(vec, NEG_FRAME_LIMIT).initiate()
    return {
        "description": "Peer link messages (protocol/peerwire.py): one canonical msgpack map "
        "per WebSocket binary message; messages to refuse; the handshake's auth payload and "
        f"signatures (node keys seeds {NODE_A_SEED} and {NODE_B_SEED}); negentropy items "
        "for repository heads, identity heads and label sets, and the first message over "
        "them.",
        "max_frame": MAX_FRAME,
        "messages": messages,
        "invalid": invalid,
        "auth": auth,
        "invalid_auth": [bad_auth],
        "negentropy_items": items,
        "negentropy_initiate": {"frame_size_limit": NEG_FRAME_LIMIT, "hex": initiate.hex()},
    }


# -- ingest.json -------------------------------------------------------------------------

#: The receiver's clock in the ingest vectors: 2026-01-01T01:00:00Z.
INGEST_NOW = BASE_MICROS + 3600 * 1_000_000


def gen_ingest() -> tuple[dict[str, Any], list[tuple[str, CID, str]]]:
    from protocol.ingest import (
        MAX_FUTURE_MICROS,
        HeadState,
        Verdict,
        head_wins,
        judge_event,
        judge_snapshot,
    )

    key = seeded_key(SIGNING_SEED)
    other = seeded_key(4)
    store = MemoryBlockStore()

    def rev_at(n: int, clock: int = CLOCK_ID) -> str:
        return tid_from_parts(BASE_MICROS + n * 1_000_000, clock)

    created = Repo.create(ACCOUNT_DID, key, rev=rev_at(200), time=when(0), source=store)
    store.update(created.blocks)
    results: dict[str, Any] = {"G": created}

    def child(name: str, parent: str, rev: str, text: str) -> None:
        base = results[parent].repo
        res = base.apply_writes(
            [Write("create", "app.bsky.feed.post", rev_at(1, 0), post(text))] if text else [],
            key,
            rev=rev,
            time=when(1),
        )
        store.update(res.blocks)
        results[name] = res

    # A and A2 are siblings on G with the same rev (the lower CID wins); A3 is a sibling
    # with a later rev (wins on rev). B extends A; F and E extend B at and past the
    # future bound.
    child("A", "G", rev_at(201), "post A")
    child("A2", "G", rev_at(201), "post A2")
    child("A3", "G", rev_at(202), "post A3")
    child("B", "A", rev_at(203), "")
    edge = tid_from_parts(INGEST_NOW + MAX_FUTURE_MICROS, CLOCK_ID)
    past_edge = tid_from_parts(INGEST_NOW + MAX_FUTURE_MICROS + 1, CLOCK_ID)
    child("E", "B", edge, "")
    child("F", "B", past_edge, "")
    a_wins = head_wins(
        results["A"].commit.rev,
        results["A"].commit_cid,
        results["A2"].commit.rev,
        results["A2"].commit_cid,
    )
    win, lose = ("A", "A2") if a_wins else ("A2", "A")

    def state(name: str) -> HeadState:
        r = results[name]
        return HeadState(r.commit_cid, r.commit.rev, r.commit.data, r.event.since, r.commit.prev)

    events = {}
    for name, r in results.items():
        events[name] = {
            "hex": r.event.to_bytes().hex(),
            "commit": r.commit_cid.to_str(),
            "commit_hex": r.commit.to_bytes().hex(),
            "rev": r.commit.rev,
            "since": r.event.since,
            "data": r.commit.data.to_str(),
        }
    # A tampered event: B with a wrong prevData (the inductive proof fails).
    tampered = _replace(results["B"].event, prev_data=results["A2"].commit.data)
    events["B-bad-prev-data"] = {**events["B"], "hex": tampered.to_bytes().hex()}
    # A relay fabricating equivocation: B (signed on A) re-sent as if built on G, with
    # since = G's rev, prevData = G's tree and the ops of G -> B, to a node holding A.
    b_res, g_res = results["B"], results["G"]
    g_to_b = results["A"].ops + b_res.ops
    resent = _replace(
        b_res.event,
        since=g_res.commit.rev,
        prev_data=g_res.commit.data,
        ops=g_to_b,
        blocks=(
            b_res.event.block_map()[b_res.commit_cid],
            *(store.get_block(op.cid) for op in g_to_b if op.cid is not None),
            *blocks_for_ops(b_res.repo.tree, store, g_to_b).values(),
        ),
    )
    events["B-rewritten-on-G"] = {
        **events["B"],
        "hex": resent.to_bytes().hex(),
        "since": g_res.commit.rev,
    }
    # A peer with no keys wrapping B as a first commit: since null, prevData B's own
    # tree, no ops, only the commit block and the root node.
    wrapped = _replace(
        b_res.event,
        since=None,
        prev_data=b_res.commit.data,
        ops=(),
        blocks=(
            b_res.event.block_map()[b_res.commit_cid],
            store.get_block(b_res.commit.data),
        ),
    )
    events["B-wrapped-as-first"] = {**events["B"], "hex": wrapped.to_bytes().hex(), "since": None}

    signer = key.did_key()
    cases: list[tuple[str, str, str, str | None, str, str]] = [
        # (id, note, event, held, signing key, expected)
        ("apply-genesis", "nothing held; since null", "G", None, signer, "apply"),
        ("apply-extends-head", "since = held rev, prevData = held root", "A", "G", signer, "apply"),
        (
            "apply-at-future-bound",
            "rev exactly 5 minutes ahead: accepted",
            "E",
            "B",
            signer,
            "apply",
        ),
        ("duplicate", "already the head", "A", "A", signer, "duplicate"),
        ("stale-ancestor", "an older commit of the held history", "A", "B", signer, "stale"),
        ("stale-genesis", "the genesis, long after", "G", "B", signer, "stale"),
        (
            "stale-sibling-higher-cid",
            "same since and rev, higher CID: equivocation",
            lose,
            win,
            signer,
            "stale",
        ),
        (
            "stale-sibling-lower-rev",
            "same since, lower rev: equivocation",
            "A",
            "A3",
            signer,
            "stale",
        ),
        (
            "switch-sibling-lower-cid",
            "same since and rev, lower CID: equivocation",
            win,
            lose,
            signer,
            "switch",
        ),
        (
            "switch-sibling-higher-rev",
            "same since, higher rev: equivocation",
            "A3",
            "A",
            signer,
            "switch",
        ),
        ("gap-nothing-held", "nothing held, since not null", "A", None, signer, "gap"),
        ("gap-missed-commit", "since is past the held rev", "B", "G", signer, "gap"),
        (
            "gap-since-matches-prev-data-differs",
            "since = held rev, but built on a sibling's tree",
            "B",
            "A2",
            signer,
            "gap",
        ),
        ("gap-newer-cousin", "newer, not chained, not a sibling", "B", "A3", signer, "gap"),
        ("future", "rev 5 minutes + 1 microsecond ahead", "F", "B", signer, "future"),
        (
            "future-nothing-held",
            "the bound applies before anything else",
            "F",
            None,
            signer,
            "future",
        ),
    ]
    equivocating = {
        "stale-sibling-higher-cid",
        "stale-sibling-lower-rev",
        "switch-sibling-lower-cid",
        "switch-sibling-higher-rev",
    }
    refused: list[tuple[str, str, str, str | None, str]] = [
        (
            "wrong-signing-key",
            "signed by seed 3, checked against seed 4",
            "A",
            "G",
            other.did_key(),
        ),
        (
            "wrong-key-beats-future",
            "the signature is checked before the rev bound",
            "F",
            "B",
            other.did_key(),
        ),
        ("tampered-prev-data", "the ops do not invert to prevData", "B-bad-prev-data", "A", signer),
        (
            "since-rewritten-to-fake-a-sibling",
            "B is signed on A (prev), but a relay rewrote since/prevData/ops to G's: refused, "
            "not taken as equivocation",
            "B-rewritten-on-G",
            "A",
            signer,
        ),
        (
            "later-commit-wrapped-as-first",
            "B re-sent with since null to a node holding nothing: its signed prev is not null",
            "B-wrapped-as-first",
            None,
            signer,
        ),
    ]
    scenarios = []
    for vid, note, ev, held, sk, expected in cases:
        event = CommitEvent.from_bytes(bytes.fromhex(events[ev]["hex"]))
        held_state = None if held is None else state(held)
        j = judge_event(event, signing_key=sk, held=held_state, now_micros=INGEST_NOW)
        assert j.verdict.value == expected, (vid, j.verdict)
        assert j.equivocation == (vid in equivocating), vid
        scenarios.append(
            {
                "id": vid,
                "note": note,
                "event": ev,
                "held": held,
                "signing_key": sk,
                "now_micros": INGEST_NOW,
                "verdict": j.verdict.value,
                "equivocation": j.equivocation,
                "evidence": j.evidence,
            }
        )
    invalid = []
    for vid, note, ev, held, sk in refused:
        event = CommitEvent.from_bytes(bytes.fromhex(events[ev]["hex"]))
        held_state = None if held is None else state(held)
        entry: dict[str, Any] = {
            "id": vid,
            "note": note,
            "event": ev,
            "held": held,
            "signing_key": sk,
            "now_micros": INGEST_NOW,
        }
        entry.update(
            refusal(
                lambda e=event, h=held_state, k=sk: judge_event(  # type: ignore[misc]
                    e, signing_key=k, held=h, now_micros=INGEST_NOW
                )
            )
        )
        invalid.append(entry)

    snap_cases: list[tuple[str, str, str | None, str, str | None]] = [
        ("snapshot-nothing-held", "B", None, signer, "apply"),
        ("snapshot-duplicate", "B", "B", signer, "duplicate"),
        ("snapshot-fast-forward", "B", "G", signer, "switch"),
        ("snapshot-stale", "A", "B", signer, "stale"),
        ("snapshot-sibling-wins", win, lose, signer, "switch"),
        ("snapshot-sibling-loses", lose, win, signer, "stale"),
        ("snapshot-future", "F", "B", signer, "future"),
        ("snapshot-wrong-key", "B", "G", other.did_key(), None),
    ]
    snapshots = []
    for vid, head, held, sk, want in snap_cases:
        commit = results[head].commit
        cid = results[head].commit_cid
        held_state = None if held is None else state(held)
        entry = {
            "id": vid,
            "commit": head,
            "held": held,
            "signing_key": sk,
            "now_micros": INGEST_NOW,
        }

        def snap(
            c: Commit = commit, i: CID = cid, h: HeadState | None = held_state, k: str = sk
        ) -> Verdict:
            return judge_snapshot(c, i, signing_key=k, held=h, now_micros=INGEST_NOW)

        if want is None:
            entry.update(refusal(snap))
        else:
            assert snap().value == want, (vid, snap())
            entry["verdict"] = want
        snapshots.append(entry)

    order = sorted(
        results,
        key=lambda n: (results[n].commit.rev, [-b for b in results[n].commit_cid.to_bytes()]),
    )
    # Greatest first: by rev, then the lower CID.
    ranked = order[::-1]
    for x, y in itertools.pairwise(ranked):
        assert head_wins(
            results[x].commit.rev,
            results[x].commit_cid,
            results[y].commit.rev,
            results[y].commit_cid,
        )
    doc = {
        "description": "Ingest rules (protocol/ingest.py) for the vector account (signing "
        "key seed 3): commit events and commits built with protocol.repo.Repo, the head each "
        "receiver holds, and the verdict. Times are microseconds; now_micros is the "
        "receiver's clock.",
        "did": ACCOUNT_DID,
        "max_future_micros": MAX_FUTURE_MICROS,
        "events": events,
        "held": {
            n: {
                "head": results[n].commit_cid.to_str(),
                "rev": results[n].commit.rev,
                "data": results[n].commit.data.to_str(),
                "since": results[n].event.since,
                "prev": _cid_str(results[n].commit.prev),
            }
            for n in results
        },
        "events_judged": scenarios,
        "events_refused": invalid,
        "snapshots": snapshots,
        "head_order": ranked,
    }
    heads = [
        (ACCOUNT_DID, results["G"].commit_cid, results["G"].commit.rev),
        (ACCOUNT_DID, results["B"].commit_cid, results["B"].commit.rev),
    ]
    return doc, heads


def _cid_str(cid: CID | None) -> str | None:
    return None if cid is None else cid.to_str()


def _raw_header(header: bytes) -> bytes:
    return varint(len(header)) + header


def _car_header(value: Value) -> bytes:
    return _raw_header(encode(value))


def gen_feedgen() -> dict[str, Any]:
    """Feed skeletons (protocol/feedgen.py): answers a node accepts from a generator,
    with what it keeps, and answers it refuses whole (limit 3, 8192 bytes)."""
    from protocol.feedgen import GeneratorDecl, Skeleton

    limit, max_bytes = 3, 8192
    did = "did:skyfed:" + "a" * 24
    post = f"at://{did}/app.bsky.feed.post/3kabcdefgh222"
    other = f"at://{did}/app.bsky.feed.post/3kabcdefgh333"
    repost = f"at://{did}/app.bsky.feed.repost/3kabcdefgh444"
    repost_reason = {"$type": "app.bsky.feed.defs#skeletonReasonRepost", "repost": repost}
    pin = {"$type": "app.bsky.feed.defs#skeletonReasonPin"}
    good: list[tuple[str, Any]] = [
        ("empty", {"feed": []}),
        ("posts-and-cursor", {"feed": [{"post": post}, {"post": other}], "cursor": "c1"}),
        (
            "repost-pin-context",
            {
                "feed": [
                    {"post": post, "reason": repost_reason, "feedContext": "ctx"},
                    {"post": other, "reason": pin},
                ]
            },
        ),
        ("unknown-reason-ignored", {"feed": [{"post": post, "reason": {"$type": "x.y#z"}}]}),
        ("duplicate-kept-once", {"feed": [{"post": post}, {"post": other}, {"post": post}]}),
        ("empty-cursor-is-none", {"feed": [], "cursor": ""}),
    ]
    bad: list[tuple[str, bytes]] = [
        ("not-json", b"<html>"),
        ("not-an-object", b"[]"),
        ("no-feed", b'{"cursor": "x"}'),
        ("feed-not-a-list", b'{"feed": {}}'),
        ("too-many", json.dumps({"feed": [{"post": post}] * (limit + 1)}).encode()),
        ("too-large", b'{"feed": [], "pad": "' + b"x" * max_bytes + b'"}'),
        ("entry-not-an-object", b'{"feed": ["at://x"]}'),
        ("post-not-an-at-uri", b'{"feed": [{"post": "javascript:alert(1)"}]}'),
        ("post-not-a-post", json.dumps({"feed": [{"post": repost}]}).encode()),
        ("post-handle-authority", b'{"feed": [{"post": "at://a.test/app.bsky.feed.post/x"}]}'),
        (
            "repost-not-a-repost",
            json.dumps(
                {
                    "feed": [
                        {
                            "post": post,
                            "reason": {
                                "$type": "app.bsky.feed.defs#skeletonReasonRepost",
                                "repost": post,
                            },
                        }
                    ]
                }
            ).encode(),
        ),
        (
            "context-too-long",
            json.dumps({"feed": [{"post": post, "feedContext": "c" * 2001}]}).encode(),
        ),
        ("cursor-not-a-string", b'{"feed": [], "cursor": 5}'),
        ("cursor-too-long", json.dumps({"feed": [], "cursor": "c" * 1025}).encode()),
        ("deep", b'{"feed": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
    ]
    valid = []
    for vid, value in good:
        raw = json.dumps(value).encode()
        parsed = Skeleton.from_bytes(raw, max_items=limit, max_bytes=max_bytes)
        valid.append({"id": vid, "json": raw.decode(), "kept": parsed.to_json()})
    invalid = []
    for vid, raw in bad:
        entry: dict[str, Any] = {"id": vid, "json": raw.decode()}
        entry.update(
            refusal(lambda d=raw: Skeleton.from_bytes(d, max_items=limit, max_bytes=max_bytes))  # type: ignore[misc]
        )
        invalid.append(entry)
    decls = []
    for vid, record, is_feed in (
        ("declaration", {"did": "did:key:z6Mk", "displayName": "Cats"}, True),
        ("no-display-name", {"did": "did:key:z6Mk"}, False),
        ("did-not-a-did", {"did": "https://example.com", "displayName": "Cats"}, False),
        ("name-too-long", {"did": "did:key:z6Mk", "displayName": "n" * 241}, False),
    ):
        assert (GeneratorDecl.from_record(record) is not None) is is_feed
        decls.append({"id": vid, "record": record, "is_feed": is_feed})
    return {
        "description": "feed generator skeletons (getFeedSkeleton answers) parsed with "
        f"limit {limit} and max_bytes {max_bytes}: what is kept of the valid ones "
        "(Skeleton.to_json), the refusals of the invalid ones; and which "
        "app.bsky.feed.generator records declare a feed.",
        "limit": limit,
        "max_bytes": max_bytes,
        "valid": valid,
        "invalid": invalid,
        "declarations": decls,
    }


def main() -> None:
    write("encoding.json", gen_encoding())
    write("cids.json", gen_cids())
    write("keys.json", gen_keys())
    write("tids.json", gen_tids())
    write("records.json", gen_records())
    write("mst.json", gen_mst())
    commits, events, car = gen_repo()
    write("commits.json", commits)
    write("commit_events.json", events)
    write("car.json", car)
    identity = gen_identity()
    if identity is not None:
        write("identity.json", identity)
    labels = gen_labels()
    label_sets: list[tuple[str, list[CID]]] = []
    if labels is not None:
        write("labels.json", labels)
        label_sets = _label_sets(labels)
    ingest, heads = gen_ingest()
    write("ingest.json", ingest)
    write("handles.json", gen_handles())
    write("feedgen.json", gen_feedgen())
    ident_heads = (
        [] if identity is None else [(ACCOUNT_DID, CID.from_str(identity["ops"][0]["cid"]))]
    )
    write("peerwire.json", gen_peerwire(heads, ident_heads, label_sets))


def _label_sets(labels_doc: dict[str, Any]) -> list[tuple[str, list[CID]]]:
    """Each labeler's labels in labels.json, as negentropy label-set items."""
    from protocol.labels import Label

    by_src: dict[str, list[CID]] = {}
    for case in labels_doc["valid"]:
        label = Label.from_bytes(bytes.fromhex(case["hex"]))
        by_src.setdefault(label.src, []).append(label.label_cid)
    return sorted(by_src.items())


if __name__ == "__main__":
    main()
