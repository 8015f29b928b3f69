"""app.bsky.feed.searchPosts and app.bsky.actor.searchActors(Typeahead) over FTS5."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.appview.search import MAX_TERMS, BadQueryString, parse_post_query, post_match
from node.client import Client, XrpcError
from node.config import NodeConfig
from node.store.sqlite import _NOTIFY_SEARCH_SCHEMA
from node.wiring import Node

from .test_federation import link, start_nodes, until

PASSWORD = "correct horse battery staple"
POSTS = "app.bsky.feed.searchPosts"
ACTORS = "app.bsky.actor.searchActors"
TYPEAHEAD = "app.bsky.actor.searchActorsTypeahead"


@pytest.fixture
async def people(node: Node) -> AsyncIterator[tuple[Client, Client, Client]]:
    clients = [Client(node.url) for _ in range(3)]
    for c, name in zip(clients, ("alice", "bob", "carol"), strict=True):
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    try:
        yield clients[0], clients[1], clients[2]
    finally:
        for c in clients:
            await c.close()


async def texts(c: Client, q: str, **params: Any) -> list[str]:
    out = await c.call(POSTS, params={"q": q, **params})
    return [p["record"]["text"] for p in out["posts"]]


async def test_words_phrases_negation_and_filters(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    await alice.post("Café au lait in the morning", langs=["fr"])
    await alice.post("the morning train was late", langs=["en"])
    await bob.post("late night train home", langs=["en-US"])
    await bob.post("hi @carol.skyfed.test see https://www.example.com/x")
    await carol.post("nothing to see")
    assert await texts(bob, "train") == ["late night train home", "the morning train was late"]
    assert await texts(bob, "TRAIN late") == [
        "late night train home",
        "the morning train was late",
    ]
    assert await texts(bob, '"train was"') == ["the morning train was late"]
    assert await texts(bob, "train -night") == ["the morning train was late"]
    assert await texts(bob, "cafe") == ["Café au lait in the morning"]  # diacritics folded
    assert await texts(bob, "train from:bob.skyfed.test") == ["late night train home"]
    assert await texts(bob, "train", author=alice.did) == ["the morning train was late"]
    assert await texts(bob, "morning", lang="fr") == ["Café au lait in the morning"]
    assert await texts(bob, "train lang:en") == [
        "late night train home",
        "the morning train was late",
    ]
    assert await texts(bob, "see", mentions="carol.skyfed.test") == [
        "hi @carol.skyfed.test see https://www.example.com/x"
    ]
    assert await texts(bob, "domain:example.com") == [
        "hi @carol.skyfed.test see https://www.example.com/x"
    ]
    assert await texts(bob, "train from:nobody.skyfed.test") == []
    out = await bob.call(POSTS, params={"q": "train"})
    view = out["posts"][0]
    assert view["$type"] == "app.bsky.feed.defs#postView"
    assert view["author"]["handle"] == "bob.skyfed.test"


async def test_since_until_sort_and_cursor(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    refs = [await alice.post(f"numbered word {i}") for i in range(7)]
    await bob.like(refs[2])
    await carol.like(refs[2])
    await bob.repost(refs[4])
    assert await texts(bob, "numbered", since="2000-01-01", until="2000-12-31") == []
    assert len(await texts(bob, "numbered", since="2000-01-01")) == 7
    assert await texts(bob, "numbered", until="2000-01-01T00:00:00Z") == []
    top = await texts(bob, "numbered", sort="top", limit=3)
    assert top[:2] == ["numbered word 4", "numbered word 2"]  # a repost counts double
    seen: list[str] = []
    for sort in ("latest", "top"):
        seen = []
        cursor = None
        for _ in range(10):
            page = await bob.call(
                POSTS, params={"q": "numbered", "limit": 3, "sort": sort, "cursor": cursor}
            )
            seen += [p["record"]["text"] for p in page["posts"]]
            cursor = page.get("cursor")
            if not cursor:
                break
        assert sorted(seen) == sorted(f"numbered word {i}" for i in range(7)), sort
    assert seen[:2] == ["numbered word 4", "numbered word 2"]


async def test_deleted_and_edited_posts_leave_the_index(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, _ = people
    ref = await alice.post("ephemeral zebra")
    assert await texts(bob, "zebra") == ["ephemeral zebra"]
    await alice.delete(ref)
    assert await texts(bob, "zebra") == []
    rkey = ref.uri.rsplit("/", 1)[1]

    def post(text: str) -> dict[str, str]:
        return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00Z"}

    await alice.put_record("app.bsky.feed.post", rkey, post("a giraffe now"))
    assert await texts(bob, "zebra") == []
    assert await texts(bob, "giraffe") == ["a giraffe now"]
    await alice.put_record("app.bsky.feed.post", rkey, post("an okapi"))
    assert await texts(bob, "giraffe") == []
    assert await texts(bob, "okapi") == ["an okapi"]


async def test_mutes_and_blocks_hide_results(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    await alice.post("shared topic from alice")
    await carol.post("shared topic from carol")
    await bob.mute(alice.did)
    await carol.block(bob.did)
    assert await texts(bob, "shared topic") == []
    assert (await bob.call(ACTORS, params={"q": "alice"}))["actors"] == []
    assert (await bob.call(ACTORS, params={"q": "carol"}))["actors"] == []
    async with Client(bob.base_url) as anyone:
        assert len(await texts(anyone, "shared topic")) == 2


async def test_actor_search_and_typeahead(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    await alice.set_profile(display_name="Alice Liddell", description="falls down rabbit holes")
    await bob.set_profile(display_name="Robert", description="likes alice's posts")
    found = await carol.call(ACTORS, params={"q": "alice"})
    dids = [a["did"] for a in found["actors"]]
    assert dids[0] == alice.did  # the handle that starts with it first
    assert set(dids) == {alice.did, bob.did}
    assert found["actors"][0]["description"] == "falls down rabbit holes"
    assert [a["did"] for a in (await carol.call(ACTORS, params={"q": "rabbit"}))["actors"]] == [
        alice.did
    ]
    assert [a["did"] for a in (await carol.call(ACTORS, params={"term": "robert"}))["actors"]] == [
        bob.did
    ]
    ahead = await carol.call(TYPEAHEAD, params={"q": "Lid"})
    assert [a["did"] for a in ahead["actors"]] == [alice.did]
    assert ahead["actors"][0]["displayName"] == "Alice Liddell"
    assert "description" not in ahead["actors"][0]
    assert [a["did"] for a in (await carol.call(TYPEAHEAD, params={"q": "bo"}))["actors"]] == [
        bob.did
    ]
    # a profile edit changes the index
    await alice.set_profile(display_name="Just A")
    assert (await carol.call(TYPEAHEAD, params={"q": "Lid"}))["actors"] == []
    assert (await carol.call(TYPEAHEAD, params={"q": ""}))["actors"] == []
    page = await carol.call(ACTORS, params={"q": "skyfed", "limit": 2})
    rest = await carol.call(ACTORS, params={"q": "skyfed", "limit": 2, "cursor": page["cursor"]})
    assert len(page["actors"]) == 2
    assert len(rest["actors"]) == 1
    assert "cursor" not in rest


HOSTILE_QUERIES = [
    '"',
    '""',
    '"unterminated',
    "*",
    "word*",
    "NEAR(",
    "NEAR(a b, 3)",
    "text:secret",
    "author:x",
    "col : value",
    "a AND",
    "OR",
    "NOT a",
    "(",
    ")",
    "{a b}",
    "^start",
    "a + b",
    "-",
    "--",
    "-(",
    "\x00",
    "\u202e",
    "🙂",
    "from:",
    "since:garbage",
    "lang:",
    "a" * 101,
    " ".join(["w"] * (MAX_TERMS + 1)),
]


async def outcome(c: Client, nsid: str, q: str) -> str:
    try:
        await c.call(nsid, params={"q": q})
    except XrpcError as e:
        return f"{e.status} {e.error}"
    return "ok"


async def test_hostile_queries_never_reach_fts5_as_syntax(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, _ = people
    await alice.post('text:secret NEAR( "quoted" * AND OR')
    for q in HOSTILE_QUERIES:
        # words or none: an answer, or BadQueryString; never FTS5's syntax error (a 500)
        assert await outcome(bob, POSTS, q) in ("ok", "400 BadQueryString"), q
        for nsid in (ACTORS, TYPEAHEAD):
            assert await outcome(bob, nsid, q) == "ok", q
    # operator words are searched for as words, never as operators
    assert await texts(bob, "NEAR") == ['text:secret NEAR( "quoted" * AND OR']
    assert await texts(bob, "text:secret") == ['text:secret NEAR( "quoted" * AND OR']
    assert await texts(bob, "OR") == ['text:secret NEAR( "quoted" * AND OR']
    assert await texts(bob, "quoted*") == ['text:secret NEAR( "quoted" * AND OR']
    assert await texts(bob, "quot*") == []  # not a prefix query


async def test_hostile_parameters(people: tuple[Client, Client, Client]) -> None:
    _, bob, _ = people
    bad: list[dict[str, Any]] = [
        {},
        {"q": "x" * 1001},
        {"q": "x", "limit": 0},
        {"q": "x", "limit": 101},
        {"q": "x", "cursor": "abc"},
        {"q": "x", "cursor": "9" * 30},
        {"q": "x", "cursor": "-1"},
        {"q": "x", "sort": "best"},
        {"q": "x", "since": "yesterday"},
        {"q": "x", "until": "2024-13-45"},
        {"q": "   "},
    ]
    for params in bad:
        with pytest.raises(XrpcError) as e:
            await bob.call(POSTS, params=params)
        assert e.value.status == 400, params
    assert (await bob.call(POSTS, params={"q": "x", "cursor": "0"}))["posts"] == []
    big = await bob.call(POSTS, params={"q": "x", "sort": "top", "cursor": "99999"})
    assert big["posts"] == []
    for params in ({"q": "x" * 1001}, {"q": "x", "limit": 101}, {"q": "x", "cursor": "zz"}):
        with pytest.raises(XrpcError) as e:
            await bob.call(ACTORS, params=params)
        assert e.value.status == 400, params


def test_parse_keeps_only_words() -> None:
    q = parse_post_query('"NEAR(a" b* -c:d from:x.test lang:en text:y')
    assert q.phrases == [["NEAR", "a"], ["b"], ["text", "y"]]
    assert q.negated == [["c", "d"]]
    assert (q.author, q.lang) == ("x.test", "en")
    assert post_match(q, author=None, mentions=None) == (
        '(text : "NEAR a" AND text : "b" AND text : "text y" AND lang : "en") NOT text : ("c d")'
    )
    with pytest.raises(BadQueryString):
        post_match(parse_post_query('"" * ('), author=None, mentions=None)


async def test_a_post_from_another_node_is_found_and_its_delete_too(tmp_path: Path) -> None:
    here, there = await start_nodes(tmp_path, 2)
    try:
        await link([here, there], [(1, 0)])
        async with Client(here.url) as alice, Client(there.url) as bob:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await bob.create_account("bob.skyfed.test", PASSWORD)
            ref = await bob.post("travelling armadillo")

            async def found(n: int) -> bool:
                return len(await texts(alice, "armadillo")) == n

            await until(lambda: found(1))
            actors = await alice.call(TYPEAHEAD, params={"q": "bob"})
            assert [a["did"] for a in actors["actors"]] == [bob.did]
            await bob.delete(ref)
            await until(lambda: found(0))
    finally:
        await here.stop()
        await there.stop()


async def test_an_older_database_gets_its_search_and_notifications_built(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await alice.set_profile(display_name="Wonderland")
        first = await alice.post("written before search existed")
        await bob.like(first)
        await bob.follow(alice.did)
    conn = sqlite3.connect(config.db_path)
    names = ["notifications", "notification_seen", "post_fts", "post_search"]
    names += ["actor_fts", "actor_search"]
    for name in names:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {trigger}")
    # The version before search (a later step, v13, came since).
    conn.execute(f"PRAGMA user_version = {_NOTIFY_SEARCH_SCHEMA}")
    conn.commit()
    conn.close()
    async with Node(config) as node, Client(node.url) as alice:
        await alice.login("alice.skyfed.test", PASSWORD)
        assert await texts(alice, "search existed") == ["written before search existed"]
        ahead = await alice.call(TYPEAHEAD, params={"q": "wonder"})
        assert [a["did"] for a in ahead["actors"]] == [alice.did]
        page = await alice.call("app.bsky.notification.listNotifications")
        assert sorted(n["reason"] for n in page["notifications"]) == ["follow", "like"]


async def test_the_command_line_searches_posts_and_people(node: Node, tmp_path: Path) -> None:
    from .test_cli import new_account, ok, skyfed

    alice = await new_account(tmp_path, node, "alice")
    ok(await skyfed(alice, "post", "searching from the shell"))
    ok(await skyfed(alice, "profile", "set", "--display-name", "Alice Shell"))
    anon = tmp_path / "anon"
    text = ok(await skyfed(anon, "search", "shell", "--node", node.url)).out
    assert "searching from the shell" in text
    assert "Alice Shell @alice.skyfed.test" in text
    found = ok(await skyfed(anon, "search", "shell -searching", "--node", node.url, "--json"))
    assert found.json()["posts"] == []
    people = ok(await skyfed(anon, "search", "--actors", "ali", "--node", node.url)).out
    assert people.startswith("Alice Shell @alice.skyfed.test")
    none = ok(await skyfed(anon, "search", "nothing-like-it", "--node", node.url)).out
    assert none == "(no posts found)\n"


# -- the web pages -------------------------------------------------------------------


async def test_web_search_page_and_box(node: Node) -> None:
    import aiohttp

    async with Client(node.url) as alice, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.set_profile(display_name="Alice <b>Web</b>")
        await alice.post("a <script>findable</script> post")

        async def get(path: str, **params: str) -> tuple[int, str]:
            async with http.get(node.url + path, params=params) as resp:
                return resp.status, await resp.text()

        status, home = await get("/")
        assert status == 200
        assert '<form class="search" role="search" method="get" action="/search">' in home
        status, page = await get("/search", q="findable")
        assert status == 200
        assert "a &lt;script&gt;findable&lt;/script&gt; post" in page
        assert "<script>findable" not in page
        status, page = await get("/search", q="alice")
        assert "Alice &lt;b&gt;Web&lt;/b&gt;" in page  # people above the posts
        assert 'value="alice"' in page
        status, page = await get("/search", q='"><script>x</script>')
        assert status == 200
        assert 'value="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in page
        assert "<script>x" not in page
        status, page = await get("/search", q="*")
        assert status == 400
        assert "could not be run" in page
        status, page = await get("/search", q="x" * 5000)
        assert status == 400
        status, page = await get("/search")
        assert (status, "Type words to look for." in page) == (200, True)
        status, page = await get("/search", q="findable", cursor="not-a-number")
        assert status == 400


async def test_web_activity_page(node: Node, tmp_path: Path) -> None:
    import aiohttp

    async with (
        Client(node.url) as alice,
        Client(node.url) as bob,
        aiohttp.ClientSession() as http,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        first = await alice.post("notice me")
        await bob.like(first)
        await bob.post("<i>replying</i>", reply_to=first)
        await alice.mute(bob.did)  # private: the public page does not apply it
        async with http.get(node.url + "/profile/alice.skyfed.test") as resp:
            assert '<a href="/notifications/alice.skyfed.test">Activity →</a>' in await resp.text()
        async with http.get(node.url + "/notifications/alice.skyfed.test") as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "@bob.skyfed.test</span></a> liked" in page
        assert "replied to" in page
        assert "&lt;i&gt;replying&lt;/i&gt;" in page
        assert "isRead" not in page
        async with http.get(node.url + "/notifications/nobody.skyfed.test") as resp:
            assert resp.status == 404
        async with http.get(node.url + "/notifications/%3Cx%3E") as resp:
            assert resp.status == 404


@pytest.mark.timeout(180)
async def test_browser_search_box_works_without_javascript(tmp_path: Path) -> None:
    """Headless Chromium with the pages' scripts turned off (a content setting): type in
    the header's box, press Enter, read the results."""
    import asyncio

    from .test_web import CHROMEDRIVER, CHROMIUM

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium and chromedriver are not installed here")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    async with (
        Node(NodeConfig(data_dir=tmp_path / "node", port=0)) as node,
        Client(node.url) as alice,
    ):
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.post("the quick brown fox")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
        try:

            def search() -> str:
                driver.get(node.url + "/")
                box = driver.find_element(By.CSS_SELECTOR, "header form.search input[name=q]")
                box.send_keys("brown fox", Keys.ENTER)
                WebDriverWait(driver, 20).until(ec.url_contains("/search?q=brown+fox"))
                return str(driver.find_element(By.TAG_NAME, "main").text)

            assert "the quick brown fox" in await asyncio.to_thread(search)
        finally:
            await asyncio.to_thread(driver.quit)


