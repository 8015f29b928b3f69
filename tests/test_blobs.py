"""Blobs: uploads (limits, sniffing), getBlob and listBlobs, images hydrated in views
and served by URL, garbage collection, and blobs fetched from peers (CID checked)."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.appview.media import blob_url as media_url
from node.config import NodeConfig
from node.net.blobfetch import FetchBusy
from node.wiring import Node
from protocol.blobs import BlobRef, blob_refs_in, check_upload, sniff_mime
from protocol.cid import CID, cid_for_msgpack, cid_for_raw
from protocol.errors import DecodeError
from protocol.peerwire import decode_message, encode_message

from . import test_web
from .test_federation import link, start_nodes, until

# The web tests' fixtures: a node serving the page, and headless Chromium.
site = test_web.site
browser = test_web.browser
chrome_paths = test_web.chrome_paths
profile_dir = test_web.profile_dir

PASSWORD = "correct horse battery staple"


def blob_url(node: Node, did: str, blob: dict[str, Any]) -> str:
    return media_url(node.url, did, blob["ref"]["$link"])


def png(width: int = 2, height: int = 1, seed: int = 0) -> bytes:
    """A real PNG (so a browser could draw it), different bytes per ``seed``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\0" + bytes([seed % 256, 0, 0]) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)
HTML = b"<!doctype html><script>alert(document.cookie)</script>"


# -- protocol: sniffing and refs, no server ------------------------------------------


def test_sniffing_names_the_formats_by_their_magic_bytes() -> None:
    assert sniff_mime(png()) == "image/png"
    assert sniff_mime(JPEG) == "image/jpeg"
    assert sniff_mime(b"GIF89a" + bytes(10)) == "image/gif"
    assert sniff_mime(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_mime(HTML) is None
    assert sniff_mime(b"RIFF\0\0\0\0WAVE") is None


@pytest.mark.parametrize(
    ("data", "declared", "error"),
    [
        (b"", "image/png", "InvalidBlob"),
        (png(), "image/jpeg", "InvalidMimeType"),
        (HTML, "image/png", "InvalidMimeType"),
        (HTML, "*/*", "InvalidMimeType"),
        (png() + bytes(300), "image/png", "BlobTooLarge"),
    ],
    ids=["empty", "png-declared-jpeg", "html-as-png", "html-undeclared", "oversize"],
)
def test_uploads_refused(data: bytes, declared: str, error: str) -> None:
    from protocol.blobs import BlobRefused

    with pytest.raises(BlobRefused) as e:
        check_upload(data, declared, 200)
    assert e.value.error == error


def test_undeclared_or_matching_types_take_the_sniffed_type() -> None:
    for declared in (None, "", "*/*", "application/octet-stream", "image/PNG; x=1"):
        assert check_upload(png(), declared, 1000) == "image/png"


def test_blob_refs_are_found_in_records_and_malformed_ones_skipped() -> None:
    cid = cid_for_raw(b"x")
    ref = BlobRef(cid, "image/png", 1).to_value()
    record = {
        "$type": "app.bsky.feed.post",
        "embed": {"$type": "app.bsky.embed.images", "images": [{"image": ref, "alt": ""}]},
        "bad": {"$type": "blob", "ref": {"$link": str(cid_for_msgpack(b"x"))}, "mimeType": "a/b"},
        "legacy": {"cid": str(cid), "mimeType": "image/jpeg"},
        "nosize": {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": "image/png"},
    }
    found = blob_refs_in(record)
    assert [(r.path, r.size) for r in found] == [("legacy", None), ("embed.images[0].image", 1)]
    # A record built to be walked forever costs a bounded walk.
    wide: dict[str, Any] = {"a": [[{"x": 1}] * 1000] * 1000}
    assert blob_refs_in(wide) == []


def test_peerwire_getblob_and_blob() -> None:
    cid = cid_for_raw(b"x").to_bytes()
    msg = encode_message("getblob", rid=1, did="did:skyfed:x", cid=cid)
    assert decode_message(msg) == {"t": "getblob", "rid": 1, "did": "did:skyfed:x", "cid": cid}
    answer = encode_message("blob", rid=1, cid=cid, data=b"x")
    assert decode_message(answer)["data"] == b"x"
    with pytest.raises(DecodeError):
        decode_message(encode_message("getblob", rid=1, did="d", cid=bytes(65)))


# -- one node ----------------------------------------------------------------------------


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path / "node", port=0, blob_max_bytes=4096)
    async with Node(config) as n:
        yield n


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str):
        self.http = http
        self.url = url

    async def account(self, handle: str) -> tuple[str, str]:
        body = await self.post(
            "com.atproto.server.createAccount", {"handle": handle, "password": PASSWORD}
        )
        return body["did"], body["accessJwt"]

    async def post(
        self, nsid: str, body: dict[str, Any], token: str | None = None, status: int = 200
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(f"{self.url}/xrpc/{nsid}", json=body, headers=headers) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def get(self, nsid: str, status: int = 200, **params: Any) -> Any:
        async with self.http.get(f"{self.url}/xrpc/{nsid}", params=params) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def upload(
        self, data: Any, token: str | None, content_type: str = "*/*", status: int = 200
    ) -> Any:
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(
            f"{self.url}/xrpc/com.atproto.repo.uploadBlob", data=data, headers=headers
        ) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def create(
        self, did: str, token: str, collection: str, record: dict[str, Any], rkey: str | None = None
    ) -> Any:
        body: dict[str, Any] = {"repo": did, "collection": collection, "record": record}
        if rkey is not None:
            body["rkey"] = rkey
        return await self.post("com.atproto.repo.createRecord", body, token)

    async def fetch(self, url: str) -> tuple[int, dict[str, str], bytes]:
        async with self.http.get(url) as r:
            return r.status, dict(r.headers), await r.read()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def image_post(text: str, *blobs: dict[str, Any]) -> dict[str, Any]:
    return {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [
                {"image": b, "alt": f"picture {i}", "aspectRatio": {"width": 2, "height": 1}}
                for i, b in enumerate(blobs)
            ],
        },
    }


