"""A battery of bad requests against a live node: each gets a clear error, none a
500 or a traceback, the node keeps serving, and nothing stored changes."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest

from node.app import Node
from node.client import Client

PASSWORD = "correct horse battery staple"
POST = "app.bsky.feed.post"


def _post(**over: Any) -> dict[str, Any]:
    return {"$type": POST, "text": "hi", "createdAt": "2026-11-23T12:00:00Z", **over}


def _deep(n: int) -> Any:
    value: Any = "x"
    for _ in range(n):
        value = {"a": value}
    return value


async def _state(node: Node, c: Client) -> Any:
    repos = await c.call("com.atproto.sync.listRepos")
    return repos, node.firehose.last_seq, await node.storage.seq_bounds()


async def test_bad_input_battery(node: Node) -> None:
    alice = Client(node.url)
    try:
        await _battery(node, alice)
    finally:
        await alice.close()


async def _battery(node: Node, alice: Client) -> None:
    await alice.create_account("alice.skyfed.test", PASSWORD)
    await alice.post("before the storm")
    assert alice.session is not None
    token = alice.session.access_jwt
    did = alice.did
    auth = {"Authorization": f"Bearer {token}"}
    base = node.url + "/xrpc/"

    def create(record: Any, **extra: Any) -> dict[str, Any]:
        return {"repo": did, "collection": POST, "record": record, **extra}

    # (method, nsid, query, body (dict -> JSON; bytes -> raw), headers, expected status, error)
    cases: list[tuple[str, str, dict[str, str], Any, dict[str, str], int, str]] = [
        ("POST", "com.atproto.repo.createRecord", {}, b"{not json", auth, 400, "InvalidRequest"),
        ("POST", "com.atproto.repo.createRecord", {}, b"[1,2]", auth, 400, "InvalidRequest"),
        ("POST", "com.atproto.repo.createRecord", {}, b"", auth, 400, "InvalidRequest"),
        ("POST", "com.atproto.repo.createRecord", {}, b"\xff\xfe", auth, 400, "InvalidRequest"),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            b"x" * (3 * 1024 * 1024),
            auth,
            413,
            "PayloadTooLarge",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(text="x" * 301)),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(createdAt="yesterday")),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(n=1.5)),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(deep=_deep(40))),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(langs=["en"] * 4)),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create("a string"),
            auth,
            400,
            "InvalidRecord",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(), rkey="bad rkey!"),
            auth,
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            {"repo": did, "collection": "not an nsid", "record": _post()},
            auth,
            400,
            "InvalidRequest",
        ),
        ("POST", "com.atproto.repo.createRecord", {}, create(_post()), {}, 401, "AuthRequired"),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post()),
            {"Authorization": "Bearer nonsense"},
            400,
            "",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post()),
            {"Authorization": "Basic abc"},
            401,
            "AuthRequired",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post()),
            {"Authorization": "Bearer " + token[:-4] + "AAAA"},
            400,
            "",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            {"repo": "did:skyfed:nosuchaccountnosuchaccou", "collection": POST, "record": _post()},
            auth,
            0,
            "",
        ),
        (
            "POST",
            "com.atproto.repo.createRecord",
            {},
            create(_post(), swapCommit="not-a-cid"),
            auth,
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.repo.applyWrites",
            {},
            {"repo": did, "writes": []},
            auth,
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.repo.applyWrites",
            {},
            {"repo": did, "writes": [{"$type": "nope"}]},
            auth,
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.repo.applyWrites",
            {},
            {"repo": did, "writes": [{}] * 201},
            auth,
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.repo.getRecord",
            {"repo": "nobody.skyfed.test", "collection": POST, "rkey": "3k2a"},
            None,
            {},
            400,
            "RepoNotFound",
        ),
        (
            "GET",
            "com.atproto.repo.getRecord",
            {"repo": did, "collection": POST, "rkey": "3kzzzzzzzzzzz"},
            None,
            {},
            400,
            "RecordNotFound",
        ),
        (
            "GET",
            "com.atproto.repo.getRecord",
            {"repo": "!!", "collection": POST, "rkey": "x"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        ("GET", "com.atproto.repo.getRecord", {"repo": did}, None, {}, 400, "InvalidRequest"),
        (
            "GET",
            "com.atproto.repo.listRecords",
            {"repo": did, "collection": POST, "limit": "0"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.repo.listRecords",
            {"repo": did, "collection": POST, "limit": "abc"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.sync.getRepo",
            {"did": "did:skyfed:nosuchaccountnosuchaccou"},
            None,
            {},
            400,
            "RepoNotFound",
        ),
        ("GET", "com.atproto.sync.getRepo", {"did": "not a did"}, None, {}, 400, "InvalidRequest"),
        (
            "GET",
            "com.atproto.sync.getRepo",
            {"did": did, "since": "3kzzzzzzzzzzz"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        ("GET", "com.atproto.sync.getLatestCommit", {}, None, {}, 400, "InvalidRequest"),
        ("GET", "com.atproto.sync.listRepos", {"limit": "100000"}, None, {}, 400, "InvalidRequest"),
        (
            "GET",
            "com.atproto.sync.subscribeRepos",
            {"cursor": "abc"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.sync.subscribeRepos",
            {"cursor": "-5"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.identity.resolveHandle",
            {"handle": "no_such handle"},
            None,
            {},
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "com.atproto.identity.resolveHandle",
            {"handle": "ghost.skyfed.test"},
            None,
            {},
            400,
            "HandleNotFound",
        ),
        ("GET", "com.atproto.server.createSession", {}, None, {}, 405, "InvalidRequest"),
        (
            "POST",
            "com.atproto.server.createSession",
            {},
            {"identifier": "alice.skyfed.test"},
            {},
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.server.createSession",
            {},
            {"identifier": 5, "password": "x"},
            {},
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.server.createAccount",
            {},
            {"handle": "x", "password": PASSWORD},
            {},
            400,
            "InvalidHandle",
        ),
        (
            "POST",
            "com.atproto.server.createAccount",
            {},
            {"handle": "eve.skyfed.test", "password": "short"},
            {},
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "com.atproto.server.createAccount",
            {},
            {"handle": "eve.skyfed.test", "password": PASSWORD, "recoveryKey": "did:key:zzz"},
            {},
            400,
            "InvalidRequest",
        ),
        ("GET", "com.example.noSuchMethod", {}, None, {}, 501, "MethodNotImplemented"),
        ("POST", "com.atproto.server.refreshSession", {}, {}, auth, 400, ""),
    ]
    before = await _state(node, alice)
    async with aiohttp.ClientSession() as http:
        for method, nsid, query, body, headers, status, error in cases:
            kwargs: dict[str, Any] = {"params": query, "headers": headers}
            if isinstance(body, bytes):
                kwargs["data"] = io.BytesIO(body)
                kwargs["headers"] = {**headers, "Content-Type": "application/json"}
            elif body is not None:
                kwargs["data"] = json.dumps(body)
                kwargs["headers"] = {**headers, "Content-Type": "application/json"}
            async with http.request(method, base + nsid, **kwargs) as resp:
                text = await resp.text()
                where = f"{method} {nsid} {query} -> {resp.status} {text[:200]}"
                assert resp.status != 500, where
                assert "Traceback" not in text, where
                assert 400 <= resp.status < 600, where
                if status:
                    assert resp.status == status, where
                payload = json.loads(text)
                assert isinstance(payload.get("error"), str), where
                assert isinstance(payload.get("message"), str), where
                if error:
                    assert payload["error"] == error, where
    assert await _state(node, alice) == before
    # Still serving, and still writable by its owner.
    await alice.post("after the storm")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/xrpc/", id="empty-nsid"),
        pytest.param("/nothing-here", id="unknown-path"),
    ],
)
async def test_unknown_paths_are_json_errors(node: Node, path: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(node.url + path) as resp:
        assert resp.status == 404
        payload = await resp.json()
        assert payload["error"]
