"""node.workers.WorkerPool: bounded, lazy, idle-stopped, and a crashed worker loses no work."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from node.workers import WorkerCrashed, WorkerPool
from tests import worker_tasks as tasks

pytestmark = pytest.mark.timeout(120)


async def _until(cond: Callable[[], bool], limit: float = 20.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110 - a process's exit has no event to await
            await asyncio.sleep(0.02)  # poll


async def test_runs_tasks_in_other_processes() -> None:
    pool = WorkerPool(2, idle_seconds=30)
    assert not pool.running  # nothing starts before a task
    assert pool.pids() == []
    try:
        assert await pool.run(tasks.square, 7) == 49
        results = await asyncio.gather(*(pool.run(tasks.square, i) for i in range(50)))
        assert results == [i * i for i in range(50)]
        pids = set(await asyncio.gather(*(pool.run(tasks.pid) for _ in range(20))))
        assert os.getpid() not in pids
        assert 1 <= len(pool.pids()) <= 2
        assert pool.tasks_done == 71
    finally:
        await pool.close()


async def test_a_task_error_is_raised_to_its_caller_only() -> None:
    pool = WorkerPool(1, idle_seconds=30)
    try:
        with pytest.raises(ValueError, match="nope"):
            await pool.run(tasks.fail, "nope")
        assert await pool.run(tasks.square, 3) == 9
        assert pool.restarts == 0
    finally:
        await pool.close()


async def test_a_killed_worker_loses_no_work(tmp_path: Path) -> None:
    pool = WorkerPool(2, idle_seconds=30)
    try:
        await pool.warm()
        marker = str(tmp_path / "died")
        others = [pool.run(tasks.square, i) for i in range(20)]
        results = await asyncio.gather(pool.run(tasks.die_once, marker, 42), *others)
        assert results == [42, *(i * i for i in range(20))]
        assert pool.restarts >= 1
        # The pool works on after the crash.
        assert await pool.run(tasks.square, 5) == 25
    finally:
        await pool.close()


async def test_a_worker_killed_from_outside_while_idle(tmp_path: Path) -> None:
    pool = WorkerPool(1, idle_seconds=30)
    try:
        (victim,) = {await pool.run(tasks.pid)}
        os.kill(victim, 9)
        await _until(lambda: victim not in pool.pids())
        assert await pool.run(tasks.square, 6) == 36
        assert victim not in pool.pids()
    finally:
        await pool.close()


async def test_a_task_that_always_kills_its_worker_is_refused() -> None:
    pool = WorkerPool(1, idle_seconds=30)
    try:
        with pytest.raises(WorkerCrashed, match="died twice"):
            await pool.run(tasks.die)
        assert pool.restarts == 2
        assert await pool.run(tasks.square, 4) == 16
    finally:
        await pool.close()


async def test_idle_processes_exit_and_come_back() -> None:
    pool = WorkerPool(2, idle_seconds=0.2)
    try:
        await pool.warm()
        pids = pool.pids()
        assert pids
        await _until(lambda: not pool.running)
        await _until(lambda: not any(_alive(p) for p in pids))
        assert await pool.run(tasks.square, 8) == 64
        assert pool.running
        assert pool.starts == 2
    finally:
        await pool.close()


async def test_pending_tasks_are_bounded(tmp_path: Path) -> None:
    pool = WorkerPool(1, idle_seconds=30, max_pending=3)
    marker = tmp_path / "go"
    try:
        held = [asyncio.create_task(pool.run(tasks.wait_for, str(marker), i)) for i in range(5)]
        await _until(lambda: pool.in_flight == 3)
        for _ in range(100):  # let the two over the bound try to get in
            await asyncio.sleep(0)  # poll: yields the loop, no time passes
        assert pool.in_flight == 3
        assert not any(t.done() for t in held)
        marker.write_text("go")
        assert await asyncio.gather(*held) == list(range(5))
    finally:
        await pool.close()


async def test_close_ends_the_processes_and_refuses_new_tasks() -> None:
    pool = WorkerPool(2, idle_seconds=30)
    await pool.warm()
    pids = pool.pids()
    await pool.close()
    await _until(lambda: not any(_alive(p) for p in pids))
    with pytest.raises(WorkerCrashed, match="closed"):
        await pool.run(tasks.square, 1)


def test_size_is_bounded() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WorkerPool(0)
    assert WorkerPool().size >= 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_node_owns_its_pool_and_ends_it(tmp_path: Path) -> None:
    from node.config import NodeConfig
    from node.wiring import Node

    async with Node(NodeConfig(data_dir=tmp_path / "a", port=0, workers=2)) as node:
        assert node.workers is not None
        assert node.workers.size == 2
        assert not node.workers.running  # an idle node runs no worker processes
        assert await node.workers.run(tasks.square, 9) == 81
        pids = node.workers.pids()
        assert pids
    await _until(lambda: not any(_alive(p) for p in pids))
    async with Node(NodeConfig(data_dir=tmp_path / "b", port=0, workers=0)) as node:
        assert node.workers is None