async def test_upload_limits_and_sniffing(small: Node, http: aiohttp.ClientSession) -> None:
    api = Api(http, small.url)
    did, token = await api.account("alice.skyfed.test")
    data = png()
    ok = await api.upload(data, token)
    assert ok == {
        "blob": {
            "$type": "blob",
            "ref": {"$link": str(cid_for_raw(data))},
            "mimeType": "image/png",
            "size": len(data),
        }
    }
    await api.upload(data, token, "image/png")  # the same bytes again: fine
    assert (await api.upload(data, None, status=401))["error"] == "AuthRequired"
    bad = await api.upload(data, token, "image/jpeg", status=400)
    assert bad["error"] == "InvalidMimeType"
    assert (await api.upload(HTML, token, "image/png", status=400))["error"] == "InvalidMimeType"
    assert (await api.upload(HTML, token, "text/html", status=400))["error"] == "InvalidMimeType"
    assert (await api.upload(b"", token, status=400))["error"] == "InvalidBlob"
    big = png(60, 60, seed=1) + bytes(5000)
    assert (await api.upload(big, token, status=413))["error"] == "BlobTooLarge"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b"\x89PNG\r\n\x1a\n" + bytes(1000)

    assert (await api.upload(chunked(), token, status=413))["error"] == "BlobTooLarge"
    assert await small.blobs.uploaded(did, cid_for_raw(data)) == ("image/png", len(data))
    assert await small.blobs.uploaded(did, cid_for_raw(HTML)) is None


