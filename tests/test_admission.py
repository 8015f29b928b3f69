"""Outbound connections and admission (issue 13, findings 9-11), against real nodes on
127.0.0.1: poisoned peer URLs, the dial policy, link caps and accept rates, cut-offs
that stick to the address, the new-identity budget of a link, and the per-account
login limit that does not lock the owner out."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.client import Client
from node.config import NodeConfig
from node.net.netpolicy import (
    AddressError,
    DialPolicy,
    DialRefused,
    PeerAddress,
    address_class,
)
from node.wiring import Node
from protocol.identity import IdentityOp, did_for_genesis
from protocol.keys import SigningKey
from protocol.peerwire import auth_payload, decode_message, encode_message
from tests.test_federation import PASSWORD, FakePeer, all_agree, until

# -- the peer address and the dial policy, without sockets -------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("http://127.0.0.1:2583", "http://127.0.0.1:2583"),
        ("http://127.0.0.1:2583/", "http://127.0.0.1:2583"),
        ("HTTPS://Node.Example.COM:443", "https://node.example.com"),
        ("http://node.example.com.:80/", "http://node.example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:ffff:7f00:1]:1", "http://[::ffff:7f00:1]:1"),
    ],
)
def test_a_peer_address_is_normalized(text: str, normal: str) -> None:
    assert PeerAddress.from_str(text).to_str() == normal


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:27199/internal/admin?token=abc#",
        "http://127.0.0.1:27199?",
        "http://127.0.0.1:27199#",
        "http://127.0.0.1:27199/x",
        "http://user:pw@node.example.com",
        "http://node.example.com@127.0.0.1",
        "ftp://node.example.com",
        "file:///etc/passwd",
        "ws://node.example.com",
        "http://node.example.com:0",
        "http://node.example.com:65536",
        "http://node.example.com:99999",
        "http://" + "a" * 64 + ".example.com",
        "http://" + ".".join(["abcdefghi"] * 26),  # 259 characters
        "http://nöde.example.com",
        "http://node_1.example.com",
        "http://2130706433",  # 127.0.0.1 as a number
        "http://127.1",
        "http://0x7f.0.0.1",
        "http://[::1",
        "http://[zz::1]",
        "http:// node.example.com",
        "http://node.example.com\\@evil",
        "http://node.example.com\n",
        "",
        "x" * 400,
    ],
)
def test_anything_but_scheme_host_and_port_is_refused(text: str) -> None:
    with pytest.raises(AddressError):
        PeerAddress.from_str(text)


@pytest.mark.parametrize(
    ("ip", "cls"),
    [
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 inside
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64
        ("2002:7f00:1::", "loopback"),  # 6to4
        ("169.254.169.254", "forbidden"),  # cloud metadata
        ("fe80::1", "forbidden"),
        ("224.0.0.1", "forbidden"),
        ("ff02::1", "forbidden"),
        ("0.0.0.0", "forbidden"),
        ("::", "forbidden"),
        ("255.255.255.255", "forbidden"),
        ("192.0.2.1", "forbidden"),
        ("240.0.0.1", "forbidden"),
        ("2001:0::1", "forbidden"),  # Teredo
    ],
)
def test_address_classes(ip: str, cls: str) -> None:
    assert address_class(ipaddress.ip_address(ip)) == cls


def test_each_level_widens_the_one_before_and_link_local_is_never_dialled() -> None:
    public, private, loopback = DialPolicy(), DialPolicy("private"), DialPolicy("loopback")
    assert public.permits("8.8.8.8", 443)
    assert not public.permits("10.0.0.1", 2583)
    assert not public.permits("127.0.0.1", 2583)
    assert not public.permits("::ffff:127.0.0.1", 80)
    assert private.permits("10.0.0.1", 2583)
    assert not private.permits("127.0.0.1", 2583)
    assert loopback.permits("127.0.0.1", 2583)
    assert loopback.permits("10.0.0.1", 2583)
    for policy in (public, private, loopback):
        assert not policy.permits("169.254.169.254", 80)
        assert not policy.permits("0.0.0.0", 2583)
        # A low port that is not HTTP's: no aiming the node at SMTP or SSH.
        assert not policy.permits("8.8.8.8", 25)
        assert not policy.permits("8.8.8.8", 22)
    allowed = DialPolicy.from_settings("public", ["10.9.0.0/16"])
    assert allowed.permits("10.9.1.1", 2583)
    assert not allowed.permits("10.8.1.1", 2583)
    assert not public.permits_url("http://127.0.0.1:2583/internal")
    assert public.permits_url("https://node.example.com")  # a name: checked once resolved
    with pytest.raises(ValueError, match="dial_policy"):
        DialPolicy.from_settings("everything")


# -- helpers ------------------------------------------------------------------------------


class Listener:
    """An HTTP server on 127.0.0.1 that records every request it gets (never a node)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.hit = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        self.hit.set()
        return web.Response(status=404)

    async def __aenter__(self) -> Listener:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def started(tmp_path: Path, name: str = "n", **cfg: Any) -> Node:
    node = Node(NodeConfig(data_dir=tmp_path / name, port=0, **cfg))
    await node.start()
    return node


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, name: str = "n", **cfg: Any
) -> AsyncIterator[tuple[Node, aiohttp.ClientSession]]:
    """A node, and a client session for fake peers that closes before the node stops."""
    node = await started(tmp_path, name, **cfg)
    try:
        async with aiohttp.ClientSession() as http:
            yield node, http
    finally:
        await node.stop()


