"""Two nodes started from the command line with --peer converge."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.client import Client
from node.cluster.process import node_process

PASSWORD = "correct horse battery staple"


@contextlib.asynccontextmanager
async def cli_node(data_dir: Path, *extra: str) -> AsyncIterator[str]:
    async with node_process(data_dir, args=["--reconcile-interval", "1", *extra]) as node:
        yield node.url


async def test_cli_nodes_with_peer_converge(tmp_path: Path) -> None:
    async with (
        cli_node(tmp_path / "a") as a,
        cli_node(tmp_path / "b", "--peer", a) as b,
        Client(a) as alice,
        Client(b) as bob,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        ref = await alice.post("from node a")
        reply = await bob.post("from node b", reply_to=ref)

        async def converged() -> bool:
            heads = []
            for c in (alice, bob):
                repos = await c.call("com.atproto.sync.listRepos")
                heads.append({r["did"]: r["head"] for r in repos["repos"]})
            return len(heads[0]) == 2 and heads[0] == heads[1]

        async with asyncio.timeout(30):
            while not await converged():  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # poll: two processes, no shared event
        got = await bob.get_record(alice.did, "app.bsky.feed.post", ref.uri.rsplit("/", 1)[1])
        assert got["value"]["text"] == "from node a"
        got = await alice.get_record(bob.did, "app.bsky.feed.post", reply.uri.rsplit("/", 1)[1])
        assert got["value"]["reply"]["parent"]["uri"] == ref.uri
        peers = await alice.call("skyfed.node.listPeers")
        assert len(peers["peers"]) == 1


@pytest.mark.parametrize("args", [["node", "start", "--port", "nope"], ["frobnicate"]])
async def test_cli_errors_are_one_line(args: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"Traceback" not in err
    assert b"usage:" in err
