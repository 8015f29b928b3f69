"""Identifier syntax: DIDs, handles, NSIDs, TIDs, record keys, AT-URIs and friends.

Each ``validate_*`` function returns ``None`` for a well-formed value and raises
:class:`~protocol.errors.InvalidSyntax` (saying what is wrong) for anything else,
including values that are not ``str`` at all. ``is_valid_*`` are the boolean forms.
The rules are the atproto specs' (atproto.com/specs: did, handle, nsid, tid,
record-key, at-uri-scheme, lexicon ``datetime`` / ``uri`` / ``language``, data-model
CID strings) and the bluesky-social/atproto interop vectors are the tests.

What this module refuses, on purpose:

* anything over the spec's size bound, checked *before* any regex runs (a DID of a
  megabyte is refused by its length, not by a scan);
* non-ASCII in every identifier (generic URIs alone may carry it, as IRIs do);
* AT-URIs beyond the restricted Lexicon form ``at://AUTHORITY[/NSID[/RKEY]]``: no
  query, no fragment, no empty segment or trailing slash;
* datetimes that look right but are not real instants (month 00, 23:99, leap second
  60, or an offset that moves the instant before year 0000 or after year 9999).

This is syntax only. Whether a DID method is supported, a handle's TLD is resolvable
or a CID's codec is one we use are later, semantic checks (``protocol/cid.py`` parses
CIDs fully). It is sans-IO: no clock, no randomness; the TID generator is given the
time by its caller.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final

from .errors import InvalidSyntax, LocalProtocolError

__all__ = [
    "DATETIME_MAX_LENGTH",
    "DID_MAX_LENGTH",
    "HANDLE_MAX_LENGTH",
    "NSID_MAX_LENGTH",
    "RECORD_KEY_MAX_LENGTH",
    "TID_ALPHABET",
    "TID_CLOCK_ID_MAX",
    "TID_MICROS_MAX",
    "URI_MAX_LENGTH",
    "TidClock",
    "is_valid_at_identifier",
    "is_valid_at_uri",
    "is_valid_cid",
    "is_valid_datetime",
    "is_valid_did",
    "is_valid_handle",
    "is_valid_language",
    "is_valid_link_uri",
    "is_valid_nsid",
    "is_valid_record_key",
    "is_valid_tid",
    "is_valid_uri",
    "normalize_handle",
    "tid_from_parts",
    "tid_to_parts",
    "validate_at_identifier",
    "validate_at_uri",
    "validate_cid",
    "validate_datetime",
    "validate_did",
    "validate_handle",
    "validate_language",
    "validate_link_uri",
    "validate_nsid",
    "validate_record_key",
    "validate_tid",
    "validate_uri",
]

# -- size bounds (from the specs, except where noted) ---------------------------------

DID_MAX_LENGTH: Final = 2048
HANDLE_MAX_LENGTH: Final = 253
NSID_MAX_LENGTH: Final = 317
RECORD_KEY_MAX_LENGTH: Final = 512
#: AT-URIs and generic URIs in Lexicon: "8 kilobytes".
URI_MAX_LENGTH: Final = 8 * 1024
#: The specs give none; the reference implementation refuses over 64 characters.
DATETIME_MAX_LENGTH: Final = 64
#: Not in RFC 5646 (tags are unbounded there); no real tag comes near 128 chars.
_LANGUAGE_MAX_LENGTH: Final = 128
#: The Go reference bounds CID strings to 8..256 characters.
_CID_MIN_LENGTH: Final = 8
_CID_MAX_LENGTH: Final = 256


def _require_str(value: object, what: str, max_length: int) -> str:
    """Type and length gate run before any pattern work."""
    if not isinstance(value, str):
        raise InvalidSyntax(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidSyntax(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidSyntax(f"{what} is too long ({len(value)} > {max_length} characters)")
    if not value.isascii():
        raise InvalidSyntax(f"{what} must be ASCII")
    return value


# -- DID -------------------------------------------------------------------------------

# The spec's reference regex. Percent-encoding is not checked beyond "not last", as in
# the reference implementations: refusing DIDs they accept would split the network.
_DID_RE: Final = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")


def validate_did(did: str) -> None:
    """A generic DID in atproto's subset of the DID syntax (any method)."""
    did = _require_str(did, "DID", DID_MAX_LENGTH)
    if not did.startswith("did:"):
        raise InvalidSyntax("DID must start with 'did:'")
    if _DID_RE.fullmatch(did) is None:
        raise InvalidSyntax(
            "DID must be 'did:' + lowercase method + ':' + identifier of "
            "[A-Za-z0-9._:%-], not ending in ':' or '%'"
        )


