"""Hostile input, generated: every XRPC method, every peer message type, every web page
and form, against one live node on 127.0.0.1.

For each generated request or message the node must answer (no hang: every exchange
has a deadline), never with a 5xx, never log an internal error, and when it refuses
(4xx, or a peer link cut off) nothing it stores may have changed (a digest of every
table, ``tests/hostile.py``). The methods come from the node's route table and the
message types from ``protocol/peerwire.py``'s schemas, so a new one is fuzzed without
anyone remembering to add it.

Two sizes (``HYPOTHESIS_PROFILE``): ``fuzz-small`` (the default, a few examples per
method, part of ``make test``) and ``fuzz`` (``make fuzz``: many more, and bounded by
the Makefile's timeout). The node runs on its own event loop in a thread, so a handler
that blocks its loop is caught by the test's deadline, not hidden by it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import http.client
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.client import Client
from node.config import NodeConfig
from node.server import app as node_app
from node.wiring import Node
from protocol import peerwire
from protocol.encoding import encode
from protocol.errors import SkyfedError
from protocol.keys import SigningKey
from protocol.syntax import is_valid_link_uri

from .hostile import snapshot

T = TypeVar("T")

settings.register_profile(
    "fuzz-small",
    max_examples=6,
    deadline=None,
    derandomize=True,  # the same examples every run: make test does not flake
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-small"
FUZZ = settings.get_profile(PROFILE)

#: Seconds one request or peer message may take before it counts as a hang.
EXCHANGE_TIMEOUT = 15.0
PASSWORD = "correct horse battery staple"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
POST = "app.bsky.feed.post"

# -- a node on its own loop -------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Every record at ERROR or above that a node logger emits (an internal error)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Live:
    node: Node
    loop: asyncio.AbstractEventLoop
    did: str
    access: str
    errors: ErrorLog
    seen: collections.Counter[str] = field(default_factory=collections.Counter)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = EXCHANGE_TIMEOUT) -> T:
        """Run ``coro`` on the node's loop; a hang is a TimeoutError here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_errors(self, before: int) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "")
            for r in self.errors.records[before:]
        ]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "node"
    config = NodeConfig(
        data_dir=data_dir,
        port=0,
        admin_token=ADMIN_TOKEN,
        # The fuzzer is one client hammering away: rate limits would turn most of its
        # requests into 429s and hide the handlers behind them.
        auth_rate=1e6,
        auth_burst=10**6,
        admin_rate=1e6,
        admin_burst=10**6,
        points_per_hour=10**9,
        points_per_day=10**9,
        peer_cooloff=0.01,
        share_peers=False,
        # Every fuzzing link comes from 127.0.0.1 under a fresh key: admission must
        # neither cap nor slow them, nor hold a cut-off against the address.
        shared_networks=("127.0.0.0/8",),
        peer_accept_rate=1e6,
        peer_accept_burst=10**6,
        peer_address_accept_rate=1e6,
        peer_address_accept_burst=10**6,
        max_inbound_links=10**6,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-node", daemon=True)
    thread.start()
    errors = ErrorLog()
    for name in ("skyfed", "aiohttp"):
        logging.getLogger(name).addHandler(errors)

    def on_loop(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    node = Node(config)
    on_loop(node.start())

    async def account() -> tuple[str, str]:
        async with Client(node.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            first = await alice.post("the first post")
            await alice.post("a reply", reply_to=first)
            assert alice.session is not None
            return alice.did, alice.session.access_jwt

    did, access = on_loop(account())
    try:
        yield Live(node, loop, did, access, errors)
    finally:
        for name in ("skyfed", "aiohttp"):
            logging.getLogger(name).removeHandler(errors)
        on_loop(node.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- what a hostile client sends ----------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "²",
    "٣",
    "9" * 5000,
    str(2**63),
    str(2**63 - 1),
    str(-(2**63) - 1),
    "1e3",
    "0x10",
    "NaN",
    "true",
    "null",
    "http://[",
    "https://[::1",
    "http://a\u2100b/",
    "at://",
    "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3kzzzzzzzzzzz",
    "did:",
    "did:plc:" + "a" * 24,
    "did:key:z",
    "did:web:127.0.0.1%3A1",
    "alice.skyfed.test",
    "handle.invalid",
    "app.bsky.feed.post",
    "3kzzzzzzzzzzz",
    "self",
    "*",
    "at://*",
    "../../etc/passwd",
    "\x00",
    "\ud800",
    "\udfff x",
    "é",
    "🏳️‍🌈",
    "A" * 9000,
    "%",
    "%ff",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "a\r\nb",
    "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
]

hostile_text = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40))
hostile_ints = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64])
)

