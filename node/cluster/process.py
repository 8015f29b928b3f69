"""Start a node as its own process (``python -m node.cli node start``) and stop it.

The one place that does this: the cluster harness, the benchmarks and the process
tests all start nodes through :func:`start_node`. The node gets port 0 unless told
otherwise; the URL is read from the ``listening on`` line it prints. Its stderr goes
to a log file, whose tail is quoted when a node dies before it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..datadir import make_data_dir, write_private_text

__all__ = ["NodeProcess", "NodeStartError", "node_process", "start_node"]

ROOT = Path(__file__).resolve().parent.parent.parent

# ---- MERGE POINT: node settings the harness needs ---------------------------------
#: Written into the config file of every node started here (the cluster harness, the
#: benchmarks, the process tests), under whatever settings the caller passes. This is
#: the one place for a node-side setting that local clusters need, e.g. a dial policy
#: that lets nodes dial loopback addresses (their peers are proxies on 127.0.0.1)
#: once the node refuses private and loopback addresses by default. The hostile-nodes
#: scenario relies on it staying exactly that: loopback allowed for the configured
#: peers, nothing looser for URLs learned from the network.
HARNESS_NODE_SETTINGS: dict[str, Any] = {}
# ------------------------------------------------------------------------------------


class NodeStartError(RuntimeError):
    """The node process exited or stayed silent before it was listening."""


@dataclass(slots=True)
class NodeProcess:
    proc: asyncio.subprocess.Process
    url: str
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self, *, grace: float = 10.0) -> int:
        """SIGTERM (a clean shutdown), then SIGKILL after ``grace`` seconds; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
        return await self.proc.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def start_node(
    data_dir: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    log_path: Path | None = None,
    command: str = "",
    startup_limit: float = 30.0,
) -> NodeProcess:
    """Start a node on ``data_dir`` (port 0 unless ``settings`` or ``args`` say).

    ``settings`` are written to ``data_dir/node.toml`` as the node's config file;
    ``args`` go on the command line after it; ``command`` replaces
    ``python -m node.cli`` (e.g. to run the node under a profiler).
    """
    make_data_dir(data_dir)  # 0700, as the node would make it
    log_path = log_path or data_dir / "node.log"
    argv = shlex.split(command) if command else [sys.executable, "-m", "node.cli"]
    argv += ["node", "start", "--data-dir", str(data_dir)]
    settings = {**HARNESS_NODE_SETTINGS, **(settings or {})}
    if settings:
        config = data_dir / "node.toml"
        config.unlink(missing_ok=True)  # a restart writes it again
        write_private_text(config, tomli_w.dumps(dict(settings)))
        argv += ["--config", str(config)]
    if "--port" not in args and not (settings and "port" in settings):
        argv += ["--port", "0"]
    argv += list(args)
    with open(log_path, "ab") as log:  # noqa: ASYNC230 - set-up, before load
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal reaches the harness alone
        )
    try:
        assert proc.stdout is not None
        url = None
        async with asyncio.timeout(startup_limit):
            while url is None:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    await proc.wait()
                    raise NodeStartError(
                        f"node on {data_dir} exited ({proc.returncode}) before listening:\n"
                        + log_tail(log_path)
                    )
                if line.startswith("listening on "):
                    url = line.removeprefix("listening on ").strip()
    except BaseException as e:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(e, TimeoutError):
            raise NodeStartError(
                f"node on {data_dir} did not listen within {startup_limit}s"
            ) from e
        raise
    # The node prints one more line ("shutting down") to stdout: the pipe holds it.
    return NodeProcess(proc, url, data_dir, log_path)


@contextlib.asynccontextmanager
async def node_process(
    data_dir: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    log_path: Path | None = None,
    command: str = "",
    kill: bool = False,
) -> AsyncIterator[NodeProcess]:
    """A node for the length of a ``with``; stopped (SIGTERM, or SIGKILL if
    ``kill``) on the way out."""
    node = await start_node(
        data_dir, settings=settings, args=args, log_path=log_path, command=command
    )
    try:
        yield node
    finally:
        if kill:
            node.kill()
            await node.proc.wait()
        else:
            await node.stop()
