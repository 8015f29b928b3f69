"""Who may read a node's data directory: its owner only.

The data directory holds every secret the node has: ``node.sqlite3`` (and its
``-wal``/``-shm`` files) with the accounts' signing and rotation keys and password
hashes, ``node.key``, ``token.secret``, and usually ``skyfed.toml`` with the admin
token. So the directory is made :data:`DATA_DIR_MODE` (0700) and every file in it is
created :data:`PRIVATE_FILE_MODE` (0600), with the mode given at creation, never set
after (a file made 0644 and chmod-ed later is readable in between). A node started on
an older install tightens what it finds and logs each change (:func:`tighten`).

What this module refuses to do: loosen anything, follow a symlink when creating a
file, or touch files outside the data directory other than the config file it is
handed.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = [
    "DATA_DIR_MODE",
    "NODE_FILES",
    "NODE_UMASK",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "make_data_dir",
    "tighten",
    "write_private_text",
]

log = logging.getLogger("skyfed.datadir")

#: Mode of the data directory: only its owner may list or enter it.
DATA_DIR_MODE: Final = 0o700
#: Mode of every file in the data directory (and of the config file).
PRIVATE_FILE_MODE: Final = 0o600
#: The umask ``skyfed node start`` sets for its whole process (the node's process
#: writes only private files; library users keep their own).
NODE_UMASK: Final = 0o077
#: The node's own files, which :func:`tighten` fixes on an existing install (only
#: these: a data dir pointed at a directory that holds other things leaves those be).
NODE_FILES: Final = (
    "node.sqlite3",
    "node.sqlite3-wal",
    "node.sqlite3-shm",
    "node.sqlite3-journal",
    "node.key",
    "node.pub",
    "token.secret",
    "skyfed.toml",
    "node.toml",
    "node.lock",  # node/datalock.py: holds only a pid, private all the same
)


def make_data_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700 if it is missing (an
    existing one is :func:`tighten`-ed, with a log line, when the node starts)."""
    path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then gives its
    ``-wal`` and ``-shm`` files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def write_private_text(path: Path, text: str) -> None:
    """Write a new file holding ``text``, mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _tighten_one(path: Path, mode: int) -> str | None:
    """Remove every permission bit of ``path`` outside ``mode``; what changed, if anything."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None  # chmod would act on the target, which may be anyone's
    current = stat.S_IMODE(st.st_mode)
    wanted = current & mode
    if wanted == current:
        return None
    os.chmod(path, wanted)
    return f"{path}: {current:04o} -> {wanted:04o}"


def tighten(data_dir: Path, extra_files: Iterable[Path] = ()) -> list[str]:
    """Make ``data_dir`` 0700 and the node's files in it (:data:`NODE_FILES`) and
    ``extra_files`` (a config file kept elsewhere) at most 0600. Logs and returns each
    change."""
    changed = []
    if data_dir.is_dir():
        if (c := _tighten_one(data_dir, DATA_DIR_MODE)) is not None:
            changed.append(c)
        for name in NODE_FILES:
            if (c := _tighten_one(data_dir / name, PRIVATE_FILE_MODE)) is not None:
                changed.append(c)
    for path in extra_files:
        if (c := _tighten_one(path, PRIVATE_FILE_MODE)) is not None:
            changed.append(c)
    for c in changed:
        log.warning("tightened permissions (readable by other local users): %s", c)
    return changed