QUERY_NAMES = [
    "repo",
    "did",
    "collection",
    "rkey",
    "cursor",
    "limit",
    "uri",
    "uris",
    "actor",
    "actors",
    "handle",
    "depth",
    "parentHeight",
    "since",
    "uriPatterns",
    "sources",
    "reverse",
    "filter",
    "aud",
    "lxm",
    "exp",
    "cid",
    # graph, labeler and report views (node/server/xrpc/app_bsky_graph.py, ...)
    "list",
    "purposes",
    "dids",
    "detailed",
    "labeler",
    "queue",
    "resolved",
]
BODY_KEYS = [
    "repo",
    "collection",
    "rkey",
    "record",
    "value",
    "writes",
    "validate",
    "swapCommit",
    "swapRecord",
    "identifier",
    "password",
    "handle",
    "email",
    "did",
    "labels",
    "reason",
    "scopes",
    "actor",
    "recoveryKey",
    "plcOp",
    "op",
    "ops",
    "token",
    "$type",
    "list",
    "root",
    "preferences",
    "reasonType",
    "subject",
    "id",
    "resolution",
]


def json_values(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        hostile_ints,
        st.floats(allow_nan=True, allow_infinity=True),
        strings,
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(BODY_KEYS), strings), inner, max_size=5),
        ),
        max_leaves=20,
    )


def _post_like(data: st.DataObject, strings: st.SearchStrategy[str]) -> dict[str, Any]:
    """A post record with hostile parts, so validation is reached and pushed on."""
    record: dict[str, Any] = {"$type": POST, "text": data.draw(strings, "text")}
    if data.draw(st.booleans(), "valid date"):
        record["createdAt"] = "2026-11-23T12:00:00Z"
    else:
        record["createdAt"] = data.draw(strings, "createdAt")
    if data.draw(st.booleans(), "facets"):
        record["facets"] = [
            {
                "index": {
                    "byteStart": data.draw(hostile_ints, "start"),
                    "byteEnd": data.draw(hostile_ints, "end"),
                },
                "features": [
                    {
                        "$type": data.draw(
                            st.sampled_from(
                                [
                                    "app.bsky.richtext.facet#link",
                                    "app.bsky.richtext.facet#mention",
                                    "app.bsky.richtext.facet#tag",
                                ]
                            ),
                            "feature",
                        ),
                        "uri": data.draw(strings, "uri"),
                        "did": data.draw(strings, "did"),
                        "tag": data.draw(strings, "tag"),
                    }
                ],
            }
        ]
    if data.draw(st.booleans(), "extra"):
        record.update(data.draw(st.dictionaries(strings, json_values(strings), max_size=3)))
    return record


def _body(data: st.DataObject, live: Live) -> tuple[bytes | None, str]:
    """A request body and its Content-Type."""
    strings = st.one_of(hostile_text, st.sampled_from([live.did, "alice.skyfed.test"]))
    kind = data.draw(
        st.sampled_from(["none", "object", "shaped", "raw", "deep", "surrogate"]), "body kind"
    )
    content_type = data.draw(
        st.sampled_from(
            ["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded"]
        ),
        "content type",
    )
    if kind == "none":
        return None, content_type
    if kind == "raw":
        return data.draw(st.binary(max_size=200), "raw body"), content_type
    if kind == "deep":
        n = data.draw(st.sampled_from([65, 200, 1100, 50_000]), "depth")
        opener = data.draw(st.sampled_from(["[", '{"a":']), "opener")
        return (opener * n).encode(), content_type
    if kind == "object":
        value = data.draw(
            st.dictionaries(st.sampled_from(BODY_KEYS), json_values(strings), max_size=6), "body"
        )
    else:
        # The shape a write or a login takes, with hostile values inside.
        value = {
            "repo": data.draw(st.sampled_from([live.did, "alice.skyfed.test"]) | strings),
            "collection": data.draw(st.just(POST) | strings),
            "record": _post_like(data, strings),
            "identifier": data.draw(st.just("alice.skyfed.test") | strings),
            "password": data.draw(st.just(PASSWORD) | strings),
        }
        extra_keys = data.draw(st.lists(st.sampled_from(BODY_KEYS), max_size=3), "extra keys")
        for key in extra_keys:
            value[key] = data.draw(json_values(strings), key)
        if data.draw(st.booleans(), "writes"):
            value["writes"] = [
                {
                    "$type": data.draw(
                        st.sampled_from(
                            [
                                "com.atproto.repo.applyWrites#create",
                                "com.atproto.repo.applyWrites#delete",
                            ]
                        )
                        | json_values(strings)
                    ),
                    "collection": POST,
                    "value": _post_like(data, strings),
                }
            ]
    if kind == "surrogate":
        # Lone surrogates as raw (invalid) UTF-8 bytes rather than \\u escapes.
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text.encode("utf-8", "surrogatepass"), content_type
    try:
        return json.dumps(value, default=str).encode(), content_type
    except ValueError:
        return b"{}", content_type