async def test_a_post_with_images_is_hydrated_and_served(
    small: Node, http: aiohttp.ClientSession
) -> None:
    api = Api(http, small.url)
    did, token = await api.account("alice.skyfed.test")
    first, second = png(seed=1), png(seed=2)
    b1 = (await api.upload(first, token))["blob"]
    b2 = (await api.upload(second, token))["blob"]
    cid1 = b1["ref"]["$link"]
    # Uploaded but not yet in a record: not served.
    missing = await api.get("com.atproto.sync.getBlob", 400, did=did, cid=cid1)
    assert missing["error"] == "BlobNotFound"
    # A record may only point at blobs its author uploaded here.
    stray = BlobRef(cid_for_raw(b"never uploaded"), "image/png", 14).to_value()
    refused = await api.post(
        "com.atproto.repo.createRecord",
        {"repo": did, "collection": "app.bsky.feed.post", "record": image_post("x", stray)},
        token,
        status=400,
    )
    assert refused["error"] == "BlobNotFound"
    made = await api.create(did, token, "app.bsky.feed.post", image_post("two pictures", b1, b2))

    # The blob refs round-trip: createRecord JSON -> stored record -> getRecord JSON.
    rkey = made["uri"].rsplit("/", 1)[1]
    got = await api.get(
        "com.atproto.repo.getRecord", repo=did, collection="app.bsky.feed.post", rkey=rkey
    )
    assert got["value"]["embed"]["images"][0]["image"] == b1
    assert got["cid"] == made["cid"]

    posts = await api.get("app.bsky.feed.getPosts", uris=made["uri"])
    embed = posts["posts"][0]["embed"]
    assert embed["$type"] == "app.bsky.embed.images#view"
    assert [i["alt"] for i in embed["images"]] == ["picture 0", "picture 1"]
    assert embed["images"][0]["aspectRatio"] == {"width": 2, "height": 1}
    for image, data in zip(embed["images"], (first, second), strict=True):
        assert image["fullsize"].startswith(small.url + "/xrpc/com.atproto.sync.getBlob?")
        status, headers, body = await api.fetch(image["thumb"])
        assert status == 200
        assert body == data
        assert headers["Content-Type"] == "image/png"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]

    # getAuthorFeed's posts_with_media: the picture post only (not text, not reposts).
    await api.create(
        did,
        token,
        "app.bsky.feed.post",
        {"$type": "app.bsky.feed.post", "text": "words", "createdAt": "2026-01-02T00:00:00Z"},
    )
    await api.create(
        did,
        token,
        "app.bsky.feed.repost",
        {
            "$type": "app.bsky.feed.repost",
            "subject": {"uri": made["uri"], "cid": made["cid"]},
            "createdAt": "2026-01-03T00:00:00Z",
        },
    )
    feed = await api.get("app.bsky.feed.getAuthorFeed", actor=did, filter="posts_with_media")
    assert [(i["post"]["uri"], "reason" in i) for i in feed["feed"]] == [(made["uri"], False)]
    everything = await api.get("app.bsky.feed.getAuthorFeed", actor=did)
    assert len(everything["feed"]) == 3

    # listBlobs: the account's referenced blobs, paged by CID.
    listed = await api.get("com.atproto.sync.listBlobs", did=did)
    assert sorted(listed["cids"]) == sorted([cid1, b2["ref"]["$link"]])
    page = await api.get("com.atproto.sync.listBlobs", did=did, limit=1)
    rest = await api.get("com.atproto.sync.listBlobs", did=did, cursor=page["cursor"])
    assert page["cids"] + rest["cids"] == sorted(listed["cids"])
    head = await api.get("com.atproto.sync.getLatestCommit", did=did)
    assert (await api.get("com.atproto.sync.listBlobs", did=did, since=head["rev"]))["cids"] == []

    # Hostile queries are refused, not crashed on.
    await api.get("com.atproto.sync.getBlob", 400, did=did, cid="not-a-cid")
    other = str(cid_for_msgpack(b"a record"))
    await api.get("com.atproto.sync.getBlob", 400, did=did, cid=other)
    await api.get("com.atproto.sync.listBlobs", 400, did=did, cursor="bogus")
    await api.get("com.atproto.sync.getBlob", 400, did="nonsense", cid=cid1)


