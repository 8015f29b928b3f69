"""Identifier syntax against the atproto interop vectors, plus TID codec and clock."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import syntax
from protocol.errors import InvalidSyntax, LocalProtocolError

VECTORS = Path(__file__).parent / "vectors" / "syntax"

Validator = Callable[[Any], None]

VALIDATORS: dict[str, Validator] = {
    "did": syntax.validate_did,
    "handle": syntax.validate_handle,
    "atidentifier": syntax.validate_at_identifier,
    "nsid": syntax.validate_nsid,
    "tid": syntax.validate_tid,
    "recordkey": syntax.validate_record_key,
    "aturi": syntax.validate_at_uri,
    "datetime": syntax.validate_datetime,
    "cid": syntax.validate_cid,
    "language": syntax.validate_language,
    "uri": syntax.validate_uri,
}


def _vectors(filename: str, kind: str) -> list[Any]:
    """One param per line; '#' lines and blank lines are comments. No stripping:
    leading and trailing spaces are part of several invalid examples."""
    params = []
    text = (VECTORS / filename).read_text(encoding="utf-8")
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        params.append(pytest.param(kind, line, id=f"{filename}:{lineno}"))
    return params


def _all(suffix: str) -> list[Any]:
    params = []
    for kind in VALIDATORS:
        params += _vectors(f"{kind}_syntax_{suffix}.txt", kind)
    return params


VALID = _all("valid")
INVALID = _all("invalid")
# Syntactically fine but not real instants (month 00, 23:99...): refused too, because
# the Lexicon spec says implementations "should" check the semantics.
DATETIME_PARSE_INVALID = _vectors("datetime_parse_invalid.txt", "datetime")
# Well-formed BCP 47 but not "valid" per RFC 5646 (duplicate subtags, "JA"): the
# Lexicon `language` format asks only for well-formed, so these pass.
LANGUAGE_PARSE_INVALID = _vectors("language_parse_invalid.txt", "language")


def test_vector_files_are_all_loaded() -> None:
    assert len(VALID) > 200
    assert len(INVALID) > 200


@pytest.mark.parametrize(("kind", "value"), VALID + LANGUAGE_PARSE_INVALID)
def test_valid_vectors(kind: str, value: str) -> None:
    assert VALIDATORS[kind](value) is None


@pytest.mark.parametrize(("kind", "value"), INVALID + DATETIME_PARSE_INVALID)
def test_invalid_vectors(kind: str, value: str) -> None:
    with pytest.raises(InvalidSyntax) as excinfo:
        VALIDATORS[kind](value)
    assert excinfo.value.message
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    ("is_valid", "good", "bad"),
    [
        pytest.param(syntax.is_valid_did, "did:plc:abc", "did:plc:", id="did"),
        pytest.param(syntax.is_valid_handle, "alice.test", "alice", id="handle"),
        pytest.param(syntax.is_valid_at_identifier, "did:web:a.b", "a:b", id="atidentifier"),
        pytest.param(syntax.is_valid_nsid, "a.b.c", "a.b", id="nsid"),
        pytest.param(syntax.is_valid_tid, "2222222222222", "222", id="tid"),
        pytest.param(syntax.is_valid_record_key, "self", "..", id="recordkey"),
        pytest.param(syntax.is_valid_at_uri, "at://a.test", "at://a.test/", id="aturi"),
        pytest.param(
            syntax.is_valid_datetime, "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", id="dt"
        ),
        pytest.param(syntax.is_valid_cid, "bafyreiabc", "Qmbabcdefgh", id="cid"),
        pytest.param(syntax.is_valid_language, "en", "e", id="language"),
        pytest.param(syntax.is_valid_uri, "https://x.y", "https:// x", id="uri"),
    ],
)
def test_is_valid_helpers(is_valid: Callable[[object], bool], good: str, bad: str) -> None:
    assert is_valid(good) is True
    assert is_valid(bad) is False
    assert is_valid(None) is False
    assert is_valid(b"did:plc:abc") is False


# -- size bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "at_limit", "over_limit"),
    [
        pytest.param("did", "did:m:" + "v" * 2042, "did:m:" + "v" * 2043, id="did-2048"),
        pytest.param(
            "handle",
            ".".join(["a" * 63] * 3 + ["b" * 61]),
            ".".join(["a" * 63] * 3 + ["b" * 62]),
            id="handle-253",
        ),
        pytest.param(
            "nsid",
            ".".join(["a" * 63] * 4 + ["b" * 61]),
            ".".join(["a" * 63] * 4 + ["b" * 62]),
            id="nsid-317",
        ),
        pytest.param("recordkey", "k" * 512, "k" * 513, id="recordkey-512"),
        pytest.param(
            "datetime",
            "2024-01-01T00:00:00." + "1" * 43 + "Z",
            "2024-01-01T00:00:00." + "1" * 44 + "Z",
            id="datetime-64",
        ),
        pytest.param("cid", "b" + "a" * 255, "b" + "a" * 256, id="cid-256"),
        pytest.param("uri", "https://a/" + "x" * 8182, "https://a/" + "x" * 8183, id="uri-8k"),
    ],
)
def test_size_bounds(kind: str, at_limit: str, over_limit: str) -> None:
    VALIDATORS[kind](at_limit)
    with pytest.raises(InvalidSyntax):
        VALIDATORS[kind](over_limit)


def test_huge_input_is_refused_by_length() -> None:
    with pytest.raises(InvalidSyntax, match="too long"):
        syntax.validate_did("did:plc:" + "a" * 10_000_000)
    # The restricted AT-URI form can't reach 8 KB with valid parts; the bound still
    # applies before anything is split.
    with pytest.raises(InvalidSyntax, match="too long"):
        syntax.validate_at_uri("at://did:plc:" + "a" * 8192)


# -- individual rules worth pinning --------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0000-01-01T00:00:00.000Z", id="year-zero"),
        pytest.param("2000-02-29T12:00:00Z", id="leap-2000"),
        pytest.param("9999-12-31T23:59:59.999999Z", id="last-moment"),
        pytest.param("0000-01-01T00:30:00+00:30", id="offset-to-exactly-zero"),
        pytest.param("2024-05-01T12:34:56.123456+00:00", id="sdk-python"),
    ],
)
def test_datetime_edges_valid(value: str) -> None:
    syntax.validate_datetime(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1900-02-29T00:00:00Z", id="not-leap-1900"),
        pytest.param("2023-04-31T00:00:00Z", id="april-31"),
        pytest.param("2016-12-31T23:59:60Z", id="leap-second"),
        pytest.param("9999-12-31T23:30:00-01:00", id="after-9999"),
        pytest.param("2024-01-01T00:00:00+24:00", id="offset-hour-24"),
        pytest.param("2024-01-01T00:00:00Z\n", id="trailing-newline"),
        pytest.param("２０２４-01-01T00:00:00Z", id="fullwidth-digits"),
    ],
)
def test_datetime_edges_invalid(value: str) -> None:
    with pytest.raises(InvalidSyntax):
        syntax.validate_datetime(value)


@pytest.mark.parametrize(
    ("validator", "value"),
    [
        pytest.param(syntax.validate_did, "did:plc:abc\n", id="did-newline"),
        pytest.param(syntax.validate_handle, "alice.test\n", id="handle-newline"),
        pytest.param(syntax.validate_nsid, "a.b.c\n", id="nsid-newline"),
        pytest.param(syntax.validate_tid, "2222222222222\n", id="tid-newline"),
        pytest.param(syntax.validate_record_key, "self\n", id="rkey-newline"),
        pytest.param(syntax.validate_tid, "3JZFCIJPJ2Z2A", id="tid-case"),
        pytest.param(syntax.validate_at_uri, "at://did:plc:a/a.b.c/rkey/x", id="aturi-depth"),
        pytest.param(syntax.validate_at_uri, "at://did:plc:a?x=1", id="aturi-query"),
        pytest.param(syntax.validate_at_uri, "at://", id="aturi-empty"),
        pytest.param(syntax.validate_handle, "", id="handle-empty"),
        pytest.param(syntax.validate_uri, "", id="uri-empty"),
    ],
)
def test_specific_invalid(validator: Validator, value: str) -> None:
    with pytest.raises(InvalidSyntax):
        validator(value)


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidSyntax, match="must start with 'did:'"):
        syntax.validate_did("plc:abc")
    with pytest.raises(InvalidSyntax, match="record key"):
        syntax.validate_at_uri("at://did:plc:a/a.b.c/%23")
    with pytest.raises(InvalidSyntax, match="month 13"):
        syntax.validate_datetime("1985-13-12T23:20:50.123Z")
    with pytest.raises(InvalidSyntax, match="must be a string"):
        syntax.validate_nsid(42)  # type: ignore[arg-type]


def test_normalize_handle() -> None:
    assert syntax.normalize_handle("Alice.Example.COM") == "alice.example.com"
    assert syntax.normalize_handle("xn--ls8h.test") == "xn--ls8h.test"
    with pytest.raises(InvalidSyntax):
        syntax.normalize_handle("ALICE")


# -- hypothesis: validators raise nothing but InvalidSyntax ---------------------------

VALIDATOR_LIST = list(VALIDATORS.values())
_anything = (
    st.text()
    | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))
    | st.binary().map(lambda b: b.decode("latin-1"))
    | st.text(alphabet="did:plcatwebx.-_%~#/?@" + syntax.TID_ALPHABET, max_size=40)
)


@pytest.mark.parametrize("validator", VALIDATOR_LIST, ids=list(VALIDATORS))
@given(value=_anything)
def test_validators_only_raise_invalid_syntax_on_text(validator: Validator, value: str) -> None:
    with contextlib.suppress(InvalidSyntax):
        validator(value)


@pytest.mark.parametrize("validator", VALIDATOR_LIST, ids=list(VALIDATORS))
@given(value=st.none() | st.integers() | st.binary() | st.lists(st.text()) | st.floats())
def test_validators_only_raise_invalid_syntax_on_non_str(
    validator: Validator, value: object
) -> None:
    with pytest.raises(InvalidSyntax):
        validator(value)


@given(
    labels=st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=5
    ),
    tld=st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
)
def test_generated_handles_are_valid(labels: list[str], tld: str) -> None:
    handle = ".".join([*labels, tld])
    syntax.validate_handle(handle)
    syntax.validate_handle(handle.upper())
    assert syntax.normalize_handle(handle.upper()) == handle


# -- TID codec -------------------------------------------------------------------------

_micros = st.integers(min_value=0, max_value=syntax.TID_MICROS_MAX)
_clock_ids = st.integers(min_value=0, max_value=syntax.TID_CLOCK_ID_MAX)


@pytest.mark.parametrize(
    ("micros", "clock_id", "tid"),
    [
        pytest.param(0, 0, "2222222222222", id="zero"),
        pytest.param(0, 1, "2222222222223", id="clock-1"),
        pytest.param(syntax.TID_MICROS_MAX, 1023, "bzzzzzzzzzzzz", id="max"),
        pytest.param(1688137381887007, 6, "3jzfcijpj2z2a", id="spec-example"),
    ],
)
def test_tid_known_answers(micros: int, clock_id: int, tid: str) -> None:
    assert syntax.tid_from_parts(micros, clock_id) == tid
    assert syntax.tid_to_parts(tid) == (micros, clock_id)


@given(micros=_micros, clock_id=_clock_ids)
def test_tid_round_trip(micros: int, clock_id: int) -> None:
    tid = syntax.tid_from_parts(micros, clock_id)
    syntax.validate_tid(tid)
    syntax.validate_record_key(tid)
    assert syntax.tid_to_parts(tid) == (micros, clock_id)


@given(a=st.tuples(_micros, _clock_ids), b=st.tuples(_micros, _clock_ids))
def test_tid_string_order_is_numeric_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    ta, tb = syntax.tid_from_parts(*a), syntax.tid_from_parts(*b)
    assert (ta < tb) == (a < b)


def test_tid_with_top_bit_decodes_above_53_bits() -> None:
    micros, clock_id = syntax.tid_to_parts("j222222222222")
    assert micros > syntax.TID_MICROS_MAX
    assert clock_id == 0


@pytest.mark.parametrize(
    ("micros", "clock_id"),
    [
        pytest.param(-1, 0, id="negative-micros"),
        pytest.param(2**53, 0, id="micros-54-bits"),
        pytest.param(0, 1024, id="clock-11-bits"),
        pytest.param(0, -1, id="negative-clock"),
        pytest.param(True, 0, id="bool"),
    ],
)
def test_tid_from_parts_refuses_out_of_range(micros: int, clock_id: int) -> None:
    with pytest.raises(LocalProtocolError):
        syntax.tid_from_parts(micros, clock_id)


def test_tid_to_parts_refuses_bad_tid() -> None:
    with pytest.raises(InvalidSyntax):
        syntax.tid_to_parts("kjzfcijpj2z2a")


# -- TID clock -------------------------------------------------------------------------


@given(
    clock_id=_clock_ids,
    times=st.lists(st.integers(min_value=0, max_value=2**52), min_size=1, max_size=50),
)
def test_tid_clock_is_strictly_monotonic_even_backwards(clock_id: int, times: list[int]) -> None:
    clock = syntax.TidClock(clock_id)
    issued = [clock.next(t) for t in times]
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)
    for tid, t in zip(issued, times, strict=True):
        micros, cid = syntax.tid_to_parts(tid)
        assert micros >= t
        assert cid == clock_id


def test_tid_clock_backwards_uses_last_plus_one() -> None:
    clock = syntax.TidClock(7)
    first = clock.next(1_000_000)
    second = clock.next(5)
    assert syntax.tid_to_parts(first) == (1_000_000, 7)
    assert syntax.tid_to_parts(second) == (1_000_001, 7)
    assert syntax.tid_to_parts(clock.next(2_000_000)) == (2_000_000, 7)


@given(seen=st.tuples(_micros.filter(lambda m: m < syntax.TID_MICROS_MAX), _clock_ids))
def test_tid_clock_observe(seen: tuple[int, int]) -> None:
    clock = syntax.TidClock(0)
    other = syntax.tid_from_parts(*seen)
    clock.observe(other)
    assert clock.next(0) > other


def test_tid_clock_observe_never_goes_back() -> None:
    clock = syntax.TidClock(1)
    clock.observe(syntax.tid_from_parts(500, 0))
    clock.observe(syntax.tid_from_parts(10, 0))
    assert syntax.tid_to_parts(clock.next(0)) == (501, 1)


def test_tid_clock_refuses() -> None:
    with pytest.raises(LocalProtocolError):
        syntax.TidClock(1024)
    clock = syntax.TidClock(0)
    with pytest.raises(LocalProtocolError):
        clock.next(-1)
    with pytest.raises(InvalidSyntax):
        clock.observe("not-a-tid")
    with pytest.raises(InvalidSyntax, match="top bit"):
        clock.observe("j222222222222")
    clock.observe("bzzzzzzzzzzzz")  # the largest TID a clock can issue
    with pytest.raises(LocalProtocolError):
        clock.next(0)