async def receive(peer: FakePeer, t: str) -> dict[str, Any]:
    """The next message of type ``t`` the node sends the fake peer (others skipped)."""
    async with asyncio.timeout(10):
        while True:
            msg = await peer.ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            decoded = decode_message(msg.data)
            if decoded["t"] == t:
                return decoded


async def processed(peer: FakePeer) -> None:
    """Wait until the node has handled everything the peer sent before: requests on a
    link are answered in order, so the answer to one more means the rest are done."""
    rid = secrets.randbelow(1 << 30) + 1
    await peer.ws.send_bytes(encode_message("getident", rid=rid, did="did:skyfed:barrier"))
    async with asyncio.timeout(20):
        while True:
            reply = await receive(peer, "ident")
            if reply["rid"] == rid:
                return


# -- finding 9: poisoned peer URLs ----------------------------------------------------------


async def test_a_poisoned_peer_url_is_neither_dialled_nor_passed_on(
    tmp_path: Path,
) -> None:
    # Loopback may be dialled here: only the shape of the address stops the poison.
    async with running(tmp_path, dial_policy="loopback") as (node, http), Listener() as target:
        poisoned = f"http://127.0.0.1:{target.port}/internal/admin?token=abc#"
        clean = f"http://127.0.0.1:{target.port}"
        hostile = await FakePeer.connect(http, node)
        await receive(hostile, "peers")
        await hostile.ws.send_bytes(encode_message("peers", urls=[poisoned, clean + "/"]))
        await processed(hostile)
        await asyncio.wait_for(target.hit.wait(), 10)  # the clean one is dialled
        # It never completed a handshake, so nobody is told of it (nor of the poison).
        newcomer = await FakePeer.connect(http, node)
        assert (await receive(newcomer, "peers"))["urls"] == []

        async def dial_over() -> bool:
            return not node.federation._dialers

        await until(dial_over)
        # Only scheme, host and port from the network: never its path or query.
        assert target.hits == ["/xrpc/skyfed.peer.connect"]
        assert list(node.federation.learned) == [clean]  # normalized, poison refused
        assert node.federation.addresses_refused == 1
        # The failure makes it wait before it is tried again.
        assert node.federation.learned[clean].failures == 1


async def test_a_poisoned_url_in_a_hello_is_not_learned(tmp_path: Path) -> None:
    async with running(tmp_path, dial_policy="loopback") as (node, http):
        key = SigningKey.from_seed(secrets.token_bytes(32))
        ws = await http.ws_connect(node.url + "/xrpc/skyfed.peer.connect")
        hello = {"v": 1, "node": key.did_key(), "challenge": secrets.token_bytes(32)}
        poisoned = "http://127.0.0.1:27199/internal/admin?token=abc#"
        await ws.send_bytes(encode_message("hello", url=poisoned, caps=[], share=True, **hello))
        theirs = decode_message((await ws.receive()).data)
        sig = key.sign(auth_payload(theirs["challenge"], key.did_key(), theirs["node"]))
        await ws.send_bytes(encode_message("auth", sig=sig))
        peer = FakePeer(ws, key)
        await receive(peer, "peers")  # the handshake is over: the hello was judged
        assert node.federation.links[key.did_key()].peer_url is None
        assert not node.federation.learned
        assert node.federation.addresses_refused == 1
        await ws.close()