async def test_profile_avatar_and_banner_and_quotes_with_media(
    small: Node, http: aiohttp.ClientSession
) -> None:
    api = Api(http, small.url)
    did, token = await api.account("alice.skyfed.test")
    avatar = (await api.upload(png(seed=3), token))["blob"]
    banner = (await api.upload(JPEG, token))["blob"]
    thumb = (await api.upload(png(seed=4), token))["blob"]
    profile = {
        "$type": "app.bsky.actor.profile",
        "displayName": "Alice",
        "avatar": avatar,
        "banner": banner,
    }
    await api.create(did, token, "app.bsky.actor.profile", profile, rkey="self")
    view = await api.get("app.bsky.actor.getProfile", actor=did)
    assert view["avatar"].endswith("cid=" + avatar["ref"]["$link"])
    assert view["banner"].endswith("cid=" + banner["ref"]["$link"])
    status, headers, body = await api.fetch(view["banner"])
    assert (status, headers["Content-Type"], body) == (200, "image/jpeg", JPEG)

    link_post = {
        "$type": "app.bsky.feed.post",
        "text": "a link",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "embed": {
            "$type": "app.bsky.embed.external",
            "external": {
                "uri": "https://example.com",
                "title": "T",
                "description": "D",
                "thumb": thumb,
            },
        },
    }
    linked = await api.create(did, token, "app.bsky.feed.post", link_post)
    pic = (await api.upload(png(seed=5), token))["blob"]
    quote = {
        "$type": "app.bsky.feed.post",
        "text": "quote with a picture",
        "createdAt": "2026-01-01T00:00:01.000Z",
        "embed": {
            "$type": "app.bsky.embed.recordWithMedia",
            "record": {
                "$type": "app.bsky.embed.record",
                "record": {"uri": linked["uri"], "cid": linked["cid"]},
            },
            "media": {"$type": "app.bsky.embed.images", "images": [{"image": pic, "alt": "p"}]},
        },
    }
    quoted = await api.create(did, token, "app.bsky.feed.post", quote)
    posts = await api.get("app.bsky.feed.getPosts", uris=[linked["uri"], quoted["uri"]])
    by_uri = {p["uri"]: p for p in posts["posts"]}
    ext = by_uri[linked["uri"]]["embed"]
    assert ext["$type"] == "app.bsky.embed.external#view"
    assert ext["external"]["thumb"].endswith(thumb["ref"]["$link"])
    rwm = by_uri[quoted["uri"]]["embed"]
    assert rwm["$type"] == "app.bsky.embed.recordWithMedia#view"
    assert rwm["media"]["images"][0]["alt"] == "p"
    inner = rwm["record"]["record"]
    assert inner["uri"] == linked["uri"]
    assert inner["embeds"][0]["$type"] == "app.bsky.embed.external#view"
    assert by_uri[quoted["uri"]]["author"]["avatar"] == view["avatar"]


