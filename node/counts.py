"""How every count is written, in the terminal, on the web pages and in the demo.

One format everywhere: digits grouped by thousands with a comma, then the noun in
the singular for exactly one and in the plural otherwise: ``1 like``, ``0 replies``,
``12,345 followers``. Anything that is not an int (a missing field) counts as 0.
"""

from __future__ import annotations

__all__ = ["count_parts", "format_count"]


def count_parts(n: object, one: str, many: str | None = None) -> tuple[str, str]:
    """``("1,234", "likes")``: the number and the noun, for markup that styles them apart."""
    k = n if isinstance(n, int) and not isinstance(n, bool) else 0
    return f"{k:,}", one if k == 1 else (many if many is not None else one + "s")


def format_count(n: object, one: str, many: str | None = None) -> str:
    """``1 like``, ``1,234 likes``; ``many`` defaults to ``one`` + "s"."""
    number, noun = count_parts(n, one, many)
    return f"{number} {noun}"
