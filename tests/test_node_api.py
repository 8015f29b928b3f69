"""The node's XRPC API against a real server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from node.client import Client, XrpcError, split_frame
from node.config import NodeConfig
from node.wiring import Node
from protocol.car import read_car
from protocol.commit import Commit, CommitEvent, verify_commit_event
from protocol.eventstream import encode_frame
from protocol.identity import resolve_log
from protocol.keys import verify_key
from protocol.mst import MST, MemoryBlockStore

PASSWORD = "correct horse battery staple"


async def account(node: Node, handle: str) -> Client:
    c = Client(node.url)
    await c.create_account(f"{handle}.skyfed.test", PASSWORD)
    return c


async def test_describe_server_and_health(client: Client, node: Node) -> None:
    info = await client.call("com.atproto.server.describeServer")
    assert info["availableUserDomains"] == [".skyfed.test"]
    assert info["did"] == node.node_did
    assert (await client.call("_health"))["version"]
    node_info = await client.call("skyfed.node.getInfo")
    assert node_info["accounts"] == 0


async def test_account_session_lifecycle(client: Client) -> None:
    session = await client.create_account("alice.skyfed.test", PASSWORD)
    assert session.did.startswith("did:skyfed:")
    me = await client.call("com.atproto.server.getSession")
    assert me["did"] == session.did
    assert me["handle"] == "alice.skyfed.test"
    # Password login, by handle and by DID.
    other = Client(client.base_url)
    try:
        await other.login("alice.skyfed.test", PASSWORD)
        await other.login(session.did, PASSWORD)
        with pytest.raises(XrpcError) as info:
            await other.login("alice.skyfed.test", "wrong password!")
        assert info.value.status == 401
        # Refresh rotates: the old refresh token stops working.
        old_refresh = other.session.refresh_jwt if other.session else ""
        await other.refresh()
        assert other.session is not None
        assert other.session.refresh_jwt != old_refresh
        # Logout ends the session: its access token no longer works.
        access = other.session.access_jwt
        await other.logout()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{client.base_url}/xrpc/com.atproto.server.getSession",
                headers={"Authorization": f"Bearer {access}"},
            ) as resp,
        ):
            assert resp.status in (400, 401)
    finally:
        await other.close()


async def test_handle_rules(client: Client) -> None:
    await client.create_account("bob.skyfed.test", PASSWORD)
    for handle, error in [
        ("bob.skyfed.test", "HandleNotAvailable"),
        ("bob.example.com", "UnsupportedDomain"),
        ("not a handle", "InvalidHandle"),
    ]:
        with pytest.raises(XrpcError) as info:
            await Client(client.base_url, session=client.http).create_account(handle, PASSWORD)
        assert info.value.error == error


async def test_records_crud(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        ref = await alice.post("hello world")
        rkey = ref.uri.rsplit("/", 1)[1]
        got = await alice.get_record(alice.did, "app.bsky.feed.post", rkey)
        assert got["value"]["text"] == "hello world"
        assert got["cid"] == ref.cid
        # by handle too
        got = await alice.get_record("alice.skyfed.test", "app.bsky.feed.post", rkey)
        assert got["uri"] == ref.uri
        # update
        edited = await alice.put_record(
            "app.bsky.feed.post",
            rkey,
            {
                "$type": "app.bsky.feed.post",
                "text": "edited",
                "createdAt": got["value"]["createdAt"],
            },
        )
        assert edited.cid != ref.cid
        assert (await alice.get_record(alice.did, "app.bsky.feed.post", rkey))["value"][
            "text"
        ] == "edited"
        # delete
        await alice.delete_record("app.bsky.feed.post", rkey)
        with pytest.raises(XrpcError) as info:
            await alice.get_record(alice.did, "app.bsky.feed.post", rkey)
        assert info.value.error == "RecordNotFound"
    finally:
        await alice.close()


async def test_list_records_paginates_newest_first(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        refs = [await alice.post(f"post {i}") for i in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            page = await alice.list_records(alice.did, "app.bsky.feed.post", limit=3, cursor=cursor)
            seen.extend(r["uri"] for r in page["records"])
            cursor = page.get("cursor")
            if not cursor:
                break
        assert seen == [r.uri for r in reversed(refs)]
        desc = await alice.call("com.atproto.repo.describeRepo", params={"repo": alice.did})
        assert desc["collections"] == ["app.bsky.feed.post"]
        assert desc["handle"] == "alice.skyfed.test"
    finally:
        await alice.close()


async def test_apply_writes_is_atomic(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        good = {
            "$type": "com.atproto.repo.applyWrites#create",
            "collection": "app.bsky.feed.post",
            "value": {
                "$type": "app.bsky.feed.post",
                "text": "ok",
                "createdAt": "2026-11-23T12:00:00Z",
            },
        }
        bad = {
            **good,
            "value": {
                "$type": "app.bsky.feed.post",
                "text": "x" * 301,
                "createdAt": "2026-11-23T12:00:00Z",
            },
        }
        with pytest.raises(XrpcError) as info:
            await alice.call(
                "com.atproto.repo.applyWrites", data={"repo": alice.did, "writes": [good, bad]}
            )
        assert info.value.error == "InvalidRecord"
        assert "text" in info.value.message
        page = await alice.list_records(alice.did, "app.bsky.feed.post")
        assert page["records"] == []
        out = await alice.call(
            "com.atproto.repo.applyWrites", data={"repo": alice.did, "writes": [good, good]}
        )
        assert len(out["results"]) == 2
        assert out["commit"]["rev"]
    finally:
        await alice.close()


async def test_swap_commit_and_swap_record(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        ref = await alice.post("one")
        head = await alice.call("com.atproto.sync.getLatestCommit", params={"did": alice.did})
        await alice.post("two")
        record = {
            "$type": "app.bsky.feed.post",
            "text": "three",
            "createdAt": "2026-11-23T12:00:00Z",
        }
        with pytest.raises(XrpcError) as info:
            await alice.call(
                "com.atproto.repo.createRecord",
                data={
                    "repo": alice.did,
                    "collection": "app.bsky.feed.post",
                    "record": record,
                    "swapCommit": head["cid"],
                },
            )
        assert info.value.error == "InvalidSwap"
        rkey = ref.uri.rsplit("/", 1)[1]
        with pytest.raises(XrpcError) as info:
            await alice.call(
                "com.atproto.repo.putRecord",
                data={
                    "repo": alice.did,
                    "collection": "app.bsky.feed.post",
                    "rkey": rkey,
                    "record": record,
                    "swapRecord": head["cid"],
                },
            )
        assert info.value.error == "InvalidSwap"
        await alice.call(
            "com.atproto.repo.putRecord",
            data={
                "repo": alice.did,
                "collection": "app.bsky.feed.post",
                "rkey": rkey,
                "record": record,
                "swapRecord": ref.cid,
            },
        )
    finally:
        await alice.close()


async def test_only_the_owner_writes(node: Node) -> None:
    alice = await account(node, "alice")
    bob = await account(node, "bob")
    try:
        with pytest.raises(XrpcError) as info:
            await alice.call(
                "com.atproto.repo.createRecord",
                data={
                    "repo": bob.did,
                    "collection": "app.bsky.feed.post",
                    "record": {
                        "$type": "app.bsky.feed.post",
                        "text": "hi",
                        "createdAt": "2026-11-23T12:00:00Z",
                    },
                },
            )
        assert info.value.status == 403
        anon = Client(node.url)
        try:
            with pytest.raises(XrpcError) as info:
                await anon.call(
                    "com.atproto.repo.createRecord",
                    data={"repo": bob.did, "collection": "app.bsky.feed.post", "record": {}},
                )
            assert info.value.status == 401
            assert info.value.error == "AuthRequired"
        finally:
            await anon.close()
    finally:
        await alice.close()
        await bob.close()


async def test_sync_endpoints_give_verifiable_data(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        refs = [await alice.post(f"post {i}") for i in range(20)]
        head = await alice.call("com.atproto.sync.getLatestCommit", params={"did": alice.did})
        doc = await alice.call("skyfed.identity.getLog", params={"did": alice.did})
        import base64

        state = resolve_log(alice.did, [base64.b64decode(o) for o in doc["ops"]]).state
        key = verify_key(state.signing_key)
        assert state.handle == "alice.skyfed.test"
        assert state.endpoint == node.url

        car = await alice.call("com.atproto.sync.getRepo", params={"did": alice.did})
        roots, blocks = read_car(car)
        assert str(roots[0]) == head["cid"]
        commit = Commit.from_bytes(blocks[roots[0]])
        commit.verify(key)
        tree = MST.load(MemoryBlockStore(blocks), commit.data)
        assert tree.verify_structure() == 20
        for ref in refs:
            assert str(tree.get("app.bsky.feed.post/" + ref.uri.rsplit("/", 1)[1])) == ref.cid

        # A record proof checks out against the signed commit alone.
        rkey = refs[3].uri.rsplit("/", 1)[1]
        proof = await alice.call(
            "com.atproto.sync.getRecord",
            params={"did": alice.did, "collection": "app.bsky.feed.post", "rkey": rkey},
        )
        proots, pblocks = read_car(proof)
        pcommit = Commit.from_bytes(pblocks[proots[0]])
        pcommit.verify(key)
        assert len(pblocks) < len(blocks)
        cid = MST.load(MemoryBlockStore(pblocks), pcommit.data).get(f"app.bsky.feed.post/{rkey}")
        assert str(cid) == refs[3].cid

        # Since a rev: only what changed.
        await alice.post("after")
        diff = await alice.call(
            "com.atproto.sync.getRepo", params={"did": alice.did, "since": head["rev"]}
        )
        _, dblocks = read_car(diff)
        assert len(dblocks) < 15

        repos = await alice.call("com.atproto.sync.listRepos")
        assert [r["did"] for r in repos["repos"]] == [alice.did]
        assert repos["repos"][0]["active"] is True
        status = await alice.call("com.atproto.sync.getRepoStatus", params={"did": alice.did})
        assert status["active"] is True
        assert (await alice.resolve_handle("alice.skyfed.test")) == alice.did
    finally:
        await alice.close()


async def test_firehose_commits_verify_inductively(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        doc = await alice.call("skyfed.identity.getLog", params={"did": alice.did})
        import base64

        key = verify_key(
            resolve_log(alice.did, [base64.b64decode(o) for o in doc["ops"]]).state.signing_key
        )
        received: list[CommitEvent] = []
        ready = asyncio.Event()
        done = asyncio.Event()

        async def consume() -> None:
            # Replay from the start (cursor 1), so the account's first commit is seen.
            async for header, body in alice.subscribe(cursor=1):
                ready.set()
                if header.get("t") == "#commit":
                    received.append(CommitEvent.from_value(body))
                    if len(received) == 11:
                        done.set()
                        return

        task = asyncio.create_task(consume())
        refs = [await alice.post(f"p{i}") for i in range(8)]
        await alice.delete_record("app.bsky.feed.post", refs[0].uri.rsplit("/", 1)[1])
        await alice.like(refs[1])
        await asyncio.wait_for(done.wait(), 10)
        await task
        prev_root = None
        prev_rev = None
        for event in received:
            commit = verify_commit_event(event, key, prev_data=prev_root, prev_rev=prev_rev)
            prev_root, prev_rev = commit.data, commit.rev
    finally:
        await alice.close()


async def test_firehose_cursor_rules(node: Node) -> None:
    alice = await account(node, "alice")
    try:
        for i in range(5):
            await alice.post(f"p{i}")
        last = node.firehose.last_seq
        seqs = []
        async for _, body in alice.subscribe(cursor=last - 2):
            seqs.append(body["seq"])
            if len(seqs) == 3:
                break
        assert seqs == [last - 2, last - 1, last]

        # Future cursor: an error frame, then the stream closes.
        frames = [f async for f in alice.subscribe(cursor=last + 10)]
        assert frames[0][0] == {"op": -1}
        assert frames[0][1]["error"] == "FutureCursor"

        # Outdated cursor: #info first, then the oldest kept events.
        await node.storage.trim_events(last - 3)
        got: list[tuple[dict[str, Any], dict[str, Any]]] = []
        async for frame in alice.subscribe(cursor=1):
            got.append(frame)
            if len(got) == 2:
                break
        assert got[0][0]["t"] == "#info"
        assert got[0][1]["name"] == "OutdatedCursor"
        assert got[1][1]["seq"] == last - 2
    finally:
        await alice.close()


async def test_slow_consumer_is_dropped(tmp_path: Any) -> None:
    config = NodeConfig(data_dir=tmp_path / "n", port=0, subscriber_buffer=64 * 1024)
    async with Node(config) as node, Client(node.url) as c:
        url = node.url.replace("http", "ws") + "/xrpc/com.atproto.sync.subscribeRepos"
        async with c.http.ws_connect(url, max_msg_size=0) as ws:
            await _wait_for(lambda: node.firehose.subscriber_count == 1)
            # A subscriber that does not read while a burst far larger than the
            # socket buffers and its allowance is published.
            big = encode_frame("#info", {"name": "x", "message": "y" * 100_000})
            for i in range(1, 200):
                node.firehose.publish([(i, big)])
                if node.firehose.dropped_slow:
                    break
            assert node.firehose.dropped_slow == 1
            # Reading now: the frames that fit, then the error, then the close.
            last = None
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                last = split_frame(msg.data)
            assert last is not None
            assert last[0] == {"op": -1}
            assert last[1]["error"] == "ConsumerTooSlow"
        await _wait_for(lambda: node.firehose.subscriber_count == 0)


async def _wait_for(predicate: Any, limit: float = 5.0) -> None:
    """Wait for a server-side condition that has no event of its own."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # poll


async def test_write_rate_limit(tmp_path: Any) -> None:
    config = NodeConfig(data_dir=tmp_path / "n", port=0, points_per_hour=9)
    async with Node(config) as node:
        alice = await account(node, "alice")
        try:
            for i in range(3):
                await alice.post(f"p{i}")
            with pytest.raises(XrpcError) as info:
                await alice.post("one too many")
            assert info.value.status == 429
            assert info.value.error == "RateLimitExceeded"
        finally:
            await alice.close()


async def test_metrics_exposed(client: Client) -> None:
    await client.call("_health")
    async with client.http.get(client.base_url + "/metrics") as resp:
        body = await resp.text()
    assert 'skyfed_requests_total{nsid="_health",status="200"} 1.0' in body
    assert "skyfed_firehose_subscribers 0.0" in body
    assert "skyfed_commits_total" in body