async def test_unreferenced_blobs_are_collected(small: Node, http: aiohttp.ClientSession) -> None:
    api = Api(http, small.url)
    did, token = await api.account("alice.skyfed.test")
    lonely = (await api.upload(png(seed=6), token))["blob"]
    kept = (await api.upload(png(seed=7), token))["blob"]
    made = await api.create(did, token, "app.bsky.feed.post", image_post("keep", kept))
    lonely_cid = CID.from_str(lonely["ref"]["$link"])
    kept_cid = CID.from_str(kept["ref"]["$link"])
    also = (await api.upload(png(seed=11), token))["blob"]
    assert await small.blobs.collect() == 0  # within the grace period: nothing goes
    small.blobs._clock = lambda: time.time() + small.config.blob_grace + 1
    # Each pass looks at a bounded number of candidates (oldest first).
    assert await small.blobs.collect(limit=1) == 1
    assert await small.blobs.collect() == 1
    assert await small.blobs.collect() == 0
    assert await small.blobs.uploaded(did, CID.from_str(also["ref"]["$link"])) is None
    assert await small.blobs.uploaded(did, lonely_cid) is None
    assert await small.blobs.uploaded(did, kept_cid) is not None
    # The post goes: nothing points at its picture any more, and it goes too.
    rkey = made["uri"].rsplit("/", 1)[1]
    await api.post(
        "com.atproto.repo.deleteRecord",
        {"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey},
        token,
    )
    assert await small.blobs.collect(limit=10) == 1
    assert await small.blobs.uploaded(did, kept_cid) is None
    await api.get("com.atproto.sync.getBlob", 400, did=did, cid=str(kept_cid))


# The SDK uploads with httpx's deprecated data=<bytes> (its code, not ours).
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_the_atproto_sdk_sends_an_image(node: Node) -> None:
    from atproto import Client, models

    from .test_atproto_sdk import call, sign_up

    await call(sign_up, node.url, "alice.skyfed.test")
    sdk = Client(base_url=node.url)
    try:
        await call(sdk.login, "alice.skyfed.test", PASSWORD)
        data = png(seed=8)
        sent = await call(
            sdk.send_image,
            "a picture from the SDK",
            image=data,
            image_alt="a red dot",
            image_aspect_ratio=models.AppBskyEmbedDefs.AspectRatio(width=2, height=1),
        )
        got = await call(sdk.get_posts, [sent.uri])
        embed = got.posts[0].embed
        assert isinstance(embed, models.AppBskyEmbedImages.View)
        assert embed.images[0].alt == "a red dot"
        assert embed.images[0].aspect_ratio is not None
        assert embed.images[0].aspect_ratio.width == 2
        async with aiohttp.ClientSession() as http, http.get(embed.images[0].fullsize) as r:
            assert r.status == 200
            assert await r.read() == data
    finally:
        sdk.request.close()


# -- federation ------------------------------------------------------------------------


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path, 2)
    try:
        await link(nodes, [(1, 0)])
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_images_of_a_post_made_elsewhere_are_fetched_and_checked(
    pair: list[Node], http: aiohttp.ClientSession
) -> None:
    home, other = pair
    api = Api(http, home.url)
    far = Api(http, other.url)
    did, token = await api.account("alice.skyfed.test")
    data = png(seed=9)
    blob = (await api.upload(data, token))["blob"]
    made = await api.create(did, token, "app.bsky.feed.post", image_post("far away", blob))

    async def arrived() -> bool:
        return bool((await far.get("app.bsky.feed.getPosts", uris=made["uri"]))["posts"])

    await until(arrived)
    view = (await far.get("app.bsky.feed.getPosts", uris=made["uri"]))["posts"][0]
    url = view["embed"]["images"][0]["fullsize"]
    assert url.startswith(other.url)  # served by the node that shows it
    status, headers, body = await far.fetch(url)
    assert (status, headers["Content-Type"], body) == (200, "image/png", data)
    assert other.blob_fetch.fetched == 1
    assert await other.blobs.cache_size() == len(data)
    # Again: from the cache, no second fetch.
    assert (await far.fetch(url))[2] == data
    assert other.blob_fetch.fetched == 1

    # Three readers of a new image at once: one fetch, all three served.
    fourth = png(seed=13)
    shared = (await api.upload(fourth, token))["blob"]
    made4 = await api.create(did, token, "app.bsky.feed.post", image_post("shared", shared))

    async def arrived4() -> bool:
        return bool((await far.get("app.bsky.feed.getPosts", uris=made4["uri"]))["posts"])

    await until(arrived4)
    answers = await asyncio.gather(*(far.fetch(blob_url(other, did, shared)) for _ in range(3)))
    assert [(a[0], a[2]) for a in answers] == [(200, fourth)] * 3
    assert other.blob_fetch.fetched == 2

    # Bytes over this node's limit are refused even when they hash right.
    other.blob_fetch.max_bytes = 10
    big = (await api.upload(png(seed=12), token))["blob"]
    made3 = await api.create(did, token, "app.bsky.feed.post", image_post("big", big))

    async def arrived3() -> bool:
        return bool((await far.get("app.bsky.feed.getPosts", uris=made3["uri"]))["posts"])

    await until(arrived3)
    status, _, _ = await far.fetch(blob_url(other, did, big))
    assert status == 400
    assert other.blob_fetch.refused == 1
    other.blob_fetch.max_bytes = other.config.blob_max_bytes

    # A peer that answers other bytes is refused (and loses score); nothing is cached.
    async def lie(link: Any, msg: dict[str, Any]) -> None:
        link.send("blob", rid=msg["rid"], cid=msg["cid"], data=png(seed=99))

    home.blob_fetch.serve = lie  # type: ignore[method-assign]
    second = (await api.upload(png(seed=10), token))["blob"]
    made2 = await api.create(did, token, "app.bsky.feed.post", image_post("lies", second))

    async def arrived2() -> bool:
        return bool((await far.get("app.bsky.feed.getPosts", uris=made2["uri"]))["posts"])

    await until(arrived2)
    view2 = (await far.get("app.bsky.feed.getPosts", uris=made2["uri"]))["posts"][0]
    status, _, body = await far.fetch(view2["embed"]["images"][0]["fullsize"])
    assert status == 400
    assert other.blob_fetch.refused == 2
    assert await other.blobs.cache_size() == len(data) + len(fourth)
    assert other.federation.links[home.node_did].score < 0

    # A blob no record there points at is never fetched (no open proxy for CIDs).
    stray = cid_for_raw(b"stray")
    await far.get("com.atproto.sync.getBlob", 400, did=did, cid=str(stray))
    assert other.blob_fetch.fetched == 2

    # An account whose records point at a blob its node no longer holds (as after a
    # move): its node fetches it back from a peer that cached it (second hand).
    raw = cid_for_raw(data).to_bytes()
    await home.storage.write(lambda c: c.execute("DELETE FROM blobs WHERE cid = ?", (raw,)))
    status, _, body = await api.fetch(url.replace(other.url, home.url))
    assert (status, body) == (200, data)
    assert home.blob_fetch.fetched == 1


