"""Blobs over HTTP: upload, serve, hydrate, and fetch from a peer.

    python bench/blobs.py [--count 40] [--size 1000000]

Two nodes in this process, linked (node 1 dials node 0), on 127.0.0.1 with port 0
and fresh data dirs. One account on node 0 uploads ``--count`` images of ``--size``
bytes (a PNG signature, then random bytes) and posts them four to a post. Measured,
one request at a time:

* ``uploadBlob`` of one image;
* ``getBlob`` of one image from its own node;
* ``getPosts`` of one post with four images (hydrated to view URLs) against one
  text-only post: what hydration adds to a view;
* on node 1: ``getBlob`` of an image it does not hold (fetched from node 0 over the
  peer link, CID checked, cached), then the same image again (from the cache).

Prints p50/p99/max per row in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.config import NodeConfig
from node.wiring import Node


def _row(name: str, times: list[float]) -> str:
    times = sorted(times)
    p50 = times[len(times) // 2] * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    top = times[-1] * 1000
    return f"{name:<44} n={len(times):<4} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  max {top:7.2f} ms"


async def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = await fn()
    return time.perf_counter() - start, out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", type=int, default=1_000_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skyfed-bench-blobs-"))
    nodes = []
    for i in range(2):
        node = Node(NodeConfig(data_dir=tmp / f"n{i}", port=0, reconcile_interval=0.5))
        await node.start()
        nodes.append(node)
    home, other = nodes
    try:
        other.federation.dial(home.url)
        async with asyncio.timeout(20):
            while home.node_did not in other.federation.links:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll: no event for a link coming up
        async with aiohttp.ClientSession() as http:

            async def xrpc(url: str, nsid: str, **kw: Any) -> Any:
                method = "POST" if "json" in kw or "data" in kw else "GET"
                async with http.request(method, f"{url}/xrpc/{nsid}", **kw) as r:
                    body = await r.read()
                    assert r.status == 200, body[:300]
                    return body

            import orjson

            made = orjson.loads(
                await xrpc(
                    home.url,
                    "com.atproto.server.createAccount",
                    json={"handle": "bench.skyfed.test", "password": "x" * 12},
                )
            )
            did, auth = made["did"], {"Authorization": f"Bearer {made['accessJwt']}"}
            uploads, blobs = [], []
            for _ in range(args.count):
                data = b"\x89PNG\r\n\x1a\n" + os.urandom(args.size - 8)
                t, body = await _timed(
                    lambda d=data: xrpc(
                        home.url,
                        "com.atproto.repo.uploadBlob",
                        data=d,
                        headers={**auth, "Content-Type": "image/png"},
                    )
                )
                uploads.append(t)
                blobs.append(orjson.loads(body)["blob"])
            uris = []
            for i in range(0, len(blobs), 4):
                record = {
                    "$type": "app.bsky.feed.post",
                    "text": f"pictures {i}",
                    "createdAt": "2026-01-01T00:00:00.000Z",
                    "embed": {
                        "$type": "app.bsky.embed.images",
                        "images": [{"image": b, "alt": "x"} for b in blobs[i : i + 4]],
                    },
                }
                body = await xrpc(
                    home.url,
                    "com.atproto.repo.createRecord",
                    json={"repo": did, "collection": "app.bsky.feed.post", "record": record},
                    headers=auth,
                )
                uris.append(orjson.loads(body)["uri"])
            plain = orjson.loads(
                await xrpc(
                    home.url,
                    "com.atproto.repo.createRecord",
                    json={
                        "repo": did,
                        "collection": "app.bsky.feed.post",
                        "record": {
                            "$type": "app.bsky.feed.post",
                            "text": "no pictures",
                            "createdAt": "2026-01-01T00:00:00.000Z",
                        },
                    },
                    headers=auth,
                )
            )["uri"]
            cids = [b["ref"]["$link"] for b in blobs]
            local = []
            for cid in cids:
                t, _ = await _timed(
                    lambda c=cid: xrpc(
                        home.url, "com.atproto.sync.getBlob", params={"did": did, "cid": c}
                    )
                )
                local.append(t)
            with_images, without = [], []
            for _ in range(5):
                for uri in uris:
                    t, _ = await _timed(
                        lambda u=uri: xrpc(home.url, "app.bsky.feed.getPosts", params={"uris": u})
                    )
                    with_images.append(t)
                    t, _ = await _timed(
                        lambda: xrpc(home.url, "app.bsky.feed.getPosts", params={"uris": plain})
                    )
                    without.append(t)
            async with asyncio.timeout(60):
                while True:
                    got = orjson.loads(
                        await xrpc(other.url, "app.bsky.feed.getPosts", params={"uris": uris[-1]})
                    )
                    if got["posts"]:
                        break
                    await asyncio.sleep(0.05)  # poll: the post arrives by gossip
            fetched, cached = [], []
            for cid in cids:
                t, _ = await _timed(
                    lambda c=cid: xrpc(
                        other.url, "com.atproto.sync.getBlob", params={"did": did, "cid": c}
                    )
                )
                fetched.append(t)
                t, _ = await _timed(
                    lambda c=cid: xrpc(
                        other.url, "com.atproto.sync.getBlob", params={"did": did, "cid": c}
                    )
                )
                cached.append(t)
            print(f"blobs of {args.size} bytes")
            print(_row("uploadBlob", uploads))
            print(_row("getBlob, own node", local))
            print(_row("getPosts, 1 post with 4 images", with_images))
            print(_row("getPosts, 1 text-only post", without))
            print(_row("getBlob on a peer, first (fetched, checked)", fetched))
            print(_row("getBlob on a peer, again (cache)", cached))
            fetcher = other.blob_fetch
            print(f"fetched from the peer: {fetcher.fetched}, refused: {fetcher.refused}")
    finally:
        for node in nodes:
            await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
