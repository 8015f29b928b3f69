"""The README's commands work when pasted into a shell, in order, in a fresh clone.

Runs every ``sh`` block of README.md that is marked ``<!-- readme-test: run -->`` on
the line above its fence (``; skip: PREFIX, ...`` leaves out commands starting so,
for ``make test``, which is the whole suite), one command a line, each with ``bash -c``
and ``pipefail``, in a copy of the working tree (what a clone of it would hold,
uncommitted changes included) whose ``.venv`` is a link to this one, so nothing is
installed. ``HOME`` is a fresh directory (``~`` and the CLI's config dir live there)
and ``PATH`` lacks the venv, so a bare ``skyfed`` would fail as it does for a
newcomer. A command whose comment says "serves until Ctrl-C" is started in the
background, and the next command waits until one more of the README's node ports
answers ``/xrpc/_health``. The README's fixed ports (2583, 2584) are swapped for free
ones; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
README_PORTS = ("2583", "2584")
MARKER = re.compile(r"<!--\s*readme-test:\s*run\s*(?:;\s*skip:\s*(?P<skip>[^>]*?))?\s*-->")
COMMAND_TIMEOUT = 60  # seconds for one foreground command (make demo is the slowest)
READY_TIMEOUT = 30  # seconds for a background node to answer
SERVES = "serves until Ctrl-C"


@dataclass(frozen=True, slots=True)
class Command:
    line: str
    background: bool


def readme_commands(text: str) -> list[Command]:
    """The runnable commands of the marked blocks, in order."""
    commands: list[Command] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if marker is None:
            continue
        skip = [s.strip() for s in (marker["skip"] or "").split(",") if s.strip()]
        assert lines[i + 1].strip() == "```sh", f"README line {i + 1}: the marker needs a sh block"
        for body in lines[i + 2 :]:
            if body.strip() == "```":
                break
            command = body.strip()
            if not command or command.startswith("#"):
                continue
            if any(command.startswith(prefix) for prefix in skip):
                continue
            commands.append(Command(command, SERVES in command))
    return commands


def test_the_marked_blocks_are_found() -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    lines = [c.line for c in commands]
    assert lines[0].startswith("make demo")
    assert not any(line.startswith("make test") for line in lines)
    assert sum(c.background for c in commands) == 2
    assert any("accounts use" in line for line in lines)
    # Nothing in a marked block relies on `skyfed` being on PATH.
    assert not any(re.match(r"(\S+\s*\|\s*)?skyfed\b", line) for line in lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fresh_clone(dest: Path) -> None:
    """The working tree's files as a clone would hold them, and a link to our venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # keeps the mode (+x) and mtimes (make's stamp)
    (dest / ".venv").symlink_to((ROOT / ".venv").resolve())
    # The venv is shared: make in the copy must never reinstall the project into it
    # (an editable install would then point at this temporary copy). Our own make has
    # already brought the venv up to date, so the copy's pyproject is made older than
    # the stamp whatever the edit times say.
    stamp = ROOT / ".venv" / ".installed-stamp"
    if stamp.exists():
        before = stamp.stat().st_mtime - 1
        os.utime(dest / "pyproject.toml", (before, before))


async def _healthy(http: aiohttp.ClientSession, port: str) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/xrpc/_health") as r:
            return r.status == 200
    except (aiohttp.ClientError, OSError):
        return False


@pytest.mark.timeout(120)
async def test_every_readme_command_works_in_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "skyfed").exists():
        pytest.skip("no .venv here (make makes it)")
    clone, home = tmp_path / "clone", tmp_path / "home"
    home.mkdir()
    _fresh_clone(clone)
    ports = {p: str(_free_port()) for p in README_PORTS}
    text = (ROOT / "README.md").read_text()
    for old, new in ports.items():
        text = text.replace(old, new)
    commands = readme_commands(text)
    assert commands

    drop = ("VIRTUAL_ENV", "PYTHONPATH", "SKYFED_NODE", "SKYFED_CONFIG_DIR", "XDG_CONFIG_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MAKE")}
    env.update(HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin", NO_COLOR="1")
    background: list[asyncio.subprocess.Process] = []
    logs: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for command in commands:
                if command.background:
                    proc = await asyncio.create_subprocess_exec(
                        "bash",
                        "-c",
                        command.line,
                        cwd=clone,
                        env=env,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                        start_new_session=True,  # its own group, to stop it alone
                    )
                    background.append(proc)
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + READY_TIMEOUT
                    while True:
                        up = [p for p in ports.values() if await _healthy(http, p)]
                        if len(up) >= len(background):
                            break
                        assert proc.returncode is None, f"{command.line!r} exited"
                        assert loop.time() < deadline, f"{command.line!r} never answered"
                        await asyncio.sleep(0.1)  # polling a port: there is no event
                    continue
                proc = await asyncio.create_subprocess_exec(
                    "bash",
                    "-c",
                    f"set -o pipefail; {command.line}",
                    cwd=clone,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    out, _ = await proc.communicate()
                logs.append(f"$ {command.line}\n{out.decode()}")
                assert proc.returncode == 0, "\n".join(logs)
    finally:
        for proc in background:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the README says
        for proc in background:
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    transcript = "\n".join(logs)
    assert "All three nodes hold the same signed heads: yes" in transcript
    assert "* @bob.skyfed.test" in transcript
    assert "Alice" in transcript
    assert "hello from node A" in transcript
    assert "Traceback" not in transcript
