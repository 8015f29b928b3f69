"""The moderation commands of ``skyfed``, run in a subprocess against a live node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.config import NodeConfig
from node.wiring import Node
from tests.test_cli import new_account, ok, one_line_error, skyfed

TOKEN = "cli-admin-token"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def admin_node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path / "node", port=0, admin_token=TOKEN)
    node = Node(config)
    await node.start()
    yield node
    await node.stop()


async def test_labelers_labels_mutes_and_admin_from_the_shell(
    admin_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = admin_node
    mod = await new_account(tmp_path, node, "mod")
    spammer = await new_account(tmp_path, node, "spammer")
    reader = await new_account(tmp_path, node, "reader")
    spam = ok(await skyfed(spammer, "post", "BUY CHEAP FOLLOWERS", "--json")).json()
    ok(await skyfed(spammer, "post", "just a normal post"))
    ok(await skyfed(mod, "label", spam["uri"], "spam"))

    before = ok(await skyfed(reader, "feed", "--latest")).out
    assert "BUY CHEAP FOLLOWERS" in before
    ok(await skyfed(reader, "labelers", "add", "mod.skyfed.test"))
    listed = ok(await skyfed(reader, "labelers", "list")).out
    assert "labeler did:skyfed:" in listed
    assert "spam: hide" in listed
    after = ok(await skyfed(reader, "feed", "--latest")).out
    assert "BUY CHEAP FOLLOWERS" not in after
    assert "hidden by your moderation settings: spam" in after
    assert "just a normal post" in after
    ok(await skyfed(reader, "labelers", "set", "spam", "warn"))
    warned = ok(await skyfed(reader, "feed", "--latest")).out
    assert "content warning: spam" in warned
    assert "BUY CHEAP FOLLOWERS" not in warned
    assert "BUY CHEAP FOLLOWERS" in ok(await skyfed(reader, "feed", "--latest", "--reveal")).out
    assert "global label" in one_line_error(
        await skyfed(reader, "labelers", "set", "!hide", "show")
    )

    ok(await skyfed(reader, "mute", "spammer.skyfed.test"))
    assert "@spammer.skyfed.test" in ok(await skyfed(reader, "mutes")).out
    assert "just a normal post" not in ok(await skyfed(reader, "feed", "--latest")).out
    ok(await skyfed(reader, "unmute", "spammer.skyfed.test"))

    # Admin: no token, then the token from the environment.
    assert "no admin token" in one_line_error(
        await skyfed(reader, "admin", "takedown", "spammer.skyfed.test", "--reason", "spam")
    )
    monkeypatch.setenv("SKYFED_ADMIN_TOKEN", TOKEN)
    down = ok(
        await skyfed(
            reader,
            "admin",
            "takedown",
            "spammer.skyfed.test",
            "--reason",
            "spam network",
            "--scope",
            "serve",
        )
    ).out
    assert "took down #1" in down
    assert "[serve]" in down
    monkeypatch.delenv("SKYFED_ADMIN_TOKEN")
    listing = ok(await skyfed(reader, "admin", "list")).out
    assert "reason: spam network" in listing
    assert "just a normal post" not in ok(await skyfed(reader, "feed", "--latest")).out
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    back = ok(
        await skyfed(
            reader,
            "admin",
            "reverse",
            "spammer.skyfed.test",
            "--reason",
            "appeal",
            "--token-file",
            str(token_file),
        )
    ).out
    assert "reversed because: appeal" in back
    assert "just a normal post" in ok(await skyfed(reader, "feed", "--latest")).out
