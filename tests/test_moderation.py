"""Readers choose: labels from the labelers a reader names, behaviours the reader sets,
and per-reader mutes, in every view."""

from __future__ import annotations

import datetime
import io
from typing import Any

import aiohttp
import pytest

from node.client import Client
from node.client.render import Renderer, make_console
from node.wiring import Node
from protocol.moderation import ACCEPT_LABELERS, CONTENT_LABELERS, ModerationPrefs

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.timeout(60)


def _rendered(page: dict[str, Any], prefs: ModerationPrefs, *, reveal: bool = False) -> str:
    out = io.StringIO()
    console = make_console(out)
    console.width = 200
    Renderer(
        console, moderation=prefs, reveal=reveal, now=datetime.datetime.now(datetime.UTC)
    ).feed(page)
    return out.getvalue()


def _uris(page: dict[str, Any]) -> list[str]:
    return [item["post"]["uri"] for item in page["feed"]]


async def test_a_spam_post_is_hidden_for_a_subscriber_and_shown_to_others(node: Node) -> None:
    async with (
        Client(node.url) as mod,
        Client(node.url) as spammer,
        Client(node.url) as alice,
        Client(node.url) as bob,
    ):
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await spammer.create_account("spammer.skyfed.test", PASSWORD)
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await alice.follow(spammer.did)
        await bob.follow(spammer.did)
        spam = await spammer.post("BUY CHEAP FOLLOWERS NOW")
        fine = await spammer.post("an ordinary post")
        label = await mod.label(spam.uri, "spam")
        assert label["src"] == mod.did

        alice.moderation = ModerationPrefs().subscribe(mod.did)
        seen_by_alice = await alice.timeline()
        seen_by_bob = await bob.timeline()
        assert set(_uris(seen_by_alice)) == set(_uris(seen_by_bob)) == {spam.uri, fine.uri}
        assert alice.content_labelers == mod.did
        assert bob.content_labelers is None  # bob named no labelers

        by_uri = {i["post"]["uri"]: i["post"] for i in seen_by_alice["feed"]}
        assert [lb["val"] for lb in by_uri[spam.uri]["labels"]] == ["spam"]
        assert by_uri[fine.uri]["labels"] == []
        # alice subscribes: the spam post is hidden for her, the other shown.
        assert alice.moderate(by_uri[spam.uri]).hidden
        assert alice.moderate(by_uri[fine.uri]).action == "show"
        # bob does not: no labels reach him and nothing is hidden.
        for item in seen_by_bob["feed"]:
            assert item["post"]["labels"] == []
            assert bob.moderate(item["post"]).action == "show"

        # The same through the command line's rendering.
        alice_screen = _rendered(seen_by_alice, alice.moderation)
        assert "BUY CHEAP FOLLOWERS" not in alice_screen
        assert "hidden by your moderation settings: spam" in alice_screen
        assert "an ordinary post" in alice_screen
        bob_screen = _rendered(seen_by_bob, bob.moderation)
        assert "BUY CHEAP FOLLOWERS NOW" in bob_screen
        assert "hidden" not in bob_screen

        # alice changes what spam does for her: a warning line, text only on reveal.
        alice.moderation = alice.moderation.with_behaviour("spam", "warn")
        warned = _rendered(await alice.timeline(), alice.moderation)
        assert "content warning: spam" in warned
        assert "BUY CHEAP FOLLOWERS" not in warned
        revealed = _rendered(await alice.timeline(), alice.moderation, reveal=True)
        assert "content warning: spam" in revealed
        assert "BUY CHEAP FOLLOWERS NOW" in revealed

        # The labeler retracts: nothing is hidden any more.
        await mod.label(spam.uri, "spam", neg=True)
        page = await alice.timeline()
        assert all(alice.moderate(i["post"]).action == "show" for i in page["feed"])


async def test_labels_on_every_view_and_account_labels(node: Node) -> None:
    async with Client(node.url) as mod, Client(node.url) as other, Client(node.url) as author:
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await other.create_account("other.skyfed.test", PASSWORD)
        await author.create_account("author.skyfed.test", PASSWORD)
        post = await author.post("labelled")
        reply = await other.post("a reply", reply_to=post)
        await mod.label(post.uri, "!warn")
        await mod.label(author.did, "bot")
        await other.label(post.uri, "!hide")  # a labeler the reader does not name
        # A label pinned to another version of the post does not apply to this one.
        await mod.label(post.uri, "old-version", cid=reply.cid)

        reader = Client(node.url, moderation=ModerationPrefs().subscribe(mod.did))
        async with reader:
            thread = await reader.thread(post.uri)
            anchor = thread["thread"]["post"]
            assert [lb["val"] for lb in anchor["labels"]] == ["!warn"]
            assert [lb["val"] for lb in anchor["author"]["labels"]] == ["bot"]
            assert reader.moderate(anchor).warned
            assert thread["thread"]["replies"][0]["post"]["labels"] == []
            posts = await reader.posts([post.uri])
            assert [lb["val"] for lb in posts["posts"][0]["labels"]] == ["!warn"]
            profile = await reader.profile(author.did)
            assert [lb["val"] for lb in profile["labels"]] == ["bot"]
            assert reader.moderate(profile).action == "show"  # "bot" shows by default
            reader.moderation = reader.moderation.with_behaviour("bot", "warn")
            out = io.StringIO()
            console = make_console(out)
            console.width = 200
            Renderer(console, moderation=reader.moderation).profile(profile)
            assert f"a warning from your moderation settings): bot ({mod.did})" in out.getvalue()
            latest = await reader.latest()
            labelled = [i for i in latest["feed"] if i["post"]["uri"] == post.uri]
            assert [lb["val"] for lb in labelled[0]["post"]["labels"]] == ["!warn"]


