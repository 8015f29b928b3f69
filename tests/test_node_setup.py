"""Setting a node up: `skyfed node init` and `skyfed node start` as an operator runs them.

Real node processes on 127.0.0.1 port 0 (node/cluster/process.py); the CLI in a
subprocess, as a person would type it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from node.cli import _start_leftovers
from node.cluster.process import NodeStartError, node_process
from node.config import NodeConfig, load_config
from node.datalock import DataDirInUse, DataDirLock
from node.wiring import Node, PortInUse

from .test_cli import Run


async def skyfed(*args: str, env: dict[str, str] | None = None) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


# -- item 5: one node per data dir ---------------------------------------------------


async def test_second_node_on_a_data_dir_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    async with node_process(data_dir) as first:
        with pytest.raises(NodeStartError) as info:
            async with node_process(data_dir, log_path=tmp_path / "second.log"):
                pass
        assert f"data dir {data_dir} is in use by pid {first.pid}" in str(info.value)
        assert first.running
    # Stopped cleanly, the lock is free again; killed, the kernel frees it too.
    async with node_process(data_dir, kill=True):
        pass
    async with node_process(data_dir):
        pass


async def test_in_process_node_locks_its_data_dir(tmp_path: Path) -> None:
    cfg = NodeConfig(data_dir=tmp_path, port=0)
    async with Node(cfg):
        with pytest.raises(DataDirInUse, match=f"in use by pid {os.getpid()}"):
            await Node(cfg).start()
    async with Node(cfg):  # released on stop
        pass


async def test_a_node_makes_its_key_only_with_the_data_dir_locked(tmp_path: Path) -> None:
    """Without a lock from its caller (the harness, benches, embedding), a Node takes
    the data dir's lock to read or make its key: a second node made while the first
    holds a new data dir makes no key of its own."""
    data_dir = tmp_path / "new"
    holder = DataDirLock(data_dir)
    holder.acquire()
    try:
        with pytest.raises(DataDirInUse, match=f"in use by pid {os.getpid()}"):
            Node(NodeConfig(data_dir=data_dir, port=0))
        assert not (data_dir / "node.key").exists()
    finally:
        holder.release()
    node = Node(NodeConfig(data_dir=data_dir, port=0))
    assert (data_dir / "node.key").exists()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert not node.lock.held  # made, not started: the lock is free until start()
    async with node:
        assert node.lock.held
        with pytest.raises(DataDirInUse):
            Node(NodeConfig(data_dir=data_dir, port=0))


# -- item 8: a failed start leaves nothing behind --------------------------------------


async def test_port_in_use_says_so_and_leaves_no_data_dir(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "new" / "never-ran"
        run = await skyfed("node", "start", "--data-dir", str(data_dir), "--port", str(port))
        assert run.rc == 1
        assert f"port {port} on 127.0.0.1 is already in use" in run.err
        assert "Traceback" not in run.err
        assert not (tmp_path / "new").exists()

        # An existing data dir keeps what it had, and loses only what this start made.
        existing = tmp_path / "existing"
        existing.mkdir()
        (existing / "notes.txt").write_text("mine")
        run = await skyfed("node", "start", "--data-dir", str(existing), "--port", str(port))
        assert run.rc == 1
        # The lock file stays (it was held until the end: see the next test).
        assert sorted(p.name for p in existing.iterdir()) == ["node.lock", "notes.txt"]


def test_a_failed_start_never_gives_its_lock_away_while_it_cleans_up(tmp_path: Path) -> None:
    """The clean-up after a failed start runs with the lock held: removing the lock
    file then would let a second start lock a fresh one and make files that the
    clean-up (still running) removes."""
    # A data dir as `node init` leaves it: a key, no lock file yet.
    existing = tmp_path / "initialized"
    existing.mkdir()
    (existing / "node.key").write_text("key")
    clean = _start_leftovers(existing)
    lock = DataDirLock(existing)
    lock.acquire()
    try:
        (existing / "node.db").write_text("made by the failed start")
        clean()
        assert sorted(p.name for p in existing.iterdir()) == ["node.key", "node.lock"]
        with pytest.raises(DataDirInUse):  # still ours: no second start in between
            DataDirLock(existing).acquire()
    finally:
        lock.release()

    # A brand-new dir: everything but the lock file goes while it is held; then the
    # lock file, and the directories only if empty.
    new = tmp_path / "new" / "node"
    clean = _start_leftovers(new)
    lock = DataDirLock(new)
    lock.acquire()
    try:
        (new / "blobs").mkdir()
        (new / "blobs" / "x").write_text("x")
        (new / "node.db").write_text("db")
        clean()
    finally:
        lock.release()
    assert not (tmp_path / "new").exists()


async def test_port_in_use_in_process_releases_everything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(NodeConfig(data_dir=tmp_path, port=port))
        with pytest.raises(PortInUse):
            await node.start()
    assert not node.lock.held
    async with Node(NodeConfig(data_dir=tmp_path, port=0)):
        pass


# -- items 6 and 7: node init -----------------------------------------------------------


async def test_init_writes_an_admin_token_0600_that_admin_commands_find(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    run = await skyfed("node", "init", "--data-dir", str(data_dir), "--port", "0")
    assert run.rc == 0, run.err
    config = data_dir / "skyfed.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    cfg = load_config(config)
    assert cfg.admin_token
    assert len(cfg.admin_token) >= 32
    assert cfg.data_dir == data_dir.resolve()

    async with node_process(data_dir, args=["--config", str(config)]) as node:
        run = await skyfed(
            "admin", "takedown", "nobody.skyfed.test", "--reason", "test",
            "--node", node.url, "--node-config", str(config),
        )  # fmt: skip
        # Past the token check: the node answers about the account, not the token.
        assert "unknown handle" in run.err, run.err


async def test_missing_admin_token_says_where_it_looked(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "SKYFED_ADMIN_TOKEN": ""}
    run = await skyfed(
        "admin", "takedown", "bob.skyfed.test", "--reason", "x",
        "--node", "http://127.0.0.1:9", env=env,
    )  # fmt: skip
    assert run.rc == 1
    assert "$SKYFED_ADMIN_TOKEN" in run.err
    assert str(tmp_path / "xdg") in run.err
    assert "skyfed node init" in run.err

    bare = tmp_path / "bare.toml"
    bare.write_text("port = 0\n")
    run = await skyfed(
        "admin", "takedown", "bob.skyfed.test", "--reason", "x",
        "--node", "http://127.0.0.1:9", "--node-config", str(bare), env=env,
    )  # fmt: skip
    assert run.rc == 1
    assert f"admin_token in --node-config {bare}" in run.err


async def test_init_again_reports_ignored_flags_and_updates_when_asked(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    config = data_dir / "skyfed.toml"
    assert (await skyfed("node", "init", "--data-dir", str(data_dir), "--port", "0")).rc == 0
    token = load_config(config).admin_token

    run = await skyfed(
        "node", "init", "--data-dir", str(data_dir), "--port", "2600", "--peer", "http://p:1"
    )
    assert run.rc == 0, run.err
    assert "ignored   --port 2600 (the file has 0)" in run.out
    assert "ignored   --peer ['http://p:1']" in run.out
    assert "--update" in run.out
    assert load_config(config).port == 0  # untouched

    run = await skyfed(
        "node", "init", "--data-dir", str(data_dir), "--port", "2600", "--peer", "http://p:1",
        "--update",
    )  # fmt: skip
    assert run.rc == 0, run.err
    assert "updated   port: 0 -> 2600" in run.out
    cfg = load_config(config)
    assert (cfg.port, cfg.peers, cfg.admin_token) == (2600, ("http://p:1",), token)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    # --update on a file without a token adds one.
    raw = tomllib.loads(config.read_text())
    del raw["admin_token"]
    config.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in raw.items()))
    run = await skyfed("node", "init", "--data-dir", str(data_dir), "--update")
    assert "admin_token: added" in run.out
    assert load_config(config).admin_token


# -- item 7: --help lists every setting -------------------------------------------------


async def test_start_help_lists_every_config_setting() -> None:
    run = await skyfed("node", "start", "--help")
    assert run.rc == 0
    for f in dataclasses.fields(NodeConfig):
        assert f"\n  {f.name} = " in run.out, f.name
    assert "--log-format" in run.out


def test_the_node_key_public_half_is_kept_beside_it(tmp_path: Path) -> None:
    from node.config import NODE_PUBLIC_KEY_FILE, load_or_create_secrets
    from protocol.errors import LocalProtocolError
    from protocol.keys import SigningKey

    data = tmp_path / "d"
    made = load_or_create_secrets(data).node_key
    public = data / NODE_PUBLIC_KEY_FILE
    assert public.read_text().strip() == made.did_key()
    again = load_or_create_secrets(data).node_key
    assert again.did_key() == made.did_key()
    assert again.sign(b"x") == made.sign(b"x")
    # Lost or garbled: derived from the secret and written again.
    for damage in ("", "did:key:zjunk"):
        public.write_text(damage)
        assert load_or_create_secrets(data).node_key.did_key() == made.did_key()
        assert public.read_text().strip() == made.did_key()
    public.unlink()
    assert load_or_create_secrets(data).node_key.did_key() == made.did_key()
    # Replaced by another key's: the node key refuses to sign under a name not its own.
    public.write_text(SigningKey.from_seed(bytes(32)).did_key())
    wrong = load_or_create_secrets(data).node_key
    with pytest.raises(LocalProtocolError, match="not this seed's"):
        wrong.sign(b"x")
