"""Rate limits: per-account write points, and a per-client token bucket.

:class:`WriteLimiter` follows the atproto PDS points scheme: a create costs 3 points,
an update 2, a delete 1 (:func:`write_points`), and an account may spend 5,000 points
an hour and 35,000 a day; both windows are enforced. Answers carry the headers the
atproto PDS sends (``RateLimit-Limit``, ``-Remaining``, ``-Reset`` in epoch seconds,
``-Policy`` like ``5000;w=3600``), describing the tighter window.

The windows slide, in slices. Each window is cut into ``slices`` equal slices (60: one
minute for the hour, 24 minutes for the day) and points are added to the slice they
were spent in; a slice leaves the window once all of it is older than the window. So a
point counts against a window for between W and W + W/slices, and no true W-long span
ever holds more than the limit. The atproto PDS uses fixed windows (rate-limiter-
flexible), which let a client spend twice the limit across a boundary; an exact sliding
log would hold one entry per write (35,000 for a busy account). Slices cost at most
2 x ``slices`` small entries per account and never let the limit be exceeded.

:class:`RequestLimiter` is a plain token bucket per key (client address, see
:func:`client_key`) for unauthenticated endpoints such as createSession and
createAccount, to slow password guessing.

:class:`LoginLimiter` adds a limit per account, so guesses spread over many addresses
are slowed too: failed logins to one account from addresses that have never logged
in to it share one bucket (``failures`` at once, one more every ``refill`` seconds).
While it is empty such addresses are refused (429) before the password is looked
at. Addresses that have logged in to the account before are not held to it, and
are remembered across restarts (as keyed hashes, not addresses), so an attacker who
keeps the bucket empty cannot lock the owner out of the devices and networks they
use; a session they hold is not affected either (refreshSession is not a login).

What it refuses: a batch that does not fit in either window is refused whole and
consumes nothing (:class:`RateLimited`, ``RateLimitExceeded``, 429, with the headers
and a ``Retry-After``). Memory is bounded: accounts and keys whose usage has drained
are evicted, and past ``max_accounts`` / ``max_keys`` the least recently seen is
forgotten (which forgives its usage; an attacker needs that many accounts or
addresses to force it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "WRITE_POINTS",
    "LimitState",
    "LoginLimiter",
    "RateLimited",
    "RequestLimiter",
    "WriteLimiter",
    "client_key",
    "write_points",
]

WRITE_POINTS: Final[Mapping[str, int]] = MappingProxyType({"create": 3, "update": 2, "delete": 1})

HOUR: Final = 3600
DAY: Final = 86400


def write_points(actions: Iterable[str]) -> int:
    """Points a batch of writes costs (``"create"`` 3, ``"update"`` 2, ``"delete"`` 1)."""
    total = 0
    for action in actions:
        try:
            total += WRITE_POINTS[action]
        except KeyError:
            raise LocalProtocolError(f"unknown write action {action!r}") from None
    return total


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where a client stands in one limit window, as response headers describe it.

    ``reset`` is the epoch second by which the window will have drained completely;
    until then at least ``remaining`` more points may be spent.
    """

    limit: int
    remaining: int
    reset: int
    window: int

    @property
    def policy(self) -> str:
        return f"{self.limit};w={self.window}"

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": self.policy,
        }


class RateLimited(RemoteProtocolError):
    """Over a rate limit. ``headers`` are what to answer with (RateLimit-* and
    Retry-After); ``retry_after`` is seconds until the refused request would fit."""

    error = "RateLimitExceeded"
    status = 429

    def __init__(self, message: str, state: LimitState, retry_after: int):
        super().__init__(message)
        self.state = state
        self.retry_after = retry_after
        self.headers = {**state.headers(), "Retry-After": str(retry_after)}


# --- write points ----------------------------------------------------------------------


class _Window:
    """One account's usage in one sliding window: points per slice, oldest first."""

    __slots__ = ("slices", "total")

    def __init__(self) -> None:
        self.slices: deque[list[int]] = deque()  # [slice index, points]
        self.total = 0


@dataclass(frozen=True, slots=True)
class _Policy:
    limit: int
    length: int
    width: float  # length / slices

    def expiry(self, index: int) -> float:
        """Monotonic time at which slice ``index`` leaves the window."""
        return (index + 1) * self.width + self.length

    def expire(self, usage: _Window, now: float) -> None:
        while usage.slices and self.expiry(usage.slices[0][0]) <= now:
            usage.total -= usage.slices.popleft()[1]

    def wait(self, usage: _Window, points: int, now: float) -> float:
        """Seconds until ``points`` more fit (after :meth:`expire`); a batch larger than
        the limit never fits, and is told to wait a whole window."""
        excess = usage.total + points - self.limit
        if excess <= 0:
            return 0.0
        if points > self.limit:
            return self.length + self.width
        for index, spent in usage.slices:
            excess -= spent
            if excess <= 0:
                return self.expiry(index) - now
        raise AssertionError("unreachable: the window drains completely")