async def test_a_redacting_labeler_removes_taken_down_content(node: Node) -> None:
    async with Client(node.url) as mod, Client(node.url) as author:
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await author.create_account("author.skyfed.test", PASSWORD)
        gone = await author.post("illegal content")
        kept = await author.post("fine content")
        await mod.label(gone.uri, "!takedown")
        async with aiohttp.ClientSession() as http:

            async def latest(header: str) -> tuple[list[str], str | None]:
                async with http.get(
                    f"{node.url}/xrpc/skyfed.feed.getLatest", headers={ACCEPT_LABELERS: header}
                ) as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    return _uris(body), resp.headers.get(CONTENT_LABELERS)

            uris, applied = await latest(f"{mod.did};redact")
            assert uris == [kept.uri]
            assert applied == f"{mod.did};redact"
            uris, applied = await latest(mod.did)
            assert set(uris) == {gone.uri, kept.uri}
            assert applied == mod.did
            async with http.get(
                f"{node.url}/xrpc/app.bsky.feed.getPostThread",
                params={"uri": gone.uri},
                headers={ACCEPT_LABELERS: f"{mod.did};redact"},
            ) as resp:
                assert (await resp.json())["thread"]["notFound"] is True
            too_many = ",".join(f"did:web:l{i}.example" for i in range(21))
            async with http.get(
                f"{node.url}/xrpc/skyfed.feed.getLatest", headers={ACCEPT_LABELERS: too_many}
            ) as resp:
                assert resp.status == 400


async def test_mutes_are_private_and_honoured_in_every_view(node: Node) -> None:
    async with (
        Client(node.url) as alice,
        Client(node.url) as bob,
        Client(node.url) as carol,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await carol.create_account("carol.skyfed.test", PASSWORD)
        await alice.follow(bob.did)
        await alice.follow(carol.did)
        root = await carol.post("a question")
        noisy = await bob.post("a noisy answer", reply_to=root)
        await bob.like(root)
        await bob.follow(carol.did)

        await alice.mute("bob.skyfed.test")
        mutes = await alice.mutes()
        assert [p["did"] for p in mutes["mutes"]] == [bob.did]
        assert mutes["mutes"][0]["viewer"]["muted"] is True
        assert (await alice.profile(bob.did))["viewer"]["muted"] is True

        assert noisy.uri not in _uris(await alice.timeline())
        assert noisy.uri not in _uris(await alice.call("skyfed.feed.getLatest"))
        thread = await alice.thread(root.uri)
        assert thread["thread"]["replies"] == []
        assert (await alice.likes(root.uri))["likes"] == []
        assert bob.did not in [p["did"] for p in (await alice.followers(carol.did))["followers"]]
        assert (await alice.author_feed(bob.did))["feed"] == []

        # Private: carol (same node) still sees bob; bob cannot see alice's mutes.
        assert noisy.uri in [
            r["post"]["uri"] for r in (await carol.thread(root.uri))["thread"]["replies"]
        ]
        assert (await bob.mutes())["mutes"] == []
        assert "muted" not in (await carol.profile(bob.did))["viewer"]

        await alice.unmute(bob.did)
        assert noisy.uri in _uris(await alice.timeline())
        assert (await alice.mutes())["mutes"] == []
        with pytest.raises(Exception, match="mute yourself"):
            await alice.mute(alice.did)


async def test_a_quoted_post_carries_its_labels_and_is_redacted(node: Node) -> None:
    """The quoted post inside an embed is a view too: it gets the labels the reader
    asked for, is moderated on its own, and is removed by a redacting labeler."""
    async with (
        Client(node.url) as mod,
        Client(node.url) as spammer,
        Client(node.url) as friend,
    ):
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await spammer.create_account("spammer.skyfed.test", PASSWORD)
        await friend.create_account("friend.skyfed.test", PASSWORD)
        spam = await spammer.post("BUY CHEAP FOLLOWERS NOW")
        quoting = await friend.post("look at this", quote=spam)
        await mod.label(spam.uri, "spam")

        prefs = ModerationPrefs().subscribe(mod.did)
        async with Client(node.url, moderation=prefs) as reader:
            view = (await reader.posts([quoting.uri]))["posts"][0]
            inner = view["embed"]["record"]
            assert inner["$type"] == "app.bsky.embed.record#viewRecord"
            assert [lb["val"] for lb in inner["labels"]] == ["spam"]
            assert view["labels"] == []  # the quoting post itself is not labelled
            assert reader.moderate(inner).hidden
            assert not reader.moderate(view).hidden
            screen = _rendered({"feed": [{"post": view}]}, prefs)
            assert "look at this" in screen
            assert "BUY CHEAP FOLLOWERS" not in screen
            assert "quoted post hidden" in screen

        await mod.label(spam.uri, "!takedown")
        redacting = ModerationPrefs().subscribe(mod.did, redact=True)
        async with Client(node.url, moderation=redacting) as reader:
            view = (await reader.posts([quoting.uri]))["posts"][0]
            assert view["embed"]["record"] == {
                "$type": "app.bsky.embed.record#viewNotFound",
                "uri": spam.uri,
                "notFound": True,
            }
