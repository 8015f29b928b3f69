"""Module-level tasks for tests/test_workers.py (a worker process imports them by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def die_once(marker: str, value: int) -> int:
    """Kill this worker the first time (``marker`` does not exist yet), then answer."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for(marker: str, value: int) -> int:
    """Spin (bounded) until ``marker`` exists, then answer: holds a worker busy."""
    import time

    deadline = time.monotonic() + 30
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(marker)
        time.sleep(0.01)  # poll: another process writes the marker
    return value


def verify_events_dying_once(marker: str, items: list[tuple[bytes, str]]) -> list[Any]:
    """protocol.ingest.verify_events, but the first time (``marker`` does not exist
    yet) the worker verifies half the batch and is killed: a crash mid-batch."""
    from protocol.ingest import verify_events

    path = Path(marker)
    if not path.exists():
        verify_events(items[: len(items) // 2])
        path.write_text(f"died after {len(items) // 2} of {len(items)}")
        os.kill(os.getpid(), signal.SIGKILL)
    return verify_events(items)


def verify_events_dying(items: list[tuple[bytes, str]]) -> list[Any]:
    """Kills its worker every time (a batch that no worker survives)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return []