def is_valid_did(did: object) -> bool:
    return _is_valid(validate_did, did)


# -- handle ----------------------------------------------------------------------------

_HANDLE_RE: Final = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)


def validate_handle(handle: str) -> None:
    """A handle: a DNS hostname of at least two labels whose TLD starts with a letter.

    Case is accepted as sent (handles are case-insensitive); store
    :func:`normalize_handle`'s result.
    """
    handle = _require_str(handle, "handle", HANDLE_MAX_LENGTH)
    if _HANDLE_RE.fullmatch(handle) is None:
        raise InvalidSyntax(
            "handle must be two or more dot-separated labels of 1-63 [A-Za-z0-9-] "
            "characters, not starting or ending with '-', the last starting with a letter"
        )


def is_valid_handle(handle: object) -> bool:
    return _is_valid(validate_handle, handle)


def normalize_handle(handle: str) -> str:
    """Validate ``handle`` and return its normal (lowercase) form."""
    validate_handle(handle)
    return handle.lower()


# -- at-identifier ---------------------------------------------------------------------


def validate_at_identifier(identifier: str) -> None:
    """Either a DID or a handle (a handle never contains ':', so no ambiguity)."""
    identifier = _require_str(identifier, "at-identifier", DID_MAX_LENGTH)
    if identifier.startswith("did:"):
        validate_did(identifier)
    else:
        validate_handle(identifier)


def is_valid_at_identifier(identifier: object) -> bool:
    return _is_valid(validate_at_identifier, identifier)


# -- NSID ------------------------------------------------------------------------------

_NSID_RE: Final = re.compile(
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)


def validate_nsid(nsid: str) -> None:
    """A Namespaced Identifier: reversed domain authority + camelCase name.

    The spec's prose also caps the domain authority at 253 characters, but the interop
    vectors accept a 283-character one and the reference implementations only bound
    the whole NSID; we follow them, so peers agree on what an NSID is.
    """
    nsid = _require_str(nsid, "NSID", NSID_MAX_LENGTH)
    if _NSID_RE.fullmatch(nsid) is None:
        raise InvalidSyntax(
            "NSID must be a reversed domain name (2+ segments, the first starting with a "
            "letter) then a name segment of [A-Za-z0-9] starting with a letter"
        )


def is_valid_nsid(nsid: object) -> bool:
    return _is_valid(validate_nsid, nsid)


# -- record key ------------------------------------------------------------------------

_RECORD_KEY_RE: Final = re.compile(r"[a-zA-Z0-9._:~-]{1,512}")


def validate_record_key(rkey: str) -> None:
    """A record key of the generic ("any") type: 1-512 of ``[A-Za-z0-9._:~-]``."""
    rkey = _require_str(rkey, "record key", RECORD_KEY_MAX_LENGTH)
    if rkey in (".", ".."):
        raise InvalidSyntax("record key must not be '.' or '..'")
    if _RECORD_KEY_RE.fullmatch(rkey) is None:
        raise InvalidSyntax("record key may only contain [A-Za-z0-9._:~-]")


def is_valid_record_key(rkey: object) -> bool:
    return _is_valid(validate_record_key, rkey)


# -- AT-URI ----------------------------------------------------------------------------


