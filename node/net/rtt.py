"""How long to wait for an answer on one peer link: a round-trip estimator.

A peer link is one WebSocket over TCP, which never loses a message while it is up;
but a proxy, a middlebox that drops frames, or a peer that sheds load can make a
request or a negentropy message vanish on a live link. Waiting a fixed 30 s for each
such loss stalled reconciliation for that long, so the link sizes its waits from
the round trips it observes, the way TCP sizes its retransmission timer (RFC 6298):
a smoothed round trip plus four times its mean deviation, clamped between a floor and
a ceiling, doubled after every timeout until a clean sample arrives (Karn's rule:
an answer to a repeated request is not a sample, since it is unknown which copy it
answers). Unlike TCP's, the doubling stops at 8 times the estimate, and several waits
running out within one wait count once: many requests share a link, and a burst of
losses on it must not leave every later request waiting the ceiling.

Clock-free: the caller measures and passes in seconds. Refuses nonsense (a negative
sample, a floor above the ceiling).
"""

from __future__ import annotations

__all__ = ["RttEstimator"]

_ALPHA = 1 / 8  # RFC 6298's gain for the smoothed round trip
_BETA = 1 / 4  # ... and for its mean deviation
_K = 4
_MAX_BACKOFF = 8


class RttEstimator:
    """Smoothed round trip of one link, and the wait it implies."""

    __slots__ = (
        "_backed_off_at",
        "_base",
        "_ceiling",
        "_factor",
        "_floor",
        "rttvar",
        "samples",
        "srtt",
    )

    def __init__(self, *, initial: float = 2.0, floor: float = 1.0, ceiling: float = 30.0):
        if not 0 < floor <= ceiling:
            raise ValueError(f"need 0 < floor <= ceiling, got {floor!r} and {ceiling!r}")
        self._floor = floor
        self._ceiling = ceiling
        self._base = min(max(initial, floor), ceiling)
        self._factor = 1
        self._backed_off_at: float | None = None
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    @property
    def timeout(self) -> float:
        """How long to wait for an answer before asking again."""
        return min(self._base * self._factor, self._ceiling)

    def sample(self, seconds: float) -> None:
        """An answer came ``seconds`` after a request that was sent once."""
        if seconds < 0:
            raise ValueError(f"a round trip cannot be negative: {seconds!r}")
        if self.srtt is None:
            self.srtt = seconds
            self.rttvar = seconds / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - seconds)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * seconds
        self.samples += 1
        self._base = min(max(self.srtt + _K * self.rttvar, self._floor), self._ceiling)
        self._factor = 1
        self._backed_off_at = None

    def backoff(self, now: float) -> None:
        """A wait ran out at ``now`` (seconds, any monotonic clock): wait twice as long
        next time, up to 8 times the estimate and the ceiling, until a clean sample
        says otherwise. Another wait running out less than a wait later (a request
        sent at about the same time) does not double it again."""
        if self._backed_off_at is not None and now - self._backed_off_at < self.timeout:
            return
        self._backed_off_at = now
        self._factor = min(self._factor * 2, _MAX_BACKOFF)
