"""One node per data directory.

Two nodes on one data directory share a node key and a database, and each one's
writes then look like forged swaps to the other (``InvalidSwap``). A node therefore
holds an OS advisory lock (``fcntl.flock``) on ``node.lock`` in its data directory for
as long as it runs. The kernel drops the lock when the process dies, however it dies,
so a crashed node never leaves a stale lock behind; the pid written into the file is
only there to say who holds it.

It refuses nothing but a second holder: it does not create the data directory's
contents or check their permissions (a missing data directory it makes 0700, like
:func:`node.datadir.make_data_dir`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .datadir import DATA_DIR_MODE

__all__ = ["LOCK_FILE", "DataDirInUse", "DataDirLock"]

#: The lock file's name inside the data directory.
LOCK_FILE = "node.lock"


class DataDirInUse(OSError):
    """Another process (or another node in this one) holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None):
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"data dir {data_dir} is in use by {who}: stop that node first, "
            "or give this one its own --data-dir"
        )
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """An exclusive, non-blocking lock on a data directory, held until :meth:`release`."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUse` at once (never waits)."""
        if self._fd is not None:
            return
        self.data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(self.data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
