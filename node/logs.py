"""The node's log: structured lines, in text for people or JSON for machines.

A log call names an event in a few words and passes its details as fields::

    log.info("peer linked", extra=fields(peer=url, did=did))

which prints, in the default text format,

    2026-12-02T03:30:00.123Z INFO  skyfed.federation peer linked peer=http://... did=did:key:...

and with ``--log-format json`` one JSON object per line with ``ts``, ``level``,
``logger``, ``msg`` and the fields.

Whatever a remote party can cause (a link, a refused forgery, a rate-limit hit)
goes through a :class:`LogLimiter`: the first few lines in an interval are written,
the rest are counted and summed up in one line when the interval is over, so a
hostile peer or client cannot flood the log or the disk.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_SUMMARY_INTERVAL",
    "LOG_FORMATS",
    "JsonFormatter",
    "LogLimiter",
    "TextFormatter",
    "configure_logging",
    "fields",
]

#: Log formats ``--log-format`` takes.
LOG_FORMATS = ("text", "json")

#: Seconds over which a :class:`LogLimiter` writes at most ``DEFAULT_BURST`` lines
#: (then one summary line for the rest).
DEFAULT_SUMMARY_INTERVAL = 60.0
DEFAULT_BURST = 20

#: Distinct kinds a :class:`LogLimiter` counts separately (kinds are chosen by our
#: code, not by the remote party, but a bound keeps it honest).
MAX_KINDS = 64

_FIELDS = "skyfed_fields"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the event's details, printed as key=value or JSON."""
    return {_FIELDS: values}


def _event_fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, _FIELDS, None)
    return dict(values) if isinstance(values, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _text_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER message key=value ...``; values with spaces are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<5}", record.name, record.getMessage()]
        parts.extend(f"{k}={_text_value(v)}" for k, v in _event_fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _event_fields(record).items():
            obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def configure_logging(
    fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send every ``skyfed`` logger's lines to ``stream`` (stderr) in ``fmt``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (choose from {', '.join(LOG_FORMATS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class LogLimiter:
    """At most ``burst`` lines per kind per ``interval`` seconds, then one summary line.

    For events a remote party can cause. A kind is a category our code names ("link",
    "refused", "ratelimit"), so a flood of one kind does not silence another. Within
    an interval the first ``burst`` events of a kind are written and the rest only
    counted; the first event of that kind after the interval first writes one summary
    (``"suppressed N log lines"``), so a flood costs ``burst + 1`` lines per interval
    and its size is still on record.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        # kind -> [interval start, lines written, events suppressed]
        self._kinds: dict[str, list[float]] = {}

    def log(self, kind: str, level: int, msg: str, **values: Any) -> bool:
        """Write or count one event of ``kind``; True if it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None:
            if len(self._kinds) >= MAX_KINDS:
                kind = "other"
            state = self._kinds.setdefault(kind, [now, 0, 0])
        if now - state[0] >= self.interval:
            self._summarize(kind, state)
            state[:] = [now, 0, 0]
        if state[1] >= self.burst:
            state[2] += 1
            return False
        state[1] += 1
        self.logger.log(level, msg, extra=fields(kind=kind, **values))
        return True

    def _summarize(self, kind: str, state: list[float]) -> None:
        if state[2]:
            self.logger.warning(
                "suppressed %d log lines",
                int(state[2]),
                extra=fields(kind=kind, suppressed=int(state[2]), interval=self.interval),
            )