def _query(data: st.DataObject, live: Live) -> str:
    strings = st.one_of(hostile_text, st.sampled_from([live.did, "alice.skyfed.test"]))
    names = data.draw(
        st.lists(st.one_of(st.sampled_from(QUERY_NAMES), hostile_text), max_size=5), "params"
    )
    pairs = [(name, data.draw(strings, name)) for name in names]
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in pairs)


def _q(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _headers(data: st.DataObject, live: Live) -> dict[str, bytes]:
    choice = data.draw(
        st.sampled_from(["none", "alice", "admin", "junk", "bytes", "labelers"]), "auth"
    )
    headers: dict[str, bytes] = {}
    if choice == "alice":
        headers["Authorization"] = f"Bearer {live.access}".encode()
    elif choice == "admin":
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}".encode()
    elif choice == "junk":
        headers["Authorization"] = ("Bearer " + data.draw(hostile_text, "token")).encode(
            "utf-8", "surrogatepass"
        )
    elif choice == "bytes":
        raw = data.draw(st.binary(min_size=1, max_size=40), "token bytes")
        headers["Authorization"] = b"Bearer " + raw.replace(b"\r", b"").replace(b"\n", b"")
    elif choice == "labelers":
        value = data.draw(st.sampled_from([live.did, "did:plc:x;redact", "*"]) | hostile_text)
        headers["atproto-accept-labelers"] = value.encode("utf-8", "surrogatepass")
    for name, value in headers.items():
        headers[name] = value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
    return headers


# -- the exchange ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def exchange(
    live: Live, method: str, target: str, body: bytes | None, headers: dict[str, bytes]
) -> Answer:
    """One request over a fresh connection with a deadline (http.client sends header
    bytes as given, which aiohttp's client refuses to)."""
    conn = http.client.HTTPConnection("127.0.0.1", live.node.port, timeout=EXCHANGE_TIMEOUT)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        payload = resp.read()
        return Answer(resp.status, resp.getheader("Content-Type", ""), payload)
    finally:
        conn.close()


def check(live: Live, what: str, send: Callable[[], Answer]) -> Answer:
    """Send, and hold the node to its promises: an answer, no 5xx, no internal error
    logged, and a refusal changes nothing stored."""
    before, logged = snapshot(live.node), len(live.errors.records)
    answer = send()
    live.seen[f"{answer.status // 100}xx" if answer.status != 501 else "501"] += 1
    where = f"{what} -> {answer.status} {answer.body[:300]!r}"
    # 501 MethodNotImplemented is XRPC's answer for a method a server does not have.
    not_served = answer.status == 501 and b"MethodNotImplemented" in answer.body
    assert answer.status < 500 or not_served, where
    assert b"Traceback" not in answer.body, where
    assert not live.new_errors(logged), (where, live.new_errors(logged))
    if answer.status >= 400:
        assert snapshot(live.node) == before, f"refused but changed: {where}"
    return answer


# -- XRPC -------------------------------------------------------------------------------------

# Every method the node serves, from its own route table. The two WebSocket endpoints
# are fuzzed as plain GETs (no Upgrade header): the peer link has its own tests below.
METHODS = sorted(node_app._ROUTES.items())


@pytest.mark.parametrize(("nsid", "route"), METHODS, ids=[nsid for nsid, _ in METHODS])
def test_every_xrpc_method_survives_hostile_requests(
    live: Live, nsid: str, route: tuple[str, Any]
) -> None:
    method = route[0]

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        verb = data.draw(st.sampled_from([method] * 4 + ["GET", "POST", "PUT"]), "verb")
        query = _query(data, live)
        body, content_type = _body(data, live) if verb != "GET" else (None, "")
        headers = _headers(data, live)
        if body is not None:
            headers["Content-Type"] = content_type.encode()
        target = f"/xrpc/{nsid}" + (f"?{query}" if query else "")
        check(
            live,
            f"{verb} {target[:200]} {headers} {body[:200] if body else None!r}",
            lambda: exchange(live, verb, target, body, headers),
        )

    run()