def validate_at_uri(uri: str) -> None:
    """An AT-URI in the restricted Lexicon form ``at://AUTHORITY[/NSID[/RKEY]]``."""
    uri = _require_str(uri, "AT-URI", URI_MAX_LENGTH)
    if not uri.startswith("at://"):
        raise InvalidSyntax("AT-URI must start with 'at://'")
    parts = uri[len("at://") :].split("/")
    if len(parts) > 3:
        raise InvalidSyntax("AT-URI path may have at most two segments (collection, rkey)")
    authority = parts[0]
    if not authority:
        raise InvalidSyntax("AT-URI authority must not be empty")
    try:
        validate_at_identifier(authority)
    except InvalidSyntax as e:
        raise InvalidSyntax(f"AT-URI authority is not a DID or handle: {e.message}") from e
    if len(parts) >= 2:
        if not parts[1]:
            raise InvalidSyntax("AT-URI must not have an empty path segment or trailing '/'")
        try:
            validate_nsid(parts[1])
        except InvalidSyntax as e:
            raise InvalidSyntax(f"AT-URI collection is not an NSID: {e.message}") from e
    if len(parts) == 3:
        if not parts[2]:
            raise InvalidSyntax("AT-URI must not have an empty path segment or trailing '/'")
        try:
            validate_record_key(parts[2])
        except InvalidSyntax as e:
            raise InvalidSyntax(f"AT-URI record key is invalid: {e.message}") from e


def is_valid_at_uri(uri: object) -> bool:
    return _is_valid(validate_at_uri, uri)


# -- generic URI (Lexicon "uri" format) ------------------------------------------------

# A loose RFC 3986 shape, as the reference implementations check: a scheme, then
# non-whitespace (an empty authority as in "http:///x" is refused).
_URI_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:(//)?[^\s/]\S*")


def validate_uri(uri: str) -> None:
    """A generic URI (any scheme), as Lexicon's ``uri`` format: up to 8 KB, no spaces."""
    if not isinstance(uri, str):
        raise InvalidSyntax(f"URI must be a string, not {type(uri).__name__}")
    if len(uri) > URI_MAX_LENGTH:
        raise InvalidSyntax(f"URI is too long ({len(uri)} > {URI_MAX_LENGTH} characters)")
    # Non-ASCII is tolerated here (IRIs appear in the wild); the regex still applies.
    if _URI_RE.fullmatch(uri) is None:
        raise InvalidSyntax("URI must be 'scheme:' followed by non-whitespace characters")


def is_valid_uri(uri: object) -> bool:
    return _is_valid(validate_uri, uri)


# -- link URI (a richtext link facet's target) ------------------------------------------

# RFC 3986 authority pieces. The userinfo is everything before the last "@" and holds
# no "[" or "]"; a host is an IP literal in brackets or a reg-name without ":@[]".
_AUTHORITY_RE: Final = re.compile(
    r"(?:(?P<userinfo>[^@\[\]]*)@)?"
    r"(?:\[(?P<literal>[^\[\]]*)\]|(?P<regname>[^@:\[\]]*))"
    r"(?::(?P<port>[0-9]*))?"
)
_IPVFUTURE_RE: Final = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")
# Characters that must not hide in a non-ASCII authority: NFKC folds some look-alikes
# ("\u2100" ℀ is "a/c") into them, so a renderer could see another host than a reader.
_AUTHORITY_DELIMS: Final = frozenset("/?#@:")


def validate_link_uri(uri: str) -> None:
    """A URI a post may link to (``app.bsky.richtext.facet#link``): a generic URI
    (:func:`validate_uri`) whose authority, if it has one (``scheme://authority``),
    parses as RFC 3986 says: ``[userinfo@]host[:port]`` with a bracketed host being an
    IPv6 address or ``vX.…`` (IPvFuture), a port of at most 5 digits up to 65535, and
    no character whose NFKC form contains one of ``/?#@:``. ``http://[`` passes
    :func:`validate_uri` and fails here.
    """
    validate_uri(uri)
    scheme_end = uri.index(":")
    rest = uri[scheme_end + 1 :]
    if not rest.startswith("//"):
        return
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    m = _AUTHORITY_RE.fullmatch(authority)
    if m is None:
        raise InvalidSyntax("link URI's authority is not [userinfo@]host[:port]")
    literal, port = m.group("literal"), m.group("port")
    if literal is not None and not _is_ip_literal(literal):
        raise InvalidSyntax("link URI's bracketed host is not an IPv6 or IPvFuture address")
    if port and (len(port) > 5 or int(port) > 65535):
        raise InvalidSyntax("link URI's port is not a number up to 65535")
    if not authority.isascii():
        bare = "".join(c for c in authority if c not in _AUTHORITY_DELIMS)
        if _AUTHORITY_DELIMS & set(unicodedata.normalize("NFKC", bare)):
            raise InvalidSyntax("link URI's authority hides a delimiter in a look-alike")


def _is_ip_literal(text: str) -> bool:
    if _IPVFUTURE_RE.fullmatch(text):
        return True
    if "%" in text or not text.isascii():  # no zone IDs (RFC 6874) in a post's link
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def is_valid_link_uri(uri: object) -> bool:
    return _is_valid(validate_link_uri, uri)


# -- datetime (Lexicon "datetime" format) ----------------------------------------------

_DATETIME_RE: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?:Z|(?P<sign>[+-])(?P<off_h>[0-9]{2}):(?P<off_m>[0-9]{2}))"
)
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_before_year(year: int) -> int:
    """Days from 0000-01-01 to ``year``-01-01 (proleptic Gregorian, year 0 is leap).

    Python's ``datetime`` starts at year 1, and the spec allows year 0000.
    """
    return 365 * year + (year + 3) // 4 - (year + 99) // 100 + (year + 399) // 400