async def test_a_public_node_dials_no_loopback_even_by_name(
    tmp_path: Path,
) -> None:
    # The default dial policy: public addresses only.
    async with running(tmp_path) as (node, http), Listener() as target:
        hostile = await FakePeer.connect(http, node)
        await receive(hostile, "peers")
        literal = [
            f"http://127.0.0.1:{target.port}",
            f"http://[::ffff:127.0.0.1]:{target.port}",
            f"http://[::1]:{target.port}",
            "http://169.254.169.254",
            "http://10.0.0.1:2583",
        ]
        by_name = f"http://localhost:{target.port}"  # resolves to loopback
        await hostile.ws.send_bytes(encode_message("peers", urls=[*literal, by_name]))
        await processed(hostile)
        newcomer = await FakePeer.connect(http, node)
        assert (await receive(newcomer, "peers"))["urls"] == []  # none passed on
        fed = node.federation
        assert list(fed.learned) == [by_name]  # a name is judged once resolved
        assert fed.addresses_refused == len(literal)

        async def tried() -> bool:
            return fed.learned_dials == 1 and not fed._dialers

        await until(tried)
        assert fed.learned[by_name].failures == 1
        assert target.hits == []  # refused after resolution, before any connect
        assert not any(link.outbound for link in fed.links.values())
        async with Client(node.url) as client:  # what an operator sees
            seen = (await client.call("skyfed.node.listPeers", auth=None))["admission"]
        assert seen["addressesRefused"] == len(literal)
        assert seen["learnedDials"] == 1


async def test_the_policy_session_checks_the_address_it_connects_to() -> None:
    async with Listener() as target:
        for url in (f"http://localhost:{target.port}/x", f"http://127.0.0.1:{target.port}/x"):
            async with DialPolicy().session() as guarded:
                with pytest.raises(aiohttp.ClientConnectorError) as err:
                    await guarded.get(url)
                assert isinstance(err.value.os_error, DialRefused)
        async with (
            DialPolicy("loopback").session() as guarded,
            guarded.get(f"http://localhost:{target.port}/y") as resp,
        ):
            assert resp.status == 404
        assert target.hits == ["/y"]


async def test_learned_dials_are_rate_limited_and_the_table_is_bounded(
    tmp_path: Path,
) -> None:
    async with running(
        tmp_path,
        dial_policy="loopback",
        max_peers=1000,
        peer_dial_rate=0.0001,
        peer_dial_burst=3,
        max_learned_peers=40,
    ) as (node, http):
        hostile = await FakePeer.connect(http, node)
        await receive(hostile, "peers")
        # 96 addresses on loopback where nothing listens.
        urls = [f"http://127.0.0.{i}:{1024 + i}" for i in range(2, 98)]
        for i in range(0, len(urls), 32):
            await hostile.ws.send_bytes(encode_message("peers", urls=urls[i : i + 32]))
        await processed(hostile)
        fed = node.federation

        async def settled() -> bool:
            return not fed._dialers

        await until(settled)
        assert fed.learned_dials == 3  # the burst, then the node-wide rate
        assert len(fed.learned) == 40  # the oldest forgotten
        failed = [u for u, e in fed.learned.items() if e.failures]
        assert len(failed) <= 3
        # Told again, nothing is dialled sooner.
        await hostile.ws.send_bytes(encode_message("peers", urls=urls[-32:]))
        await processed(hostile)
        assert fed.learned_dials == 3
        assert not fed._dialers


async def test_only_addresses_the_node_dialled_are_passed_on(
    tmp_path: Path,
) -> None:
    async with (
        running(tmp_path, "a", dial_policy="loopback") as (a, http),
        running(tmp_path, "b", dial_policy="loopback") as (b, _),
    ):
        b.federation.dial(a.url)  # the operator's choice

        async def linked() -> bool:
            return a.node_did in b.federation.links and b.node_did in a.federation.links

        await until(linked)
        # b dialled a and shook hands: it may tell others of a.
        told_by_b = await FakePeer.connect(http, b)
        assert (await receive(told_by_b, "peers"))["urls"] == [a.url]

        # a only heard b's claim in its hello; it tells of b once it has dialled b back.
        async def dialled_back() -> bool:
            return b.url in a.federation.verified

        await until(dialled_back)
        told_by_a = await FakePeer.connect(http, a)
        assert (await receive(told_by_a, "peers"))["urls"] == [b.url]
        await until(linked)  # still one link between them
        await told_by_b.ws.close()  # before b stops (a's session outlives b)


# -- finding 10: admission -----------------------------------------------------------------