class WriteLimiter:
    """Per-account write points over an hourly and a daily sliding window.

    ``clock`` is monotonic seconds; ``wall_clock`` (epoch seconds) only turns times into
    ``RateLimit-Reset`` values.
    """

    def __init__(
        self,
        hourly: int = 5000,
        daily: int = 35000,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        slices: int = 60,
        max_accounts: int = 10_000,
    ) -> None:
        if hourly <= 0 or daily <= 0 or slices <= 0 or max_accounts <= 0:
            raise LocalProtocolError("limits, slices and max_accounts must be positive")
        self._policies = (
            _Policy(hourly, HOUR, HOUR / slices),
            _Policy(daily, DAY, DAY / slices),
        )
        self._clock = clock
        self._wall = wall_clock
        self._max_accounts = max_accounts
        self._accounts: OrderedDict[str, tuple[_Window, _Window]] = OrderedDict()

    def __len__(self) -> int:
        """Accounts currently tracked."""
        return len(self._accounts)

    def _state(self, policy: _Policy, usage: _Window, now: float, wall: float) -> LimitState:
        drained = policy.expiry(usage.slices[-1][0]) if usage.slices else now
        return LimitState(
            limit=policy.limit,
            remaining=max(0, policy.limit - usage.total),
            reset=math.ceil(wall + drained - now),
            window=policy.length,
        )

    def check_and_consume(self, did: str, points: int) -> LimitState:
        """Spend ``points`` for ``did`` if both windows allow it, else spend nothing and
        raise :class:`RateLimited`. Returns the tighter window's state after spending."""
        if type(points) is not int or points < 0:
            raise LocalProtocolError(f"points must be a non-negative int, not {points!r}")
        now = self._clock()
        wall = self._wall()
        self._evict(now)
        windows = self._accounts.get(did)
        if windows is None:
            windows = (_Window(), _Window())
            self._accounts[did] = windows
            while len(self._accounts) > self._max_accounts:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(did)
        for policy, usage in zip(self._policies, windows, strict=True):
            policy.expire(usage, now)

        # Refuse on the window that makes the client wait longest.
        waits = [
            (p.wait(u, points, now), p, u) for p, u in zip(self._policies, windows, strict=True)
        ]
        wait, policy, usage = max(waits, key=lambda w: w[0])
        if wait > 0:
            raise RateLimited(
                f"write rate limit exceeded ({policy.limit} points per {policy.length} s)",
                self._state(policy, usage, now, wall),
                max(1, math.ceil(wait)),
            )

        if points:
            for policy, usage in zip(self._policies, windows, strict=True):
                index = math.floor(now / policy.width)
                if usage.slices and usage.slices[-1][0] == index:
                    usage.slices[-1][1] += points
                else:
                    usage.slices.append([index, points])
                usage.total += points
        # Like the atproto PDS, report the window with the fewest points left.
        states = [
            self._state(p, u, now, wall) for p, u in zip(self._policies, windows, strict=True)
        ]
        return min(states, key=lambda s: s.remaining)

    def _evict(self, now: float) -> None:
        # The least recently used account is at the front; drop it while it has drained.
        # Bounded work per call: at most a few drained accounts, plus the hard cap.
        for _ in range(4):
            if not self._accounts:
                break
            did, windows = next(iter(self._accounts.items()))
            for policy, usage in zip(self._policies, windows, strict=True):
                policy.expire(usage, now)
            if any(usage.total for usage in windows):
                break
            del self._accounts[did]


# --- per-client token bucket -------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