def test_a_crowded_millisecond_spills_over_in_a_few_lookups() -> None:
    """Anyone can date posts to one millisecond: the 65,537th still gets a row id,
    found without probing the 65,536 taken ones."""
    from node.appview.search import SEARCH_SCHEMA, index_post, time_rowid

    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE handles (handle TEXT PRIMARY KEY, did TEXT NOT NULL UNIQUE);"
        "CREATE TABLE profiles (did TEXT PRIMARY KEY, display_name TEXT, description TEXT,"
        " indexed_at TEXT NOT NULL);" + SEARCH_SCHEMA
    )
    at = "2020-01-01T00:00:00.000Z"
    base = time_rowid(at)
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 65535)"
        " INSERT INTO post_search SELECT ? + i, 'at://x/p/' || i, 'did:x', '', '', '', '', ''"
        " FROM n",
        (base,),
    )
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    index_post(conn, "at://did:plc:a/app.bsky.feed.post/1", "did:plc:a", {"text": "crowd"}, at)
    conn.set_trace_callback(None)
    assert len([s for s in statements if s.startswith("SELECT")]) <= 4
    row = conn.execute("SELECT id FROM post_search WHERE text = 'crowd'").fetchone()
    assert row[0] == base + 65536
    assert conn.execute("SELECT rowid FROM post_fts WHERE post_fts MATCH 'crowd'").fetchall() == [
        (base + 65536,)
    ]
    index_post(conn, "at://did:plc:a/app.bsky.feed.post/2", "did:plc:a", {"text": "crowd"}, at)
    assert conn.execute("SELECT count(*) FROM post_search WHERE text = 'crowd'").fetchone()[0] == 2