def test_unknown_methods_and_paths_are_4xx(live: Live) -> None:
    @FUZZ
    @given(path=hostile_text, verb=st.sampled_from(["GET", "POST", "DELETE", "OPTIONS"]))
    def run(path: str, verb: str) -> None:
        for target in (f"/xrpc/{_q(path)}", f"/{_q(path)}"):
            check(
                live,
                f"{verb} {target[:200]}",
                functools.partial(exchange, live, verb, target, None, {}),
            )

    run()


# -- the web pages and the settings form ------------------------------------------------------


def test_web_pages_and_form_survive_hostile_requests(live: Live) -> None:
    base = urlsplit(live.node.url).netloc

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        strings = st.one_of(hostile_text, st.sampled_from([live.did, "alice.skyfed.test"]))
        page = data.draw(st.sampled_from(["/", "profile", "post", "settings", "save"]), "page")
        headers: dict[str, bytes] = {}
        if data.draw(st.booleans(), "cookie"):
            # The settings cookie is base64 of JSON: junk, and JSON that is hostile.
            raw = data.draw(
                st.one_of(
                    st.binary(max_size=60),
                    json_values(hostile_text).map(lambda v: json.dumps(v).encode()),
                    st.integers(1, 3000).map(lambda n: b"[" * n),
                ),
                "cookie",
            )
            cookie = base64.urlsafe_b64encode(raw).rstrip(b"=")
            headers["Cookie"] = b"skyfed_moderation=" + cookie
        query = _query(data, live)
        body: bytes | None = None
        verb = "GET"
        if page == "/":
            target = "/"
        elif page == "profile":
            target = "/profile/" + _q(data.draw(strings, "actor"))
        elif page == "post":
            target = f"/post/{_q(data.draw(strings, 'did'))}/{_q(data.draw(strings, 'rkey'))}"
        else:
            target = "/settings/moderation"
        if page == "save":
            verb = "POST"
            origin = data.draw(st.sampled_from([f"http://{base}", "http://[", ""]) | hostile_text)
            headers["Origin"] = origin.encode("utf-8", "surrogatepass").replace(b"\r", b"")
            headers["Origin"] = headers["Origin"].replace(b"\n", b"").replace(b"\x00", b"")
            headers["Content-Type"] = data.draw(
                st.sampled_from(
                    [
                        b"application/x-www-form-urlencoded",
                        b"multipart/form-data; boundary=x",
                        b"multipart/form-data",
                        b"text/plain",
                    ]
                ),
                "form type",
            )
            fields = data.draw(
                st.dictionaries(
                    st.sampled_from(["labelers", "labels"]) | hostile_text,
                    st.one_of(
                        strings,
                        st.lists(strings, max_size=4).map("\n".join),
                        st.just(f"{live.did};redact\n"),
                        st.just("spam=show\n!hide=show\nporn=hide"),
                    ),
                    max_size=3,
                ),
                "form",
            )
            if data.draw(st.booleans(), "raw form"):
                body = data.draw(st.binary(max_size=300), "raw")
            else:
                body = "&".join(f"{_q(k)}={_q(v)}" for k, v in fields.items()).encode()
        elif query:
            target += "?" + query
        answer = check(
            live,
            f"{verb} {target[:200]} {headers} {body[:200] if body else None!r}",
            lambda: exchange(live, verb, target, body, headers),
        )
        # Web routes answer with pages. Not: a path that matches no route (the app's
        # JSON 404), the form's "saved" (303), and what aiohttp's HTTP parser refuses
        # before any route sees it (a request line over 8,190 bytes, a control
        # character in a header: a plain-text 400).
        parser_refused = answer.status == 400 and answer.content_type.startswith("text/plain")
        if (
            answer.status != 303
            and (answer.status != 404 or page in ("/", "settings", "save"))
            and not parser_refused
        ):
            assert answer.content_type.startswith("text/html"), (target[:200], answer)

    run()


# -- peer messages over the real WebSocket link ---------------------------------------------


