"""Loader for the atproto interop vectors under ``tests/vectors/atproto/``.

A missing or empty file is an error (a test that silently loads nothing would pass
while checking nothing). :func:`cases` gives ``pytest.param`` entries with readable
ids, for ``@pytest.mark.parametrize``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).parent / "vectors" / "atproto"


def load(name: str) -> list[dict[str, Any]]:
    """The list of entries of one JSON vector file (``"mst/key_heights.json"``)."""
    data = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not data:
        raise AssertionError(f"{name}: expected a non-empty list of vectors")
    return data


def cases(name: str, id_field: str | None = None) -> list[Any]:
    """``pytest.param`` per entry, with the entry's ``comment``/``note`` (or
    ``id_field``) as its id, made unique by its index."""
    out = []
    for i, entry in enumerate(load(name)):
        label = str(entry.get(id_field or "", entry.get("comment", entry.get("note", ""))))
        out.append(pytest.param(entry, id=f"{i}-{label[:60]}"))
    return out


def b64(text: str) -> bytes:
    """Decode the vectors' base64 (standard alphabet, padding often left out)."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


def example_keys() -> list[str]:
    """``mst/example_keys.txt``: keys like ``A0/374913`` whose digit is their layer."""
    keys = (VECTORS / "mst" / "example_keys.txt").read_text(encoding="utf-8").split()
    if not keys:
        raise AssertionError("mst/example_keys.txt is empty")
    return keys