async def test_labelers_the_reader_names_label_and_redact_results(node: Node) -> None:
    """atproto-accept-labelers works on search and notifications as on every view."""
    import aiohttp

    from protocol.moderation import ACCEPT_LABELERS

    async with (
        Client(node.url) as mod,
        Client(node.url) as author,
        Client(node.url) as reader,
        aiohttp.ClientSession() as http,
    ):
        await mod.create_account("mod.skyfed.test", PASSWORD)
        await author.create_account("author.skyfed.test", PASSWORD)
        await reader.create_account("reader.skyfed.test", PASSWORD)
        gone = await author.post("labelled unicorn")
        kept = await author.post("plain unicorn")
        await mod.label(gone.uri, "!takedown")
        await mod.label(author.did, "bot")
        await author.like(await reader.post("reader's own"))
        assert reader.session is not None
        token = {"Authorization": f"Bearer {reader.session.access_jwt}"}

        async def get(nsid: str, header: str, **params: str) -> Any:
            headers = {ACCEPT_LABELERS: header, **token}
            async with http.get(f"{node.url}/xrpc/{nsid}", params=params, headers=headers) as r:
                assert r.status == 200
                return await r.json()

        found = await get(POSTS, mod.did, q="unicorn")
        labels = {p["uri"]: [lb["val"] for lb in p["labels"]] for p in found["posts"]}
        assert labels == {gone.uri: ["!takedown"], kept.uri: []}
        assert [lb["val"] for lb in found["posts"][0]["author"]["labels"]] == ["bot"]
        found = await get(POSTS, f"{mod.did};redact", q="unicorn")
        assert [p["uri"] for p in found["posts"]] == [kept.uri]
        actors = await get(ACTORS, mod.did, q="author")
        assert [lb["val"] for lb in actors["actors"][0]["labels"]] == ["bot"]
        page = await get("app.bsky.notification.listNotifications", mod.did)
        assert [lb["val"] for lb in page["notifications"][0]["author"]["labels"]] == ["bot"]