def client_key(address: str) -> str:
    """The rate-limit key for a client address: IPv4 as is, IPv6 by its /64.

    One IPv6 host usually holds a whole /64, so keying by full address would hand it
    2^64 buckets. Something that is not an IP address is returned unchanged.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RequestLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second.

    For endpoints without an account to charge (createSession, createAccount); key it by
    :func:`client_key` of the peer address.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_keys: int = 100_000,
    ) -> None:
        if not rate > 0 or burst < 1 or max_keys <= 0:
            raise LocalProtocolError("rate, burst and max_keys must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._wall = wall_clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Seconds for an empty bucket to refill; the policy's window.
        self._window = max(1, math.ceil(burst / rate))

    def __len__(self) -> int:
        """Keys currently tracked."""
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        if now > bucket.updated:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now

    def _state(self, bucket: _Bucket, now: float) -> LimitState:
        full_in = (self.burst - bucket.tokens) / self.rate
        return LimitState(
            limit=self.burst,
            remaining=math.floor(bucket.tokens),
            reset=math.ceil(self._wall() + full_in),
            window=self._window,
        )

    def peek(self, key: str, cost: float = 1.0) -> None:
        """Raise :class:`RateLimited` if ``key`` could not take ``cost`` now; takes
        nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        now = self._clock()
        self._refill(bucket, now)
        if bucket.tokens < cost:
            retry = (cost - bucket.tokens) / self.rate
            raise RateLimited(
                "too many requests", self._state(bucket, now), max(1, math.ceil(retry))
            )

    def check(self, key: str, cost: float = 1.0) -> LimitState:
        """Take ``cost`` tokens from ``key``'s bucket or raise :class:`RateLimited`
        (taking nothing)."""
        if not 0 < cost <= self.burst:
            raise LocalProtocolError(f"cost must be in (0, burst], not {cost!r}")
        now = self._clock()
        self._evict(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        if bucket.tokens < cost:
            retry = (cost - bucket.tokens) / self.rate
            raise RateLimited(
                "too many requests", self._state(bucket, now), max(1, math.ceil(retry))
            )
        bucket.tokens -= cost
        return self._state(bucket, now)

    def _evict(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket.
        for _ in range(4):
            if not self._buckets:
                break
            key, bucket = next(iter(self._buckets.items()))
            self._refill(bucket, now)
            if bucket.tokens < self.burst:
                break
            del self._buckets[key]


# --- failed logins per account -------------------------------------------------------------

#: Addresses remembered per account as having logged in to it (the oldest forgotten).
KNOWN_ADDRESSES_PER_ACCOUNT: Final = 16


class LoginLimiter:
    """Failed logins per account from addresses new to it (see the module docstring).

    ``secret`` keys the hashes under which known addresses are kept; ``load`` and
    ``save`` (optional, async) read and write an account's known set as bytes, so it
    survives a restart. Memory: at most ``max_accounts`` accounts' buckets and
    known sets, the least recently seen forgotten first.
    """

    def __init__(
        self,
        failures: int,
        refill: float,
        *,
        secret: bytes,
        load: Callable[[str], Awaitable[bytes | None]] | None = None,
        save: Callable[[str, bytes], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_accounts: int = 100_000,
    ) -> None:
        if failures < 1 or not refill > 0:
            raise LocalProtocolError("failures and refill must be positive")
        self._failures = RequestLimiter(
            1.0 / refill, failures, clock=clock, wall_clock=wall_clock, max_keys=max_accounts
        )
        self._secret = secret
        self._load = load
        self._save = save
        self._max_accounts = max_accounts
        self._known: OrderedDict[str, list[bytes]] = OrderedDict()

    def _tag(self, address: str) -> bytes:
        return hmac.new(self._secret, address.encode(), hashlib.sha256).digest()[:16]

    async def _known_set(self, account: str) -> list[bytes]:
        known = self._known.get(account)
        if known is None:
            raw = (await self._load(account) if self._load is not None else None) or b""
            known = [raw[i : i + 16] for i in range(0, len(raw), 16)]
            self._known[account] = known
            while len(self._known) > self._max_accounts:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(account)
        return known

    async def check(self, account: str, address: str) -> None:
        """Raise :class:`RateLimited` if ``address`` (a :func:`client_key`) has never
        logged in to ``account`` and the account's failure budget is spent."""
        try:
            self._failures.peek(account)
        except RateLimited:
            if self._tag(address) not in await self._known_set(account):
                raise

    async def failed(self, account: str, address: str) -> None:
        """A wrong password for ``account`` from ``address``."""
        if self._tag(address) in await self._known_set(account):
            return  # the owner's own typo does not spend the budget strangers share
        with contextlib.suppress(RateLimited):  # spent already: check() refuses the next
            self._failures.check(account)

    async def succeeded(self, account: str, address: str) -> None:
        """``address`` logged in to ``account``: from now on it is known there."""
        tag = self._tag(address)
        known = await self._known_set(account)
        if tag in known:
            return
        known.append(tag)
        del known[:-KNOWN_ADDRESSES_PER_ACCOUNT]
        if self._save is not None:
            await self._save(account, b"".join(known))
