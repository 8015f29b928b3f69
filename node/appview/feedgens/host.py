"""The feed generators a node hosts: loaded at start, each call bounded.

Built-in generators (node/appview/feedgens/builtin.py) and plugins named in the
config by dotted path (``feed_plugins = ["mypkg.feeds:Cats"]``; a class is made
with no arguments, an instance is used as it is) are checked at start: a name that
is not a record key of 1 to 15 characters ``[a-z0-9-]``, a missing ``skeleton`` or
``display_name``, or two feeds with one name stop the node with a clear message.

What a call may cost, whatever the generator does:

- time: ``feed_timeout`` seconds, then the reader gets ``UpstreamTimeout``;
- size: a skeleton of more than the requested ``limit`` posts, a post that is not an
  ``app.bsky.feed.post`` AT-URI, or a cursor over 1024 characters is refused
  (``UpstreamFailure``), as from a remote generator;
- the event loop: a plugin runs on a thread of its own with its own event loop, so
  one that spins without awaiting stalls only itself. Python cannot stop such a
  thread; it keeps one of ``feed_plugin_slots`` until it returns, and when every slot
  is held the plugin's feeds answer ``UpstreamFailure`` at once (a stuck plugin
  costs a bounded number of threads, never the node).

A generator that raises is logged (rate-limited) and answered as ``UpstreamFailure``
with no detail: its traceback is the operator's business, not the reader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from protocol.errors import RemoteProtocolError
from protocol.feedgen import Skeleton, SkeletonError

from ...logs import LogLimiter
from .base import FeedContext, FeedGenerator
from .builtin import BUILTIN_FEEDS

__all__ = ["FeedHost", "PluginError", "load_plugin"]

log = logging.getLogger("skyfed.feeds")

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,14}")


class PluginError(ValueError):
    """A configured feed generator cannot be loaded (the operator's mistake)."""


class UpstreamTimeout(RemoteProtocolError):
    error = "UpstreamTimeout"
    status = 504


def load_plugin(path: str) -> Any:
    """The object named by ``path`` (``package.module:attr`` or ``package.module.attr``),
    made with no arguments if it is a class."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PluginError(f"feed plugin {path!r} is not a dotted path to a class or object")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"feed plugin {path!r}: cannot import {module_name}: {e}") from e
    try:
        obj = getattr(module, attr)
    except AttributeError as e:
        raise PluginError(f"feed plugin {path!r}: {module_name} has no {attr!r}") from e
    return obj() if isinstance(obj, type) else obj


def _check(gen: Any, where: str) -> None:
    name = getattr(gen, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PluginError(f"{where}: name must be 1-15 of a-z, 0-9 and '-', not {name!r}")
    if not isinstance(getattr(gen, "display_name", None), str):
        raise PluginError(f"{where}: display_name must be a string")
    if not callable(getattr(gen, "skeleton", None)):
        raise PluginError(f"{where}: has no skeleton() coroutine method")


class FeedHost:
    """The generators of one node, by name, and the bounded way to call them."""

    def __init__(
        self,
        ctx: FeedContext,
        builtins: Iterable[FeedGenerator] = (),
        plugins: Iterable[Any] = (),
        *,
        timeout: float = 2.0,
        plugin_slots: int = 4,
    ):
        self.ctx = ctx
        self.timeout = timeout
        self._generators: dict[str, Any] = {}
        self._isolated: set[str] = set()
        for gen in builtins:
            self._add(gen, f"built-in feed {type(gen).__name__}", isolated=False)
        for gen in plugins:
            self._add(gen, f"feed plugin {type(gen).__name__}", isolated=True)
        self._slots = threading.BoundedSemaphore(max(1, plugin_slots))
        self.log_limit = LogLimiter(log)
        #: Calls refused or failed, for operators and tests.
        self.failures = 0
        self.timeouts = 0

    @classmethod
    def from_settings(
        cls,
        ctx: FeedContext,
        *,
        builtin: bool,
        plugins: Iterable[str],
        timeout: float,
        plugin_slots: int,
    ) -> FeedHost:
        return cls(
            ctx,
            [g() for g in BUILTIN_FEEDS] if builtin else [],
            [load_plugin(p) for p in plugins],
            timeout=timeout,
            plugin_slots=plugin_slots,
        )

    def _add(self, gen: Any, where: str, *, isolated: bool) -> None:
        _check(gen, where)
        if gen.name in self._generators:
            raise PluginError(f"{where}: a feed named {gen.name!r} is already hosted")
        self._generators[gen.name] = gen
        if isolated:
            self._isolated.add(gen.name)

    def names(self) -> list[str]:
        return list(self._generators)

    def get(self, name: str) -> Any | None:
        return self._generators.get(name)

    async def skeleton(
        self, name: str, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        """The skeleton of hosted feed ``name``, checked (see the module docstring)."""
        gen = self._generators.get(name)
        if gen is None:
            raise RemoteProtocolError(f"no feed {name!r} is hosted here", error="UnknownFeed")

        ctx = self.ctx.for_call()

        def call() -> Awaitable[Any]:
            result: Awaitable[Any] = gen.skeleton(ctx, viewer, limit, cursor)
            return result

        try:
            if name in self._isolated:
                result = await self._run_isolated(call)
            else:
                async with asyncio.timeout(self.timeout):
                    result = await call()
        except TimeoutError:
            self.timeouts += 1
            raise UpstreamTimeout(f"feed {name!r} took longer than {self.timeout}s") from None
        except RemoteProtocolError as e:
            if e.error in ("UpstreamTimeout", "UpstreamFailure"):
                self.failures += 1
            raise
        except Exception as e:
            self.failures += 1
            self.log_limit.log(
                "feed-failed",
                logging.WARNING,
                "feed generator failed",
                feed=name,
                error=f"{type(e).__name__}: {e}"[:300],
            )
            raise SkeletonError(f"feed {name!r} failed") from None
        if not isinstance(result, Skeleton):
            self.failures += 1
            raise SkeletonError(f"feed {name!r} answered {type(result).__name__}, not a Skeleton")
        # The same checks as a remote generator's answer.
        return Skeleton.from_json(result.to_json(), max_items=limit)

    async def _run_isolated(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call()`` on a thread with its own event loop, bounded in time; the
        thread holds a plugin slot until it really ends."""
        if not self._slots.acquire(blocking=False):
            raise SkeletonError("every feed plugin slot is busy; try again later")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        # Retrieved here, so an answer that comes after the wait gave up is no warning.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        timeout = self.timeout

        def settle(ok: bool, value: Any) -> None:
            if done.done():
                return
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

        def run() -> None:
            async def bounded() -> Any:
                async with asyncio.timeout(timeout):
                    return await call()

            try:
                value = asyncio.run(bounded())
                outcome: tuple[bool, Any] = (True, value)
            except BaseException as e:
                outcome = (False, e)
            finally:
                self._slots.release()
            # RuntimeError: the node's loop is closed, nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, *outcome)

        threading.Thread(target=run, name="skyfed-feed-plugin", daemon=True).start()
        # A little over the plugin's own bound: its loop cancels an awaiting plugin
        # itself; this one is for a plugin that never yields.
        async with asyncio.timeout(timeout + 0.5):
            return await asyncio.shield(done)
