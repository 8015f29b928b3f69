"""A battery of bad requests against a live node: each gets a clear error, none a
500 or a traceback, the node keeps serving, and nothing stored changes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.client import Client
from node.config import NodeConfig
from node.server.inputs import MAX_JSON_DEPTH
from node.server.xrpc.app_bsky_feed import MAX_THREAD_DEPTH, MAX_THREAD_PARENT_HEIGHT
from node.wiring import Node
from protocol.cid import cid_for_msgpack
from protocol.encoding import encode
from protocol.syntax import tid_from_parts

from .hostile import raw_request, snapshot

PASSWORD = "correct horse battery staple"
ADMIN_TOKEN = "the-admin-token-of-this-node"
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


# -- issue 13, finding 12: bad input is a 4xx, and changes nothing --------------------


async def _expect(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    status: int,
    error: str = "",
    **kwargs: Any,
) -> dict[str, Any]:
    async with http.request(method, url, **kwargs) as resp:
        text = await resp.text()
        where = f"{method} {url} -> {resp.status} {text[:200]}"
        assert resp.status == status, where
        assert "Traceback" not in text, where
        payload: dict[str, Any] = json.loads(text)
        if error:
            assert payload["error"] == error, where
        return payload


@pytest.fixture
async def admin_node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path / "node", port=0, admin_token=ADMIN_TOKEN)
    async with Node(config) as n:
        yield n


async def test_hostile_bodies_and_parameters_are_4xx(admin_node: Node) -> None:
    node = admin_node
    async with Client(node.url) as alice, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.post("before")
        assert alice.session is not None
        auth = {"Authorization": f"Bearer {alice.session.access_jwt}"}
        json_auth = {**auth, "Content-Type": "application/json"}
        base = node.url + "/xrpc/"
        before = snapshot(node)

        # Nested past orjson's own limit (it was a RecursionError in json.loads), and
        # nested past MAX_JSON_DEPTH though within what the parser could take.
        for body in (b"[" * 100_000, json.dumps(_deep(MAX_JSON_DEPTH + 1)).encode()):
            for nsid in ("com.atproto.repo.createRecord", "com.atproto.server.createSession"):
                await _expect(
                    http, "POST", base + nsid, 400, "InvalidRequest", data=body, headers=json_auth
                )
        # Integers: a superscript two, 5,000 digits, a 2**63 cursor, +1, 1_0, " 1".
        for value in ("²", "٣", "9" * 5000, "+1", "1_0", " 1", "0x10"):
            for nsid, params in (
                ("com.atproto.repo.listRecords", {"repo": alice.did, "collection": POST}),
                ("com.atproto.sync.listRepos", {}),
                ("skyfed.moderation.listActions", {}),
                ("com.atproto.label.queryLabels", {"uriPatterns": "*"}),
            ):
                await _expect(
                    http,
                    "GET",
                    base + nsid,
                    400,
                    "InvalidRequest",
                    params={**params, "limit": value},
                )
            async with http.get(node.url + "/", params={"limit": value}) as resp:
                assert resp.status == 400
                assert resp.content_type == "text/html"
        for cursor in (str(2**63), str(2**64), "9" * 5000, "²"):
            await _expect(
                http,
                "GET",
                base + "com.atproto.label.queryLabels",
                400,
                "InvalidRequest",
                params={"uriPatterns": "*", "cursor": cursor},
            )
            await _expect(
                http,
                "GET",
                base + "skyfed.moderation.listActions",
                400,
                "InvalidRequest",
                params={"cursor": cursor},
            )
        # The largest cursor SQLite can hold is fine.
        await _expect(
            http,
            "GET",
            base + "com.atproto.label.queryLabels",
            200,
            params={"uriPatterns": "*", "cursor": str(2**63 - 1)},
        )
        # applyWrites with $type as a list (was: unhashable type, a 500).
        for kind in (["com.atproto.repo.applyWrites#create"], {"a": 1}, 5, None):
            await _expect(
                http,
                "POST",
                base + "com.atproto.repo.applyWrites",
                400,
                "InvalidRequest",
                json={"repo": alice.did, "writes": [{"$type": kind, "collection": POST}]},
                headers=auth,
            )
        # A lone surrogate in a password, as a JSON escape and as raw bytes.
        for body in (
            b'{"identifier": "alice.skyfed.test", "password": "abc\\ud800defgh"}',
            b'{"identifier": "alice.skyfed.test", "password": "abc\xed\xa0\x80defgh"}',
        ):
            await _expect(
                http,
                "POST",
                base + "com.atproto.server.createSession",
                400,
                "InvalidRequest",
                data=body,
                headers={"Content-Type": "application/json"},
            )
        await _expect(
            http,
            "POST",
            base + "com.atproto.server.createAccount",
            400,
            "InvalidRequest",
            data=b'{"handle": "eve.skyfed.test", "password": "\\udfff\\udfff\\udfff\\udfff"}',
            headers={"Content-Type": "application/json"},
        )
        # Non-ASCII bytes in the admin Authorization header: a wrong token, not a 500.
        body = json.dumps({"did": alice.did, "reason": "x"}).encode()
        for token in (b"\xff\xfe\xfd", "é".encode(), b"\xe2\x82" + ADMIN_TOKEN.encode()):
            answer = await raw_request(
                node,
                b"POST /xrpc/skyfed.admin.takedown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer "
                + token
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body,
            )
            assert answer.status == 401, answer
            assert json.loads(answer.body)["error"] == "InvalidToken"
        assert snapshot(node) == before
        await alice.post("after")


async def test_settings_form_refuses_bad_bodies_with_a_page(node: Node) -> None:
    url = node.url + "/settings/moderation"
    origin = {"Origin": node.url}
    before = snapshot(node)
    async with aiohttp.ClientSession() as http:
        cases: list[tuple[bytes, str, int]] = [
            (b"labelers=%ff%fe&labels=", "application/x-www-form-urlencoded", 400),
            (b"labelers=\xff\xfe", "application/x-www-form-urlencoded", 400),
            (b"&".join(b"a=%d" % i for i in range(100)), "application/x-www-form-urlencoded", 400),
            (b"--b\r\nnot a part", "multipart/form-data; boundary=b", 415),
            (b"--\r\n\r\n", "multipart/form-data", 415),
            (b'{"labelers": ""}', "application/json", 415),
        ]
        for body, content_type, status in cases:
            headers = {**origin, "Content-Type": content_type}
            async with http.post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                assert resp.status == status, (body, text[:300])
                assert resp.content_type == "text/html", (body, text[:300])
                assert "Traceback" not in text
                assert "set-cookie" not in resp.headers
        # An Origin that does not parse as a URL is "not from this site", not a 500.
        for source in ("http://[", "http://]", "http://[::1"):
            async with http.post(url, data={"labelers": ""}, headers={"Origin": source}) as resp:
                assert resp.status == 403
                assert resp.content_type == "text/html"
        # A cookie holding 3,000 nested arrays (json.loads: RecursionError) or junk is
        # no settings, not a 500.
        for raw in (b"[" * 3000, b"\xff\xfe", b'{"labelers": 5}'):
            cookie = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            for path in ("/", "/settings/moderation"):
                async with http.get(
                    node.url + path, headers={"Cookie": f"skyfed_moderation={cookie}"}
                ) as resp:
                    assert resp.status == 200, (raw[:20], path)
        # The form itself still works.
        async with http.post(
            url, data={"labelers": "", "labels": ""}, headers=origin, allow_redirects=False
        ) as resp:
            assert resp.status == 303
    assert snapshot(node) == before


async def _reply_chain(node: Node, alice: Client, length: int) -> list[str]:
    """``length`` posts, each a reply to the one before, written 200 to a commit."""
    assert alice.session is not None
    auth = {"Authorization": f"Bearer {alice.session.access_jwt}"}
    start = int(time.time() * 1e6) - length * 1000
    uris: list[str] = []
    root: dict[str, str] | None = None
    parent: dict[str, str] | None = None
    writes: list[dict[str, Any]] = []
    for i in range(length):
        rkey = tid_from_parts(start + i * 1000, 7)
        record: dict[str, Any] = _post(text=f"reply {i}")
        if root is not None and parent is not None:
            record["reply"] = {"root": root, "parent": parent}
        cid = str(cid_for_msgpack(encode(record)))
        uri = f"at://{alice.did}/{POST}/{rkey}"
        uris.append(uri)
        parent = {"uri": uri, "cid": cid}
        root = root or parent
        writes.append(
            {
                "$type": "com.atproto.repo.applyWrites#create",
                "collection": POST,
                "rkey": rkey,
                "value": record,
            }
        )
    async with aiohttp.ClientSession() as http:
        for at in range(0, length, 200):
            body = {"repo": alice.did, "writes": writes[at : at + 200]}
            async with http.post(
                node.url + "/xrpc/com.atproto.repo.applyWrites", json=body, headers=auth
            ) as resp:
                assert resp.status == 200, await resp.text()
    return uris


async def test_deep_threads_are_served_clamped(node: Node) -> None:
    async with Client(node.url) as alice, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        uris = await _reply_chain(node, alice, 300)
        url = node.url + "/xrpc/app.bsky.feed.getPostThread"
        # From the top, depth 1,000: served, MAX_THREAD_DEPTH levels of replies.
        out = await _expect(http, "GET", url, 200, params={"uri": uris[0], "depth": "1000"})
        levels, at = 0, out["thread"]
        while at.get("replies"):
            at, levels = at["replies"][0], levels + 1
        assert levels == MAX_THREAD_DEPTH
        # From the bottom, parentHeight 1,000: MAX_THREAD_PARENT_HEIGHT parents.
        out = await _expect(http, "GET", url, 200, params={"uri": uris[-1], "parentHeight": "1000"})
        levels, at = 0, out["thread"]
        while "parent" in at:
            at, levels = at["parent"], levels + 1
        assert levels == MAX_THREAD_PARENT_HEIGHT
        # Over the lexicon's range is still refused.
        await _expect(
            http, "GET", url, 400, "InvalidRequest", params={"uri": uris[0], "depth": "1001"}
        )
        # The thread page of the deepest post renders.
        rkey = uris[-1].rsplit("/", 1)[1]
        async with http.get(f"{node.url}/post/{alice.did}/{rkey}") as resp:
            assert resp.status == 200


# -- finding 13: a link facet that is not a URL ----------------------------------------

BAD_LINK = "http://["


def _bad_link_post(text: str = "see http://[ now") -> dict[str, Any]:
    start = text.encode().index(BAD_LINK.encode())
    return _post(
        text=text,
        facets=[
            {
                "index": {"byteStart": start, "byteEnd": start + len(BAD_LINK)},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": BAD_LINK}],
            }
        ],
    )


async def test_a_bad_link_facet_is_refused_on_the_way_in(node: Node) -> None:
    async with Client(node.url) as alice, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        assert alice.session is not None
        auth = {"Authorization": f"Bearer {alice.session.access_jwt}"}
        before = snapshot(node)
        payload = await _expect(
            http,
            "POST",
            node.url + "/xrpc/com.atproto.repo.createRecord",
            400,
            "InvalidRecord",
            json={"repo": alice.did, "collection": POST, "record": _bad_link_post()},
            headers=auth,
        )
        assert "facets[0].features[0].uri" in payload["message"]
        assert snapshot(node) == before


async def test_a_stored_bad_link_facet_from_a_peer_still_renders(tmp_path: Path) -> None:
    from .test_federation import link, start_nodes, until

    reader_node, home = await start_nodes(tmp_path, 2)
    try:
        await link([reader_node, home], [(0, 1)])
        async with Client(home.url) as alice, aiohttp.ClientSession() as http:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await alice.post("a fine post next to it")
            # validate: false is how any author (or another implementation) gets a
            # record past the lexicon: the reading node must cope with what it stores.
            out = await alice.call(
                "com.atproto.repo.createRecord",
                data={
                    "repo": alice.did,
                    "collection": POST,
                    "record": _bad_link_post(),
                    "validate": False,
                },
            )
            rkey = out["uri"].rsplit("/", 1)[1]

            async def arrived() -> bool:
                return await reader_node.storage.get_record(alice.did, POST, rkey) is not None

            await until(arrived)
            for path in (
                "/",
                "/profile/alice.skyfed.test",
                f"/profile/{alice.did}",
                f"/post/{alice.did}/{rkey}",
            ):
                for target in (reader_node, home):
                    async with http.get(target.url + path) as resp:
                        text = await resp.text()
                        assert resp.status == 200, (path, text[:300])
                        assert "see http://[ now" in text
                        assert "a fine post next to it" in text or path.startswith("/post/")
                        assert 'href="http://["' not in text
    finally:
        for n in (reader_node, home):
            await n.stop()


# -- finding 14: a client's mistakes are one line in the log ----------------------------


async def test_client_disconnects_and_long_lines_are_one_line_client_errors(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gone = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "went away" in record.getMessage():
                gone.set()

    watch = Watch()
    logging.getLogger("skyfed.node").addHandler(watch)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(
            b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"identifier": "ali'
        )
        await writer.drain()
        writer.close()
        async with asyncio.timeout(10):
            await gone.wait()
    finally:
        logging.getLogger("skyfed.node").removeHandler(watch)
    for request in (
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
    ):
        answer = await raw_request(node, request)
        assert answer.status == 400
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.WARNING, record.getMessage()
    lines = [r.getMessage() for r in caplog.records]
    assert any("LineTooLong" in line for line in lines), lines
    samples = {
        s.labels["status"]
        for metric in node.metrics.registry.collect()
        if metric.name == "skyfed_requests"
        for s in metric.samples
        if s.labels.get("nsid") == "com.atproto.server.createSession"
    }
    assert samples == {"499"}, samples


# -- finding 15: the data dir is its owner's alone --------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_and_secrets_are_private(tmp_path: Path) -> None:
    data = tmp_path / "node"
    async with Node(NodeConfig(data_dir=data, port=0)) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)  # writes: WAL, SHM
        assert _mode(data) == 0o700
        names = {p.name for p in data.iterdir()}
        assert {"node.sqlite3", "node.sqlite3-wal", "node.sqlite3-shm", "node.key"} <= names
        for path in data.iterdir():
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))


async def test_an_old_install_is_tightened_on_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "node"
    async with Node(NodeConfig(data_dir=data, port=0)) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
    # As the node made them before: a world-readable directory and files.
    data.chmod(0o755)
    for path in data.iterdir():
        path.chmod(0o644)
    # Not the node's: left as it is (a data dir may be pointed at a shared directory).
    (data / "notes.txt").write_text("mine")
    (data / "notes.txt").chmod(0o644)
    caplog.set_level(logging.WARNING, logger="skyfed.datadir")
    async with Node(NodeConfig(data_dir=data, port=0)) as node, Client(node.url) as alice:
        await alice.login("alice.skyfed.test", PASSWORD)  # the data is all still there
        assert _mode(data) == 0o700
        for path in data.iterdir():
            if path.name != "notes.txt":
                assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
        assert _mode(data / "notes.txt") == 0o644
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "tightened permissions" in logged
    assert "node.sqlite3: 0644 -> 0600" in logged
    assert f"{data}: 0755 -> 0700" in logged


def test_node_init_writes_a_private_config(tmp_path: Path) -> None:
    from node.cli import main

    data = tmp_path / "fresh"
    assert main(["node", "init", "--data-dir", str(data)]) == 0
    assert _mode(data) == 0o700
    assert _mode(data / "skyfed.toml") == 0o600
    assert _mode(data / "node.key") == 0o600