_MINUTES_0000_TO_10000: Final = _days_before_year(10000) * 24 * 60


def validate_datetime(value: str) -> None:
    """A Lexicon datetime: RFC 3339 ∩ ISO 8601, ``T`` separator, ``Z`` or ±hh:mm.

    The date must be a real one (no month 00, no 23:99, no leap second) and, once the
    offset is applied, fall within years 0000-9999.
    """
    value = _require_str(value, "datetime", DATETIME_MAX_LENGTH)
    m = _DATETIME_RE.fullmatch(value)
    if m is None:
        raise InvalidSyntax(
            "datetime must look like 1985-04-12T23:20:50.123Z (upper-case T, "
            "whole seconds, optional fraction, 'Z' or a ±hh:mm offset)"
        )
    y, mo, d, h, mi, s, sign, off_h_text, off_m_text = m.groups()
    year, month, day, hour, minute, second = int(y), int(mo), int(d), int(h), int(mi), int(s)
    if not 1 <= month <= 12:
        raise InvalidSyntax(f"datetime month {month:02d} does not exist")
    days_in_month = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days_in_month:
        raise InvalidSyntax(f"datetime day {day:02d} does not exist in month {month:02d}")
    # Leap seconds (:60) are refused: the reference implementations' parsers do too.
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidSyntax("datetime time of day is out of range")
    if sign is None:
        # UTC ('Z'): a real date of years 0000-9999 as written, nothing to shift.
        return
    off_h, off_m = int(off_h_text), int(off_m_text)
    if off_h > 23 or off_m > 59:
        raise InvalidSyntax("datetime timezone offset is out of range")
    if sign == "-" and off_h == 0 and off_m == 0:
        raise InvalidSyntax("datetime must not use '-00:00' (use 'Z' or '+00:00')")
    offset = (off_h * 60 + off_m) * (1 if sign == "+" else -1)
    days = _days_before_year(year) + sum(_DAYS_IN_MONTH[: month - 1]) + day - 1
    if month > 2 and _is_leap(year):
        days += 1
    utc_minutes = days * 24 * 60 + hour * 60 + minute - offset
    if utc_minutes < 0:
        raise InvalidSyntax("datetime is before year 0000 once its offset is applied")
    if utc_minutes >= _MINUTES_0000_TO_10000:
        raise InvalidSyntax("datetime is after year 9999 once its offset is applied")


