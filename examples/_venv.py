"""Lets an example run from a fresh clone however it is started.

``./examples/demo.py``, ``python3 examples/demo.py`` and ``.venv/bin/python
examples/demo.py`` all work: when the Python running the example cannot import
skyfed and its dependencies (it is not the project's ``.venv``, where ``make``
installs them), the example is run again, unchanged, with ``.venv/bin/python``. If
there is no ``.venv`` yet, it says to run ``make`` first and exits with status 2.

Importing this module does that; it defines nothing else.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_VENV = _ROOT / ".venv"
_GUARD = "SKYFED_EXAMPLES_REEXEC"  # set on the re-run, so it can never loop


def _installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("node", "aiohttp"))


if not _installed():
    python = _VENV / "bin" / "python"
    script = sys.argv[0]
    if python.exists() and not os.environ.get(_GUARD):
        os.environ[_GUARD] = "1"
        os.execv(python, [str(python), script, *sys.argv[1:]])
    print(
        f"{script}: skyfed is not installed for {sys.executable}. Run `make` in {_ROOT} "
        f"first (it makes .venv), then: .venv/bin/python {script}",
        file=sys.stderr,
    )
    sys.exit(2)
