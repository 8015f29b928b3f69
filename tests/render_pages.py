"""Module-level page functions for tests/test_render.py (a worker imports them by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from node.appview.views import _Read, timeline_page


def timeline_dying_once(r: _Read, marker: str, node_pid: int, limit: int) -> dict[str, Any]:
    """A timeline page, but the first time (``marker`` does not exist yet) the worker
    rendering it is killed half-way: after its first query, before it answers.
    Never in the node's (the test's) own process."""
    if os.getpid() == node_pid:
        raise RuntimeError("rendered inline: this page is for a worker")
    r.hidden()
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return timeline_page(r, limit, None)
