"""Which node links to which: full mesh, ring, star, random degree k, or a list.

A topology is a set of undirected edges ``(i, j)`` with ``i < j`` over nodes
``0..n-1``; node ``i`` dials node ``j`` (one link per edge; the link carries gossip
both ways). Random graphs are made from a seed, so a scenario repeats exactly.
Refuses: self-loops, nodes out of range, a degree that cannot be met, a graph that is
not connected (a cluster that can never converge is a mistake in the scenario, not
a finding).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

__all__ = ["TOPOLOGIES", "Edge", "components", "is_connected", "make_topology"]

Edge = tuple[int, int]
TOPOLOGIES = ("full", "ring", "star", "random", "edges")


def make_topology(
    kind: str,
    n: int,
    *,
    degree: int = 3,
    seed: int = 0,
    edges: Iterable[Sequence[int]] | None = None,
) -> list[Edge]:
    """The edges of ``kind`` over ``n`` nodes, sorted."""
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    if kind == "full":
        out = {(i, j) for i in range(n) for j in range(i + 1, n)}
    elif kind == "ring":
        out = {_edge(i, (i + 1) % n) for i in range(n)} if n > 1 else set()
    elif kind == "star":
        out = {(0, j) for j in range(1, n)}
    elif kind == "random":
        out = _random_graph(n, degree, seed)
    elif kind == "edges":
        if edges is None:
            raise ValueError("topology 'edges' needs an edge list")
        out = set()
        for e in edges:
            if len(e) != 2:
                raise ValueError(f"edge {list(e)} must be two node numbers")
            a, b = int(e[0]), int(e[1])
            if a == b:
                raise ValueError(f"edge {list(e)} links a node to itself")
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"edge {list(e)} names a node outside 0..{n - 1}")
            out.add(_edge(a, b))
    else:
        raise ValueError(f"unknown topology {kind!r} (expected one of {', '.join(TOPOLOGIES)})")
    result = sorted(out)
    if not is_connected(n, result):
        raise ValueError(f"topology {kind!r} over {n} nodes is not connected")
    return result


def _edge(a: int, b: int) -> Edge:
    return (a, b) if a < b else (b, a)


def is_connected(n: int, edges: Iterable[Edge]) -> bool:
    return len(components(n, edges)) <= 1


def components(n: int, edges: Iterable[Edge]) -> list[list[int]]:
    """The connected parts of the graph over nodes ``0..n-1``, each sorted."""
    adjacent: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    out: list[list[int]] = []
    seen: set[int] = set()
    for start in range(n):
        if start in seen:
            continue
        part = {start}
        stack = [start]
        while stack:
            for m in adjacent[stack.pop()] - part:
                part.add(m)
                stack.append(m)
        seen |= part
        out.append(sorted(part))
    return out


def _random_graph(n: int, degree: int, seed: int) -> set[Edge]:
    """A connected random graph where every node has about ``degree`` links.

    The configuration model (pair up ``degree`` stubs per node at random, refuse
    loops, doubles and disconnected results) gives a k-regular graph when ``n * k``
    is even; otherwise, or if a hundred tries fail, a ring plus random chords up to
    the same number of edges.
    """
    if n == 1:
        return set()
    if not 1 <= degree < n:
        raise ValueError(f"degree must be between 1 and {n - 1} for {n} nodes (got {degree})")
    if n == 2:
        return {(0, 1)}
    rng = random.Random(seed)
    if (n * degree) % 2 == 0 and degree >= 2:
        for _ in range(100):
            stubs = [i for i in range(n) for _ in range(degree)]
            rng.shuffle(stubs)
            pairs = {_edge(stubs[k], stubs[k + 1]) for k in range(0, len(stubs), 2)}
            if (
                len(pairs) == len(stubs) // 2
                and all(a != b for a, b in pairs)
                and is_connected(n, pairs)
            ):
                return pairs
    out = {_edge(i, (i + 1) % n) for i in range(n)}
    target = max(len(out), n * degree // 2)
    while len(out) < target:
        a, b = rng.sample(range(n), 2)
        out.add(_edge(a, b))
    return out
