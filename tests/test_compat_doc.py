"""docs/bluesky-compat.md cannot drift from the node: its table of every
``com.atproto.*`` and ``app.bsky.*`` method is checked against the node's route table
and against the method lists of the ``atproto`` SDK (which mirrors the lexicons).

When a method is added to the node, the test names the row to change from
``not served`` to ``served`` (or ``differs``, with the difference in the row).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import atproto_client.namespaces.sync_ns as sdk_namespaces
import pytest

from node.server import app as node_app

DOC = Path(__file__).parent.parent / "docs" / "bluesky-compat.md"
ROW = re.compile(
    r"^\| `(?P<nsid>[A-Za-z.]+)` \| (?P<kind>query|procedure|subscription) "
    r"\| (?P<status>served|differs|not served) \| (?P<why>.*) \|$"
)
PREFIXES = ("com.atproto.", "app.bsky.")
# Websocket methods: no SDK namespace method, but lexicons of their own.
SUBSCRIPTIONS = {"com.atproto.sync.subscribeRepos", "com.atproto.label.subscribeLabels"}
HTTP_METHOD = {"query": "GET", "procedure": "POST", "subscription": "GET"}


def doc_rows() -> dict[str, tuple[str, str, str]]:
    rows: dict[str, tuple[str, str, str]] = {}
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        match = ROW.match(line)
        assert match, f"a table row the test cannot read: {line}"
        nsid = match["nsid"]
        assert nsid not in rows, f"{nsid} is listed twice"
        rows[nsid] = (match["kind"], match["status"], match["why"].strip())
    return rows


def lexicon_methods() -> dict[str, str]:
    """Every com.atproto / app.bsky method the SDK can call, with its kind."""
    source = inspect.getsource(sdk_namespaces)
    found = re.findall(r"invoke_(query|procedure)\(\s*'([A-Za-z.]+)'", source)
    methods = {nsid: kind for kind, nsid in found if nsid.startswith(PREFIXES)}
    methods.update(dict.fromkeys(SUBSCRIPTIONS, "subscription"))
    return methods


def node_routes() -> dict[str, str]:
    return {
        nsid: method
        for nsid, (method, _handler) in node_app._ROUTES.items()
        if nsid.startswith(PREFIXES)
    }


def test_the_doc_lists_every_method_of_the_lexicons_once() -> None:
    rows, methods = doc_rows(), lexicon_methods()
    assert len(methods) > 150  # the SDK's lists were found
    missing = sorted(set(methods) - set(rows))
    assert not missing, f"methods missing from docs/bluesky-compat.md: {missing}"
    unknown = sorted(set(rows) - set(methods))
    assert not unknown, f"rows for methods no lexicon has: {unknown}"
    wrong_kind = sorted(n for n, (kind, _, _) in rows.items() if kind != methods[n])
    assert not wrong_kind, f"rows with the wrong kind: {wrong_kind}"


def test_served_in_the_doc_is_exactly_what_the_node_routes() -> None:
    rows, routes = doc_rows(), node_routes()
    said_served = {n for n, (_, status, _) in rows.items() if status != "not served"}
    now_served = sorted(set(routes) - said_served)
    assert not now_served, f"served by the node, not served in the doc: {now_served}"
    not_routed = sorted(said_served - set(routes))
    assert not not_routed, f"served in the doc, not routed by the node: {not_routed}"


def test_every_difference_and_refusal_says_why() -> None:
    silent = sorted(
        n for n, (_, status, why) in doc_rows().items() if status != "served" and not why
    )
    assert not silent, f"rows that do not say why: {silent}"


@pytest.mark.parametrize(("nsid", "method"), sorted(node_routes().items()))
def test_each_route_takes_the_http_method_of_its_lexicon_kind(nsid: str, method: str) -> None:
    kind = lexicon_methods().get(nsid)
    assert kind is not None, f"{nsid} is routed but no lexicon has it"
    assert method == HTTP_METHOD[kind]
