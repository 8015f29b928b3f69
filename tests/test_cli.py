"""The ``skyfed`` command line, run in a subprocess against a live node."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.client import Client
from node.client.render import Renderer, make_console, relative_time
from node.wiring import Node

PASSWORD = "correct horse battery staple"


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _env(config_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SKYFED_NODE", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS")
    }
    env["SKYFED_CONFIG_DIR"] = str(config_dir)
    return env


async def skyfed(config_dir: Path, *args: str, stdin: str | None = None) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(config_dir),
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate(None if stdin is None else stdin.encode())
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def ok(run: Run) -> Run:
    assert run.rc == 0, run.err
    assert run.err == ""
    return run


def one_line_error(run: Run, rc: int = 1) -> str:
    assert run.rc == rc, (run.out, run.err)
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("skyfed: error: ")
    assert "Traceback" not in run.err
    return lines[0]


async def new_account(home: Path, node: Node, name: str) -> Path:
    cfg = home / name
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
    assert f"created @{name}.skyfed.test" in ok(run).out
    return cfg


async def test_a_conversation_from_the_command_line(node: Node, tmp_path: Path) -> None:
    alice = await new_account(tmp_path, node, "alice")
    bob = await new_account(tmp_path, node, "bob")

    creds = alice / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(alice.stat().st_mode) == 0o700
    saved = json.loads(creds.read_text())
    assert saved["handle"] == "alice.skyfed.test"
    assert saved["node"] == node.url
    assert PASSWORD not in creds.read_text()

    ok(await skyfed(bob, "follow", "alice.skyfed.test"))
    hello = ok(await skyfed(alice, "post", "hello from the shell 🐚 #skyfed", "--json")).json()
    assert hello["uri"].startswith("at://did:skyfed:")
    reply = ok(await skyfed(bob, "post", "hi alice", "--reply", hello["uri"], "--json")).json()
    assert ok(await skyfed(bob, "like", hello["uri"])).out.startswith("liked at://")
    ok(await skyfed(bob, "repost", hello["uri"]))
    ok(await skyfed(alice, "post", "quoting myself", "--quote", hello["uri"], "--lang", "en"))

    # bob's timeline: alice's posts, bob's repost and his reply, with counts.
    feed = ok(await skyfed(bob, "feed", "--json")).json()
    uris = [e["post"]["uri"] for e in feed["feed"]]
    assert hello["uri"] in uris
    assert reply["uri"] in uris
    text = ok(await skyfed(bob, "feed")).out
    assert "@alice.skyfed.test" in text
    assert "hello from the shell 🐚 #skyfed" in text
    assert "1 reply · 1 repost · 1 like · 1 quote  (you liked and reposted)" in text
    assert "⟲ reposted by @bob.skyfed.test" in text
    assert "↳ replying to @alice.skyfed.test" in text
    assert "┃ quoting @alice.skyfed.test" in text
    assert "\x1b[" not in text  # no colour codes when stdout is not a terminal
    assert all(line == line.rstrip() for line in text.splitlines())


async def _conversation(node: Node) -> tuple[str, str]:
    """alice posts, bob follows her and replies (through the library, which is quicker)."""
    async with Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.follow(alice.did)
        hello = await alice.post("hello from the library")
        reply = await bob.post("hi alice", reply_to=hello)
        await bob.repost(hello)
        return hello.uri, reply.uri


async def test_reading_from_the_command_line(node: Node, tmp_path: Path) -> None:
    hello, reply = await _conversation(node)
    anon = tmp_path / "anon"

    # The thread: the reply indented under the post it answers.
    thread = ok(await skyfed(anon, "thread", hello, "--node", node.url)).out.splitlines()
    top = thread.index(next(line for line in thread if "hello from the library" in line))
    assert [line for line in thread[top:] if "hi alice" in line] == ["│ hi alice"]
    data = ok(await skyfed(anon, "thread", reply, "--node", node.url, "--json")).json()
    assert data["thread"]["parent"]["post"]["uri"] == hello

    profile = ok(await skyfed(anon, "profile", "bob.skyfed.test", "--node", node.url, "--json"))
    assert profile.json()["followsCount"] == 1
    text = ok(await skyfed(anon, "profile", "alice.skyfed.test", "--node", node.url)).out
    assert "1 follower · 0 following · 1 post" in text
    follows = ok(await skyfed(anon, "follows", "bob.skyfed.test", "--node", node.url)).out
    assert follows.startswith("@alice.skyfed.test")

    # Not logged in: the node's latest posts, from the whole network.
    latest = ok(await skyfed(anon, "feed", "--node", node.url, "--json")).json()
    assert [e["post"]["uri"] for e in latest["feed"]] == [reply, hello]
    by_author = ok(
        await skyfed(anon, "feed", "--node", node.url, "--author", "bob.skyfed.test")
    ).out
    assert "hi alice" in by_author
    assert "hello from the library" in by_author  # bob's repost

    verified = ok(await skyfed(anon, "verify", hello, "--node", node.url))
    assert verified.out.startswith(f"verified {hello}")


async def test_delete_and_block(node: Node, tmp_path: Path) -> None:
    hello, _ = await _conversation(node)
    carol = await new_account(tmp_path, node, "carol")
    mine = ok(await skyfed(carol, "post", "a mistake", "--json")).json()
    ok(await skyfed(carol, "delete", mine["uri"]))
    assert "NotFound" in one_line_error(await skyfed(carol, "thread", mine["uri"]))
    ok(await skyfed(carol, "like", hello))
    assert "(you liked)" in ok(await skyfed(carol, "thread", hello)).out
    blocked = ok(await skyfed(carol, "block", "alice.skyfed.test", "--json")).json()
    assert "/app.bsky.graph.block/" in blocked["uri"]
    assert "you block" in ok(await skyfed(carol, "profile", "alice.skyfed.test")).out
    # Not carol's to delete.
    line = one_line_error(await skyfed(carol, "delete", hello))
    assert "you can delete only your own records" in line
    assert "unexpected" not in line
    assert "ValueError" not in line


async def test_errors_are_one_line(node: Node, tmp_path: Path) -> None:
    nobody = tmp_path / "nobody"
    assert "not logged in" in one_line_error(await skyfed(nobody, "post", "hi"))
    unreachable = await skyfed(nobody, "feed", "--node", "http://127.0.0.1:1")
    assert "cannot reach http://127.0.0.1:1" in one_line_error(unreachable)

    alice = await new_account(tmp_path, node, "alice")
    missing = await skyfed(
        alice, "like", "at://did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3kaaaaaaaaaaa"
    )
    assert one_line_error(missing).startswith("skyfed: error: RecordNotFound: ")
    assert "AT-URI" in one_line_error(await skyfed(alice, "like", "not-a-uri"))
    too_long = await skyfed(alice, "post", "x" * 301)
    assert "InvalidRecord" in one_line_error(too_long)
    taken = await skyfed(
        tmp_path / "other",
        "account",
        "create",
        "alice.skyfed.test",
        "--node",
        node.url,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert "HandleNotAvailable" in one_line_error(taken)
    wrong = await skyfed(
        tmp_path / "other",
        "login",
        "alice.skyfed.test",
        "--node",
        node.url,
        "--password-stdin",
        stdin="wrong password\n",
    )
    one_line_error(wrong)
    assert not (tmp_path / "other" / "credentials.json").exists()
    elsewhere = await skyfed(alice, "post", "hi", "--node", "http://127.0.0.1:1")
    assert "logged in at" in one_line_error(elsewhere)

    # Usage errors: exit status 2.
    assert (await skyfed(alice, "post")).rc == 2
    assert (await skyfed(alice, "feed", "--author", "x", "--latest")).rc == 2
    assert (await skyfed(alice, "frobnicate")).rc == 2


async def test_login_and_logout(node: Node, tmp_path: Path) -> None:
    await new_account(tmp_path, node, "alice")
    laptop = tmp_path / "laptop"
    run = await skyfed(
        laptop,
        "login",
        "alice.skyfed.test",
        "--node",
        node.url,
        "--password-stdin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert ok(run).json()["handle"] == "alice.skyfed.test"
    assert stat.S_IMODE((laptop / "credentials.json").stat().st_mode) == 0o600
    ok(await skyfed(laptop, "post", "from the laptop"))
    assert ok(await skyfed(laptop, "logout")).out == "logged out @alice.skyfed.test\n"
    assert not (laptop / "credentials.json").exists()
    assert "not logged in" in one_line_error(await skyfed(laptop, "post", "hi"))


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["account"],
        ["account", "create"],
        ["login"],
        ["logout"],
        ["post"],
        ["like"],
        ["repost"],
        ["follow"],
        ["block"],
        ["delete"],
        ["feed"],
        ["thread"],
        ["profile"],
        ["follows"],
        ["verify"],
        ["tail"],
        ["node", "start"],
    ],
    ids=lambda c: "-".join(c) or "skyfed",
)
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: skyfed")


async def test_tail_prints_one_line_per_event_until_ctrl_c(node: Node, tmp_path: Path) -> None:
    alice = await new_account(tmp_path, node, "alice")
    ok(await skyfed(alice, "post", "seen on the firehose"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        "tail",
        "--cursor",
        "1",
        "--node",
        node.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(tmp_path / "anon"),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any("seen on the firehose" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "tail ended early"
                lines.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rc = await proc.wait()
    assert rc == 0
    assert (await proc.stderr.read()) == b""
    kinds = [line.split()[2] for line in lines]
    assert kinds[:2] == ["#identity", "#account"]
    assert "@alice.skyfed.test" in lines[0]
    assert "create app.bsky.feed.post/" in lines[-1]


async def test_tail_json_and_future_cursor(node: Node, tmp_path: Path) -> None:
    alice = await new_account(tmp_path, node, "alice")
    ok(await skyfed(alice, "post", "as json"))
    last = node.firehose.last_seq
    future = await skyfed(alice, "tail", "--cursor", str(last + 5))
    assert "FutureCursor" in one_line_error(future)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        "tail",
        "--json",
        "--cursor",
        str(last),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(alice),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            event = json.loads(await proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    assert event["$type"] == "#commit"
    assert event["seq"] == last
    (op,) = event["ops"]
    assert op["action"] == "create"
    assert op["record"]["text"] == "as json"
    assert op["cid"].startswith("b")


# -- rendering, without a node -------------------------------------------------------

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        ("2026-11-23T12:00:00Z", "now"),
        ("2026-11-23T12:00:03.5Z", "now"),  # a clock a little ahead
        ("2026-11-23T11:59:18Z", "42s"),
        ("2026-11-23T11:56:59.9Z", "3m"),
        ("2026-11-23T11:57:00.1Z", "2m"),  # whole minutes, rounded down
        ("2026-11-23T07:00:00+00:00", "5h"),
        ("2026-11-17T12:00:00Z", "6d"),
        ("2026-03-04T12:00:00Z", "Mar 4"),
        ("2023-03-04T12:00:00Z", "Mar 4, 2023"),
        ("not a time", "?"),
    ],
)
def test_relative_time(when: str, shown: str) -> None:
    assert relative_time(when, NOW) == shown


def _post(uri: str, text: str, handle: str, **extra: Any) -> dict[str, Any]:
    return {
        "uri": uri,
        "cid": "bafy",
        "author": {"did": "did:skyfed:x", "handle": handle, **extra},
        "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": "x"},
        "replyCount": 1,
        "repostCount": 0,
        "likeCount": 2,
        "quoteCount": 0,
        "indexedAt": "2026-11-23T11:57:00Z",
        "viewer": {},
        "labels": [],
    }


def test_thread_rendering_indents_and_wraps() -> None:
    out = io.StringIO()
    render = Renderer(make_console(out), now=NOW)
    render.console.width = 40
    long = "word " * 20
    render.thread(
        {
            "thread": {
                "$type": "app.bsky.feed.defs#threadViewPost",
                "post": _post("at://a/p/1", "the post", "alice.test", displayName="Alice"),
                "parent": {
                    "$type": "app.bsky.feed.defs#notFoundPost",
                    "uri": "at://gone",
                    "notFound": True,
                },
                "replies": [
                    {
                        "post": _post("at://b/p/2", long, "bob.test"),
                        "replies": [{"post": _post("at://c/p/3", "deep [red]x[/red]", "c.test")}],
                    }
                ],
            }
        }
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "[post not found] at://gone"
    assert "Alice @alice.test · 3m" in lines
    assert "1 reply · 0 reposts · 2 likes" in lines
    wrapped = [line for line in lines if "word" in line]
    assert len(wrapped) > 1
    assert all(line.startswith("│ ") and len(line) <= 40 for line in wrapped)
    # Two levels down, and user text is never taken for rich markup.
    assert "  │ deep [red]x[/red]" in lines


async def test_an_expired_session_is_refreshed_and_saved(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await new_account(tmp_path, node, "alice")
    before = json.loads((alice / "credentials.json").read_text())
    # Three hours on: the access token (two hours) has expired, the refresh token not.
    later = time.time() + 3 * 3600
    monkeypatch.setattr(node.auth, "_clock", lambda: later)
    ok(await skyfed(alice, "post", "still here"))
    after = json.loads((alice / "credentials.json").read_text())
    assert after["access_jwt"] != before["access_jwt"]
    assert after["refresh_jwt"] != before["refresh_jwt"]  # rotated, so it had to be saved
    assert stat.S_IMODE((alice / "credentials.json").stat().st_mode) == 0o600
    ok(await skyfed(alice, "post", "and again, with the saved tokens"))