async def test_a_cut_off_peer_cannot_come_back_under_a_fresh_key(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (node, http):
        cheat = await FakePeer.connect(http, node)
        await cheat.ws.send_bytes(b"\xc1")  # not msgpack: cut off at once

        async def cut_off() -> bool:
            return node.federation.is_blocked(cheat.key.did_key())

        await until(cut_off)
        with pytest.raises(ConnectionRefusedError):
            await FakePeer.connect(http, node)  # a new key, the same address
        assert node.federation.address_blocked("127.0.0.1")
        # IPv6: the whole /64 is one address.
        node.federation.block_address("2001:db8:1:2::1", 60)
        assert node.federation.address_blocked("2001:db8:1:2:ffff::9")
        assert not node.federation.address_blocked("2001:db8:1:3::1")


async def test_behind_a_shared_address_a_cut_off_sticks_to_the_key_only(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, shared_networks=("127.0.0.0/8",)) as (node, http):
        cheat = await FakePeer.connect(http, node)
        await cheat.ws.send_bytes(b"\xc1")

        async def cut_off() -> bool:
            return node.federation.is_blocked(cheat.key.did_key())

        await until(cut_off)
        with pytest.raises(ConnectionRefusedError):
            await FakePeer.connect(http, node, cheat.key)
        honest = await FakePeer.connect(http, node)  # another node behind the same NAT
        await receive(honest, "peers")


async def test_links_per_address_and_inbound_links_in_all_are_capped(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "per", max_links_per_address=3, peer_address_accept_burst=100) as (
        node,
        http,
    ):
        peers = [await FakePeer.connect(http, node) for _ in range(3)]
        with pytest.raises(ConnectionRefusedError):
            await FakePeer.connect(http, node)
        await peers[0].ws.close()

        async def freed() -> bool:
            return node.federation.inbound == 2

        await until(freed)
        peers[0] = await FakePeer.connect(http, node)

    async with running(
        tmp_path, "total", max_inbound_links=5, shared_networks=("127.0.0.0/8",)
    ) as (node, http):
        peers = [await FakePeer.connect(http, node) for _ in range(5)]
        with pytest.raises(ConnectionRefusedError):
            await FakePeer.connect(http, node)
        assert node.federation.links_refused == 1


async def _open_many(http: aiohttp.ClientSession, node: Node, n: int) -> tuple[int, int]:
    """Open ``n`` peer WebSockets at once (no handshake): (accepted, refused)."""

    statuses: list[int] = []

    async def one() -> aiohttp.ClientWebSocketResponse | None:
        try:
            return await http.ws_connect(node.url + "/xrpc/skyfed.peer.connect")
        except aiohttp.WSServerHandshakeError as e:
            statuses.append(e.status)
            return None

    sockets = await asyncio.gather(*(one() for _ in range(n)))
    assert set(statuses) <= {429}
    accepted = [ws for ws in sockets if ws is not None]
    for ws in accepted:
        await ws.close()
    return len(accepted), n - len(accepted)


async def test_inbound_links_are_accepted_at_a_limited_rate(
    tmp_path: Path,
) -> None:
    # One address: its own rate (4 at once by default).
    async with running(tmp_path, "one") as (node, http):
        accepted, refused = await _open_many(http, node, 60)
        assert accepted == 4
        assert refused == 56
    # Many (here: a shared address): the node-wide rate, 20 at once by default.
    async with running(tmp_path, "all", shared_networks=("127.0.0.0/8",)) as (node, http):
        accepted, refused = await _open_many(http, node, 60)
        assert 20 <= accepted <= 25
        assert refused == 60 - accepted


def _identity_push(i: int) -> bytes:
    key = SigningKey.from_seed(secrets.token_bytes(32))
    op = IdentityOp.create(
        [key.did_key()],
        key.did_key(),
        f"flood{i}.example.com",
        "https://pds.example.com",
        None,
        key,
    )
    did = did_for_genesis(op)
    from protocol.encoding import encode

    data = encode({"did": did, "ops": [op.to_bytes()]})
    return encode_message("push", id=op.cid.to_bytes(), kind="identity", data=data, round=0)


async def _database_bytes(node: Node) -> int:
    """What the database holds (pages in use), whatever the WAL file's size."""

    def size(conn: Any) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])

    return await node.storage.read(size)


async def _identity_count(node: Node) -> int:
    def count(conn: Any) -> int:
        return int(conn.execute("SELECT count(*) FROM identities").fetchone()[0])

    return await node.storage.read(count)


