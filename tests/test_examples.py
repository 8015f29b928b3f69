"""The examples run as a user would run them."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from node.client import Client
from node.wiring import Node

ROOT = Path(__file__).resolve().parent.parent


async def _run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_demo_tells_the_story_and_ends() -> None:
    # No option: `make demo` ends by itself after the story (--serve keeps it up).
    code, out = await _run("examples/demo.py")
    assert code == 0, out
    assert "carol's timeline, rendered by node C:" in out
    assert "@alice.skyfed.test: Hello from node A!" in out
    assert "↳ @bob.skyfed.test: Hi alice, I'm on node B" in out
    assert "⟳ @bob.skyfed.test reposted:" in out
    assert "(1 reply, 1 repost, 0 likes)" in out  # counts as the CLI and pages write them
    assert "All three nodes hold the same signed heads: yes" in out
    assert "make demo-serve" in out


def test_examples_run_as_programs() -> None:
    for path in sorted((ROOT / "examples").glob("*.py")):
        if path.name.startswith("_"):
            continue
        assert path.read_text().startswith("#!/usr/bin/env python3\n"), path
        assert path.stat().st_mode & stat.S_IXUSR, f"{path} is not executable"


async def _run_outside_the_venv(*args: str) -> tuple[int, str]:
    """Run an example as ``./examples/X.py`` would, with a Python that lacks skyfed."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    proc = await asyncio.create_subprocess_exec(
        python,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_an_example_finds_the_project_venv(node: Node) -> None:
    async with Client(node.url) as c:
        await c.create_account("writer.skyfed.test", "correct horse battery staple")
        await c.post("read with the system python")
    # `python3 examples/render_feed.py` used to fail: No module named 'node'.
    bare = node.url.removeprefix("http://")  # and no scheme is needed on loopback
    code, out = await _run_outside_the_venv("examples/render_feed.py", bare)
    assert code == 0, out
    assert "read with the system python" in out
    assert "ModuleNotFoundError" not in out


async def test_render_feed_into_a_closed_pipe_ends_quietly(node: Node) -> None:
    async with Client(node.url) as c:
        await c.create_account("writer.skyfed.test", "correct horse battery staple")
        await c.post("more than head wants")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `render_feed.py URL | head` after head has gone
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "examples/render_feed.py",
            node.url,
            cwd=ROOT,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, err
    assert err.decode() == ""


async def test_render_feed_says_when_nothing_listens() -> None:
    code, out = await _run("examples/render_feed.py", "http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach http://127.0.0.1:9 (nothing is listening there)" in out
    assert "Traceback" not in out


async def test_local_network_links_three_nodes() -> None:
    code, out = await _run("examples/local_network.py", "--no-wait")
    assert code == 0, out
    assert out.count("node ") >= 3
    assert "all three nodes are linked" in out


async def test_render_feed_shows_latest_posts(node: Node) -> None:
    async with Client(node.url) as c:
        await c.create_account("writer.skyfed.test", "correct horse battery staple")
        await c.post("something worth rendering")
    code, out = await _run("examples/render_feed.py", node.url)
    assert code == 0, out
    assert "something worth rendering" in out
    assert "@writer.skyfed.test" in out


async def test_post_from_client_against_a_live_node(node: Node) -> None:
    code, out = await _run("examples/post_from_client.py", node.url)
    assert code == 0, out
    assert "and replying to myself" in out
    assert "  1 like\n" in out


async def test_post_from_client_reports_an_unreachable_node() -> None:
    code, out = await _run("examples/post_from_client.py", "http://127.0.0.1:9")
    assert code == 1
    assert "error" in out
    assert "Traceback" not in out


async def test_atproto_sdk_client_against_a_live_node(node: Node) -> None:
    code, out = await _run("examples/atproto_sdk_client.py", node.url)
    assert code == 0, out
    assert "logged in as @sdk-" in out
    assert "likes: 1, replies: 1" in out
    assert "…and a reply, also sent by the SDK." in out
    # A second run logs into the account the first one made.
    args = ("--handle", "again.skyfed.test", "--password", "correct horse battery staple")
    code, out = await _run("examples/atproto_sdk_client.py", node.url, *args)
    assert code == 0, out
    assert "created @again.skyfed.test" in out
    code, out = await _run("examples/atproto_sdk_client.py", node.url, *args)
    assert code == 0, out
    assert "created" not in out
    assert "profile: @again.skyfed.test, 4 posts" in out


async def test_atproto_sdk_client_reports_a_wrong_password(node: Node) -> None:
    async with Client(node.url) as c:
        await c.create_account("taken.skyfed.test", "correct horse battery staple")
    args = ("--handle", "taken.skyfed.test", "--password", "not the password")
    code, out = await _run("examples/atproto_sdk_client.py", node.url, *args)
    assert code == 1
    assert "error: 401 AuthenticationRequired" in out
    assert "Traceback" not in out
