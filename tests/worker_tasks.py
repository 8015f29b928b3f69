"""Module-level tasks for tests/test_workers.py (a worker process imports them by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


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
        time.sleep(0.01)
    return value
