"""atproto's Merkle Search Tree: the map from record paths to record CIDs.

The rules (atproto repository spec), all of which this module applies:

* **Keys** are ``collection/rkey``: exactly one ``/``, both sides non-empty, only
  ``A-Za-z0-9`` and ``_ ~ - : .``, at most :data:`MAX_KEY` bytes.
* **Height** (layer) of a key: the number of leading zero bits of sha-256(key),
  divided by two, rounded down (fanout 4). The tree is determined by its contents:
  a key sits in a node of its own layer; nodes on layer ``L`` point to nodes on
  layer ``L - 1``; a gap that holds keys of lower layers only is bridged by a node
  with no entries and only ``l``. The root is the node of the highest layer (it is
  never such an empty bridge), and the empty tree is one node with no entries.
* **Node format** (DAG-CBOR): ``{"l": CID | null, "e": [{"p": int, "k": bytes,
  "v": CID, "t": CID | null}, ...]}``. ``l`` is the subtree left of the first entry,
  ``t`` the subtree right of its entry; ``k`` is the key minus the ``p`` bytes it
  shares with the previous key in the node (``p`` is 0 for the first entry).

Reading (:meth:`MST.load` and everything that walks the tree) checks each node as it
is loaded: the exact field set; ``p`` equal to the actual shared prefix; keys valid,
strictly increasing, all of the node's layer and inside the range the parent gives
the node; no subtree below layer 0; no empty node except the empty root; no
untrimmed root. A block that is referenced and needed but absent raises
:class:`MissingBlock` (so a partial tree, as in a commit event, works as far as it
goes).

Trees are persistent: :meth:`MST.add`, :meth:`MST.update` and :meth:`MST.delete`
return a new tree sharing unchanged nodes, and load only the nodes they touch. This
is what the inductive proof of a commit event needs (:mod:`.commit`): apply the
inverse of the operations to the new tree, loading only from the blocks the event
carries, and compare the root with ``prevData``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Union

from ..errors import DecodeError, RepoError
from . import dagcbor
from .cid import CID, CODEC_DAG_CBOR, cid_for_dag_cbor

__all__ = [
    "MAX_KEY",
    "MST",
    "MissingBlock",
    "common_prefix_len",
    "key_height",
    "validate_key",
]

#: The longest key (collection NSID + "/" + record key) accepted, in bytes.
MAX_KEY = 1024
_KEY_RE = re.compile(r"[A-Za-z0-9_~\-:.]+/[A-Za-z0-9_~\-:.]+")
#: Bound on a node block: real nodes are a few KiB.
MAX_NODE = 1024 * 1024


class MissingBlock(RepoError):
    """A tree node the operation needs is not among the blocks given."""

    error = "InvalidCommit"

    def __init__(self, cid: CID):
        super().__init__(f"MST node {cid} is not among the blocks given")
        self.cid = cid


@functools.lru_cache(maxsize=1 << 16)
def key_height(key: str | bytes) -> int:
    """Leading zero bits of sha-256(key), counted in 2-bit chunks (cached, bounded:
    the keys of a repo's upper nodes come back in every commit event)."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    digest = hashlib.sha256(raw).digest()
    n = int.from_bytes(digest, "big")
    zeros = 256 - n.bit_length()
    return zeros // 2


def common_prefix_len(a: str | bytes, b: str | bytes) -> int:
    """Length of the longest common prefix of two keys (in characters or bytes)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]: bisect with C compares
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def validate_key(key: str) -> None:
    """Raise :class:`DecodeError` unless ``key`` is a valid MST key."""
    if not isinstance(key, str) or len(key) > MAX_KEY or not _KEY_RE.fullmatch(key):
        raise DecodeError(f"invalid MST key {str(key)[:80]!r}")


Sub = Union["Node", CID, None]


class Node:
    """One tree node in memory: ``keys[i]`` maps to ``vals[i]``; ``ptrs[0]`` is the
    left subtree (``l``) and ``ptrs[i + 1]`` the subtree right of ``keys[i]``
    (``t``). A pointer is a loaded :class:`Node`, a :class:`CID` not loaded yet, or
    ``None``. Never mutated after construction (``_cid`` is a cache)."""

    __slots__ = ("_block", "_cid", "keys", "layer", "ptrs", "vals")

    def __init__(
        self,
        layer: int,
        keys: list[str],
        vals: list[CID],
        ptrs: list[Sub],
        cid: CID | None = None,
    ):
        self.layer = layer
        self.keys = keys
        self.vals = vals
        self.ptrs = ptrs
        self._cid = cid
        self._block: bytes | None = None

    def encode(self) -> bytes:
        entries: list[dagcbor.Value] = []
        prev = ""
        for key, val, ptr in zip(self.keys, self.vals, self.ptrs[1:], strict=True):
            p = common_prefix_len(prev, key)
            entries.append({"p": p, "k": key[p:].encode("ascii"), "v": val, "t": _cid_of(ptr)})
            prev = key
        return dagcbor.encode({"l": _cid_of(self.ptrs[0]), "e": entries}, trusted=True)

    def cid(self) -> CID:
        if self._cid is None:
            self._block = self.encode()
            self._cid = cid_for_dag_cbor(self._block)
        return self._cid


def _cid_of(sub: Sub) -> CID | None:
    if sub is None or isinstance(sub, CID):
        return sub
    return sub.cid()


def _decode_node(block: bytes) -> tuple[CID | None, list[str], list[CID], list[CID | None]]:
    value = dagcbor.decode(block, max_size=MAX_NODE, shape_checked=True)
    if not isinstance(value, dict) or set(value) != {"l", "e"}:
        raise DecodeError("MST node must be exactly {l, e}")
    left, entries = value["l"], value["e"]
    if left is not None and not isinstance(left, CID):
        raise DecodeError("MST node l must be a CID or null")
    if not isinstance(entries, list):
        raise DecodeError("MST node e must be a list")
    keys: list[str] = []
    vals: list[CID] = []
    rights: list[CID | None] = []
    prev = ""
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"p", "k", "v", "t"}:
            raise DecodeError("MST entry must be exactly {p, k, v, t}")
        p, k, v, t = entry["p"], entry["k"], entry["v"], entry["t"]
        if type(p) is not int or not 0 <= p <= len(prev) or (not keys and p != 0):
            raise DecodeError("MST entry p is out of range")
        if not isinstance(k, bytes) or not isinstance(v, CID):
            raise DecodeError("MST entry k must be bytes and v a CID")
        if t is not None and not isinstance(t, CID):
            raise DecodeError("MST entry t must be a CID or null")
        try:
            suffix = k.decode("ascii")
        except UnicodeDecodeError as e:
            raise DecodeError("MST key is not ASCII") from e
        key = prev[:p] + suffix
        validate_key(key)
        # key = prev[:p] + suffix, so p is the whole shared prefix unless the
        # suffix starts with the very byte of prev that follows it.
        if keys and (key <= prev or (p < len(prev) and suffix[:1] == prev[p])):
            raise DecodeError("MST keys out of order or p is not the shared prefix")
        keys.append(key)
        vals.append(v)
        rights.append(t)
        prev = key
    return left, keys, vals, rights


class MST:
    """A (possibly partial) tree over a block map. Persistent: operations return a
    new :class:`MST`; :meth:`blocks` gives the encoded nodes a tree has created."""

    __slots__ = ("_loaded", "_root", "_store")

    def __init__(
        self,
        store: Mapping[CID, bytes],
        root: Node,
        loaded: dict[tuple[CID, int | None, str | None, str | None], Node] | None = None,
    ):
        self._store = store
        self._root = root
        # Nodes already loaded and checked, by CID *and* position (layer, bounds):
        # shared by the trees derived from this one, so a lookup and an edit of the
        # same path decode each node once. Bounded by the blocks in the store.
        self._loaded = loaded if loaded is not None else {}

    # -- construction ------------------------------------------------------------
    @classmethod
    def empty(cls, store: Mapping[CID, bytes] | None = None) -> MST:
        return cls(store if store is not None else {}, Node(0, [], [], [None]))

    @classmethod
    def load(cls, store: Mapping[CID, bytes], root: CID) -> MST:
        """The tree whose root node is ``root``; nodes below load on demand."""
        tree = cls(store, Node(0, [], [], [None]))
        tree._root = tree._load(root, None, None, None)
        return tree

    @classmethod
    def from_entries(cls, entries: Mapping[str, CID]) -> MST:
        """Build the one tree holding exactly ``entries``."""
        items = sorted(entries.items())
        for key, _ in items:
            validate_key(key)
        heights = [key_height(k) for k, _ in items]
        if not items:
            return cls.empty()
        top = max(heights)
        root = _build(items, heights, top)
        assert root is not None
        return cls({}, root)

    # -- reading -------------------------------------------------------------------
    def root_cid(self) -> CID:
        return self._root.cid()

    def get(self, key: str) -> CID | None:
        """The value under ``key`` (``None`` if absent)."""
        validate_key(key)
        node: Node | None = self._root
        lo: str | None = None
        hi: str | None = None
        while node is not None:
            i = bisect_left(node.keys, key)
            if i < len(node.keys) and node.keys[i] == key:
                return node.vals[i]
            lo, hi = _bounds(node, i, lo, hi)
            node = self._resolve(node.ptrs[i], node.layer - 1, lo, hi)
        return None

    def walk(self) -> Iterator[tuple[str, CID]]:
        """Every entry in key order (loads the whole tree)."""
        stack: list[tuple[Sub, int, str | None, str | None] | tuple[str, CID]] = []
        stack.append((self._root, self._root.layer, None, None))
        while stack:
            item = stack.pop()
            if len(item) == 2:
                yield item
                continue
            sub, layer, lo, hi = item
            node = self._resolve(sub, layer, lo, hi)
            if node is None:
                continue
            parts: list[tuple[Sub, int, str | None, str | None] | tuple[str, CID]] = []
            for i in range(len(node.keys) + 1):
                a, b = _bounds(node, i, lo, hi)
                parts.append((node.ptrs[i], layer - 1, a, b))
                if i < len(node.keys):
                    parts.append((node.keys[i], node.vals[i]))
            stack.extend(reversed(parts))

    def blocks(self) -> dict[CID, bytes]:
        """The encoded nodes this tree holds in memory (new or loaded), by CID."""
        out: dict[CID, bytes] = {}
        stack: list[Sub] = [self._root]
        while stack:
            sub = stack.pop()
            if not isinstance(sub, Node):
                continue
            cid = sub.cid()
            out[cid] = sub._block if sub._block is not None else self._store[cid]
            stack.extend(sub.ptrs)
        return out

    # -- loading -------------------------------------------------------------------
    def _load(self, cid: CID, layer: int | None, lo: str | None, hi: str | None) -> Node:
        position = (cid, layer, lo, hi)
        done = self._loaded.get(position)
        if done is not None:
            return done
        if cid.codec != CODEC_DAG_CBOR:
            raise DecodeError("an MST node link must be a dag-cbor CID")
        block = self._store.get(cid)
        if block is None:
            raise MissingBlock(cid)
        left, keys, vals, rights = _decode_node(block)
        if layer is None:  # the root: its layer is its keys'
            if not keys and left is not None:
                raise DecodeError("MST root is an empty bridge node (not trimmed)")
            layer = key_height(keys[0]) if keys else 0
        if layer < 0:
            raise DecodeError("MST subtree below layer 0")
        for key in keys:
            if key_height(key) != layer:
                raise DecodeError(f"MST key {key!r} is on the wrong layer")
        if keys and ((lo is not None and keys[0] <= lo) or (hi is not None and keys[-1] >= hi)):
            raise DecodeError("MST node keys outside the range its parent gives")
        ptrs: list[Sub] = [left, *rights]
        if layer == 0 and any(p is not None for p in ptrs):
            raise DecodeError("MST node on layer 0 has a subtree")
        if not keys and left is None and (lo is not None or hi is not None):
            raise DecodeError("empty MST node below the root")
        node = Node(layer, keys, vals, ptrs, cid)
        node._block = block
        self._loaded[position] = node
        return node

    def _resolve(self, sub: Sub, layer: int, lo: str | None, hi: str | None) -> Node | None:
        if sub is None or isinstance(sub, Node):
            return sub
        return self._load(sub, layer, lo, hi)

    # -- changes -------------------------------------------------------------------
    def add(self, key: str, value: CID) -> MST:
        """A new tree with ``key`` added; :class:`RepoError` if it is there."""
        validate_key(key)
        h = key_height(key)
        root = self._root
        if not root.keys:
            return MST(self._store, Node(h, [key], [value], [None, None]), self._loaded)
        if h > root.layer:
            left, right = self._split(root, key, root.layer, None, None)
            for layer in range(root.layer + 1, h):
                left = Node(layer, [], [], [left]) if left is not None else None
                right = Node(layer, [], [], [right]) if right is not None else None
            return MST(self._store, Node(h, [key], [value], [left, right]), self._loaded)
        new = self._insert(root, key, value, h, root.layer, None, None)
        return MST(self._store, new, self._loaded)

    def update(self, key: str, value: CID) -> MST:
        """A new tree with ``key`` set to ``value``; :class:`RepoError` if absent."""
        validate_key(key)
        new = self._set(self._root, key, value, key_height(key), None, None)
        return MST(self._store, new, self._loaded)

    def delete(self, key: str) -> MST:
        """A new tree without ``key``; :class:`RepoError` if absent."""
        validate_key(key)
        root = self._delete(self._root, key, key_height(key), self._root.layer, None, None)
        while root is not None and not root.keys and root.ptrs[0] is not None:
            root = self._resolve(root.ptrs[0], root.layer - 1, None, None)  # trim
        return MST(self._store, root if root is not None else Node(0, [], [], [None]), self._loaded)

    def _insert(
        self, sub: Sub, key: str, value: CID, h: int, layer: int, lo: str | None, hi: str | None
    ) -> Node:
        node = self._resolve(sub, layer, lo, hi) or Node(layer, [], [], [None])
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            raise RepoError(f"MST key {key!r} is already present")
        a, b = _bounds(node, i, lo, hi)
        if h == layer:
            left, right = self._split(node.ptrs[i], key, layer - 1, a, b)
            return Node(
                layer,
                [*node.keys[:i], key, *node.keys[i:]],
                [*node.vals[:i], value, *node.vals[i:]],
                [*node.ptrs[:i], left, right, *node.ptrs[i + 1 :]],
            )
        child = self._insert(node.ptrs[i], key, value, h, layer - 1, a, b)
        return Node(layer, node.keys, node.vals, [*node.ptrs[:i], child, *node.ptrs[i + 1 :]])

    def _split(
        self, sub: Sub, key: str, layer: int, lo: str | None, hi: str | None
    ) -> tuple[Node | None, Node | None]:
        """The parts of ``sub`` below and above ``key`` (which it must not hold)."""
        node = self._resolve(sub, layer, lo, hi)
        if node is None:
            return None, None
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            raise RepoError(f"MST key {key!r} is already present")
        a, b = _bounds(node, i, lo, hi)
        gl, gr = self._split(node.ptrs[i], key, layer - 1, a, b)
        left = Node(layer, node.keys[:i], node.vals[:i], [*node.ptrs[:i], gl])
        right = Node(layer, node.keys[i:], node.vals[i:], [gr, *node.ptrs[i + 1 :]])
        return _nonempty(left), _nonempty(right)

    def _set(
        self, node: Node, key: str, value: CID, h: int, lo: str | None, hi: str | None
    ) -> Node:
        i = bisect_left(node.keys, key)
        if node.layer == h:
            if i == len(node.keys) or node.keys[i] != key:
                raise RepoError(f"MST key {key!r} is not present")
            vals = [*node.vals[:i], value, *node.vals[i + 1 :]]
            return Node(node.layer, node.keys, vals, node.ptrs)
        if node.layer < h:
            raise RepoError(f"MST key {key!r} is not present")
        a, b = _bounds(node, i, lo, hi)
        child = self._resolve(node.ptrs[i], node.layer - 1, a, b)
        if child is None:
            raise RepoError(f"MST key {key!r} is not present")
        new = self._set(child, key, value, h, a, b)
        return Node(node.layer, node.keys, node.vals, [*node.ptrs[:i], new, *node.ptrs[i + 1 :]])

    def _delete(
        self, sub: Sub, key: str, h: int, layer: int, lo: str | None, hi: str | None
    ) -> Node | None:
        node = self._resolve(sub, layer, lo, hi)
        if node is None or layer < h:
            raise RepoError(f"MST key {key!r} is not present")
        i = bisect_left(node.keys, key)
        if layer == h:
            if i == len(node.keys) or node.keys[i] != key:
                raise RepoError(f"MST key {key!r} is not present")
            a = node.keys[i - 1] if i > 0 else lo
            b = node.keys[i + 1] if i + 1 < len(node.keys) else hi
            merged = self._merge(node.ptrs[i], node.ptrs[i + 1], layer - 1, a, key, b)
            new = Node(
                layer,
                [*node.keys[:i], *node.keys[i + 1 :]],
                [*node.vals[:i], *node.vals[i + 1 :]],
                [*node.ptrs[:i], merged, *node.ptrs[i + 2 :]],
            )
        else:
            a, b = _bounds(node, i, lo, hi)
            child = self._delete(node.ptrs[i], key, h, layer - 1, a, b)
            new = Node(layer, node.keys, node.vals, [*node.ptrs[:i], child, *node.ptrs[i + 1 :]])
        return _nonempty(new)

    def _merge(self, a: Sub, b: Sub, layer: int, lo: str | None, mid: str, hi: str | None) -> Sub:
        """Join two neighbouring subtrees of one layer (``a`` below ``mid``, ``b``
        above). Loads only when both sides hold something."""
        if a is None:
            return b
        if b is None:
            return a
        left = self._resolve(a, layer, lo, mid)
        right = self._resolve(b, layer, mid, hi)
        assert left is not None
        assert right is not None
        inner = self._merge(
            left.ptrs[-1],
            right.ptrs[0],
            layer - 1,
            left.keys[-1] if left.keys else lo,
            mid,
            right.keys[0] if right.keys else hi,
        )
        return Node(
            layer,
            left.keys + right.keys,
            left.vals + right.vals,
            [*left.ptrs[:-1], inner, *right.ptrs[1:]],
        )


def _bounds(node: Node, i: int, lo: str | None, hi: str | None) -> tuple[str | None, str | None]:
    """The key range of the gap ``node.ptrs[i]``."""
    return (node.keys[i - 1] if i > 0 else lo, node.keys[i] if i < len(node.keys) else hi)


def _nonempty(node: Node) -> Node | None:
    return None if not node.keys and node.ptrs[0] is None else node


def _build(items: list[tuple[str, CID]], heights: list[int], layer: int) -> Node | None:
    if not items:
        return None
    keys: list[str] = []
    vals: list[CID] = []
    ptrs: list[Sub] = []
    start = 0
    for j, (key, val) in enumerate(items):
        if heights[j] == layer:
            ptrs.append(_build(items[start:j], heights[start:j], layer - 1))
            keys.append(key)
            vals.append(val)
            start = j + 1
    ptrs.append(_build(items[start:], heights[start:], layer - 1))
    return Node(layer, keys, vals, ptrs)
