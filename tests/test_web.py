"""The web client at ``/``: rendering rules, pages over HTTP, and a real headless Chromium.

The browser test is not optional: ``make test`` installs Debian's chromium and
chromium-driver first (scripts/ensure-chromium.sh), and this file fails, loudly, if
they are missing.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.client import Client, RecordRef
from node.config import NodeConfig
from node.server.web import (
    CONTENT_SECURITY_POLICY,
    post_path,
    relative_time,
    render_text,
)
from node.wiring import Node

PASSWORD = "correct horse battery staple"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


# -- rendering rules, no server --------------------------------------------------------


def _facet(text: str, part: str, feature: dict[str, Any]) -> dict[str, Any]:
    data = text.encode()
    start = data.index(part.encode())
    return {
        "index": {"byteStart": start, "byteEnd": start + len(part.encode())},
        "features": [feature],
    }


LINK = "app.bsky.richtext.facet#link"
MENTION = "app.bsky.richtext.facet#mention"
TAG = "app.bsky.richtext.facet#tag"
DID = "did:skyfed:abcdefghijklmnopqrstuvwx"


def test_text_is_escaped() -> None:
    assert render_text('<script>alert("x")</script> & co') == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"
    )


def test_facets_use_utf8_byte_offsets() -> None:
    text = "héllo 🦋 https://example.com/a?b=1&c=2 hi @bob.skyfed.test #tag <b>"
    facets = [
        _facet(
            text,
            "https://example.com/a?b=1&c=2",
            {"$type": LINK, "uri": "https://example.com/a?b=1&c=2"},
        ),
        _facet(text, "@bob.skyfed.test", {"$type": MENTION, "did": DID}),
        _facet(text, "#tag", {"$type": TAG, "tag": "tag"}),
    ]
    out = render_text(text, facets)
    assert out == (
        "héllo 🦋 "
        '<a href="https://example.com/a?b=1&amp;c=2" rel="nofollow ugc noopener noreferrer">'
        "https://example.com/a?b=1&amp;c=2</a> hi "
        f'<a href="/profile/{DID}">@bob.skyfed.test</a> '
        '<span class="tag">#tag</span> &lt;b&gt;'
    )


@pytest.mark.parametrize(
    ("facet", "why"),
    [
        ({"index": {"byteStart": 2, "byteEnd": 4}}, "cuts the é in two"),
        ({"index": {"byteStart": 0, "byteEnd": 999}}, "runs past the end"),
        ({"index": {"byteStart": 3, "byteEnd": 3}}, "is empty"),
        ({"index": {"byteStart": "0", "byteEnd": 3}}, "has a string offset"),
    ],
    ids=["mid-character", "past-end", "empty", "not-int"],
)
def test_bad_facets_leave_plain_text(facet: dict[str, Any], why: str) -> None:
    facet["features"] = [{"$type": LINK, "uri": "https://example.com/"}]
    assert render_text("héllo world", [facet]) == "héllo world", why


def test_only_http_links_become_links_and_overlaps_are_dropped() -> None:
    text = "click me and more"
    evil = _facet(text, "click me", {"$type": LINK, "uri": "javascript:alert(1)"})
    assert render_text(text, [evil]) == text
    first = _facet(text, "click me", {"$type": LINK, "uri": "https://a.example/"})
    overlap = _facet(text, "me and", {"$type": LINK, "uri": "https://b.example/"})
    out = render_text(text, [overlap, first])
    assert out.count("<a ") == 1
    assert "https://a.example/" in out


@pytest.mark.parametrize(
    ("ago", "shown"),
    [(-30, "now"), (2, "now"), (42, "42s"), (180, "3m"), (7200, "2h"), (3 * 86400, "3d")],
    ids=["future", "now", "seconds", "minutes", "hours", "days"],
)
def test_relative_time(ago: float, shown: str) -> None:
    now = 1_800_000_000.0
    import datetime

    t = datetime.datetime.fromtimestamp(now - ago, datetime.UTC)
    assert relative_time(t.isoformat().replace("+00:00", "Z"), now) == shown


def test_relative_time_old_dates_and_garbage() -> None:
    now = 1_800_000_000.0  # 2027-01-15
    assert relative_time("2026-12-01T10:00:00.000Z", now) == "1 Dec 2026"
    assert relative_time("2027-01-02T10:00:00Z", now) == "2 Jan"
    assert relative_time("yesterday", now) == ""


def test_post_paths() -> None:
    assert post_path(f"at://{DID}/app.bsky.feed.post/3kabc") == f"/post/{DID}/3kabc"
    assert post_path(f"at://{DID}/app.bsky.feed.like/3kabc") is None
    assert post_path("at://bob.skyfed.test/app.bsky.feed.post/3kabc") is None
    assert post_path('at://did:x:"><script>/app.bsky.feed.post/1') is None


# -- pages over HTTP ---------------------------------------------------------------------


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(NodeConfig(data_dir=tmp_path / "node", port=0)) as n:
        yield n


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Account = Callable[..., Awaitable[Client]]


@pytest.fixture
async def account(site: Node) -> AsyncIterator[Account]:
    """Make an account on the node (optionally with a profile); closed at teardown."""
    made: list[Client] = []

    async def make(name: str, display: str | None = None) -> Client:
        c = Client(site.url)
        made.append(c)
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
        if display is not None:
            profile = {
                "$type": "app.bsky.actor.profile",
                "displayName": display,
                "description": "bio <i>x</i>",
            }
            await c.put_record("app.bsky.actor.profile", "self", profile)
        return c

    yield make
    for c in made:
        await c.close()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.get(url) as resp:
        return resp.status, await resp.text(), resp


def _rkey(ref: RecordRef) -> str:
    return ref.uri.rsplit("/", 1)[1]


def _thread_path(ref: RecordRef) -> str:
    did = ref.uri[len("at://") :].split("/")[0]
    return f"/post/{did}/{_rkey(ref)}"


async def test_home_shows_posts_with_strict_headers(
    site: Node, account: Account, http: aiohttp.ClientSession
) -> None:
    alice = await account("alice", "Alice <Liddell>")
    await alice.post("hello from the web test")
    await alice.post("<script>alert('owned')</script>")
    status, body, resp = await _get(http, site.url + "/")
    assert status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "hello from the web test" in body
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in body
    assert "alert('owned')" not in body
    assert "Alice &lt;Liddell&gt;" in body
    assert 'href="/profile/alice.skyfed.test"' in body
    # The only script on the page is the live-update one the CSP allows by hash.
    assert body.count("<script>") == 1
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body


async def test_pagination_follows_the_cursor(
    site: Node, account: Account, http: aiohttp.ClientSession
) -> None:
    alice = await account("alice")
    for i in range(5):
        await alice.post(f"numbered post {i}")
    seen: list[str] = []
    url = site.url + "/?limit=2"
    for _ in range(5):
        status, body, _resp = await _get(http, url)
        assert status == 200
        seen += re.findall(r"numbered post (\d)", body)
        m = re.search(r'<a rel="next" href="([^"]+)"', body)
        if m is None:
            break
        url = site.url + m.group(1).replace("&amp;", "&")
        assert "cursor=" in url
        assert "limit=2" in url
    assert seen == ["4", "3", "2", "1", "0"]
    # A later page has a way back to the newest posts, and no live-update script.
    _status, body, _resp = await _get(http, url)
    assert "Newest" in body
    assert "<script>" not in body


async def test_profile_page(site: Node, account: Account, http: aiohttp.ClientSession) -> None:
    alice = await account("alice", "Alice")
    bob = await account("bob")
    await alice.post("alice's own words")
    await bob.post("bob's words")
    await bob.follow(alice.did)
    for path in ("/profile/alice.skyfed.test", f"/profile/{alice.did}"):
        status, body, _resp = await _get(http, site.url + path)
        assert status == 200, path
        assert "<h1>Alice</h1>" in body
        assert "@alice.skyfed.test" in body
        assert "bio &lt;i&gt;x&lt;/i&gt;" in body
        assert "alice&#x27;s own words" in body
        assert "bob&#x27;s words" not in body
        assert "<strong>1</strong> follower<" in body
        assert "<strong>1</strong> post<" in body


async def test_thread_page_shows_parents_and_nested_replies(
    site: Node, account: Account, http: aiohttp.ClientSession
) -> None:
    alice = await account("alice")
    bob = await account("bob")
    root = await alice.post("the root of it all")
    middle = await bob.post("a reply in the middle", reply_to=root)
    leaf = await alice.post("a reply to the reply", reply_to=middle, root=root)
    await bob.post("a second reply to the middle", reply_to=middle, root=root)
    status, body, _resp = await _get(http, site.url + _thread_path(middle))
    assert status == 200
    parents, _, rest = body.partition('class="post main-post"')
    assert "the root of it all" in parents
    assert "a reply in the middle" in rest.split("</article>")[0]
    replies = rest.split('<ol class="replies">', 1)[1]
    assert "a reply to the reply" in replies
    assert "a second reply to the middle" in replies
    # The leaf's own page links back up: its parents are on it.
    status, body, _resp = await _get(http, site.url + _thread_path(leaf))
    assert status == 200
    main = body[body.index("<main") :]
    assert main.index("the root of it all") < main.index("a reply in the middle")
    assert main.index("a reply in the middle") < main.index("a reply to the reply")
    # The home page links each post to its thread, and names who it replies to.
    _status, body, _resp = await _get(http, site.url + "/")
    assert f'href="{_thread_path(root)}"' in body
    assert "Replying to" in body


async def test_facets_render_as_links(
    site: Node, account: Account, http: aiohttp.ClientSession
) -> None:
    alice = await account("alice")
    bob = await account("bob")
    text = "ünïcode first, then https://example.com/x and @bob.skyfed.test #skyfed"
    facets = [
        _facet(text, "https://example.com/x", {"$type": LINK, "uri": "https://example.com/x"}),
        _facet(text, "@bob.skyfed.test", {"$type": MENTION, "did": bob.did}),
        _facet(text, "#skyfed", {"$type": TAG, "tag": "skyfed"}),
    ]
    await alice.create_record(
        "app.bsky.feed.post",
        {
            "$type": "app.bsky.feed.post",
            "text": text,
            "facets": facets,
            "createdAt": "2026-01-01T00:00:00.000Z",
        },
    )
    _status, body, _resp = await _get(http, site.url + "/")
    assert ">https://example.com/x</a>" in body
    assert f'<a href="/profile/{bob.did}">@bob.skyfed.test</a>' in body
    assert '<span class="tag">#skyfed</span>' in body


@pytest.mark.parametrize(
    "path",
    [
        "/profile/nobody.skyfed.test",
        "/profile/did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa",
        "/profile/not a handle!",
        "/post/did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa/3kaaaaaaaaaaa",
        "/post/not-a-did/3kaaaaaaaaaaa",
        "/post/did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa/bad%20rkey",
    ],
    ids=["unknown-handle", "unknown-did", "bad-actor", "unknown-post", "bad-did", "bad-rkey"],
)
async def test_unknown_things_are_404_pages(
    site: Node, http: aiohttp.ClientSession, path: str
) -> None:
    status, body, resp = await _get(http, site.url + path)
    assert status == 404
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "not found" in body.lower()
    assert "Traceback" not in body


@pytest.mark.parametrize(
    "query", ["?limit=0", "?limit=abc", "?limit=101", "?cursor=" + "x" * 600, "?cursor=nonsense"]
)
async def test_bad_queries_are_400_pages(
    site: Node, http: aiohttp.ClientSession, query: str
) -> None:
    status, body, resp = await _get(http, site.url + "/" + query)
    assert status == 400
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Traceback" not in body


async def test_a_failing_view_is_a_500_page_not_a_traceback(
    site: Node, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(site.views, "latest", broken)
    status, body, _resp = await _get(http, site.url + "/")
    assert status == 500
    assert "secret detail" not in body
    assert "Something went wrong" in body


# -- a real browser ----------------------------------------------------------------------


@pytest.fixture
def chrome_paths() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run scripts/ensure-chromium.sh (make test does)",
            pytrace=False,
        )


@pytest.fixture
def profile_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="skyfed-chromium-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def browser(site: Node, chrome_paths: None, profile_dir: str) -> AsyncIterator[Any]:
    """Headless Debian Chromium through chromedriver; selenium calls run in a thread
    so the node, on this event loop, keeps serving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        "--window-size=390,844",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


