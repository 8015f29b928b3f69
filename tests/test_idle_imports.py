"""An idle node loads only what serving needs (issue 16: idle RSS per node <= 50 MB).

A node process that has started and answered a health check must not have imported
the libraries that only some requests or features use: each costs a node process
memory (cryptography alone about 10 MB of RSS) whether or not it is ever used. The
first request that needs one loads it, and it works: the test makes those requests
too. Module presence is checked, not megabytes, so the test does not depend on the
machine; ``bench/idle_rss.py`` measures the megabytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from node.config import load_or_create_secrets

# Loaded by the first use of a feature, never by starting and idling.
NOT_AT_IDLE = (
    "nacl",  # the first signature made or checked (protocol/keys.py)
    "cryptography",  # PyJWT's first token, the atproto bridge
    "jwt",  # the first session or service token
    "argon2",  # the first password hashed or checked
    "prometheus_client",  # the first /metrics scrape (node/server/metrics.py)
    "regex",  # the first record text checked (protocol/records.py)
    "platformdirs",  # a node started without a data dir
    "tomli_w",  # `node init` and --help
    "psycopg",  # a node on PostgreSQL
    "dns",  # the atproto bridge's handle check
    "cbrrr",  # atproto DAG-CBOR
    "atproto",  # the atproto SDK (tests and benches only)
    "matplotlib",  # the cluster report's plots
    "rich",  # the client's terminal output
    "psutil",  # the cluster harness
    "PIL",
    "protocol.atproto",
    "node.atproto.bridge",
    "node.atproto.identity",
    "node.client",
    "node.cluster.harness",
    "node.cluster.report",
    "node.store.postgres",
)

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    from node.cli import _config, build_parser
    from node.wiring import Node

    def loaded():
        return sorted(sys.modules)

    async def get(port, path, body=None):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        method = "GET" if body is None else "POST"
        head = f"{method} {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n"
        if body is not None:
            head += f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n"
        writer.write(head.encode() + b"\\r\\n" + (body or b""))
        status = int((await reader.readline()).split()[1])
        rest = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return status, rest

    async def main(data_dir):
        args = build_parser().parse_args(
            ["node", "start", "--data-dir", data_dir, "--host", "127.0.0.1", "--port", "0"]
        )
        node = Node(_config(args))
        await node.start()
        out = {}
        try:
            out["health"] = (await get(node.port, "/xrpc/_health"))[0]
            out["idle"] = loaded()
            status, body = await get(node.port, "/metrics")
            out["metrics"] = [status, b"skyfed_requests_total" in body]
            out["after_metrics"] = loaded()
            login = json.dumps({"identifier": "nobody.test", "password": "wrong password"})
            path = "/xrpc/com.atproto.server.createSession"
            status, _ = await get(node.port, path, login.encode())
            out["login"] = status
            out["after_login"] = loaded()
        finally:
            await node.stop()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
    """
)


def _run(tmp_path: Path) -> dict[str, object]:
    root = Path(__file__).resolve().parent.parent
    # The data directory is made first, as `skyfed node init` does: making the node
    # key needs cryptography, starting with one made (and its public half kept) not.
    load_or_create_secrets(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "data")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return out


def _present(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return [n for n in names if n in modules]


def test_an_idle_node_has_not_loaded_what_only_requests_use(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert out["health"] == 200
    idle = out["idle"]
    # The node really ran: its server and storage are loaded.
    assert _present(idle, ("aiohttp.web", "sqlite3", "node.wiring")) == [
        "aiohttp.web",
        "sqlite3",
        "node.wiring",
    ]
    assert _present(idle, NOT_AT_IDLE) == []
    # A feature that needs a deferred library loads it, and works.
    assert out["metrics"] == [200, True]
    assert "prometheus_client" in _present(out["after_metrics"], NOT_AT_IDLE)
    assert out["login"] == 401  # no such account: the dummy hash was checked
    assert "argon2" in _present(out["after_login"], NOT_AT_IDLE)
