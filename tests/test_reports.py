"""createReport into the node admin's queue or a hosted labeler's; labeler services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.client import Client, XrpcError
from node.config import NodeConfig
from node.wiring import Node
from tests.test_cli import new_account, ok, skyfed

from .graphkit import now

PASSWORD = "correct horse battery staple"
TOKEN = "reports-admin-token"
SPAM = "com.atproto.moderation.defs#reasonSpam"
LABELER_RECORD = {
    "$type": "app.bsky.labeler.service",
    "policies": {
        "labelValues": ["spam", "rude"],
        "labelValueDefinitions": [
            {
                "identifier": "rude",
                "severity": "inform",
                "blurs": "none",
                "defaultSetting": "warn",
                "locales": [{"lang": "en", "name": "Rude", "description": "Not nice"}],
            }
        ],
    },
    "reasonTypes": [SPAM],
    "subjectTypes": ["account", "record"],
    "createdAt": "2026-12-01T00:00:00.000Z",
}


@pytest.fixture
async def admin_node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        data_dir=tmp_path / "node",
        port=0,
        admin_token=TOKEN,
        report_burst=4,
        report_rate=0.001,
        max_open_reports_per_account=6,
    )
    async with Node(config) as n:
        yield n


@pytest.fixture
async def people(admin_node: Node) -> AsyncIterator[list[Client]]:
    clients = [Client(admin_node.url) for _ in range(3)]
    for c, name in zip(clients, ("alice", "bob", "mod"), strict=True):
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def _admin_queue(c: Client, **params: Any) -> list[dict[str, Any]]:
    page = await c.reports(admin_token=TOKEN, **params)
    reports: list[dict[str, Any]] = page["reports"]
    return reports


async def test_report_reaches_the_admin_queue_and_is_resolved(people: list[Client]) -> None:
    alice, bob, _ = people
    post = await bob.post("spammy")
    out = await alice.report(post.uri, SPAM, reason="selling followers")
    assert out["reasonType"] == SPAM
    assert out["reportedBy"] == alice.did
    assert out["subject"] == {"$type": "com.atproto.repo.strongRef", **post.to_json()}
    assert out["reason"] == "selling followers"
    by_account = await alice.report(bob.did, "com.atproto.moderation.defs#reasonRude")
    assert by_account["subject"] == {"$type": "com.atproto.admin.defs#repoRef", "did": bob.did}

    from atproto_client import models

    models.ComAtprotoModerationCreateReport.Response.model_validate(out)
    queue = await _admin_queue(alice)
    assert [r["id"] for r in queue] == [by_account["id"], out["id"]]
    assert all(r["labeler"] is None and r["resolvedAt"] is None for r in queue)
    done = await alice.resolve_report(out["id"], "took the spammer down", admin_token=TOKEN)
    assert done["resolution"] == "took the spammer down"
    assert [r["id"] for r in await _admin_queue(alice)] == [by_account["id"]]
    everything = await _admin_queue(alice, resolved=True)
    assert {r["id"] for r in everything} == {out["id"], by_account["id"]}
    # Without the admin token: no queue.
    with pytest.raises(XrpcError) as e:
        await alice.reports(admin_token="wrong")
    assert e.value.status == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reasonType": SPAM},
        {"reasonType": "spam", "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": "x"}},
        {"reasonType": SPAM, "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": "x"}},
        {"reasonType": SPAM, "subject": {"$type": "com.atproto.repo.strongRef", "uri": "at://x"}},
        {
            "reasonType": SPAM,
            "subject": {
                "$type": "com.atproto.repo.strongRef",
                "uri": "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3kzzzzzzzzzzz",
                "cid": "not-a-cid",
            },
        },
        {"reasonType": SPAM, "subject": {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}},
        {
            "reasonType": SPAM,
            "reason": "x" * 20_001,
            "subject": {
                "$type": "com.atproto.admin.defs#repoRef",
                "did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
            },
        },
        {
            "reasonType": SPAM,
            "reason": 7,
            "subject": {
                "$type": "com.atproto.admin.defs#repoRef",
                "did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
            },
        },
    ],
    ids=[
        "empty",
        "no-subject",
        "bare-reason",
        "bad-did",
        "no-cid",
        "bad-cid",
        "untyped",
        "long-reason",
        "int-reason",
    ],
)
async def test_malformed_reports_are_refused_and_stored_nowhere(
    people: list[Client], body: dict[str, Any]
) -> None:
    alice, *_ = people
    with pytest.raises(XrpcError) as e:
        await alice.call("com.atproto.moderation.createReport", data=body)
    assert e.value.status == 400
    assert await _admin_queue(alice, resolved=True) == []


async def test_reports_need_a_session(admin_node: Node, people: list[Client]) -> None:
    async with Client(admin_node.url) as anyone:
        with pytest.raises(XrpcError) as e:
            await anyone.call(
                "com.atproto.moderation.createReport",
                data={
                    "reasonType": SPAM,
                    "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": people[1].did},
                },
            )
        assert e.value.status == 401
    assert await _admin_queue(people[0]) == []


async def test_report_spam_is_bounded(people: list[Client]) -> None:
    alice, bob, mod = people
    # A burst of four, then the rate limit (429) and nothing stored.
    for _ in range(4):
        await alice.report(bob.did, SPAM)
    with pytest.raises(XrpcError) as e:
        await alice.report(bob.did, SPAM)
    assert (e.value.status, e.value.error) == (429, "RateLimitExceeded")
    assert len(await _admin_queue(alice)) == 4
    # Another reporter has a bucket of its own...
    for _ in range(2):
        await bob.report(alice.did, SPAM)
    assert len(await _admin_queue(mod)) == 6


async def test_open_report_cap(tmp_path: Path) -> None:
    config = NodeConfig(
        data_dir=tmp_path / "node",
        port=0,
        admin_token=TOKEN,
        report_burst=100,
        max_open_reports_per_account=3,
        max_open_reports=5,
    )
    async with (
        Node(config) as node,
        Client(node.url) as alice,
        Client(node.url) as bob,
        Client(node.url) as carol,
    ):
        for c, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            await c.create_account(f"{name}.skyfed.test", PASSWORD)
        for _ in range(3):
            await alice.report(bob.did, SPAM)
        with pytest.raises(XrpcError) as e:
            await alice.report(bob.did, SPAM)
        assert e.value.status == 429
        assert "open reports" in e.value.message
        for _ in range(2):
            await bob.report(alice.did, SPAM)
        # The node's whole queue is full (5): carol is refused too.
        with pytest.raises(XrpcError) as e:
            await carol.report(alice.did, SPAM)
        assert e.value.status == 429
        # Resolving makes room again.
        first = (await _admin_queue(alice))[-1]
        await alice.resolve_report(first["id"], "handled", admin_token=TOKEN)
        await carol.report(alice.did, SPAM)


async def test_reports_to_a_hosted_labeler_go_to_its_queue(people: list[Client]) -> None:
    alice, bob, mod = people
    with pytest.raises(XrpcError) as e:
        await alice.report(bob.did, SPAM, labeler=mod.did)  # not a labeler yet
    assert "labeler.service" in e.value.message
    await mod.put_record("app.bsky.labeler.service", "self", LABELER_RECORD)
    out = await alice.report(bob.did, SPAM, labeler=mod.did)
    mine = await mod.call("skyfed.moderation.listReports")
    assert [r["id"] for r in mine["reports"]] == [out["id"]]
    assert mine["reports"][0]["labeler"] == mod.did
    # Not in the node admin's own queue; in the admin's view of every queue.
    assert await _admin_queue(alice, queue="node") == []
    assert [r["id"] for r in await _admin_queue(alice, labeler=mod.did)] == [out["id"]]
    # Another account reads its own (empty) queue, and cannot close the labeler's.
    assert (await bob.call("skyfed.moderation.listReports"))["reports"] == []
    with pytest.raises(XrpcError) as e:
        await bob.call(
            "skyfed.moderation.resolveReport", data={"id": out["id"], "resolution": "mine now"}
        )
    assert e.value.error == "NotFound"
    await mod.call(
        "skyfed.moderation.resolveReport", data={"id": out["id"], "resolution": "labeled spam"}
    )
    assert (await mod.call("skyfed.moderation.listReports"))["reports"] == []

    # A labeler this node does not host: refused, and said so.
    remote = "did:plc:" + "r" * 24
    with pytest.raises(XrpcError) as e:
        await alice.report(bob.did, SPAM, labeler=remote)
    assert "does not forward" in e.value.message
    for header in ("garbage", f"{mod.did}#atproto_pds", f"{mod.did}"):
        with pytest.raises(XrpcError) as e:
            await alice.call(
                "com.atproto.moderation.createReport",
                data={
                    "reasonType": SPAM,
                    "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": bob.did},
                },
                headers={"atproto-proxy": header},
            )
        assert e.value.status == 400


async def test_labeler_services_from_declarations(people: list[Client]) -> None:
    from atproto_client import models

    alice, bob, mod = people
    decl = await mod.put_record("app.bsky.labeler.service", "self", LABELER_RECORD)
    like = await alice.create_record(
        "app.bsky.feed.like",
        {"$type": "app.bsky.feed.like", "subject": decl.to_json(), "createdAt": now()},
    )
    plain = await alice.call(
        "app.bsky.labeler.getServices", params={"dids": [mod.did, bob.did, "did:plc:nobody"]}
    )
    assert [v["$type"] for v in plain["views"]] == ["app.bsky.labeler.defs#labelerView"]
    view = plain["views"][0]
    assert (view["uri"], view["cid"], view["creator"]["did"]) == (decl.uri, decl.cid, mod.did)
    assert (view["likeCount"], view["viewer"]["like"]) == (1, like.uri)
    detailed = await bob.call(
        "app.bsky.labeler.getServices", params={"dids": [mod.did], "detailed": "true"}
    )
    view = detailed["views"][0]
    assert view["$type"] == "app.bsky.labeler.defs#labelerViewDetailed"
    assert view["policies"] == LABELER_RECORD["policies"]
    assert view["reasonTypes"] == [SPAM]
    assert view["viewer"] == {}
    parsed = models.AppBskyLabelerGetServices.Response.model_validate(detailed)
    # A labeler one mutes is still one to look up (and unsubscribe from).
    await alice.mute(mod.did)
    muted = await alice.call("app.bsky.labeler.getServices", params={"dids": [mod.did]})
    assert [v["uri"] for v in muted["views"]] == [decl.uri]
    assert parsed.views[0].policies.label_values == ["spam", "rude"]
    # A declaration under another key declares nothing; deleting it undeclares.
    await bob.put_record("app.bsky.labeler.service", "other", LABELER_RECORD)
    assert (await alice.call("app.bsky.labeler.getServices", params={"dids": [bob.did]}))[
        "views"
    ] == []
    await mod.delete(decl.uri)
    assert (await alice.call("app.bsky.labeler.getServices", params={"dids": [mod.did]}))[
        "views"
    ] == []
    with pytest.raises(XrpcError):
        await alice.call("app.bsky.labeler.getServices", params={"dids": ["nope"]})
    with pytest.raises(XrpcError):
        await alice.call(
            "app.bsky.labeler.getServices",
            params={"dids": [f"did:plc:{i:024d}" for i in range(101)]},
        )


async def test_accept_labelers_header_chooses_labels_for_one_request(people: list[Client]) -> None:
    alice, bob, mod = people
    await mod.put_record("app.bsky.labeler.service", "self", LABELER_RECORD)
    post = await bob.post("label me")
    await mod.label(post.uri, "rude")
    await mod.label(bob.did, "spam")
    await alice.follow(bob.did)
    lst_owner = alice
    from .graphkit import add_item, make_list

    lst = await make_list(lst_owner, "watched", "app.bsky.graph.defs#modlist")
    await add_item(lst_owner, lst.uri, bob.did)

    async def fetch(
        nsid: str, params: dict[str, Any], header: str | None
    ) -> tuple[Any, str | None]:
        headers = {"atproto-accept-labelers": header} if header is not None else None
        out = await alice.call(nsid, params=params, headers=headers)
        return out, alice.content_labelers

    feed, applied = await fetch("app.bsky.graph.getListFeed", {"list": lst.uri}, mod.did)
    assert applied == mod.did
    assert [lb["val"] for lb in feed["feed"][0]["post"]["labels"]] == ["rude"]
    assert [lb["val"] for lb in feed["feed"][0]["post"]["author"]["labels"]] == ["spam"]
    got, applied = await fetch("app.bsky.graph.getList", {"list": lst.uri}, mod.did)
    assert [lb["val"] for lb in got["items"][0]["subject"]["labels"]] == ["spam"]
    # Another request, no labelers named: no labels, and no header.
    feed, applied = await fetch("app.bsky.graph.getListFeed", {"list": lst.uri}, None)
    assert feed["feed"][0]["post"]["labels"] == []
    assert applied is None


async def test_admin_reports_from_the_shell(admin_node: Node, tmp_path: Path) -> None:
    alice = await new_account(tmp_path, admin_node, "alice")
    await new_account(tmp_path, admin_node, "bob")
    out = ok(
        await skyfed(
            alice, "report", "bob.skyfed.test", "--reason-type", "rude", "--reason", "mean"
        )
    ).out
    assert "reported as #1 to the node admin" in out
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    listed = ok(await skyfed(alice, "admin", "reports", "--token-file", str(token_file))).out
    assert "#1 reasonRude did:" in listed
    assert "[node admin] (open)" in listed
    assert "mean" in listed
    done = ok(
        await skyfed(
            alice, "admin", "resolve", "1", "--note", "warned them", "--token-file", str(token_file)
        )
    ).out
    assert "resolved #1" in done
    assert "warned them" in done
    assert (
        "no reports"
        in ok(await skyfed(alice, "admin", "reports", "--token-file", str(token_file))).out
    )
