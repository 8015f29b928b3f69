"""Signed moderation labels (atproto's label spec, version 1).

A label says that a labeler (``src``, a DID) attaches a short value (``val``) to a
subject (``uri``: an AT-URI of a record, or a bare DID for a whole account), optionally
to one version of it (``cid``). A later label with ``neg: true`` for the same
``(src, uri, val)`` retracts it; ``exp`` makes it lapse. Values starting with ``!``
are the global behaviours (``!hide``, ``!warn``, ``!takedown``...).

Encoding: a canonical msgpack map (:mod:`protocol.encoding`) of the fields that are
present, keys ``ver src uri cid val neg cts exp sig``. Optional fields that are absent
are omitted (never null), and ``neg`` appears only when true, as atproto does, so every
label has exactly one encoding. ``sig`` is the ed25519 signature (:mod:`protocol.keys`)
over the encoding of the same map without ``sig``. atproto signs with ECDSA-SHA256
over DAG-CBOR; ed25519 hashes internally, so we sign the bytes themselves. The JSON
form (:meth:`Label.to_json`) is atproto's: ``sig`` as ``{"$bytes": base64}``.

What this module refuses: ``ver`` other than 1; a ``src`` that is not a DID; a
``uri`` that is neither an AT-URI nor a DID; a malformed ``cid`` or datetime; an empty
``val`` or one over 128 UTF-8 bytes; a ``sig`` that is not 64 bytes; unknown fields;
an encoded label over :data:`MAX_LABEL_BYTES`. Errors are :class:`InvalidLabel`,
:class:`InvalidSignature` or :class:`DecodeError`, never anything else.

Signatures are checked on receipt (:meth:`Label.verify` with the labeler's key);
:func:`current_labels` does not re-check them. Sans-IO: the current time is passed in.

Time: a receiver refuses a label whose ``cts`` is more than :data:`MAX_CTS_AHEAD`
seconds (5 minutes, as relays treat a commit's rev) ahead of its own clock
(:func:`check_cts`), and :func:`current_labels` ignores such a label if one is held.
Without that bound a leaked labeler key (even one rotated away) could date a
``!takedown`` in the year 9999: nothing could be later, and the label could never be
retracted. For the same reason a negation signed by the labeler's *current* key wins
a tie on ``cts`` against anything (:func:`current_labels`, ``current_keys``), so the
labeler can always retract at once, even a label dated at the edge of the window.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .cid import CID, cid_for_msgpack
from .encoding import Value, decode, encode
from .errors import DecodeError, InvalidLabel, InvalidSignature, InvalidSyntax
from .keys import SIGNATURE_LENGTH, SigningKey, VerifyKey, verify_key
from .syntax import validate_at_uri, validate_cid, validate_datetime, validate_did

__all__ = [
    "LABEL_VERSION",
    "MAX_CTS_AHEAD",
    "MAX_LABEL_BYTES",
    "MAX_VAL_BYTES",
    "Label",
    "check_cts",
    "current_labels",
    "retraction_cts",
]

LABEL_VERSION: Final = 1
MAX_VAL_BYTES: Final = 128
#: An AT-URI may be 8 KiB and a DID 2 KiB; a label is those plus a few short fields.
MAX_LABEL_BYTES: Final = 16 * 1024
#: How far ahead of the receiver's clock a label's ``cts`` may be, in seconds.
MAX_CTS_AHEAD: Final = 5 * 60

_FIELDS: Final = frozenset({"ver", "src", "uri", "cid", "val", "neg", "cts", "exp", "sig"})
_REQUIRED: Final = frozenset({"ver", "src", "uri", "val", "cts"})
_LEXICON_TYPE: Final = "com.atproto.label.defs#label"


def _syntax(check: Callable[[str], None], value: str, what: str) -> None:
    try:
        check(value)
    except InvalidSyntax as e:
        raise InvalidLabel(f"{what}: {e.message}") from e


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """One label. ``sig`` is None until :meth:`sign` (unsigned labels can be encoded,
    but :meth:`verify` refuses them)."""

    ver: int = LABEL_VERSION
    src: str
    uri: str
    cid: str | None = None
    val: str
    neg: bool = False
    cts: str
    exp: str | None = None
    sig: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        ver: object = self.ver
        if type(ver) is not int or ver != LABEL_VERSION:
            raise InvalidLabel(f"label ver must be {LABEL_VERSION}")
        src: object = self.src
        if not isinstance(src, str):
            raise InvalidLabel("label src must be a string")
        _syntax(validate_did, src, "label src is not a DID")
        uri: object = self.uri
        if not isinstance(uri, str):
            raise InvalidLabel("label uri must be a string")
        if uri.startswith("did:"):
            _syntax(validate_did, uri, "label uri is not a DID")
        else:
            _syntax(validate_at_uri, uri, "label uri is neither an AT-URI nor a DID")
        cid: object = self.cid
        if cid is not None:
            if not isinstance(cid, str):
                raise InvalidLabel("label cid must be a string")
            _syntax(validate_cid, cid, "label cid")
        val: object = self.val
        if not isinstance(val, str) or not val:
            raise InvalidLabel("label val must be a non-empty string")
        try:
            size = len(val.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise InvalidLabel("label val is not valid Unicode text") from e
        if size > MAX_VAL_BYTES:
            raise InvalidLabel(f"label val is longer than {MAX_VAL_BYTES} bytes")
        if type(self.neg) is not bool:
            raise InvalidLabel("label neg must be a boolean")
        cts: object = self.cts
        if not isinstance(cts, str):
            raise InvalidLabel("label cts must be a string")
        _syntax(validate_datetime, cts, "label cts")
        exp: object = self.exp
        if exp is not None:
            if not isinstance(exp, str):
                raise InvalidLabel("label exp must be a string")
            _syntax(validate_datetime, exp, "label exp")
        sig: object = self.sig
        if sig is not None and (not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH):
            raise InvalidLabel(f"label sig must be {SIGNATURE_LENGTH} bytes")

    # -- signing -------------------------------------------------------------------------

    def _value(self, *, signed: bool) -> dict[str, Value]:
        value: dict[str, Value] = {
            "ver": self.ver,
            "src": self.src,
            "uri": self.uri,
            "val": self.val,
            "cts": self.cts,
        }
        if self.cid is not None:
            value["cid"] = self.cid
        if self.neg:
            value["neg"] = True
        if self.exp is not None:
            value["exp"] = self.exp
        if signed and self.sig is not None:
            value["sig"] = self.sig
        return value

    def unsigned_bytes(self) -> bytes:
        """The bytes the signature covers: the canonical label without ``sig``."""
        return encode(self._value(signed=False))

    def sign(self, key: SigningKey) -> Label:
        """A copy of this label signed by ``key`` (any earlier ``sig`` is replaced)."""
        return dataclasses.replace(self, sig=key.sign(self.unsigned_bytes()))

    def verify(self, key: VerifyKey) -> None:
        """Return if ``key`` signed this label; raise InvalidSignature otherwise."""
        if self.sig is None:
            raise InvalidSignature("label is not signed")
        key.verify(self.sig, self.unsigned_bytes())

    # -- msgpack -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return encode(self._value(signed=True))

    @property
    def label_cid(self) -> CID:
        """The CID of this label's encoding (``cid`` is the subject's CID field)."""
        return cid_for_msgpack(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Label:
        if not isinstance(data, bytes):
            raise DecodeError("a label must be bytes")
        if len(data) > MAX_LABEL_BYTES:
            raise DecodeError(f"label of {len(data)} bytes exceeds {MAX_LABEL_BYTES}")
        value = decode(data, max_size=MAX_LABEL_BYTES)
        if type(value) is not dict:
            raise DecodeError("a label must be a map")
        _check_fields(value.keys(), DecodeError)
        if "neg" in value and value["neg"] is not True:
            # False is spelled by omission; a second spelling would be a second CID.
            raise DecodeError("label neg must be omitted unless true")
        sig = value.get("sig")
        if sig is not None and type(sig) is not bytes:
            raise DecodeError("label sig must be bytes")
        label = cls(
            ver=value["ver"],  # type: ignore[arg-type]
            src=value["src"],  # type: ignore[arg-type]
            uri=value["uri"],  # type: ignore[arg-type]
            cid=value.get("cid"),  # type: ignore[arg-type]
            val=value["val"],  # type: ignore[arg-type]
            neg="neg" in value,
            cts=value["cts"],  # type: ignore[arg-type]
            exp=value.get("exp"),  # type: ignore[arg-type]
            sig=sig,
        )
        # __post_init__ checked every field's type; null optionals fail the round trip.
        if label.to_bytes() != data:
            raise DecodeError("label does not round-trip to the same bytes")
        return label

    # -- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """atproto's JSON object form (``sig`` as ``{"$bytes": base64, unpadded}``)."""
        out: dict[str, Any] = dict(self._value(signed=False))
        if self.sig is not None:
            out["sig"] = {"$bytes": base64.b64encode(self.sig).decode("ascii").rstrip("=")}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Label:
        """Parse atproto's JSON object form.

        Lenient only where other implementations differ harmlessly: ``neg: false`` is
        accepted (the Go implementation always writes it), ``$type`` may name the
        Lexicon label type, and base64 padding is optional. None of these is signed.
        """
        if not isinstance(data, Mapping):
            raise InvalidLabel("a label must be a JSON object")
        keys = set(data)
        if "$type" in keys:
            if data["$type"] != _LEXICON_TYPE:
                raise InvalidLabel(f"label $type must be {_LEXICON_TYPE!r}")
            keys.discard("$type")
        _check_fields(keys, InvalidLabel)
        neg = data.get("neg", False)
        sig_obj = data.get("sig")
        sig: bytes | None = None
        if sig_obj is not None:
            if not isinstance(sig_obj, Mapping) or set(sig_obj) != {"$bytes"}:
                raise InvalidLabel('label sig must be {"$bytes": base64}')
            sig = _b64decode(sig_obj["$bytes"])
        return cls(
            ver=data["ver"],
            src=data["src"],
            uri=data["uri"],
            cid=data.get("cid"),
            val=data["val"],
            neg=neg,
            cts=data["cts"],
            exp=data.get("exp"),
            sig=sig,
        )


