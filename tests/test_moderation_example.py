"""examples/moderation.py tells its story, as a user would run it."""

from __future__ import annotations

import pytest

from tests.test_examples import _run

pytestmark = pytest.mark.timeout(60)


async def test_the_moderation_story() -> None:
    code, out = await _run("examples/moderation.py")
    assert code == 0, out
    assert "troll's post from node A: gone" in out
    assert "troll's post from node B: readable" in out
    assert "troll's post from node C: readable" in out
    assert "node A publishes: #1 did:skyfed:" in out
    assert "harassment, reported twice" in out
    dana = next(line for line in out.splitlines() if "dana (subscribes to mod)" in line)
    erin = next(line for line in out.splitlines() if line.strip().startswith("erin"))
    assert "BUY CHEAP FOLLOWERS" not in dana
    assert "a perfectly ordinary post" in dana
    assert "BUY CHEAP FOLLOWERS" in erin