class FuzzPeer:
    """A peer that completed the handshake with its own key and then says anything."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http = http
        self.ws = ws
        self.rid = 1_000_000

    @classmethod
    async def connect(cls, node: Node) -> FuzzPeer:
        http = aiohttp.ClientSession()
        try:
            key = SigningKey.from_seed(secrets.token_bytes(32))
            ws = await http.ws_connect(node.url + "/xrpc/skyfed.peer.connect")
            challenge = secrets.token_bytes(32)
            await ws.send_bytes(
                peerwire.encode_message(
                    "hello",
                    v=1,
                    node=key.did_key(),
                    url=None,
                    challenge=challenge,
                    caps=[],
                    share=False,
                )
            )
            hello = peerwire.decode_message((await ws.receive()).data)
            payload = peerwire.auth_payload(hello["challenge"], key.did_key(), hello["node"])
            await ws.send_bytes(peerwire.encode_message("auth", sig=key.sign(payload)))
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            return cls(http, ws)
        except BaseException:
            await http.close()
            raise

    async def send_and_probe(self, data: bytes, did: str) -> bool:
        """Send ``data``, then a ``getident`` and wait for its answer (messages are
        handled in order, so the answer means ``data`` was). False if the node closed
        the link instead (its answer to a bad message)."""
        if self.ws.closed:
            return False
        await self.ws.send_bytes(data)
        self.rid += 1
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionError):
            await self.ws.send_bytes(peerwire.encode_message("getident", rid=self.rid, did=did))
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                return False
            try:
                answer = peerwire.decode_message(msg.data)
            except SkyfedError:
                continue
            if answer.get("rid") == self.rid:
                return True

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


def _peer_value(data: st.DataObject, kinds: tuple[type, ...], name: str, did: str) -> Any:
    kind = data.draw(st.sampled_from(kinds), f"{name} type")
    if kind is str:
        return data.draw(st.sampled_from([did, "did:plc:" + "a" * 24]) | hostile_text, name)
    if kind is bytes:
        return data.draw(st.binary(max_size=120), name)
    if kind is int:
        return data.draw(st.integers(-(2**63), 2**64 - 1), name)
    if kind is bool:
        return data.draw(st.booleans(), name)
    if kind is type(None):
        return None
    # Lists: of what the message's lists hold (ids, urls, ops, labels: bytes or
    # strings; heads items: maps), and sometimes of the wrong thing.
    item = data.draw(st.sampled_from(["bytes", "str", "heads", "junk"]), f"{name} items")
    if item == "bytes":
        return data.draw(st.lists(st.binary(max_size=80), max_size=6), name)
    if item == "str":
        return data.draw(st.lists(hostile_text, max_size=6), name)
    if item == "heads":
        entry = st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["repo", "identity", "labels", "x"]),
                "did": st.sampled_from([did]) | hostile_text,
                "src": st.sampled_from([did]) | hostile_text,
                "head": st.binary(max_size=40),
                "rev": hostile_text,
                "digest": st.binary(min_size=32, max_size=32),
            }
        )
        return data.draw(st.lists(entry, max_size=4), name)
    return data.draw(st.lists(st.one_of(st.none(), st.integers(), st.booleans()), max_size=3))


def _peer_message(data: st.DataObject, t: str, did: str) -> bytes:
    schema = peerwire._SCHEMAS[t]
    fields = {name: _peer_value(data, kinds, name, did) for name, kinds in schema.items()}
    if t == "push":
        fields["kind"] = data.draw(st.sampled_from(["commit", "identity", "label"]) | hostile_text)
    mutation = data.draw(st.sampled_from(["as is"] * 6 + ["drop field", "extra field", "junk"]))
    if mutation == "junk":
        return data.draw(st.binary(max_size=200), "junk")
    message: dict[str, Any] = {"t": t, **fields}
    if mutation == "drop field" and fields:
        message.pop(data.draw(st.sampled_from(sorted(fields)), "dropped"))
    elif mutation == "extra field":
        message["zz"] = 1
    try:
        return encode(message)
    except (SkyfedError, UnicodeEncodeError, OverflowError, ValueError, TypeError):
        # Our encoder refuses what a hostile peer may still send: lone surrogates as
        # invalid UTF-8, integers out of range, non-canonical maps.
        try:
            return bytes(msgpack.packb(message, unicode_errors="surrogatepass"))
        except (OverflowError, ValueError, TypeError):
            return b"\x81\xa1t\xa0"  # {"t": ""}


PEER_TYPES = sorted(peerwire._SCHEMAS)


@pytest.mark.parametrize("t", PEER_TYPES)
def test_every_peer_message_type_survives_hostile_fields(live: Live, t: str) -> None:
    initial = snapshot(live.node)
    peer: list[FuzzPeer] = []

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        message = _peer_message(data, t, live.did)
        if not peer:
            peer.append(live.run(FuzzPeer.connect(live.node)))
        logged = len(live.errors.records)
        before = snapshot(live.node)
        kept = live.run(peer[0].send_and_probe(message, live.did))
        live.seen[f"peer {'kept' if kept else 'cut off'}"] += 1
        if not kept:
            live.run(peer.pop().close())
        assert not live.new_errors(logged), (t, message[:200], live.new_errors(logged))
        assert snapshot(live.node) == before, (t, message[:200])
        # The node still answers its clients.
        health = exchange(live, "GET", "/xrpc/_health", None, {})
        assert health.status == 200

    try:
        run()
    finally:
        while peer:
            live.run(peer.pop().close())
    assert snapshot(live.node) == initial


def test_the_handshake_survives_hostile_first_messages(live: Live) -> None:
    """Before ``auth``, anything but a good ``hello`` ends the link and nothing else."""

    async def first(message: bytes) -> None:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(live.node.url + "/xrpc/skyfed.peer.connect")
            await ws.send_bytes(message)
            while (await ws.receive()).type == aiohttp.WSMsgType.BINARY:
                pass  # the node's hello; then it closes (bad message, or no auth in time)
            await ws.close()

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(PEER_TYPES), "type")
        message = _peer_message(data, t, live.did)
        before, logged = snapshot(live.node), len(live.errors.records)
        with contextlib.suppress(SkyfedError):
            if peerwire.decode_message(message)["t"] == "hello":
                return  # a good hello waits (10 s) for its auth: the peer tests do that
        live.run(first(message))
        assert not live.new_errors(logged), (message[:200], live.new_errors(logged))
        assert snapshot(live.node) == before

    run()


# -- the decoders alone -----------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=60) | st.sampled_from(HOSTILE_STRINGS) | st.from_regex(r"[a-z]+://.*"))
def test_a_link_uri_that_validates_is_one_the_web_renderer_can_parse(uri: str) -> None:
    if is_valid_link_uri(uri):
        urlsplit(uri)  # raises ValueError for what the renderer once choked on


def test_report(live: Live) -> None:
    """Not a check: what the run above saw, for ``make fuzz``'s record (pytest -s)."""
    print(f"\nfuzz profile {PROFILE}: {dict(sorted(live.seen.items()))}")


