"""Operators choose for their own node only: a takedown on A leaves the account
readable through B; it is recorded with a reason and time, published, reversible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.client import Client, XrpcError
from node.wiring import Node
from tests.test_federation import PASSWORD, link, start_nodes, until

TOKEN = "s3cret-admin-token-for-tests"
pytestmark = pytest.mark.timeout(90)


async def _has_post(node: Node, did: str, uri: str) -> bool:
    rkey = uri.rsplit("/", 1)[1]
    return await node.storage.get_record(did, "app.bsky.feed.post", rkey) is not None


async def _error(call: Any) -> XrpcError:
    with pytest.raises(XrpcError) as info:
        await call
    return info.value


async def test_a_takedown_on_a_leaves_the_account_readable_from_b(tmp_path: Path) -> None:
    a, b = await start_nodes(
        tmp_path, 2, admin_token=TOKEN, moderation_policy="No spam, no harassment."
    )
    try:
        await link([a, b], [(1, 0)])
        async with (
            Client(a.url) as alice,
            Client(a.url) as reader_a,
            Client(b.url) as reader_b,
            Client(a.url) as admin,
        ):
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await reader_a.create_account("reader.skyfed.test", PASSWORD)
            await reader_a.follow(alice.did)
            post = await alice.post("something A's operator does not want to serve")

            async def on_b() -> bool:
                return await _has_post(b, alice.did, post.uri)

            await until(on_b)

            taken = await admin.take_down(alice.did, "harassment (ticket 42)", admin_token=TOKEN)
            assert taken["scopes"] == ["host", "serve", "carry"]
            assert taken["active"] is True

            # Gone from A: views, repo reads, sync endpoints...
            assert post.uri not in [i["post"]["uri"] for i in (await reader_a.latest())["feed"]]
            assert (await reader_a.timeline())["feed"] == []
            assert (await reader_a.posts([post.uri]))["posts"] == []
            err = await _error(reader_a.author_feed(alice.did))
            assert err.error == "AccountTakedown"
            err = await _error(reader_a.get_record_by_uri(post.uri))
            assert err.error == "RepoTakendown"
            err = await _error(reader_a.call("com.atproto.sync.getRepo", params={"did": alice.did}))
            assert err.error == "RepoTakendown"
            status = await reader_a.call(
                "com.atproto.sync.getRepoStatus", params={"did": alice.did}
            )
            assert status == {
                "did": alice.did,
                "active": False,
                "rev": status["rev"],
                "status": "takendown",
            }
            # ...and the firehose: nothing of alice but the #account event.
            frames = []
            async for header, body in reader_a.subscribe(cursor=1):
                frames.append((header.get("t"), body))
                if (header.get("t"), body.get("did"), body.get("status")) == (
                    "#account",
                    alice.did,
                    "takendown",
                ):
                    break
            about_alice = [t for t, b in frames if b.get("repo", b.get("did")) == alice.did]
            assert about_alice == ["#account"]
            assert frames[-1][1]["active"] is False
            # ...and not indexed: the follower count went with the account's records.
            assert (await reader_a.profile(reader_a.did))["followsCount"] == 1
            # Not hosted: no writes, no new sessions.
            err = await _error(alice.post("still here?"))
            assert err.error == "AccountTakedown"
            async with Client(a.url) as again:
                err = await _error(again.login("alice.skyfed.test", PASSWORD))
                assert err.error == "AccountTakedown"

            # B is another operator: the account is still readable there.
            assert post.uri in [i["post"]["uri"] for i in (await reader_b.latest())["feed"]]
            feed = await reader_b.author_feed(alice.did)
            assert [i["post"]["uri"] for i in feed["feed"]] == [post.uri]
            ref = await reader_b.verify_record(post.uri)
            assert ref.cid == post.cid

            # Recorded and published: getInfo and the public listing.
            info = await reader_b.call("skyfed.node.getInfo")
            assert info["moderation"]["takedownCount"] == 0
            async with Client(a.url) as anyone:
                info = await anyone.call("skyfed.node.getInfo")
                moderation = info["moderation"]
                assert moderation["takedownCount"] == 1
                shown = moderation["takedowns"][0]
                assert (shown["did"], shown["reason"]) == (alice.did, "harassment (ticket 42)")
                assert shown["createdAt"] == taken["createdAt"]
                assert moderation["policy"]["statement"] == "No spam, no harassment."
                listing = await anyone.moderation_actions()
                assert listing["node"] == a.node_did
                assert [t["id"] for t in listing["actions"]] == [taken["id"]]

                # Reversible: the account is back, its posts indexed again.
                back = await admin.reverse_takedown(
                    "alice.skyfed.test", "appeal upheld", admin_token=TOKEN
                )
                assert back["active"] is False
                assert back["reverseReason"] == "appeal upheld"
                assert [i["post"]["uri"] for i in (await reader_a.timeline())["feed"]] == [post.uri]
                await alice.login("alice.skyfed.test", PASSWORD)
                await alice.post("back again")
                listing = await anyone.moderation_actions()
                assert listing["actions"][0]["reversedAt"] == back["reversedAt"]
                assert (await anyone.call("skyfed.node.getInfo"))["moderation"][
                    "takedownCount"
                ] == 0
                err = await _error(admin.reverse_takedown(alice.did, "twice", admin_token=TOKEN))
                assert err.error == "NotTakendown"
    finally:
        for node in (a, b):
            await node.stop()


async def test_refusing_to_carry_stops_gossip_through_this_node_only(tmp_path: Path) -> None:
    # A chain c - a - b: with a refusing to carry bob, bob's new posts from b do not
    # reach a, and a does not pass them on; everything else still flows.
    a, b, c = await start_nodes(tmp_path, 3, admin_token=TOKEN, share_peers=False)
    try:
        await link([a, b, c], [(1, 0), (2, 0)])
        async with Client(b.url) as bob, Client(b.url) as carol, Client(a.url) as admin:
            await bob.create_account("bob.skyfed.test", PASSWORD)
            await carol.create_account("carol.skyfed.test", PASSWORD)
            first = await bob.post("before")

            async def everywhere() -> bool:
                return all([await _has_post(n, bob.did, first.uri) for n in (a, b, c)])

            await until(everywhere)
            taken = await admin.take_down(
                bob.did, "spam source", admin_token=TOKEN, scopes=["carry"]
            )
            assert taken["scopes"] == ["carry"]
            later = await bob.post("after the takedown")
            marker = await carol.post("a later post by someone else")

            async def marker_arrived() -> bool:
                return await _has_post(a, carol.did, marker.uri) and await _has_post(
                    c, carol.did, marker.uri
                )

            await until(marker_arrived)
            # A full reconciliation with each peer finds bob's new head, and is refused.
            for peer_link in list(a.federation.links.values()):
                await a.federation.reconcile(peer_link)
            assert not await _has_post(a, bob.did, later.uri)
            assert not await _has_post(c, bob.did, later.uri)
            # Only carry: a still serves what it held before.
            async with Client(a.url) as reader:
                got = await reader.get_record_by_uri(first.uri)
                assert got["cid"] == first.cid
            # Reversed: reconciliation brings bob's repo to a and on to c.
            await admin.reverse_takedown(bob.did, "mistake", admin_token=TOKEN)

            async def caught_up() -> bool:
                return await _has_post(a, bob.did, later.uri) and await _has_post(
                    c, bob.did, later.uri
                )

            await until(caught_up)
    finally:
        for node in (a, b, c):
            await node.stop()


async def test_admin_endpoints_need_the_token_and_are_rate_limited(tmp_path: Path) -> None:
    (a,) = await start_nodes(tmp_path, 1, admin_token=TOKEN, admin_burst=5, admin_rate=0.01)
    (off,) = await start_nodes(tmp_path / "off", 1)
    try:
        async with Client(a.url) as alice, aiohttp.ClientSession() as http:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            url = f"{a.url}/xrpc/skyfed.admin.takedown"
            body = {"did": alice.did, "reason": "test"}

            async def attempt(headers: dict[str, str], target: str = url) -> tuple[int, str]:
                async with http.post(target, json=body, headers=headers) as resp:
                    return resp.status, (await resp.json()).get("error", "")

            assert await attempt({}) == (401, "AuthenticationRequired")
            assert await attempt({"Authorization": "Bearer wrong"}) == (401, "InvalidToken")
            assert await attempt({"Authorization": f"Basic {TOKEN}"}) == (
                401,
                "AuthenticationRequired",
            )
            # A user's session is not the admin token.
            assert alice.session is not None
            bearer = {"Authorization": f"Bearer {alice.session.access_jwt}"}
            assert await attempt(bearer) == (401, "InvalidToken")
            assert a.moderation.active() == []
            assert await attempt({"Authorization": f"Bearer {TOKEN}"}) == (200, "")
            assert [t.did for t in a.moderation.active()] == [alice.did]
            # The burst of 5 is spent: even the right token now waits.
            assert await attempt({"Authorization": f"Bearer {TOKEN}"}) == (
                429,
                "RateLimitExceeded",
            )
            # A node without an admin token has no admin endpoints.
            off_url = f"{off.url}/xrpc/skyfed.admin.takedown"
            assert await attempt({"Authorization": f"Bearer {TOKEN}"}, off_url) == (
                403,
                "AdminDisabled",
            )
    finally:
        await a.stop()
        await off.stop()
