"""``skyfed account export / import / migrate / rotate-key`` against live nodes."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.wiring import Node
from protocol.car import read_car
from protocol.commit import Commit
from protocol.identity import resolve_log
from protocol.keys import SigningKey

from .test_cli import PASSWORD, new_account, ok, one_line_error, skyfed
from .test_federation import all_agree, link, start_nodes, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path / "nodes", 2)
    try:
        await link(nodes, [(1, 0)])
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_account_create_keeps_a_rotation_key_that_outranks_the_node(
    node: Node, tmp_path: Path
) -> None:
    home = await new_account(tmp_path, node, "alice")
    path = home / "rotation_keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads((home / "credentials.json").read_text())
    keys = json.loads(path.read_text())
    key = SigningKey.from_str(keys[creds["did"]])
    state = resolve_log(creds["did"], await node.storage.identity_ops(creds["did"])).state
    assert state.rotation_keys[0] == key.did_key()


async def test_export_rotate_and_migrate_from_the_command_line(
    pair: list[Node], tmp_path: Path
) -> None:
    a, b = pair
    alice = await new_account(tmp_path, a, "alice")
    did = json.loads((alice / "credentials.json").read_text())["did"]
    hello = ok(await skyfed(alice, "post", "hello from a", "--json")).json()

    out = tmp_path / "backup" / "alice"
    out.parent.mkdir()
    exported = ok(await skyfed(alice, "account", "export", "--out", str(out), "--json")).json()
    assert exported["did"] == did
    roots, blocks = read_car(out.with_suffix(".car").read_bytes())
    assert Commit.from_bytes(blocks[roots[0]]).did == did
    assert exported["log"] == str(out.with_suffix(".identity.json"))
    log = json.loads(out.with_suffix(".identity.json").read_text())
    ops = [base64.b64decode(op) for op in log["ops"]]
    assert resolve_log(did, ops).state.handle == "alice.skyfed.test"

    rotated = ok(await skyfed(alice, "account", "rotate-key", "--json")).json()
    state = resolve_log(did, await a.storage.identity_ops(did)).state
    assert state.signing_key == rotated["signingKey"]
    assert "your rotation key" in ok(await skyfed(alice, "account", "rotate-key")).out
    await until(lambda: all_agree(pair, 1))

    moved = ok(
        await skyfed(
            alice,
            "account",
            "migrate",
            "--to",
            b.url,
            "--without-old-node",
            "--log",
            str(out.with_suffix(".identity.json")),
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
    )
    assert f"to {b.url}" in moved.out
    creds = json.loads((alice / "credentials.json").read_text())
    assert creds["node"] == b.url
    assert creds["did"] == did
    second = ok(await skyfed(alice, "post", "hello from b", "--json")).json()
    assert resolve_log(did, await b.storage.identity_ops(did)).state.endpoint == b.url
    feed = ok(await skyfed(alice, "feed", "--author", "alice.skyfed.test", "--json")).json()
    uris = {item["post"]["uri"] for item in feed["feed"]}
    assert {hello["uri"], second["uri"]} <= uris
    # Importing the old export at the new home keeps the newer repository.
    kept = ok(
        await skyfed(alice, "account", "import", str(out.with_suffix(".car")), "--json")
    ).json()
    assert kept["imported"] is False

    async def a_knows() -> bool:
        return (await a.portability.deactivation(did)) is not None

    await until(a_knows)


async def test_clear_errors_for_moves_that_cannot_happen(node: Node, tmp_path: Path) -> None:
    alice = await new_account(tmp_path, node, "alice")
    (alice / "rotation_keys.json").unlink()
    line = one_line_error(
        await skyfed(
            alice,
            "account",
            "migrate",
            "--to",
            "http://127.0.0.1:9",
            "--without-old-node",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
    )
    assert "no rotation key" in line
    line = one_line_error(await skyfed(alice, "account", "import", str(tmp_path / "none.car")))
    assert "cannot read the CAR file" in line
    line = one_line_error(
        await skyfed(alice, "account", "migrate", "--to", node.url, "--password-stdin", stdin="x\n")
    )
    assert "already live" in line
    # Without a rotation key of one's own, the node signs a rotation.
    assert "the node's rotation key" in ok(await skyfed(alice, "account", "rotate-key")).out


async def test_help_explains_the_account_commands(tmp_path: Path) -> None:
    run = ok(await skyfed(tmp_path, "account", "--help"))
    for word in ("export", "import", "migrate", "rotate-key"):
        assert word in run.out
    run = ok(await skyfed(tmp_path, "account", "migrate", "--help"))
    assert "--without-old-node" in run.out
    assert "rotation key" in run.out


async def test_migrate_warns_when_the_account_has_no_rotation_key_of_its_own(
    pair: list[Node], tmp_path: Path
) -> None:
    a, b = pair
    alice = await new_account(tmp_path, a, "alice")
    (alice / "rotation_keys.json").unlink()  # as if made with --no-rotation-key
    await until(lambda: all_agree(pair, 1))
    run = await skyfed(
        alice, "account", "migrate", "--to", b.url, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert run.rc == 0, run.err
    assert "moved @alice" in run.out
    assert run.err.startswith("warning: this account has no rotation key of its own")