def _check_fields(keys: Iterable[str], error: type[DecodeError] | type[InvalidLabel]) -> None:
    present = set(keys)
    if not present >= _REQUIRED or not present <= _FIELDS:
        raise error(
            f"a label has fields {sorted(_REQUIRED)} and optionally "
            f"{sorted(_FIELDS - _REQUIRED)}, not {sorted(map(str, present))}"
        )


_B64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _b64decode(text: object) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * SIGNATURE_LENGTH:
        raise InvalidLabel("label sig $bytes must be a short base64 string")
    if _B64_RE.fullmatch(text) is None:
        raise InvalidLabel("label sig $bytes is not base64")
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidLabel("label sig $bytes is not base64") from e


# -- the current set ------------------------------------------------------------------------

_DATETIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_CUMULATIVE_DAYS: Final = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _instant(value: str) -> tuple[int, str]:
    """A sort key for a valid datetime: (UTC seconds since 0000-01-01, fraction digits).

    Datetimes with offsets or different fraction lengths do not sort as strings. The
    fraction is compared as a digit string with trailing zeros removed, which orders
    decimal fractions exactly, whatever their precision.
    """
    _syntax(validate_datetime, value, "datetime")
    m = _DATETIME_RE.fullmatch(value)
    if m is None:  # pragma: no cover - validate_datetime accepted it
        raise InvalidLabel(f"datetime {value!r} is not in the expected form")
    year, month, day, hour, minute, second = (int(m[i]) for i in range(1, 7))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = 365 * year + (year + 3) // 4 - (year + 99) // 100 + (year + 399) // 400
    days += _CUMULATIVE_DAYS[month - 1] + (1 if leap and month > 2 else 0) + day - 1
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    if m[8] is not None:
        offset = (int(m[9]) * 60 + int(m[10])) * 60
        seconds -= offset if m[8] == "+" else -offset
    return seconds, (m[7] or "").rstrip("0")