async def test_a_link_brings_only_so_many_new_identities(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, peer_new_identities=100) as (node, http):
        flood = [_identity_push(i) for i in range(3000)]
        before = await _database_bytes(node)
        peer = await FakePeer.connect(http, node)
        for message in flood:
            await peer.ws.send_bytes(message)
        await processed(peer)
        assert await _identity_count(node) <= 101  # the budget (and a token of refill)
        assert node.federation.identities_refused >= 2899
        grown = await _database_bytes(node) - before
        assert grown < 512 * 1024, grown
        # Nor were they passed on: a neighbour has none of them.
        assert peer.key.did_key() in node.federation.links  # no penalty for the refusals


async def test_the_operators_own_peers_are_not_held_to_the_identity_budget(
    tmp_path: Path,
) -> None:
    a = await started(tmp_path, "a", reconcile_interval=0.5)
    try:
        async with Client(a.url) as c:
            for i in range(3):
                await c.create_account(f"user{i}.skyfed.test", PASSWORD)
        b = await started(
            tmp_path, "b", peers=(a.url,), peer_new_identities=1, reconcile_interval=0.5
        )
        try:
            await until(lambda: all_agree([a, b], 3))
            assert await _identity_count(b) == 3
        finally:
            await b.stop()
    finally:
        await a.stop()


# -- finding 11: password guessing per account ------------------------------------------


async def _login_from(node: Node, address: str, identifier: str, password: str) -> int:
    """createSession from a given loopback address; the HTTP status."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            node.url + "/xrpc/com.atproto.server.createSession",
            json={"identifier": identifier, "password": password},
        ) as resp,
    ):
        return resp.status


async def test_guessing_from_many_addresses_is_stopped_and_the_owner_still_logs_in(
    tmp_path: Path,
) -> None:
    settings = {"login_failures_per_account": 5, "auth_rate": 1000.0, "auth_burst": 1000}
    handle = "alice.skyfed.test"
    async with running(tmp_path, **settings) as (node, _):
        async with Client(node.url) as alice:
            await alice.create_account(handle, PASSWORD)
        assert await _login_from(node, "127.0.0.1", handle, PASSWORD) == 200  # the owner
        # A guesser with 30 addresses, one guess from each.
        statuses = [
            await _login_from(node, f"127.0.0.{i}", handle, f"guess {i}") for i in range(2, 32)
        ]
        assert statuses[:5] == [401] * 5
        assert set(statuses[5:]) == {429}
        # Even the right password from a new address does not get through now...
        assert await _login_from(node, "127.0.0.99", handle, PASSWORD) == 429
        # ...but the owner, from where they logged in before, does.
        assert await _login_from(node, "127.0.0.1", handle, PASSWORD) == 200
        # Other accounts are not affected.
        async with Client(node.url) as bob:
            await bob.create_account("bob.skyfed.test", PASSWORD)
        assert await _login_from(node, "127.0.0.50", "bob.skyfed.test", PASSWORD) == 200
    # The owner's addresses are remembered across a restart.
    async with running(tmp_path, **settings) as (node, _):
        statuses = [
            await _login_from(node, f"127.0.1.{i}", handle, f"guess {i}") for i in range(1, 10)
        ]
        assert statuses[-1] == 429
        assert await _login_from(node, "127.0.0.1", handle, PASSWORD) == 200


def test_every_admission_setting_is_in_the_start_help_and_the_cli_sets_the_policy() -> None:
    from node.cli import _config, build_parser
    from node.config import describe_settings

    help_text = describe_settings()

    settings = [
        "dial_policy",
        "dial_allow",
        "max_learned_peers",
        "peer_dial_rate",
        "peer_dial_burst",
        "max_inbound_links",
        "max_links_per_address",
        "peer_accept_rate",
        "peer_accept_burst",
        "peer_address_accept_rate",
        "peer_address_accept_burst",
        "shared_networks",
        "peer_cooloff",
        "peer_new_identities",
        "peer_new_identities_window",
        "login_failures_per_account",
        "login_failure_refill",
    ]
    for name in settings:
        assert name in help_text, name
        assert hasattr(NodeConfig(), name), name
    args = build_parser().parse_args(
        ["node", "start", "--dial-policy", "loopback", "--dial-allow", "10.1.0.0/16"]
    )
    cfg = _config(args)
    assert (cfg.dial_policy, cfg.dial_allow) == ("loopback", ("10.1.0.0/16",))
    assert DialPolicy.from_config(cfg).permits("10.1.2.3", 2583)
    assert NodeConfig().dial_policy == "public"  # the safe default