async def test_fetches_are_bounded(pair: list[Node], http: aiohttp.ClientSession) -> None:
    home, other = pair
    api = Api(http, home.url)
    far = Api(http, other.url)
    did, token = await api.account("alice.skyfed.test")
    blobs = [(await api.upload(png(seed=20 + i), token))["blob"] for i in range(3)]
    made = await api.create(did, token, "app.bsky.feed.post", image_post("many", *blobs))

    async def arrived() -> bool:
        return bool((await far.get("app.bsky.feed.getPosts", uris=made["uri"]))["posts"])

    await until(arrived)
    # A peer that never answers: fetches pile up to the bound, then 503 at once.
    stalled = asyncio.Event()

    async def silent(link: Any, msg: dict[str, Any]) -> None:
        await stalled.wait()

    home.blob_fetch.serve = silent  # type: ignore[method-assign]
    other.blob_fetch.slots = 2
    other.blob_fetch.timeout = 2.0
    urls = [
        i["fullsize"]
        for i in (await far.get("app.bsky.feed.getPosts", uris=made["uri"]))["posts"][0]["embed"][
            "images"
        ]
    ]
    waiting = [asyncio.create_task(far.fetch(u)) for u in urls[:2]]
    await until(lambda: _true(len(other.blob_fetch._inflight) == 2))
    status, _, body = await far.fetch(urls[2])
    assert status == 503
    assert b"BlobFetchBusy" in body
    # New fetches are also held to a rate (a token bucket).
    other.blob_fetch.rate, other.blob_fetch._tokens = 0.0, 1.0
    other.blob_fetch._take_token()
    with pytest.raises(FetchBusy):
        other.blob_fetch._take_token()
    stalled.set()
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


# -- the web page and the CLI ------------------------------------------------------------


