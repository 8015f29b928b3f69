"""Commit events from peers verified in worker processes, in batches.

Half of judging a commit event depends only on its bytes and the DID's signing key:
the signature, the blocks' hashes, the inductive proof of the ops
(:func:`protocol.ingest.verify_event`). That half is most of the CPU an ingested
commit costs, so with a backlog it runs in the node's worker processes
(node/workers.py), one call per batch of events to keep pickling and pipe round
trips few. The other half (against the held head) stays with the caller, under the
repo's lock, and is cheap.

What it promises:

* **The same verdicts.** A worker's answer is about the exact bytes and key it was
  given: the caller parsed its event from those bytes, gets back the commit (or the
  same error, by class and message) with :func:`protocol.ingest.verified_commit`,
  and judges again inline if the DID's key changed meanwhile.
* **No event lost.** A batch whose worker died twice (node/workers.py runs a task
  once more after a crash), or that failed in any other way, is verified inline.
* **No IPC for a trickle.** With fewer than ``cold_backlog`` (default
  :data:`COLD_BACKLOG`) commit events in flight and no worker running, or fewer than
  ``warm_backlog`` (default :data:`WARM_BACKLOG`) with workers running, an event is
  verified inline at once: an idle node starts no process for it. Fewer than
  ``min_batch`` (default :data:`MIN_BATCH`) waiting together are verified inline too.
* **Bounded.** A batch holds at most ``batch`` events (default :data:`BATCH`); the
  events waiting are those of the pushes in flight, which the links bound; the
  pool bounds the batches in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from protocol.commit import Commit, CommitEvent
from protocol.ingest import Checked, verified_commit, verify_event, verify_events

from ..workers import WorkerPool

__all__ = ["BATCH", "COLD_BACKLOG", "MIN_BATCH", "WARM_BACKLOG", "EventVerifier"]

log = logging.getLogger("skyfed.federation")

#: Events per worker call at most.
BATCH = 32
#: Events per worker call at least: fewer waiting at a flush are verified inline. A
#: worker call costs the node ~300 us of CPU however small (pickling, pipes, threads),
#: an event ~20 us more; inline, an event costs ~200 us (measured, bench/RESULTS.md).
MIN_BATCH = 2
#: Commit events in flight before a cold pool is started for them.
COLD_BACKLOG = 16
#: Commit events in flight before they go to a pool already running.
WARM_BACKLOG = 2


class EventVerifier:
    """Verify commit events inline or in ``pool``'s processes, batched."""

    def __init__(
        self,
        pool: WorkerPool | None,
        backlog: Callable[[], int],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        *,
        batch: int = BATCH,
        min_batch: int = MIN_BATCH,
        cold_backlog: int = COLD_BACKLOG,
        warm_backlog: int = WARM_BACKLOG,
        task: Callable[[Sequence[tuple[bytes, str]]], list[Checked]] = verify_events,
    ) -> None:
        self.pool = pool
        #: What a worker runs on a batch: :func:`protocol.ingest.verify_events` (a
        #: test passes one that crashes its worker).
        self.task = task
        self._backlog = backlog
        self._spawn = spawn
        self.batch = batch
        self.min_batch = min_batch
        self.cold_backlog = cold_backlog
        self.warm_backlog = warm_backlog
        self._queue: list[tuple[bytes, str, asyncio.Future[Checked | None]]] = []
        self._flush_soon = False
        #: Events verified inline, and in workers; batches sent; batches that failed
        #: in the pool and were verified inline.
        self.inline = 0
        self.offloaded = 0
        self.batches = 0
        self.fallbacks = 0

    async def verify(self, event: CommitEvent, data: bytes, signing_key: str) -> Commit:
        """:func:`protocol.ingest.verify_event` of ``event``, which was parsed from
        ``data``: the commit, or the error that raises."""
        if not self._offload():
            self.inline += 1
            return verify_event(event, signing_key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Checked | None] = loop.create_future()
        self._queue.append((data, signing_key, future))
        if not self._flush_soon:
            # After the tasks already ready to run: they join this batch.
            self._flush_soon = True
            loop.call_soon(self._flush)
        checked = await future
        if checked is None:  # too few to send, or the batch failed in the pool
            self.inline += 1
            return verify_event(event, signing_key)
        self.offloaded += 1
        return verified_commit(event, checked)

    def _offload(self) -> bool:
        if self.pool is None:
            return False
        need = self.warm_backlog if self.pool.running else self.cold_backlog
        return self._backlog() >= need

    def _flush(self) -> None:
        self._flush_soon = False
        queue, self._queue = self._queue, []
        assert self.pool is not None
        if len(queue) < self.min_batch:
            for _, _, future in queue:  # cheaper inline than a worker call
                if not future.done():
                    future.set_result(None)
            return
        # Spread what waits over every worker, in batches of ``min_batch`` to ``batch``.
        size = min(self.batch, max(self.min_batch, -(-len(queue) // self.pool.size)))
        for i in range(0, len(queue), size):
            self._spawn(self._run(queue[i : i + size]))

    async def _run(self, items: list[tuple[bytes, str, asyncio.Future[Checked | None]]]) -> None:
        assert self.pool is not None
        answers: list[Checked] | None = None
        self.batches += 1
        try:
            answers = await self.pool.run(self.task, [(data, key) for data, key, _ in items])
        except Exception as e:  # a worker died twice, the pool closed, a bug in a worker
            self.fallbacks += 1
            log.warning("verifying %d events in a worker failed (%r): inline", len(items), e)
        finally:
            for i, (_, _, future) in enumerate(items):
                if not future.done():
                    future.set_result(None if answers is None else answers[i])
