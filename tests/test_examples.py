"""The examples run as a user would run them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from node.app import Node
from node.client import Client

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


async def test_demo_tells_the_story() -> None:
    code, out = await _run("examples/demo.py", "--no-wait")
    assert code == 0, out
    assert "carol's timeline, rendered by node C:" in out
    assert "@alice.skyfed.test: Hello from node A!" in out
    assert "↳ @bob.skyfed.test: Hi alice, I'm on node B" in out
    assert "⟳ @bob.skyfed.test reposted:" in out
    assert "All three nodes hold the same signed heads: yes" in out


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
    assert "likes: 1" in out


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
