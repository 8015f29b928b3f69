"""Plumtree epidemic broadcast trees, sans-IO.

This is the state machine of Leitão, Pereira and Rodrigues, "Epidemic Broadcast
Trees" (SRDS 2007), for the node's gossip layer. Every peer is either *eager* (it
gets the whole payload pushed at once) or *lazy* (it only gets the id, in a batched
IHAVE). The eager links form a spanning tree: a duplicate push shows a redundant
eager link, which is PRUNEd to lazy; an id announced by IHAVE whose payload does not
arrive in time shows a broken tree, which is repaired by a GRAFT to the announcer.
New peers start eager, as in the paper.

The IO shell feeds in what peers send (:meth:`Plumtree.on_push`, ``on_ihave``,
``on_graft``, ``on_prune``), calls :meth:`Plumtree.tick` at
:meth:`Plumtree.next_deadline`, and carries out the returned actions in order
(``SendPush``, ``SendIHave``, ``SendGraft``, ``SendPrune``, ``Deliver``). Time is
passed in as ``now`` (seconds, from a monotonic clock); the ``random.Random`` only
shuffles the order of eager pushes, so no neighbour is always served first.

What it refuses, or leaves to the caller:

* Payloads are opaque. The caller validates each one *before* calling
  :meth:`Plumtree.on_push`, and passes ``valid=False`` for a message that fails: its
  id is then recorded as seen-bad, so it is neither delivered, forwarded nor
  re-requested. Only do that when the payload really is the message its id names
  (ids are content hashes and the hash matched, but the signature did not): marking
  the id of a *mismatched* payload as bad would let a forger block the real message.
* Wire decoding and frame size bounds are the caller's job, as is reacting to peers
  that send garbage. Misuse by this process -- a message from a peer that was never
  added (or was removed), adding a peer twice, broadcasting an id already seen, bad
  constructor arguments -- raises :class:`~protocol.errors.LocalProtocolError`.
  The shell must drop frames still queued from a peer after :meth:`remove_peer`.
* Everything is bounded: the seen set and the payload cache are LRUs (oldest out);
  at most ``max_announcers`` announcers are remembered per missing id; at most
  ``max_missing`` ids wait on timers (further IHAVEs for new ids are ignored until
  some expire -- every entry expires after at most ``ihave_timeout + max_announcers *
  graft_timeout``); each lazy peer's IHAVE queue holds at most ``max_ihave_queue``
  ids (oldest dropped); one IHAVE or GRAFT carries at most ``max_ids_per_message``
  ids. What falls off these bounds is left to anti-entropy (negentropy), not gossip.
  (With ``graft_passes`` > 1 the time bound becomes ``ihave_timeout + max_announcers
  * graft_timeout * (2 ** graft_passes - 1)``: see below.)
* On a link that can lose messages, a GRAFT or the push answering it can vanish, and
  with one announcer (common on sparse graphs) the paper's rule gives up after one
  try. ``graft_passes`` (default 1, the paper) asks the announcers again in further
  passes, each waiting twice as long per announcer as the one before, so a lost
  graft costs a fraction of a second instead of a wait for anti-entropy.
* The paper's optional tree optimisation (swap an eager link for a lazy one that
  announced the message several rounds earlier) is not done; ``round`` is carried
  and forwarded so a later version can.
* There is one tree for all origins, as in the paper. When posts from different
  origins are closer together than the tree's latency, their duplicates prune
  different edges of the same cycle, and the tree is cut and re-grafted over and over
  (more copies, and some deliveries wait for a GRAFT). Keeping eager/lazy per origin,
  as riak_core's plumtree does, would need the origin on the wire.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.errors import LocalProtocolError

__all__ = [
    "Action",
    "Deliver",
    "Plumtree",
    "PlumtreeStats",
    "SendGraft",
    "SendIHave",
    "SendPrune",
    "SendPush",
]


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendPush:
    """Send the whole message to ``peer`` (the paper's GOSSIP)."""

    peer: str
    msg_id: bytes
    payload: bytes
    round: int


@dataclass(frozen=True, slots=True)
class SendIHave:
    """Tell lazy ``peer`` which messages we have, without their payloads."""

    peer: str
    msg_ids: tuple[bytes, ...]
    round: int


@dataclass(frozen=True, slots=True)
class SendGraft:
    """Ask ``peer`` for these messages and to push to us eagerly from now on."""

    peer: str
    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SendPrune:
    """Tell ``peer`` to stop pushing to us eagerly (it becomes a lazy link)."""

    peer: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a new message to the application. ``sender`` is the peer that pushed it."""

    msg_id: bytes
    payload: bytes
    sender: str | None


Action = SendPush | SendIHave | SendGraft | SendPrune | Deliver


@dataclass(frozen=True, slots=True)
class PlumtreeStats:
    """Counters since construction (for metrics and the benchmark).

    ``delivered + duplicates`` is the number of payload copies received, so
    ``(delivered + duplicates) / delivered`` is copies per delivered message.
    """

    delivered: int
    duplicates: int
    invalid: int
    pushes_sent: int
    ihaves_sent: int
    grafts_sent: int
    prunes_sent: int


# ---------------------------------------------------------------------------- internals


@dataclass(slots=True)
class _Missing:
    """An id announced by IHAVE whose payload has not arrived: who has it, and when to ask."""

    deadline: float
    seq: int
    announcers: deque[str] = field(default_factory=deque)
    asked: deque[str] = field(default_factory=deque)
    passes: int = 0


# ---------------------------------------------------------------------------- machine


class Plumtree:
    """One node's Plumtree state. See the module docstring for the contract."""

    def __init__(
        self,
        *,
        ihave_timeout: float = 0.5,
        graft_timeout: float = 0.25,
        seen_capacity: int = 100_000,
        cache_capacity: int = 10_000,
        ihave_batch_delay: float = 0.05,
        rng: random.Random,
        max_announcers: int = 8,
        max_missing: int = 10_000,
        max_ihave_queue: int = 4096,
        max_ids_per_message: int = 256,
        graft_passes: int = 1,
    ) -> None:
        for name, value in (
            ("ihave_timeout", ihave_timeout),
            ("graft_timeout", graft_timeout),
        ):
            if not value > 0:
                raise LocalProtocolError(f"{name} must be > 0, got {value!r}")
        if not ihave_batch_delay >= 0:
            raise LocalProtocolError(f"ihave_batch_delay must be >= 0, got {ihave_batch_delay!r}")
        for name, count in (
            ("seen_capacity", seen_capacity),
            ("cache_capacity", cache_capacity),
            ("max_announcers", max_announcers),
            ("max_missing", max_missing),
            ("max_ihave_queue", max_ihave_queue),
            ("max_ids_per_message", max_ids_per_message),
            ("graft_passes", graft_passes),
        ):
            if count < 1:
                raise LocalProtocolError(f"{name} must be >= 1, got {count!r}")
        if not isinstance(rng, random.Random):
            raise LocalProtocolError("rng must be a random.Random")
        self._ihave_timeout = ihave_timeout
        self._graft_timeout = graft_timeout
        self._seen_capacity = seen_capacity
        self._cache_capacity = cache_capacity
        self._ihave_batch_delay = ihave_batch_delay
        self._rng = rng
        self._max_announcers = max_announcers
        self._max_missing = max_missing
        self._max_ihave_queue = max_ihave_queue
        self._max_ids = max_ids_per_message
        self._graft_passes = graft_passes

        # peer -> eager? Dicts, not sets: iteration follows insertion, so output does
        # not depend on PYTHONHASHSEED.
        self._peers: dict[str, bool] = {}
        # msg_id -> True if it was valid. Bad ids stay here so they are never re-requested.
        self._seen: OrderedDict[bytes, bool] = OrderedDict()
        # msg_id -> (payload, round we forward it with), for answering GRAFTs.
        self._cache: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        # lazy peer -> {msg_id: round}, flushed as IHAVEs at _ihave_due.
        self._ihave_queue: dict[str, dict[bytes, int]] = {}
        self._ihave_due: float | None = None
        self._missing: dict[bytes, _Missing] = {}
        # (deadline, seq, msg_id); entries whose seq no longer matches _missing are stale.
        self._timers: list[tuple[float, int, bytes]] = []
        self._seq = 0

        self._delivered = 0
        self._duplicates = 0
        self._invalid = 0
        self._pushes_sent = 0
        self._ihaves_sent = 0
        self._grafts_sent = 0
        self._prunes_sent = 0

    # ------------------------------------------------------------------ peers

    @property
    def eager_peers(self) -> frozenset[str]:
        """Peers we push payloads to (a snapshot)."""
        return frozenset(p for p, eager in self._peers.items() if eager)

    @property
    def lazy_peers(self) -> frozenset[str]:
        """Peers we only send IHAVEs to (a snapshot)."""
        return frozenset(p for p, eager in self._peers.items() if not eager)

    def add_peer(self, peer: str) -> None:
        """A neighbour came up. It starts eager: the paper's rule, so it joins the tree."""
        if peer in self._peers:
            raise LocalProtocolError(f"peer {peer!r} added twice")
        self._peers[peer] = True

    def remove_peer(self, peer: str) -> None:
        """A neighbour went away: forget it, its queued IHAVEs and its announcements."""
        if peer not in self._peers:
            raise LocalProtocolError(f"unknown peer {peer!r}")
        del self._peers[peer]
        self._ihave_queue.pop(peer, None)
        if not self._ihave_queue:
            self._ihave_due = None
        for entry in self._missing.values():
            while peer in entry.announcers:
                entry.announcers.remove(peer)
            while peer in entry.asked:
                entry.asked.remove(peer)
        # An entry left without announcers is dropped when its timer fires.

    # ------------------------------------------------------------------ inputs

    def broadcast(self, msg_id: bytes, payload: bytes, now: float) -> list[Action]:
        """Start spreading a message that originates here. No Deliver: the caller has it."""
        if msg_id in self._seen:
            raise LocalProtocolError(f"broadcast of an id already seen: {msg_id.hex()}")
        self._mark_seen(msg_id, valid=True)
        self._cancel_missing(msg_id)
        actions: list[Action] = []
        self._spread(msg_id, payload, 0, None, now, actions)
        return actions

    def on_push(
        self,
        peer: str,
        msg_id: bytes,
        payload: bytes,
        round: int,
        now: float,
        *,
        valid: bool = True,
    ) -> list[Action]:
        """``peer`` pushed a whole message. The caller has already validated it."""
        self._require_peer(peer)
        if not valid:
            # Neither delivered nor forwarded, and never asked for again. The tree is
            # left alone: dealing with a peer that sends junk is the caller's business.
            self._invalid += 1
            if msg_id not in self._seen:
                self._mark_seen(msg_id, valid=False)
                self._cancel_missing(msg_id)
            return []
        if msg_id in self._seen:
            self._duplicates += 1
            self._seen.move_to_end(msg_id)
            # Two paths reached us: the tree has a redundant edge. Cut this one.
            self._peers[peer] = False
            self._prunes_sent += 1
            return [SendPrune(peer)]
        self._mark_seen(msg_id, valid=True)
        self._cancel_missing(msg_id)
        self._delivered += 1
        # The sender is our parent on the tree for this message: keep that link eager.
        self._peers[peer] = True
        actions: list[Action] = [Deliver(msg_id, payload, peer)]
        self._spread(msg_id, payload, round + 1, peer, now, actions)
        return actions

    def on_ihave(self, peer: str, msg_ids: Sequence[bytes], round: int, now: float) -> list[Action]:
        """``peer`` has these messages. Wait ``ihave_timeout`` for them, then GRAFT.

        ``round`` is accepted for the wire's sake; without the tree optimisation it is
        not used.
        """
        self._require_peer(peer)
        for msg_id in msg_ids:
            if msg_id in self._seen:
                continue
            entry = self._missing.get(msg_id)
            if entry is None:
                if len(self._missing) >= self._max_missing:
                    continue
                entry = _Missing(deadline=now + self._ihave_timeout, seq=self._next_seq())
                self._missing[msg_id] = entry
                self._push_timer(entry, msg_id)
            if peer not in entry.announcers and len(entry.announcers) < self._max_announcers:
                entry.announcers.append(peer)
        return []

    def on_graft(self, peer: str, msg_ids: Sequence[bytes], now: float) -> list[Action]:
        """``peer`` wants these messages and eager pushes from now on."""
        self._require_peer(peer)
        self._peers[peer] = True
        actions: list[Action] = []
        for msg_id in msg_ids:
            cached = self._cache.get(msg_id)
            if cached is not None:
                payload, fwd_round = cached
                actions.append(SendPush(peer, msg_id, payload, fwd_round))
        self._pushes_sent += len(actions)
        return actions

    def on_prune(self, peer: str) -> list[Action]:
        """``peer`` already gets our messages another way: only announce to it from now on."""
        self._require_peer(peer)
        self._peers[peer] = False
        return []

    def tick(self, now: float) -> list[Action]:
        """Flush due IHAVE batches and fire due missing-message timers."""
        actions: list[Action] = []
        if self._ihave_due is not None and now >= self._ihave_due:
            self._flush_ihaves(actions)

        grafts: dict[str, list[bytes]] = {}
        while self._timers and self._timers[0][0] <= now:
            _, seq, msg_id = heapq.heappop(self._timers)
            entry = self._missing.get(msg_id)
            if entry is None or entry.seq != seq:
                continue
            if not entry.announcers and entry.asked and entry.passes + 1 < self._graft_passes:
                # A graft or its answer may have been lost: ask them all again, with
                # twice the patience.
                entry.announcers = deque(dict.fromkeys(entry.asked))
                entry.asked.clear()
                entry.passes += 1
            if not entry.announcers:
                # Everyone who announced it was asked (or left); anti-entropy's turn.
                del self._missing[msg_id]
                continue
            # The paper's rule: ask the first announcer, and give it graft_timeout
            # before moving on to the next one.
            announcer = entry.announcers.popleft()
            entry.asked.append(announcer)
            self._peers[announcer] = True
            grafts.setdefault(announcer, []).append(msg_id)
            entry.deadline = now + self._graft_timeout * 2**entry.passes
            entry.seq = self._next_seq()
            self._push_timer(entry, msg_id)
        for peer, ids in grafts.items():
            for start in range(0, len(ids), self._max_ids):
                actions.append(SendGraft(peer, tuple(ids[start : start + self._max_ids])))
                self._grafts_sent += 1
        return actions

    # ------------------------------------------------------------------ queries

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work, or None if nothing is pending."""
        # Drop cancelled timers from the top so the IO loop does not wake for nothing.
        while self._timers:
            _, seq, msg_id = self._timers[0]
            entry = self._missing.get(msg_id)
            if entry is not None and entry.seq == seq:
                break
            heapq.heappop(self._timers)
        candidates = [t for t in (self._ihave_due,) if t is not None]
        if self._timers:
            candidates.append(self._timers[0][0])
        return min(candidates) if candidates else None

    def has_seen(self, msg_id: bytes) -> bool:
        """True if the id was broadcast, received (valid or not) and not yet evicted."""
        return msg_id in self._seen

    @property
    def stats(self) -> PlumtreeStats:
        return PlumtreeStats(
            delivered=self._delivered,
            duplicates=self._duplicates,
            invalid=self._invalid,
            pushes_sent=self._pushes_sent,
            ihaves_sent=self._ihaves_sent,
            grafts_sent=self._grafts_sent,
            prunes_sent=self._prunes_sent,
        )

    # ------------------------------------------------------------------ helpers

    def _require_peer(self, peer: str) -> None:
        if peer not in self._peers:
            raise LocalProtocolError(f"message from unknown peer {peer!r}")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _mark_seen(self, msg_id: bytes, *, valid: bool) -> None:
        self._seen[msg_id] = valid
        if len(self._seen) > self._seen_capacity:
            self._seen.popitem(last=False)

    def _cancel_missing(self, msg_id: bytes) -> None:
        # Its heap entry goes stale and is skipped; a GRAFT already sent is not undone
        # (its answer will be a duplicate, which prunes that link again).
        self._missing.pop(msg_id, None)

    def _push_timer(self, entry: _Missing, msg_id: bytes) -> None:
        heapq.heappush(self._timers, (entry.deadline, entry.seq, msg_id))
        # Cancelled timers linger until their deadline; rebuild when they dominate so
        # the heap stays proportional to the live entries.
        if len(self._timers) > 2 * len(self._missing) + 64:
            self._timers = [(e.deadline, e.seq, i) for i, e in self._missing.items()]
            heapq.heapify(self._timers)

    def _spread(
        self,
        msg_id: bytes,
        payload: bytes,
        fwd_round: int,
        sender: str | None,
        now: float,
        actions: list[Action],
    ) -> None:
        self._cache[msg_id] = (payload, fwd_round)
        if len(self._cache) > self._cache_capacity:
            self._cache.popitem(last=False)
        eager = [p for p, is_eager in self._peers.items() if is_eager and p != sender]
        self._rng.shuffle(eager)
        actions.extend(SendPush(p, msg_id, payload, fwd_round) for p in eager)
        self._pushes_sent += len(eager)
        for peer, is_eager in self._peers.items():
            if is_eager or peer == sender:
                continue
            queue = self._ihave_queue.setdefault(peer, {})
            queue[msg_id] = fwd_round
            if len(queue) > self._max_ihave_queue:
                del queue[next(iter(queue))]
            if self._ihave_due is None:
                self._ihave_due = now + self._ihave_batch_delay

    def _flush_ihaves(self, actions: list[Action]) -> None:
        for peer, queue in self._ihave_queue.items():
            items = list(queue.items())
            for start in range(0, len(items), self._max_ids):
                chunk = items[start : start + self._max_ids]
                # One round per message: the largest, so the batch never looks like a
                # shorter path than any of its ids took.
                actions.append(
                    SendIHave(peer, tuple(i for i, _ in chunk), max(r for _, r in chunk))
                )
                self._ihaves_sent += 1
        self._ihave_queue.clear()
        self._ihave_due = None
