"""The web client honours the reader's moderation settings, kept in a cookie."""

from __future__ import annotations

import aiohttp
import pytest

from node.client import Client
from node.wiring import Node

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.timeout(60)


async def test_web_pages_hide_and_warn_by_the_readers_cookie(node: Node) -> None:
    async with Client(node.url) as mod, Client(node.url) as author:
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await author.create_account("author.skyfed.test", PASSWORD)
        spam = await author.post("BUY CHEAP FOLLOWERS")
        edgy = await author.post("a graphic description")
        await author.post("a kind word")
        await mod.post("see what they wrote", quote=spam)
        await mod.label(spam.uri, "spam")
        await mod.label(edgy.uri, "!warn")
        await mod.label(author.did, "troll")

    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as reader, aiohttp.ClientSession() as other:
        # No settings: every post shows.
        async with other.get(node.url + "/") as resp:
            page = await resp.text()
        assert "BUY CHEAP FOLLOWERS" in page
        assert "a graphic description" in page
        assert "Content warning" not in page

        async with reader.post(
            node.url + "/settings/moderation",
            data={"labelers": mod.did, "labels": "troll=warn"},
            headers={"Origin": node.url},
        ) as resp:
            assert resp.status == 200  # followed the 303 back to the form
            assert "Saved." in await resp.text()
            assert str(resp.url).endswith("/settings/moderation?saved=1")
        async with reader.get(node.url + "/") as resp:
            page = await resp.text()
        assert "BUY CHEAP FOLLOWERS" not in page  # nor in the post quoting it
        assert "Hidden by your moderation settings: spam" in page
        assert "Quoted post hidden by your moderation settings: spam" in page
        assert "see what they wrote" in page
        # Warned: behind a click-to-reveal interstitial, text still in the page.
        assert '<details class="warning"><summary>Content warning: !warn' in page
        assert "a graphic description" in page.split('<details class="warning">', 1)[1]
        assert "a kind word" in page
        thread_path = "/post/" + spam.uri[len("at://") :].replace("/app.bsky.feed.post/", "/")
        async with reader.get(node.url + thread_path) as resp:
            assert "BUY CHEAP FOLLOWERS" not in await resp.text()

        async with reader.get(node.url + "/profile/author.skyfed.test") as resp:
            page = await resp.text()
        assert "Your moderation settings warn about this account: troll" in page
        # Every post of the account is behind the warning.
        assert "a kind word" not in page.split('<details class="warning">', 1)[0]
        assert "a kind word" in page.split('<details class="warning">', 1)[1]

        # Bad settings are refused and nothing changes; so is a cross-site form.
        async with reader.post(
            node.url + "/settings/moderation",
            data={"labelers": "", "labels": "!hide=show"},
            headers={"Origin": node.url},
        ) as resp:
            assert resp.status == 400
        for headers in (
            {"Origin": "https://evil.example"},
            {"Referer": "https://evil.example/page"},
            {},  # a form that does not say where it comes from
        ):
            async with reader.post(
                node.url + "/settings/moderation", data={"labelers": ""}, headers=headers
            ) as resp:
                assert resp.status == 403, headers
        async with reader.post(
            node.url + "/settings/moderation",
            data={"labelers": mod.did, "labels": "troll=warn"},
            headers={"Referer": node.url + "/settings/moderation"},
        ) as resp:
            assert resp.status == 200  # a same-site Referer is enough
        async with reader.get(node.url + "/") as resp:
            assert "BUY CHEAP FOLLOWERS" not in await resp.text()
