"""A negentropy session is bounded in rounds and time, on both sides: a hostile peer
cannot keep a node reconciling for ever (issue 12, open point)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pytest

from protocol.errors import NegentropyError
from protocol.negentropy import (
    MAX_ROUNDS,
    MAX_SESSION_SECONDS,
    Negentropy,
    NegentropyStorageVector,
)


def _storage(ids: Iterable[int], tag: bytes = b"") -> NegentropyStorageVector:
    s = NegentropyStorageVector()
    for i in ids:
        s.insert(i, hashlib.sha256(tag + i.to_bytes(8, "big")).digest())
    s.seal()
    return s


def _hostile_answer(n: int) -> bytes:
    """A server answer full of fingerprints that match nothing the client holds: the
    client splits each and asks again, for as long as the server keeps this up."""
    return Negentropy(_storage(range(1000), tag=n.to_bytes(4, "big"))).initiate()


def test_a_server_that_never_settles_cannot_keep_the_client() -> None:
    client = Negentropy(_storage(range(1000)), 500_000)
    msg: bytes | None = client.initiate()
    answers = 0
    while msg is not None and answers < 10 * MAX_ROUNDS:
        answers += 1
        msg = client.reconcile_client(_hostile_answer(answers)).next_message
    assert answers == MAX_ROUNDS  # old code: 1000, still asking
    assert client.stopped_early


def test_a_client_that_never_stops_is_refused_past_the_round_bound() -> None:
    server = Negentropy(_storage(range(1000)), 500_000)
    opener = Negentropy(_storage(range(1000), tag=b"x")).initiate()
    for _ in range(MAX_ROUNDS):
        assert server.reconcile(opener)
    with pytest.raises(NegentropyError, match="bound"):  # old code: answered for ever
        server.reconcile(opener)


def test_sessions_are_bounded_in_time_by_the_callers_clock() -> None:
    server = Negentropy(_storage(range(100)), 500_000)
    opener = Negentropy(_storage(range(100), tag=b"x")).initiate()
    server.reconcile(opener, now=1000.0)
    server.reconcile(opener, now=1000.0 + MAX_SESSION_SECONDS)  # exactly the bound: fine
    with pytest.raises(NegentropyError):
        server.reconcile(opener, now=1000.0 + MAX_SESSION_SECONDS + 0.001)

    client = Negentropy(_storage(range(1000)), 500_000)
    client.initiate(now=50.0)
    step = client.reconcile_client(_hostile_answer(1), now=50.0 + MAX_SESSION_SECONDS + 1)
    assert step.next_message is None
    assert client.stopped_early


def test_a_large_honest_difference_converges_over_bounded_sessions() -> None:
    # The server holds 3,000 items the client lacks; a small frame limit makes the
    # session long, and a bound of 3 rounds cuts it: each session's findings are real,
    # and once fetched the next session goes further.
    theirs = list(range(3000))
    ours: set[int] = set()
    server_items = _storage(range(3000))
    by_id = {hashlib.sha256(i.to_bytes(8, "big")).digest(): i for i in theirs}
    sessions = 0
    while len(ours) < len(theirs):
        sessions += 1
        assert sessions < 50
        client = Negentropy(_storage(sorted(ours)), 4096, max_rounds=3)
        server = Negentropy(server_items, 4096, max_rounds=3)
        msg: bytes | None = client.initiate()
        need: list[bytes] = []
        while msg is not None:
            step = client.reconcile_client(server.reconcile(msg))
            need.extend(step.need_ids)
            msg = step.next_message
        found = {by_id[i] for i in need}
        assert found  # progress
        assert not found & ours  # only real differences
        ours |= found
    assert sessions > 1  # the bound did cut sessions short