async def _in_browser(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@pytest.mark.timeout(120)
async def test_browser_reads_posts_and_follows_a_thread(
    site: Node, account: Account, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    alice = await account("alice", "Alice")
    bob = await account("bob", "Bob")
    root = await alice.post("is anyone out there?")
    await bob.post("loud and clear, from another account", reply_to=root)

    def load_home() -> dict[str, Any]:
        browser.get(site.url + "/")
        WebDriverWait(browser, 20).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "article.post"))
        )
        return {
            "title": browser.title,
            "text": browser.find_element(By.TAG_NAME, "main").text,
            # The hashed inline style sheet applied (a CSP mismatch would drop it) ...
            "max_width": browser.execute_script(
                "return getComputedStyle(document.querySelector('main')).maxWidth"
            ),
            # ... and nothing is wider than a phone's screen.
            "overflow": browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            ),
        }

    home = await _in_browser(load_home)
    assert home["title"].startswith("Latest posts")
    assert "is anyone out there?" in home["text"]
    assert "loud and clear, from another account" in home["text"]
    assert home["max_width"] == "640px"
    assert home["overflow"] <= 0

    # Live updates: once the page's script is on the firehose, a new post is offered.
    def wait_live_open() -> None:
        WebDriverWait(browser, 20).until(
            lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "open"
        )

    await _in_browser(wait_live_open)
    await alice.post("written while the page was open")

    def wait_offer() -> str:
        offer = browser.find_element(By.CSS_SELECTOR, "#live a")
        WebDriverWait(browser, 20).until(lambda d: offer.is_displayed())
        return str(offer.text)

    assert "1 new post" in await _in_browser(wait_offer)

    # Click through: the root post's "1 reply" link opens its thread, with the reply.
    def open_thread() -> dict[str, Any]:
        link = browser.find_element(
            By.CSS_SELECTOR, f'article.post .stats a[href="{_thread_path(root)}"]'
        )
        assert link.text == "1 reply"
        link.click()
        WebDriverWait(browser, 20).until(ec.url_contains(_thread_path(root)))
        WebDriverWait(browser, 20).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "article.main-post"))
        )
        return {
            "main": browser.find_element(By.CSS_SELECTOR, "article.main-post").text,
            "replies": browser.find_element(By.CSS_SELECTOR, "ol.replies").text,
        }

    thread = await _in_browser(open_thread)
    assert "is anyone out there?" in thread["main"]
    assert "loud and clear, from another account" in thread["replies"]

    # And from the reply, the author's name leads to their profile.
    def open_profile() -> str:
        browser.find_element(By.CSS_SELECTOR, "ol.replies a.author").click()
        WebDriverWait(browser, 20).until(ec.url_contains("/profile/bob.skyfed.test"))
        return str(browser.find_element(By.CSS_SELECTOR, "section.profile").text)

    assert "@bob.skyfed.test" in await _in_browser(open_profile)

    # No console errors on the way (a CSP violation or a failed request would show).
    logs = await _in_browser(browser.get_log, "browser")
    errors = [e for e in logs if e.get("level") == "SEVERE"]
    assert errors == []
