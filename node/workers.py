"""Worker processes: CPU work off the event loop, on every core the machine has.

A node is one asyncio process, and Python runs one thread of bytecode at a time, so
verification and view rendering would otherwise queue behind each other on one core.
A :class:`WorkerPool` runs *module-level* functions in up to ``size`` worker
processes (``spawn`` start method: no thread of the node is forked) and hands the
result back to the event loop.

What it promises:

* **Bounded.** At most ``size`` processes (default: the machine's core count), and
  at most ``max_pending`` tasks submitted and not yet finished (default ``64 *
  size``); a caller past that waits its turn.
* **Nothing runs while idle.** No process starts before the first task; once no task
  has been in flight for ``idle_seconds`` (default 60) the processes exit, and the
  next task starts them again. An idle small node pays no memory for workers.
* **A crashed worker loses no work.** A worker that dies (killed, out of memory, a
  crash in native code) breaks the whole ``ProcessPoolExecutor``; the pool replaces
  it and submits every task that was in flight on the broken one once more. A task
  that breaks its second pool as well (it is what crashes the worker) raises
  :class:`WorkerCrashed` to its caller; other callers are not affected by it twice.
* **Stops with the node.** :meth:`close` ends the processes; tasks still waiting
  raise :class:`WorkerCrashed`.

Tasks and their arguments cross a pipe (pickle): pass bytes and plain values, and
keep per-process state (an open database, a parsed key) in the task module's own
globals, made on first use in each worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ParamSpec, TypeVar

__all__ = ["DEFAULT_IDLE_SECONDS", "WorkerCrashed", "WorkerPool", "default_size"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds with no task in flight after which the worker processes exit.
DEFAULT_IDLE_SECONDS = 60.0
#: Tasks in flight (submitted, not finished) per worker, at most.
PENDING_PER_WORKER = 64


class WorkerCrashed(RuntimeError):
    """A task could not be run: its worker died twice, or the pool was closed."""


def default_size() -> int:
    """The machine's core count as this process may use it (affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class WorkerPool:
    """Up to ``size`` worker processes, started on demand, stopped when idle."""

    def __init__(
        self,
        size: int | None = None,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_pending: int | None = None,
        name: str = "workers",
    ) -> None:
        self.size = default_size() if size is None else size
        if self.size < 1:
            raise ValueError("a worker pool needs at least one process")
        self.idle_seconds = idle_seconds
        self.max_pending = max_pending or PENDING_PER_WORKER * self.size
        self.name = name
        self._slots = asyncio.Semaphore(self.max_pending)
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._in_flight = 0
        self._idle: asyncio.TimerHandle | None = None
        self._closed = False
        #: Pools replaced after a worker died; tasks run; times the processes started.
        self.restarts = 0
        self.tasks_done = 0
        self.starts = 0

    @property
    def running(self) -> bool:
        """True while worker processes may exist (between a task and the idle stop)."""
        return self._executor is not None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and metrics)."""
        ex = self._executor
        procs = getattr(ex, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.is_alive() and p.pid is not None]

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process and return its result.

        ``fn`` must be importable by name (a module-level function). An exception
        the task raises is raised here (it must pickle). A worker that dies under
        the task: the pool is replaced and the task runs once more; a second death
        raises :class:`WorkerCrashed`."""
        async with self._slots:
            self._busy()
            try:
                for attempt in (1, 2):
                    executor, generation = self._current()
                    try:
                        future = executor.submit(fn, *args, **kwargs)
                    except (BrokenProcessPool, RuntimeError):
                        # Broken, or shut down (idle stop, replaced) between
                        # _current() and here: the next pass makes a new one.
                        self._replace(generation)
                        continue
                    try:
                        result = await asyncio.wrap_future(future)
                    except BrokenProcessPool as e:
                        if self._closed:
                            raise WorkerCrashed(f"{self.name}: the pool is closed") from e
                        self._replace(generation)
                        if attempt == 2:
                            raise WorkerCrashed(
                                f"{self.name}: a worker died twice running {_name(fn)}"
                            ) from e
                        continue
                    self.tasks_done += 1
                    return result
                raise WorkerCrashed(f"{self.name}: no pool would take {_name(fn)}")
            finally:
                self._done()

    async def warm(self) -> None:
        """Start every worker process now (a no-op task on each), so the first real
        tasks do not wait for interpreters to start."""
        await asyncio.gather(*(self.run(os.getpid) for _ in range(self.size)))

    async def close(self) -> None:
        """End the worker processes; tasks not finished raise :class:`WorkerCrashed`."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: executor.shutdown(wait=True, cancel_futures=True)
            )

    # -- internals ---------------------------------------------------------------
    def _current(self) -> tuple[ProcessPoolExecutor, int]:
        if self._closed:
            raise WorkerCrashed(f"{self.name}: the pool is closed")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.size, mp_context=multiprocessing.get_context("spawn")
            )
            self._generation += 1
            self.starts += 1
        return self._executor, self._generation

    def _replace(self, generation: int) -> None:
        """The executor of ``generation`` is broken: the next task gets a new one.
        (Several tasks see the same break; only the first replaces it.)"""
        if generation != self._generation or self._executor is None:
            return
        broken, self._executor = self._executor, None
        broken.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        log.warning("%s: a worker process died; starting a new pool", self.name)

    def _busy(self) -> None:
        self._in_flight += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._executor is not None and not self._closed:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.idle_seconds, self._stop_idle)

    def _stop_idle(self) -> None:
        self._idle = None
        if self._in_flight or self._executor is None:
            return
        executor, self._executor = self._executor, None
        # The processes have nothing to do: let them exit without blocking the loop.
        executor.shutdown(wait=False)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