def test_the_web_page_loads_images_only_from_this_node() -> None:
    from node.server.web import blob_src

    here = "http://127.0.0.1:1/xrpc/com.atproto.sync.getBlob?did=did:skyfed:x&cid=bafk"
    assert blob_src(here) == "/xrpc/com.atproto.sync.getBlob?did=did:skyfed:x&cid=bafk"
    assert blob_src("https://evil.example/cat.png") is None
    assert blob_src("javascript:alert(1)") is None
    assert blob_src("http://[::1") is None


async def _picture_post(node: Node, http: aiohttp.ClientSession) -> tuple[str, str, bytes]:
    api = Api(http, node.url)
    did, token = await api.account("alice.skyfed.test")
    data = png(seed=30)
    avatar = (await api.upload(png(seed=31), token))["blob"]
    profile = {"$type": "app.bsky.actor.profile", "displayName": "Alice", "avatar": avatar}
    await api.create(did, token, "app.bsky.actor.profile", profile, rkey="self")
    blob = (await api.upload(data, token))["blob"]
    made = await api.create(did, token, "app.bsky.feed.post", image_post('a "red" <dot>', blob))
    return made["uri"], blob["ref"]["$link"], data


async def test_the_web_page_and_the_cli_show_images(
    small: Node, http: aiohttp.ClientSession
) -> None:
    import io

    from rich.console import Console

    from node.client.render import Renderer

    uri, cid, _ = await _picture_post(small, http)
    async with http.get(small.url + "/") as r:
        page = await r.text()
    assert f'cid={cid}" alt="picture 0"' in page
    assert '<img class="av" src="/xrpc/com.atproto.sync.getBlob?' in page

    posts = await Api(http, small.url).get("app.bsky.feed.getPosts", uris=uri)
    out = io.StringIO()
    Renderer(Console(file=out, width=200, color_system=None)).post(posts["posts"][0])
    shown = out.getvalue()
    assert "[picture 0]" in shown
    assert f"{small.url}/xrpc/com.atproto.sync.getBlob?" in shown
    assert cid in shown


@pytest.mark.timeout(120)
async def test_a_browser_draws_the_images(
    site: Node, http: aiohttp.ClientSession, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    await _picture_post(site, http)

    def load() -> list[Any]:
        browser.get(site.url + "/")
        WebDriverWait(browser, 20).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, ".pics img"))
        )
        WebDriverWait(browser, 20).until(
            lambda d: d.execute_script(
                "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        return list(
            browser.execute_script(
                "return [...document.images].map(i => [i.className, i.alt, i.naturalWidth])"
            )
        )

    drawn = await asyncio.to_thread(load)
    # The post's picture (2 px wide, with its alt text) and the avatar, both drawn:
    # the page's CSP lets this node's images in.
    assert ["", "picture 0", 2] in drawn
    assert ["av", "", 2] in drawn


async def test_posting_pictures_from_the_command_line(
    node: Node, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from .test_cli import new_account, ok, one_line_error, skyfed

    cfg = await new_account(tmp_path, node, "carol")
    picture, page = tmp_path / "dot.png", tmp_path / "page.png"
    picture.write_bytes(png(seed=40))
    page.write_bytes(HTML)
    run = ok(await skyfed(cfg, "post", "look", "--image", str(picture), "--alt", "a dot"))
    uri = run.out.split()[-1]
    view = (await Api(http, node.url).get("app.bsky.feed.getPosts", uris=uri))["posts"][0]
    assert view["embed"]["images"][0]["alt"] == "a dot"
    status, _, body = await Api(http, node.url).fetch(view["embed"]["images"][0]["fullsize"])
    assert (status, body) == (200, png(seed=40))
    # What the node refuses, and a file that is not there, are one line each.
    assert "InvalidMimeType" in one_line_error(await skyfed(cfg, "post", "x", "--image", str(page)))
    assert "cannot read" in one_line_error(
        await skyfed(cfg, "post", "x", "--image", str(tmp_path / "nope.png"))
    )
