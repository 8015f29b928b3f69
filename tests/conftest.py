"""Shared fixtures: deterministic keys, so runs repeat exactly."""

from __future__ import annotations

import pytest

from protocol.keys import SigningKey

from .seeds import seeded_key


@pytest.fixture
def key() -> SigningKey:
    return seeded_key(1)
