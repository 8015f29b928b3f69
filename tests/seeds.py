"""Deterministic inputs shared by tests and the vector generator."""

from __future__ import annotations

from protocol.keys import SigningKey


def seeded_key(n: int) -> SigningKey:
    """The ed25519 key whose seed is 32 bytes of ``n`` (the vectors use these)."""
    return SigningKey.from_seed(bytes([n]) * 32)