def is_valid_datetime(value: object) -> bool:
    return _is_valid(validate_datetime, value)


# -- CID string ------------------------------------------------------------------------

_CID_RE: Final = re.compile(r"[a-zA-Z0-9+=]+")


def validate_cid(cid: str) -> None:
    """Syntax of a CID string (Lexicon ``cid`` format): any multibase CIDv1 shape.

    Only the characters and length are checked here, like the Go reference; use
    ``protocol.cid.CID.from_str`` to decode one and check its codec and hash.
    """
    cid = _require_str(cid, "CID", _CID_MAX_LENGTH)
    if len(cid) < _CID_MIN_LENGTH:
        raise InvalidSyntax(f"CID is too short ({len(cid)} < {_CID_MIN_LENGTH} characters)")
    if _CID_RE.fullmatch(cid) is None:
        raise InvalidSyntax("CID may only contain [A-Za-z0-9+=]")
    if cid.startswith("Qmb"):
        raise InvalidSyntax("CIDv0 is not allowed")


def is_valid_cid(cid: object) -> bool:
    return _is_valid(validate_cid, cid)


# -- language tag ----------------------------------------------------------------------

# RFC 5646 "well-formed" (not "valid": no registry lookups, no duplicate-subtag
# checks), which is what the Lexicon ``language`` format asks for.
_LANGUAGE_RE: Final = re.compile(
    r"(?:"
    r"(?:en-GB-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo"
    r"|i-navajo|i-pwn|i-tao|i-tay|i-tsu|sgn-BE-FR|sgn-BE-NL|sgn-CH-DE)"
    r"|(?:art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|zh-min-nan"
    r"|zh-xiang)"
    r")"
    r"|(?:"
    r"(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}(?:-[A-Za-z]{3}){0,2})?|[A-Za-z]{4}|[A-Za-z]{5,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?"
    r")"
    r"|(?:[xX](?:-[A-Za-z0-9]{1,8})+)"
)


def validate_language(tag: str) -> None:
    """A well-formed BCP 47 language tag (``ja``, ``pt-BR``, ``zh-Hant``...)."""
    tag = _require_str(tag, "language tag", _LANGUAGE_MAX_LENGTH)
    if _LANGUAGE_RE.fullmatch(tag) is None:
        raise InvalidSyntax("language tag is not a well-formed BCP 47 tag")


def is_valid_language(tag: object) -> bool:
    return _is_valid(validate_language, tag)


# -- TID -------------------------------------------------------------------------------

TID_ALPHABET: Final = "234567abcdefghijklmnopqrstuvwxyz"
_TID_INDEX: Final = {c: i for i, c in enumerate(TID_ALPHABET)}
_TID_LENGTH: Final = 13
#: Largest timestamp a generated TID carries (53 bits: JavaScript's safe integers).
TID_MICROS_MAX: Final = 2**53 - 1
TID_CLOCK_ID_MAX: Final = 1023
# The first character carries bits 60-64; the spec allows it up to 'j' (index 15).
_TID_RE: Final = re.compile(r"[234567a-j][234567a-z]{12}")


def validate_tid(tid: str) -> None:
    """A TID: 13 characters of base32-sortable, the first one of ``234567a-j``."""
    tid = _require_str(tid, "TID", _TID_LENGTH)
    if len(tid) != _TID_LENGTH:
        raise InvalidSyntax(f"TID must be {_TID_LENGTH} characters (got {len(tid)})")
    if _TID_RE.fullmatch(tid) is None:
        raise InvalidSyntax(
            "TID must be base32-sortable ('234567a-z'), first character one of '234567a-j'"
        )