# -- the renderers, given whatever a node (or a peer, through it) may answer --------------


def _view_values() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        [
            "feed",
            "post",
            "reply",
            "parent",
            "reason",
            "by",
            "author",
            "record",
            "text",
            "facets",
            "index",
            "features",
            "uri",
            "embed",
            "external",
            "thread",
            "replies",
            "viewer",
            "labels",
            "handle",
            "did",
            "displayName",
            "createdAt",
            "indexedAt",
            "replyCount",
            "$type",
            "byteStart",
            "byteEnd",
            "notFound",
            "blocked",
            "value",
            "cursor",
        ]
    )
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from(
            [
                "app.bsky.richtext.facet#link",
                "app.bsky.feed.defs#threadViewPost",
                "app.bsky.embed.external",
                "app.bsky.embed.record",
                "app.bsky.feed.defs#reasonRepost",
            ]
        ),
        hostile_text,
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=6)
        ),
        max_leaves=30,
    )


@FUZZ
@given(view=st.dictionaries(st.sampled_from(["feed", "thread", "post", "cursor"]), _view_values()))
def test_the_renderers_survive_any_view(view: dict[str, Any]) -> None:
    import io

    from node.client import render
    from node.server import web

    console = render.make_console(io.StringIO())
    renderer = render.Renderer(console)
    renderer.feed(view)
    renderer.thread(view)
    renderer.profile(view)
    renderer.post(view)
    # The web renderer shows a post it fails on as "could not be shown" and logs it:
    # that is its last resort, and here a failure.
    errors = ErrorLog()
    logging.getLogger("skyfed.web").addHandler(errors)
    try:
        web._feed_html(web._list(view, "feed"), 0.0, "empty")
        web.render_post(web._map(view, "post"), 0.0, main=True)
        web._thread_replies(web._map(view, "thread"), 0.0)
    finally:
        logging.getLogger("skyfed.web").removeHandler(errors)
    assert not errors.records, [r.exc_info for r in errors.records]
