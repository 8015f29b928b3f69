"""The sans-IO moderation rules: labeler headers, label behaviours, takedown values."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import InvalidSyntax, RemoteProtocolError
from protocol.moderation import (
    MAX_LABELERS,
    InvalidLabelerHeader,
    InvalidPrefs,
    InvalidTakedown,
    LabelerPref,
    ModerationPrefs,
    Takedown,
    format_labelers,
    moderate,
    parse_accept_labelers,
    parse_scopes,
)

MOD = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:skyfed:bbbbbbbbbbbbbbbbbbbbbbbb"
AUTHOR = "did:skyfed:cccccccccccccccccccccccc"


def _post(*labels: tuple[str, str], author_labels: tuple[tuple[str, str], ...] = ()) -> Any:
    def js(src: str, val: str) -> dict[str, Any]:
        return {"ver": 1, "src": src, "uri": "at://x", "val": val, "cts": "2026-01-01T00:00:00Z"}

    return {
        "uri": f"at://{AUTHOR}/app.bsky.feed.post/3mbd354z2m22b",
        "author": {"did": AUTHOR, "labels": [js(s, v) for s, v in author_labels]},
        "labels": [js(s, v) for s, v in labels],
    }


def test_accept_labelers_header_parses_like_atproto() -> None:
    got = parse_accept_labelers(f" {MOD};redact , not-a-did, {OTHER}, {MOD}, did:web:x;future")
    assert got == (LabelerPref(MOD, redact=True), LabelerPref(OTHER), LabelerPref("did:web:x"))
    assert format_labelers(got) == f"{MOD};redact, {OTHER}, did:web:x"
    assert parse_accept_labelers(None) == ()
    assert parse_accept_labelers("") == ()


def test_accept_labelers_header_is_bounded() -> None:
    many = ",".join(f"did:web:l{i}.example" for i in range(MAX_LABELERS + 1))
    with pytest.raises(InvalidLabelerHeader):
        parse_accept_labelers(many)
    with pytest.raises(InvalidLabelerHeader):
        parse_accept_labelers("x" * 10_000)


def test_default_behaviours_and_reader_settings() -> None:
    prefs = ModerationPrefs((LabelerPref(MOD),))
    assert moderate(_post((MOD, "spam")), prefs).action == "hide"
    assert moderate(_post((MOD, "nudity")), prefs).action == "warn"
    assert moderate(_post((MOD, "!warn")), prefs).action == "warn"
    assert moderate(_post((MOD, "!hide")), prefs).action == "hide"
    assert moderate(_post((MOD, "funny")), prefs).action == "show"
    assert moderate(_post(), prefs).action == "show"
    # The reader decides what ordinary labels do...
    mine = prefs.with_behaviour("spam", "show").with_behaviour("funny", "warn")
    assert moderate(_post((MOD, "spam")), mine).action == "show"
    decision = moderate(_post((MOD, "funny")), mine)
    assert decision.warned
    assert decision.because == (("funny", MOD),)
    # ...but not the global ones.
    with pytest.raises(InvalidPrefs):
        prefs.with_behaviour("!hide", "show")
    with pytest.raises(InvalidPrefs):
        ModerationPrefs(behaviours={"spam": "explode"})  # type: ignore[dict-item]


def test_only_subscribed_labelers_count_and_the_strongest_wins() -> None:
    prefs = ModerationPrefs((LabelerPref(MOD),))
    # A label from a labeler the reader does not listen to changes nothing.
    assert moderate(_post((OTHER, "!hide")), prefs).action == "show"
    both = moderate(_post((MOD, "nudity"), (MOD, "spam")), prefs)
    assert both.action == "hide"
    assert both.because == (("spam", MOD), ("nudity", MOD))
    # A label on the account covers its posts.
    assert moderate(_post(author_labels=((MOD, "!hide"),)), prefs).hidden
    assert moderate(_post((MOD, "spam")), ModerationPrefs()).action == "show"


def test_prefs_round_trip_json_and_subscriptions() -> None:
    prefs = ModerationPrefs().subscribe(MOD, redact=True).subscribe(OTHER)
    prefs = prefs.with_behaviour("spam", "warn")
    again = ModerationPrefs.from_json(prefs.to_json())
    assert again == prefs
    assert again.header == f"{MOD};redact, {OTHER}"
    assert again.unsubscribe(MOD).header == OTHER
    assert ModerationPrefs.from_json({"labelers": [MOD]}).labelers == (LabelerPref(MOD),)
    for bad in ([], {"labelers": ["nope"]}, {"labels": {"spam": "burn"}}, {"labelers": 3}):
        with pytest.raises(InvalidPrefs):
            ModerationPrefs.from_json(bad)


def test_takedown_scopes_and_reasons() -> None:
    assert parse_scopes(None) == {"host", "serve", "carry"}
    assert parse_scopes("serve, carry") == {"serve", "carry"}
    assert parse_scopes(["host"]) == {"host"}
    with pytest.raises(InvalidTakedown):
        parse_scopes("host,delete")
    for empty in ([], "", " , "):  # naming no scope is a mistake, not "everything"
        with pytest.raises(InvalidTakedown):
            parse_scopes(empty)
    t = Takedown(
        id=1,
        did=AUTHOR,
        scopes=frozenset({"serve"}),
        reason="spam network",
        created_at="2026-01-01T00:00:00.000Z",
    )
    assert t.covers("serve")
    assert not t.covers("host")
    assert t.to_json()["scopes"] == ["serve"]
    for bad in (
        {"did": "alice"},
        {"reason": "  "},
        {"reason": "x" * 2001},
        {"scopes": frozenset()},
        {"created_at": "yesterday"},
    ):
        fields: dict[str, Any] = {
            "id": 1,
            "did": AUTHOR,
            "scopes": frozenset({"host"}),
            "reason": "r",
            "created_at": "2026-01-01T00:00:00.000Z",
            **bad,
        }
        with pytest.raises(RemoteProtocolError) as info:
            Takedown(**fields)
        assert isinstance(info.value, InvalidTakedown | InvalidSyntax)