def check_cts(label: Label, now: str, *, ahead: int = MAX_CTS_AHEAD) -> None:
    """Raise InvalidLabel if ``label.cts`` is more than ``ahead`` seconds after
    ``now`` (the receiver's clock, an RFC 3339 datetime): such a label is refused on
    receipt, not stored (a later ``cts`` than any honest one could never be retracted)."""
    if _too_new(_instant(label.cts), _instant(now), ahead):
        raise InvalidLabel(
            f"label cts {label.cts} is more than {ahead} seconds ahead of the clock ({now})"
        )


def _too_new(cts: tuple[int, str], now: tuple[int, str], ahead: int) -> bool:
    return cts > (now[0] + ahead, now[1])


def retraction_cts(held: Iterable[str], now: str) -> str:
    """The ``cts`` for a negation the labeler's current key makes at ``now``: ``now``,
    or the latest of ``held`` (the ``cts`` of the labels held for the same
    ``(src, uri, val)``) if that is later and within :data:`MAX_CTS_AHEAD` of
    ``now``. The negation then ties a label dated ahead (by a leaked key, or a clock
    running fast) and wins the tie (:func:`current_labels`), instead of waiting."""
    now_key = _instant(now)
    best, best_key = now, now_key
    for cts in held:
        key = _instant(cts)
        if key > best_key and not _too_new(key, now_key, MAX_CTS_AHEAD):
            best, best_key = cts, key
    return best


