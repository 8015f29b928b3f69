"""Bluesky's own client library, ``@atproto/api`` from npm, drives a node through an
app session (tests/js/session.mjs: accounts, preferences, profile and avatar, posts
with images, reply, quote, like, repost, follow, timeline with the image bytes,
author feed filters, thread, notifications, search, mutes, blocks, lists, a
threadgate, a report, a deleted post, refresh and delete session).

The library is pinned with integrity hashes in tests/js/package-lock.json and
installed with ``npm ci`` (``make test`` does it first with
scripts/ensure-npm-packages.sh; this file does it too when node_modules is missing or
older than the lock file). The test is skipped, saying why, only where Node.js or
npm is not installed. ``SKYFED_SESSION_KEEP_GOING=1`` runs every step even after
one failed, to see at once everything that is missing; the test fails either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from node.wiring import Node

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "session.mjs"
INSTALL_SECONDS = 240
SESSION_SECONDS = 150

# Every step of the session, in order: a script that stops early cannot pass.
STEPS = [
    "describeServer",
    "createAccount",
    "login",
    "preferences put/get",
    "profile",
    "follow",
    "post text",
    "avatar",
    "post with images",
    "reply",
    "quote",
    "mention",
    "like",
    "repost",
    "timeline",
    "timeline with hydrated images",
    "author feed filters",
    "thread",
    "notifications with every reason",
    "unread count",
    "updateSeen",
    "search posts",
    "search actors",
    "mute and unmute",
    "blocks hide posts",
    "lists",
    "threadgate refuses a reply",
    "report",
    "deleted post gone from timeline and search",
    "refreshSession",
    "deleteSession",
]


def installed() -> bool:
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime > lock.stat().st_mtime


@pytest.fixture(scope="module")
def node_binary() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "Node.js or npm is not installed: the @atproto/api session needs both "
            "(scripts/ensure-npm-packages.sh installs Debian's; make test runs it)"
        )
    if not installed():
        done = subprocess.run(
            [
                npm,
                "ci",
                "--ignore-scripts",  # the lock file's packages need none: run no one's code
                "--cache",
                ".npm-cache",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_SECONDS,
            check=False,
        )
        assert done.returncode == 0, f"npm ci in tests/js failed:\n{done.stderr[-4000:]}"
    return node


def parse_steps(stdout: bytes) -> list[dict[str, Any]]:
    steps = []
    for line in stdout.decode().splitlines():
        step = json.loads(line)
        assert set(step) == {"name", "ok", "detail"}, f"not a step line: {line}"
        steps.append(step)
    return steps


@pytest.mark.timeout(INSTALL_SECONDS + SESSION_SECONDS + 30)
async def test_atproto_api_drives_a_whole_app_session(node_binary: str, node: Node) -> None:
    command = [node_binary, str(SCRIPT), node.url]
    if os.environ.get("SKYFED_SESSION_KEEP_GOING") == "1":
        command.append("--keep-going")
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), SESSION_SECONDS)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    steps = parse_steps(stdout)
    report = "\n".join(f"{'ok  ' if s['ok'] else 'FAIL'} {s['name']}: {s['detail']}" for s in steps)
    failed = [s["name"] for s in steps if not s["ok"]]
    assert not failed, f"steps failed: {failed}\n{report}\n{stderr.decode()[-2000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{report}\n{stderr.decode()[-2000:]}"
    assert [s["name"] for s in steps] == STEPS, report
