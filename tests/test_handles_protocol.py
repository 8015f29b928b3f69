"""The handle rule without a node (protocol/handles.py): confirmations, and who may
confirm which handle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import SkyfedError
from protocol.handles import (
    HandleConfirmation,
    confirms,
    domain_host,
    handle_domain,
    is_reserved,
    under,
)

from .seeds import seeded_key

NODE, OTHER = seeded_key(60), seeded_key(61)
ALICE = "did:skyfed:" + "a" * 24
MALLORY = "did:skyfed:" + "m" * 24
CONF = HandleConfirmation.issue("alice.b.test", ALICE, NODE)


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
@settings(max_examples=200)
def test_one_flipped_byte_fails(at: int, mask: int) -> None:
    data = bytearray(CONF.to_bytes())
    data[at % len(data)] ^= mask
    with pytest.raises(SkyfedError):
        HandleConfirmation.from_bytes(bytes(data))


def test_a_confirmation_round_trips() -> None:
    assert HandleConfirmation.from_bytes(CONF.to_bytes()) == CONF


def test_domains_and_reserved_names() -> None:
    assert handle_domain("alice.b.test") == ".b.test"
    assert under("alice.b.test", [".b.test"])
    assert under("a.alice.b.test", [".b.test"])
    assert not under("b.test", [".b.test"])
    assert not under("alice.xb.test", [".b.test"])
    assert is_reserved("support.b.test")
    assert not is_reserved("supporter.b.test")


def _confirms(
    handle: str,
    did: str,
    *,
    registered: str | None = None,
    confirmation: HandleConfirmation | None = None,
    issuers: tuple[str, ...] = (),
    own: tuple[str, ...] = (".a.test",),
    shared: tuple[str, ...] = (".shared.test",),
) -> bool:
    return confirms(
        handle,
        did,
        own_domains=own,
        shared_domains=shared,
        registered=registered,
        confirmation=confirmation,
        issuers=issuers,
    )


def test_own_domain_only_the_registry_confirms() -> None:
    by_other = HandleConfirmation.issue("bob.a.test", MALLORY, OTHER)
    assert _confirms("bob.a.test", ALICE, registered=ALICE)
    assert not _confirms("bob.a.test", MALLORY, registered=ALICE, confirmation=by_other)
    assert not _confirms("bob.a.test", MALLORY, confirmation=by_other)


def test_foreign_domain_needs_a_believed_issuer() -> None:
    assert not _confirms("alice.b.test", ALICE)  # a claim alone
    # No trust on first use: a valid confirmation by an issuer nobody vouched for
    # (no operator pin, no node verified at the domain's host) confirms nothing.
    assert not _confirms("alice.b.test", ALICE, confirmation=CONF)
    assert _confirms("alice.b.test", ALICE, confirmation=CONF, issuers=(NODE.did_key(),))
    assert not _confirms("alice.b.test", ALICE, confirmation=CONF, issuers=(OTHER.did_key(),))
    both = (OTHER.did_key(), NODE.did_key())
    assert _confirms("alice.b.test", ALICE, confirmation=CONF, issuers=both)
    assert domain_host(handle_domain("alice.b.test")) == "b.test"
    issuers = (NODE.did_key(),)
    # A confirmation names one handle and one DID.
    assert not _confirms("alice.b.test", MALLORY, confirmation=CONF, issuers=issuers)
    assert not _confirms("other.b.test", ALICE, confirmation=CONF, issuers=issuers)
    # The registry counts only under the node's own domains.
    assert not _confirms("alice.b.test", ALICE, registered=ALICE)


def test_shared_domain_registry_first_then_any_issuer() -> None:
    conf = HandleConfirmation.issue("carol.shared.test", ALICE, OTHER)
    shared_own = (".a.test", ".shared.test")
    assert _confirms("carol.shared.test", ALICE, confirmation=conf)
    assert _confirms("carol.shared.test", ALICE, confirmation=conf, own=shared_own)
    assert not _confirms(
        "carol.shared.test", ALICE, confirmation=conf, own=shared_own, registered=MALLORY
    )
    # Only what a node may register there: one label, not a reserved name.
    for handle in ("support.shared.test", "a.b.shared.test"):
        forged = HandleConfirmation.issue(handle, ALICE, OTHER)
        assert not _confirms(handle, ALICE, confirmation=forged)
