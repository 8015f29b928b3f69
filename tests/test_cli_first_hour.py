"""A newcomer's first hour with the ``skyfed`` command line (issue 14).

Several accounts in one config dir, ``profile set``, and errors that say what is wrong
and what to do next: a URL without a scheme, a server that is not a node, a node that
is down, a closed pipe, an empty post, a deleted record. Real nodes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from node.config import NodeConfig
from node.counts import count_parts, format_count
from node.wiring import Node
from tests.test_cli import PASSWORD, _env, ok, one_line_error, skyfed
from tests.test_client import serving


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        return await r.text()


async def create(cfg: Path, node: Node, name: str) -> str:
    run = await skyfed(
        cfg,
        "account",
        "create",
        f"{name}.skyfed.test",
        "--node",
        node.url,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    return ok(run).out


@pytest.fixture
async def second(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(NodeConfig(data_dir=tmp_path / "second", port=0)) as n:
        yield n


async def test_two_accounts_on_two_nodes_stay_saved(
    node: Node, second: Node, tmp_path: Path
) -> None:
    cfg = tmp_path / "me"
    await create(cfg, node, "alice")
    out = await create(cfg, second, "bob")
    # Creating bob says that alice is still there, a --as away.
    assert "also saved: @alice.skyfed.test" in out

    listing = ok(await skyfed(cfg, "accounts")).out.splitlines()
    assert listing[0].startswith("  @alice.skyfed.test")
    assert node.url in listing[0]
    assert listing[1].startswith("* @bob.skyfed.test")
    assert second.url in listing[1]
    for name in ("accounts.json", "credentials.json"):
        assert stat.S_IMODE((cfg / name).stat().st_mode) == 0o600
        assert PASSWORD not in (cfg / name).read_text()

    # --as, before or after the command, acts as alice at her home node without switching.
    before = ok(await skyfed(cfg, "--as", "alice.skyfed.test", "post", "from A", "--json")).json()
    after = ok(await skyfed(cfg, "post", "again from A", "--as", "@alice.skyfed.test", "--json"))
    alice_did = before["uri"].split("/")[2]
    assert after.json()["uri"].split("/")[2] == alice_did
    current = json.loads(ok(await skyfed(cfg, "accounts", "--json")).out)
    assert [a["handle"] for a in current if a["current"]] == ["bob.skyfed.test"]

    bobs = ok(await skyfed(cfg, "post", "from B", "--json")).json()
    assert bobs["uri"].split("/")[2] != alice_did

    assert (
        "now acting as @alice" in ok(await skyfed(cfg, "accounts", "use", "alice.skyfed.test")).out
    )
    assert ok(await skyfed(cfg, "post", "A once more", "--json")).json()["uri"].split("/")[2] == (
        alice_did
    )
    assert "no saved account carol" in one_line_error(await skyfed(cfg, "--as", "carol", "feed"))

    # Logging one out keeps the other; with no current account, commands say how to
    # pick one.
    ok(await skyfed(cfg, "--as", "bob.skyfed.test", "logout"))
    listing = ok(await skyfed(cfg, "accounts")).out
    assert "bob" not in listing
    assert "* @alice.skyfed.test" in listing
    await create(cfg, node, "carol")
    ok(await skyfed(cfg, "logout"))  # carol, the current one
    line = one_line_error(await skyfed(cfg, "post", "who am I?"))
    assert "no current account: `skyfed accounts use HANDLE` picks one of @alice" in line
    assert "  @alice.skyfed.test" in ok(await skyfed(cfg, "accounts")).out


async def test_profile_set_shows_the_display_name_everywhere(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    page = await fetch(f"{node.url}/profile/alice.skyfed.test")
    # Without a display name the page names the handle once, as its heading.
    assert "<h1>@alice.skyfed.test</h1>" in page
    assert page.count("@alice.skyfed.test<") == 1
    out = ok(
        await skyfed(
            cfg, "profile", "set", "--display-name", "Alice Liddell", "--description", "curious"
        )
    ).out
    assert "Alice Liddell" in out
    assert "curious" in out
    view = ok(await skyfed(cfg, "profile", "alice.skyfed.test", "--json")).json()
    assert view["displayName"] == "Alice Liddell"
    assert view["description"] == "curious"
    # Changing one field keeps the other; an empty value removes it.
    ok(await skyfed(cfg, "profile", "set", "--description", ""))
    view = ok(await skyfed(cfg, "profile", "--json")).json()
    assert view["displayName"] == "Alice Liddell"
    assert "description" not in view
    ok(await skyfed(cfg, "post", "hello"))
    assert "Alice Liddell @alice.skyfed.test" in ok(await skyfed(cfg, "feed", "--latest")).out
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.url}/profile/alice.skyfed.test") as r,
    ):
        page = await r.text()
    assert '<h1>Alice Liddell</h1><p class="handle">@alice.skyfed.test</p>' in page
    front = await fetch(f"{node.url}/")
    assert '<span class="name">Alice Liddell</span>' in front

    avatar = tmp_path / "me.png"
    avatar.write_bytes(b"\x89PNG")
    line = one_line_error(await skyfed(cfg, "profile", "set", "--avatar", str(avatar)))
    assert "--avatar is not supported yet" in line
    assert "say what to change" in one_line_error(await skyfed(cfg, "profile", "set"))


async def test_a_url_without_a_scheme_means_http_on_loopback(node: Node, tmp_path: Path) -> None:
    bare = node.url.removeprefix("http://")
    ok(await skyfed(tmp_path, "feed", "--node", bare))
    line = one_line_error(await skyfed(tmp_path, "feed", "--node", "example.com:2583"))
    assert "no scheme: write https://example.com:2583" in line


async def test_a_server_that_is_not_a_node_is_named(tmp_path: Path) -> None:
    async def page(request: web.Request) -> web.Response:
        if "json" in request.query_string:  # some other JSON API's error
            return web.json_response({"detail": "no such thing"}, status=404)
        status = 404 if "nowhere" in request.query_string else 200
        html = "<html><body>my blog</body></html>"
        return web.Response(text=html, content_type="text/html", status=status)

    async with serving(page, "/{tail:.*}") as url:
        for args in (
            ("feed", "--latest"),
            ("profile", "nowhere.skyfed.test"),
            ("profile", "json.skyfed.test"),
        ):
            line = one_line_error(await skyfed(tmp_path, *args, "--node", url))
            assert f"{url} is not a skyfed node" in line
            assert "<html" not in line
            assert "None" not in line


async def test_an_unreachable_node_says_what_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    async with Node(NodeConfig(data_dir=tmp_path / "home", port=0)) as home:
        await create(cfg, home, "alice")
        url = home.url
    # alice's home is gone: the message names it and both ways forward.
    line = one_line_error(await skyfed(cfg, "post", "anyone there?"))
    assert f"cannot reach {url}, the home node of @alice.skyfed.test" in line
    assert "read through another node with `--node URL`" in line
    assert "skyfed account migrate --to URL --without-old-node" in line
    assert "ClientConnectorError" not in line
    assert "Errno" not in line
    # Someone with no account here is told to start a node or name another.
    line = one_line_error(await skyfed(tmp_path / "nobody", "feed", "--node", url))
    assert "is a node running there?" in line


async def test_an_empty_post_is_refused(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    for text in ("", "   \n\t"):
        assert "the post is empty" in one_line_error(await skyfed(cfg, "post", text))
    feed = ok(await skyfed(cfg, "feed", "--author", "alice.skyfed.test", "--json")).json()
    assert feed["feed"] == []


async def test_verify_tells_deleted_from_tampered(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    uri = ok(await skyfed(cfg, "post", "soon gone", "--json")).json()["uri"]
    assert "verified" in ok(await skyfed(cfg, "verify", uri)).out
    ok(await skyfed(cfg, "delete", uri))
    line = one_line_error(await skyfed(cfg, "verify", uri))
    assert line.startswith("skyfed: error: not found: ")
    assert "deleted" in line
    assert "nothing was tampered with" in line
    assert "verification failed" not in line


async def _closed_pipe(*argv: str, env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone (`... | head` after head
    exits); return the exit status and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env
        )
    finally:
        os.close(write_end)
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_closed_pipe_is_a_normal_end(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    ok(await skyfed(cfg, "post", "one line is enough for head"))
    env = _env(cfg)
    for extra in ((), ("--json",)):
        rc, err = await _closed_pipe(sys.executable, "-m", "node.cli", "feed", *extra, env=env)
        assert (rc, err) == (0, "")


async def test_tail_names_authors_by_handle(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    ok(await skyfed(cfg, "post", "who wrote this?"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        "tail",
        "--cursor",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(cfg),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "tail ended early"
                if "#commit" in line and "app.bsky.feed.post/" in line:
                    break
    finally:
        proc.terminate()
        await proc.wait()
    assert "@alice.skyfed.test" in line
    assert "did:skyfed:" not in line.split("create")[0]


def test_counts_are_written_one_way() -> None:
    assert format_count(1, "like") == "1 like"
    assert format_count(0, "reply", "replies") == "0 replies"
    assert format_count(12345, "follower") == "12,345 followers"
    assert format_count(None, "post") == "0 posts"
    assert format_count(True, "post") == "0 posts"
    assert count_parts(1000, "following", "following") == ("1,000", "following")


async def test_pages_name_the_node_and_count_one_way(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "alice"
    await create(cfg, node, "alice")
    ok(await skyfed(cfg, "post", "counted"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/") as r:
            front = await r.text()
        async with http.get(f"{node.url}/profile/alice.skyfed.test") as r:
            profile = await r.text()
    host = node.url.removeprefix("http://")
    assert f'<span class="node" title="{node.node_did}">{host}</span>' in front
    assert f'the node at <a href="{node.url}/">{node.url}</a> ({node.node_did})' in front
    assert node.node_did in profile
    assert "0 replies</a></li><li>0 reposts</li><li>0 likes</li>" in front
    assert "<li><strong>1</strong> post</li>" in profile
    assert "<li><strong>0</strong> followers</li>" in profile


async def test_refreshed_tokens_of_every_account_are_kept(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "me"
    await create(cfg, node, "alice")
    await create(cfg, node, "bob")  # current
    current = json.loads((cfg / "credentials.json").read_text())
    # Three hours on, every access token has expired: each use refreshes (and rotates)
    # that account's tokens, which must be saved where the next command looks.
    later = time.time() + 3 * 3600
    monkeypatch.setattr(node.auth, "_clock", lambda: later)
    ok(await skyfed(cfg, "--as", "alice.skyfed.test", "post", "alice, refreshed"))
    assert json.loads((cfg / "credentials.json").read_text()) == current  # no switch
    ok(await skyfed(cfg, "--as", "bob.skyfed.test", "post", "bob, via --as"))
    ok(await skyfed(cfg, "post", "bob, as the current account"))
    ok(await skyfed(cfg, "--as", "alice.skyfed.test", "post", "alice, with the saved tokens"))
    saved = {a["handle"]: a for a in json.loads((cfg / "accounts.json").read_text())}
    now = json.loads((cfg / "credentials.json").read_text())
    assert now["handle"] == "bob.skyfed.test"
    assert now == saved["bob.skyfed.test"]
    assert now["refresh_jwt"] != current["refresh_jwt"]