def is_valid_tid(tid: object) -> bool:
    return _is_valid(validate_tid, tid)


def tid_from_parts(micros: int, clock_id: int) -> str:
    """Encode microseconds since the UNIX epoch and a 10-bit clock id as a TID.

    Out-of-range parts are a bug in the caller: :class:`LocalProtocolError`.
    """
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise LocalProtocolError("TID micros must be an int")
    if isinstance(clock_id, bool) or not isinstance(clock_id, int):
        raise LocalProtocolError("TID clock id must be an int")
    if not 0 <= micros <= TID_MICROS_MAX:
        raise LocalProtocolError(f"TID micros must be in 0..2**53-1 (got {micros})")
    if not 0 <= clock_id <= TID_CLOCK_ID_MAX:
        raise LocalProtocolError(f"TID clock id must be in 0..1023 (got {clock_id})")
    value = (micros << 10) | clock_id
    chars = []
    for _ in range(_TID_LENGTH):
        chars.append(TID_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def tid_to_parts(tid: str) -> tuple[int, int]:
    """Decode a TID into ``(micros, clock_id)``.

    The TID syntax admits a first character up to ``j``, which sets the top bit of
    the 64-bit value; such a TID decodes to ``micros`` above :data:`TID_MICROS_MAX`
    (never produced by :func:`tid_from_parts`), so decoding stays order-preserving.
    """
    validate_tid(tid)
    value = 0
    for c in tid:
        value = (value << 5) | _TID_INDEX[c]
    return value >> 10, value & TID_CLOCK_ID_MAX


class TidClock:
    """A monotonic TID generator for one clock id (one repository's ``rev`` clock).

    It never issues a TID less than or equal to one it issued or :meth:`observe`-d,
    even when the time it is given goes backwards: the timestamp used is
    ``max(now, last + 1)``. Checking that an observed TID is not absurdly far in the
    future (the relay rule is five minutes) is the caller's job: once observed, the
    clock follows it.
    """

    __slots__ = ("_clock_id", "_last")

    def __init__(self, clock_id: int) -> None:
        if isinstance(clock_id, bool) or not isinstance(clock_id, int):
            raise LocalProtocolError("TID clock id must be an int")
        if not 0 <= clock_id <= TID_CLOCK_ID_MAX:
            raise LocalProtocolError(f"TID clock id must be in 0..1023 (got {clock_id})")
        self._clock_id = clock_id
        self._last = -1  # micros of the last TID issued or observed

    @property
    def clock_id(self) -> int:
        return self._clock_id

    def next(self, now_micros: int) -> str:
        """A TID greater than every TID issued or observed so far."""
        if isinstance(now_micros, bool) or not isinstance(now_micros, int):
            raise LocalProtocolError("now_micros must be an int")
        if now_micros < 0:
            raise LocalProtocolError("now_micros must not be negative")
        micros = max(now_micros, self._last + 1)
        if micros > TID_MICROS_MAX:
            raise LocalProtocolError("TID clock has run past 2**53 microseconds")
        self._last = micros
        return tid_from_parts(micros, self._clock_id)

    def observe(self, tid: str) -> None:
        """Make every later :meth:`next` return a TID greater than ``tid``.

        ``tid`` usually comes from outside (a stored or received rev), so a malformed
        one raises :class:`InvalidSyntax`; so does one with the top bit set, which no
        conforming clock issues and which would leave this clock nothing to issue.
        """
        micros, _ = tid_to_parts(tid)
        if micros > TID_MICROS_MAX:
            raise InvalidSyntax("TID has its top bit set; no clock can follow it")
        # Strictly greater micros makes the next TID greater whatever the clock ids.
        self._last = max(self._last, micros)


# -- helpers ---------------------------------------------------------------------------


def _is_valid(validator: Callable[[Any], None], value: object) -> bool:
    try:
        validator(value)
    except InvalidSyntax:
        return False
    return True