def current_labels(
    labels: Iterable[Label],
    now: str,
    *,
    current_keys: Mapping[str, str] | None = None,
) -> list[Label]:
    """The labels in force at ``now``, after negation and expiry.

    For each ``(src, uri, val)`` the label with the latest ``cts`` (compared as
    instants) is the current one; if it is a negation, nothing is in force for that
    triple. A label whose ``cts`` is more than :data:`MAX_CTS_AHEAD` after ``now``
    takes no part (:func:`check_cts` refuses it on receipt; this covers one stored
    before). On equal ``cts``: a negation signed by the labeler's current key
    (``current_keys``: labeler DID -> its current signing ``did:key``) wins; else a
    positive label beats a negation (a negation retracts only when strictly later,
    as the spec asks issuers to do); among equals, the lower label CID wins, so the
    result never depends on input order. The current label is then dropped if its
    ``exp`` is at or before ``now``. The result is sorted by ``(src, uri, val)``.
    Signatures are not otherwise checked here (check them on receipt); the one for
    a tied negation is, since only it says which key made it.
    """
    now_key = _instant(now)
    keys: dict[str, VerifyKey | None] = {}

    def tier(label: Label) -> int:
        """2: a negation by the current key; 1: a positive label; 0: other negations."""
        if not label.neg:
            return 1
        if current_keys is None or label.src not in current_keys:
            return 0
        if label.src not in keys:
            try:
                keys[label.src] = verify_key(current_keys[label.src])
            except InvalidSyntax:
                keys[label.src] = None
        key = keys[label.src]
        if key is None or label.sig is None:
            return 0
        return 2 if key.is_valid(label.sig, label.unsigned_bytes()) else 0

    # Per group: [instant, tier or None until needed, CID bytes or None, label]. The
    # tier (a signature check) and the CID (encoding and hashing) are computed only
    # for ties: doing them for every label was most of the cost of a view's labels.
    best: dict[tuple[str, str, str], list[Any]] = {}
    for label in labels:
        if not isinstance(label, Label):
            raise InvalidLabel("current_labels takes Label values")
        instant = _instant(label.cts)
        if _too_new(instant, now_key, MAX_CTS_AHEAD):
            continue
        group = (label.src, label.uri, label.val)
        held = best.get(group)
        if held is None or instant > held[0]:
            best[group] = [instant, None, None, label]
            continue
        if instant < held[0]:
            continue
        if held[1] is None:
            held[1] = tier(held[3])
        mine = tier(label)
        if mine != held[1]:
            if mine > held[1]:
                best[group] = [instant, mine, None, label]
            continue
        if held[2] is None:
            held[2] = held[3].label_cid.to_bytes()
        cid = label.label_cid.to_bytes()
        if cid < held[2]:
            best[group] = [instant, mine, cid, label]
    out = [
        label
        for _, _, _, label in best.values()
        if not label.neg and (label.exp is None or _instant(label.exp) > now_key)
    ]
    out.sort(key=lambda label: (label.src, label.uri, label.val))
    return out
