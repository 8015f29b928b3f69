"""node.server.ratelimit: write points over sliding hour/day windows, and per-client buckets."""

from __future__ import annotations

import pytest

from node.server.ratelimit import (
    WRITE_POINTS,
    LimitState,
    LoginLimiter,
    RateLimited,
    RequestLimiter,
    WriteLimiter,
    client_key,
    write_points,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError

ALICE = "did:plc:alice2345alice2345alice2"
BOB = "did:plc:bob2345bob2345bob2345bo"
WALL0 = 1_700_000_000.0


class FakeClock:
    """A monotonic clock and the matching wall clock, moved together."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> WriteLimiter:
    return WriteLimiter(clock=clock, wall_clock=clock.wall)


def test_write_points() -> None:
    assert dict(WRITE_POINTS) == {"create": 3, "update": 2, "delete": 1}
    assert write_points(["create", "update", "delete", "create"]) == 9
    assert write_points([]) == 0
    with pytest.raises(LocalProtocolError):
        write_points(["upsert"])


def test_headers(limiter: WriteLimiter) -> None:
    state = limiter.check_and_consume(ALICE, 3)
    # The hour is the tighter window; its newest slice (minute 0) leaves at 3660 s.
    assert state == LimitState(limit=5000, remaining=4997, reset=int(WALL0) + 3660, window=3600)
    assert state.headers() == {
        "RateLimit-Limit": "5000",
        "RateLimit-Remaining": "4997",
        "RateLimit-Reset": str(int(WALL0) + 3660),
        "RateLimit-Policy": "5000;w=3600",
    }


def test_exactly_the_limit_then_one_more(limiter: WriteLimiter) -> None:
    for _ in range(1666):
        limiter.check_and_consume(ALICE, 3)
    state = limiter.check_and_consume(ALICE, 2)  # 4998 + 2 = 5000 exactly
    assert state.remaining == 0
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 1)
    e = info.value
    assert isinstance(e, RemoteProtocolError)
    assert e.error == "RateLimitExceeded"
    assert e.status == 429
    assert e.headers["RateLimit-Limit"] == "5000"
    assert e.headers["RateLimit-Remaining"] == "0"
    assert e.headers["RateLimit-Policy"] == "5000;w=3600"
    assert e.headers["RateLimit-Reset"] == str(int(WALL0) + 3660)
    assert e.headers["Retry-After"] == "3660"
    assert e.retry_after == 3660
    # Other accounts are not affected.
    assert limiter.check_and_consume(BOB, 3).remaining == 4997


def test_refused_batch_consumes_nothing(limiter: WriteLimiter) -> None:
    limiter.check_and_consume(ALICE, 4998)
    with pytest.raises(RateLimited):
        limiter.check_and_consume(ALICE, 3)
    assert limiter.check_and_consume(ALICE, 2).remaining == 0


def test_window_rolls_over(limiter: WriteLimiter, clock: FakeClock) -> None:
    clock.now = 10.0  # in the minute-slice [0, 60)
    limiter.check_and_consume(ALICE, 5000)
    clock.now = 3600.0  # an hour later, but the slice is not yet wholly out
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 1)
    assert info.value.retry_after == 60
    clock.now = 3659.999
    with pytest.raises(RateLimited):
        limiter.check_and_consume(ALICE, 1)
    clock.now = 3660.0
    assert limiter.check_and_consume(ALICE, 5000).remaining == 0


def test_window_slides_rather_than_resets(limiter: WriteLimiter, clock: FakeClock) -> None:
    limiter.check_and_consume(ALICE, 2500)  # minute 0
    clock.now = 1800.0
    limiter.check_and_consume(ALICE, 2500)  # minute 30
    clock.now = 3660.0  # minute 0's points have left; minute 30's have not
    state = limiter.check_and_consume(ALICE, 2500)
    assert state.remaining == 0
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 1)
    assert info.value.retry_after == 1860 + 3600 - 3660  # when minute 30 leaves


def test_daily_limit(clock: FakeClock) -> None:
    limiter = WriteLimiter(hourly=10, daily=25, clock=clock, wall_clock=clock.wall)
    limiter.check_and_consume(ALICE, 10)
    clock.now = 3660.0
    limiter.check_and_consume(ALICE, 10)
    clock.now = 7320.0
    state = limiter.check_and_consume(ALICE, 4)
    # The day (1 left) is now tighter than the hour (6 left), and is the one reported.
    assert state.headers()["RateLimit-Policy"] == "25;w=86400"
    assert state.remaining == 1
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 2)
    assert info.value.headers["RateLimit-Policy"] == "25;w=86400"
    # The day's first 24-minute slice [0, 1440) leaves at 1440 + 86400.
    assert info.value.retry_after == 1440 + 86400 - 7320
    limiter.check_and_consume(ALICE, 1)
    clock.now = 1440.0 + 86400.0
    assert limiter.check_and_consume(ALICE, 10).remaining == 0


def test_default_daily_limit_enforced(limiter: WriteLimiter, clock: FakeClock) -> None:
    for hour in range(7):
        clock.now = hour * 3660.0
        limiter.check_and_consume(ALICE, 5000)
    clock.now = 7 * 3660.0
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 1)
    assert info.value.headers["RateLimit-Policy"] == "35000;w=86400"


def test_batch_over_the_limit_never_fits(limiter: WriteLimiter) -> None:
    with pytest.raises(RateLimited) as info:
        limiter.check_and_consume(ALICE, 5001)
    assert info.value.retry_after == 3660
    assert limiter.check_and_consume(ALICE, 5000).remaining == 0


def test_points_validation(limiter: WriteLimiter) -> None:
    assert limiter.check_and_consume(ALICE, 0).remaining == 5000
    for bad in (-1, 1.5, True):
        with pytest.raises(LocalProtocolError):
            limiter.check_and_consume(ALICE, bad)  # type: ignore[arg-type]


def test_idle_accounts_are_evicted(limiter: WriteLimiter, clock: FakeClock) -> None:
    limiter.check_and_consume(ALICE, 3)
    assert len(limiter) == 1
    clock.now = 2 * 86400.0
    limiter.check_and_consume(BOB, 3)
    assert len(limiter) == 1  # Alice drained and was dropped


def test_memory_is_bounded(clock: FakeClock) -> None:
    limiter = WriteLimiter(clock=clock, wall_clock=clock.wall, max_accounts=3)
    for i in range(10):
        limiter.check_and_consume(f"did:plc:{i:024d}", 3)
        assert len(limiter) <= 3


def test_configuration_checked() -> None:
    with pytest.raises(LocalProtocolError):
        WriteLimiter(hourly=0)


# --- request limiter -------------------------------------------------------------------


def test_request_limiter_burst_then_refill(clock: FakeClock) -> None:
    limiter = RequestLimiter(rate=0.5, burst=5, clock=clock, wall_clock=clock.wall)
    for left in (4, 3, 2, 1, 0):
        assert limiter.check("203.0.113.7").remaining == left
    with pytest.raises(RateLimited) as info:
        limiter.check("203.0.113.7")
    e = info.value
    assert e.status == 429
    assert e.error == "RateLimitExceeded"
    assert e.headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(int(WALL0) + 10),
        "RateLimit-Policy": "5;w=10",
        "Retry-After": "2",
    }
    assert limiter.check("198.51.100.1").remaining == 4  # another client
    clock.now = 1.999
    with pytest.raises(RateLimited):
        limiter.check("203.0.113.7")
    clock.now = 2.0
    assert limiter.check("203.0.113.7").remaining == 0


def test_request_limiter_refusal_takes_nothing(clock: FakeClock) -> None:
    limiter = RequestLimiter(rate=1, burst=2, clock=clock, wall_clock=clock.wall)
    limiter.check("k")
    limiter.check("k")
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.check("k")
    clock.now = 1.0
    limiter.check("k")


def test_request_limiter_memory_is_bounded(clock: FakeClock) -> None:
    limiter = RequestLimiter(rate=1, burst=3, clock=clock, max_keys=4)
    for i in range(20):
        limiter.check(f"10.0.0.{i}")
        assert len(limiter) <= 4
    clock.now = 100.0  # all refilled: the next call sweeps the full buckets
    limiter.check("10.0.1.1")
    assert len(limiter) < 4


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


# --- failed logins per account ---------------------------------------------------------


async def test_login_limit_is_per_account_across_addresses_and_refills(clock: FakeClock) -> None:
    logins = LoginLimiter(3, 60.0, secret=b"k" * 32, clock=clock, wall_clock=clock.wall)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        await logins.check(ALICE, address)
        await logins.failed(ALICE, address)
    with pytest.raises(RateLimited) as err:
        await logins.check(ALICE, "192.0.2.4")  # a fourth address: the account is spent
    assert err.value.status == 429
    assert 1 <= err.value.retry_after <= 60
    await logins.check(BOB, "192.0.2.4")  # another account is not
    clock.now += 60  # one failure refilled
    await logins.check(ALICE, "192.0.2.4")


async def test_login_limit_spares_known_addresses_and_remembers_them(clock: FakeClock) -> None:
    stored: dict[str, bytes] = {}

    async def load(account: str) -> bytes | None:
        return stored.get(account)

    async def save(account: str, known: bytes) -> None:
        stored[account] = known

    def limiter() -> LoginLimiter:
        return LoginLimiter(
            2, 3600.0, secret=b"k" * 32, load=load, save=save, clock=clock, wall_clock=clock.wall
        )

    logins = limiter()
    await logins.succeeded(ALICE, "198.51.100.7")  # the owner logged in from here once
    assert b"198.51.100.7" not in stored[ALICE]  # a keyed hash, not the address
    for _ in range(5):  # the owner's own typos do not spend the strangers' budget
        await logins.failed(ALICE, "198.51.100.7")
    await logins.check(ALICE, "203.0.113.1")
    for i in range(10):
        await logins.failed(ALICE, f"203.0.113.{i}")
    with pytest.raises(RateLimited):
        await logins.check(ALICE, "203.0.113.99")
    await logins.check(ALICE, "198.51.100.7")  # the owner is never refused
    restarted = limiter()  # a restart: known addresses come back from storage
    for i in range(2):
        await restarted.failed(ALICE, f"203.0.113.{i}")
    with pytest.raises(RateLimited):
        await restarted.check(ALICE, "203.0.113.99")
    await restarted.check(ALICE, "198.51.100.7")
