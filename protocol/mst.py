"""The Merkle Search Tree that holds a repository's records.

Follows the atproto repository spec, with canonical msgpack in place of DAG-CBOR:

* a key is ``<collection>/<record key>`` (ASCII, at most :data:`MAX_KEY_LENGTH` bytes);
  its *height* is the number of leading zero bits of ``sha256(key)`` divided by two
  (rounded down), which gives a fanout of about 4;
* a node holds the keys of one height in order, ``{"e": [...], "l": left | null}``;
  each entry is ``{"k": key suffix, "p": prefix length shared with the previous key
  of the node, "t": right subtree | null, "v": value CID}``; CIDs are carried as their
  binary form in msgpack ``bin``;
* subtrees hang one layer lower; a layer with no key of its own between two keys of
  the layer above is an entry-less node that only points down (layers are never
  skipped); the root is the node of the highest layer; the empty tree is one node
  with no entries and no ``l``.

So the same set of keys gives the same root whatever the order of operations.

Trees are persistent values: :meth:`MST.set` and :meth:`MST.delete` return a new
tree sharing unchanged nodes with the old one. Nodes are read lazily through a
:class:`BlockSource`, so a tree can be checked with only the blocks it touches; a
missing block raises :class:`MissingBlock`.

What it refuses: malformed keys, nodes that are not canonical (wrong key heights,
unsorted or duplicate keys, bad prefixes, non-canonical bytes), and trees whose
structure does not match the one its key set dictates.

Every walk (``get``, ``items``, ``set``, ``delete``, ``diff``, ``all_blocks``,
``verify_structure``) carries the key range a subtree may hold, inherited from the
keys above it, and refuses a node read from the block source with a key outside it:
a subtree to the left of ``K`` holds only keys below ``K``, and so on. So a tree
that only partly arrives (the nodes of a commit event, the new nodes of a partial
resync) is held to the same order as a whole one; a key out of its range would make
``get`` miss it and ``items`` yield keys out of order.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import msgspec

from .cid import BINARY_PREFIXES, CID, CODEC_MSGPACK, cid_for_msgpack
from .cid import from_bytes as _cid
from .errors import DecodeError, InvalidCommit, LocalProtocolError, RepoError

__all__ = [
    "MAX_KEY_LENGTH",
    "MST",
    "BlockSource",
    "DiffEntry",
    "HashedBlocks",
    "MemoryBlockStore",
    "MissingBlock",
    "RecordingSource",
    "key_height",
    "validate_key",
]

MAX_KEY_LENGTH = 1024
_KEY_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:~/")
#: The key characters but "/": what _check_keys deletes from the joined keys.
_KEY_CHARS_NO_SLASH = bytes(sorted(_KEY_CHARS - {ord("/")}))
#: Decoded nodes kept per tree loader; bounded so a walk over a huge repo stays small.
_CACHE_NODES = 50_000
#: The open ends of a subtree's key range. Keys are 3 to 1024 ASCII bytes, so b""
#: sorts below every key and b"\xff" above every key.
_LO = b""
_HI = b"\xff"


class MissingBlock(InvalidCommit):
    """A block the operation needs is not in the block source."""

    def __init__(self, cid: CID):
        super().__init__(f"missing block {cid}")
        self.cid = cid


class BlockSource(Protocol):
    """Where tree nodes are read from: a dict, a CAR slice, a database (in a thread)."""

    def get_block(self, cid: CID) -> bytes | None: ...


class MemoryBlockStore:
    """A dict of blocks. Implements :class:`BlockSource`."""

    def __init__(self, blocks: Mapping[CID, bytes] | None = None):
        self.blocks: dict[CID, bytes] = dict(blocks or {})

    def get_block(self, cid: CID) -> bytes | None:
        return self.blocks.get(cid)

    def put_block(self, block: bytes) -> CID:
        cid = cid_for_msgpack(block)
        self.blocks[cid] = block
        return cid

    def update(self, blocks: Mapping[CID, bytes]) -> None:
        self.blocks.update(blocks)


class HashedBlocks:
    """Blocks found by the CIDs computed here from their bytes: a read-only
    :class:`BlockSource` that the tree loader need not hash again (a commit event's
    blocks are hashed once, to be found by CID, instead of twice). Only msgpack CIDs
    are computed, so a node read from it has the right codec too."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: Iterable[bytes]):
        # bytes() (which returns a bytes object itself), so a bytearray cannot
        # change after it was hashed.
        self._blocks: dict[CID, bytes] = {cid_for_msgpack(b): b for b in map(bytes, blocks)}

    def get_block(self, cid: CID) -> bytes | None:
        return self._blocks.get(cid)

    def to_dict(self) -> dict[CID, bytes]:
        return dict(self._blocks)


class RecordingSource:
    """Wraps a source and remembers every CID read through it (to build minimal
    block sets for proofs and commit events)."""

    def __init__(self, inner: BlockSource):
        self.inner = inner
        self.read: dict[CID, bytes] = {}

    def get_block(self, cid: CID) -> bytes | None:
        block = self.inner.get_block(cid)
        if block is not None:
            self.read[cid] = block
        return block


def validate_key(key: str) -> bytes:
    """Check an MST key (``collection/rkey``) and return its bytes."""
    if not isinstance(key, str):
        raise RepoError("MST key must be a string")
    raw = key.encode("utf-8", "surrogatepass")
    if not 3 <= len(raw) <= MAX_KEY_LENGTH:
        raise RepoError(f"MST key must be 3 to {MAX_KEY_LENGTH} bytes")
    if not _KEY_CHARS.issuperset(raw):
        raise RepoError("MST key has a character outside A-Za-z0-9.-_:~/")
    collection, sep, rkey = key.partition("/")
    if not sep or not collection or not rkey or "/" in rkey:
        raise RepoError("MST key must be '<collection>/<record key>'")
    return raw


def key_height(key: str | bytes) -> int:
    """Leading zero bits of sha256(key), divided by 2 (fanout 4)."""
    return _height(key.encode("utf-8") if isinstance(key, str) else key)


@functools.lru_cache(maxsize=65536)
def _height(raw: bytes) -> int:
    # Cached: the same keys are hashed again each time a node is decoded.
    n = int.from_bytes(hashlib.sha256(raw).digest(), "big")
    return (256 - n.bit_length()) // 2


#: A subtree: a node in memory, the binary form of its CID (a node not read yet), or
#: None. Values are held as binary CIDs too: a node of a commit event carries dozens
#: of CIDs of which a walk touches one or two, so a CID object is built only for a
#: value handed out (``get``, ``items``, ``diff``).
Ref: TypeAlias = "_Node | bytes | None"


class _Node:
    """One tree node. Immutable once built; its block and CID are computed lazily."""

    __slots__ = (
        "_block",
        "_cid",
        "base",
        "entries",
        "gen",
        "keys",
        "layer",
        "left",
        "loaded",
        "rights",
        "vals",
    )

    def __init__(
        self,
        layer: int,
        left: Ref,
        keys: tuple[bytes, ...],
        vals: tuple[bytes, ...],
        rights: tuple[Ref, ...],
        cid: CID | None = None,
        block: bytes | None = None,
    ):
        self.layer = layer
        self.left = left
        self.keys = keys
        self.vals = vals
        self.rights = rights
        self._cid = cid
        self._block = block
        # Read from a block source (so already stored), as opposed to built here.
        self.loaded = cid is not None
        #: A loaded node's entries as decoded (so a copy of it can be re-encoded
        #: without rebuilding every entry).
        self.entries: list[_EntryData] | None = None
        #: (loaded node, gap) when this node is that node with one subtree replaced.
        self.base: tuple[_Node, int] | None = None
        #: The generation of the tree whose new_blocks first handed out this node
        #: (built nodes only; -1 until then): MST.new_blocks(since) stops below it.
        self.gen = -1

    def is_empty(self) -> bool:
        return not self.keys and self.left is None


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One key that differs between two trees. ``old`` None: created; ``new`` None:
    deleted; both set: updated."""

    key: str
    old: CID | None
    new: CID | None


class _Loader:
    """Reads and checks nodes from a block source; caches decoded nodes by CID."""

    __slots__ = ("cache", "source")

    def __init__(self, source: BlockSource):
        self.source = source
        self.cache: OrderedDict[bytes, _Node] = OrderedDict()

    def load(self, raw: bytes, layer: int | None) -> _Node:
        """The node whose CID has the binary form ``raw``."""
        node = self.cache.get(raw)
        if node is not None:
            if layer is not None and node.layer != layer:
                raise InvalidCommit(f"tree node {_cid(raw)} appears at the wrong layer")
            return node
        cid = _cid(raw)
        source = self.source
        block = source.get_block(cid)
        if block is None:
            raise MissingBlock(cid)
        node = _decode_node(cid, block, layer, hashed=type(source) is HashedBlocks)
        self.cache[raw] = node
        if len(self.cache) > _CACHE_NODES:
            self.cache.popitem(last=False)
        return node


class _MemoryLoader(_Loader):
    """The loader of :meth:`MST.reloaded`: finds the nodes of a tree held in memory
    by CID, as a walk from the root reaches them (reading a node makes its children
    in memory known; a walk asks for a node only after reading the one above it).
    A node built in memory is read as a twin with its subtrees as CIDs (so the walk
    reads them through here too); a node loaded before, or decoded by the tree's
    own loader, is shared as it is. Records every block read."""

    __slots__ = ("held", "known", "read")

    def __init__(self, tree: MST):
        super().__init__(tree.source)
        root = tree._root
        self.known: dict[bytes, _Node] = {_node_raw(root): root}
        self.held = tree._loader.cache
        self.read: dict[CID, bytes] = {}

    def load(self, raw: bytes, layer: int | None) -> _Node:
        node = self.cache.get(raw)
        if node is not None:
            if layer is not None and node.layer != layer:
                raise InvalidCommit(f"tree node {_cid(raw)} appears at the wrong layer")
            return node
        node = self.known.get(raw) or self.held.get(raw)
        if node is None:
            node = super().load(raw, layer)
        else:
            if layer is not None and node.layer != layer:
                raise InvalidCommit(f"tree node {_cid(raw)} appears at the wrong layer")
            if not node.loaded:
                node = self._twin(node, _node_cid(node))
            self.cache[raw] = node
            if len(self.cache) > _CACHE_NODES:
                self.cache.popitem(last=False)
        assert node._block is not None
        assert node._cid is not None
        self.read[node._cid] = node._block
        return node

    def _twin(self, node: _Node, cid: CID) -> _Node:
        known = self.known
        left: bytes | _Node | None = node.left
        if isinstance(left, _Node):
            left_node = left
            left = _node_raw(left_node)
            known[left] = left_node
        rights: list[bytes | None] = []
        for ref in node.rights:
            if isinstance(ref, _Node):
                ref_raw = _node_raw(ref)
                known[ref_raw] = ref
                rights.append(ref_raw)
            else:
                rights.append(ref)
        return _Node(node.layer, left, node.keys, node.vals, tuple(rights), cid, node._block)


# gc=False: these hold only bytes and ints (and a list of entries), so they cannot
# be part of a cycle, and a node's dozens of entries need not be tracked by the
# cycle collector (nor trigger its collections).
class _EntryData(msgspec.Struct, gc=False):
    """A node entry as encoded: fields in canonical key order."""

    k: bytes
    p: int
    t: bytes | None
    v: bytes


class _NodeData(msgspec.Struct, gc=False):
    """A node as encoded: ``{"e": [...], "l": ...}`` (canonical key order)."""

    e: list[_EntryData]
    l: bytes | None  # noqa: E741 - the wire name


# msgspec decodes a node straight into typed fields (C speed, every type checked);
# re-encoding those fields and requiring the same bytes then proves the block is
# the canonical encoding of exactly this schema: key order, no extra or duplicate
# keys, shortest integer and length forms, bin not str. Encoder and decoder keep
# no state between calls, so sharing them across threads is safe.
_NODE_DECODER = msgspec.msgpack.Decoder(_NodeData)
_ENCODER = msgspec.msgpack.Encoder()
_CID_PREFIXES = BINARY_PREFIXES
#: A CID's binary form without its digest.
_prefix = operator.itemgetter(slice(None, -32))
_NOT_A_CID = "not a CIDv1 with msgpack or raw codec and a sha2-256 digest"
#: A node block larger than this is refused before decoding (a full node of
#: maximal keys is far smaller; commit blocks are bounded at 2 MB anyway).
_MAX_NODE_BYTES = 2 * 1024 * 1024


def _decode_node(cid: CID, block: bytes, layer: int | None, *, hashed: bool = False) -> _Node:
    """Decode and check one node. ``layer`` is what the parent implies (None for a
    root, whose layer its keys tell). ``hashed``: the block was read from a
    :class:`HashedBlocks` under ``cid``, so it hashes to it already."""
    if type(block) is not bytes:
        block = bytes(block)
    if not hashed and (hashlib.sha256(block).digest() != cid.digest or cid.codec != CODEC_MSGPACK):
        raise InvalidCommit(f"block does not hash to {cid}")
    if len(block) > _MAX_NODE_BYTES:
        raise InvalidCommit(f"tree node {cid} is too large")
    try:
        data = _NODE_DECODER.decode(block)
    except msgspec.DecodeError as e:  # ValidationError is a subclass
        raise InvalidCommit(f"tree node {cid}: not a tree node: {e}") from e
    if _ENCODER.encode(data) != block:
        raise InvalidCommit(f"tree node {cid}: not the canonical encoding of a tree node")
    left = data.l
    entries = data.e
    vals = [e.v for e in entries]
    rights = [e.t for e in entries]
    # Every CID must be one CID.from_bytes takes (a known prefix, then the 32-byte
    # digest), checked without building one object per CID.
    refs = [t for t in rights if t is not None]
    if left is not None:
        refs.append(left)
    if not (
        _CID_PREFIXES.issuperset(map(_prefix, vals))
        and _CID_PREFIXES.issuperset(map(_prefix, refs))
    ):
        raise InvalidCommit(f"tree node {cid}: {_NOT_A_CID}")
    try:
        keys: list[bytes] = []
        append = keys.append
        if entries and entries[0].p != 0:
            raise DecodeError("the first entry of a node has prefix length 0")
        prev = b""
        for entry in entries:
            p = entry.p
            k = entry.k
            if p:
                if p > len(prev) or p < 0:
                    raise DecodeError("tree entry has a bad prefix length or key")
                key = prev[:p] + k
            else:
                key = k
            # The prefix must be the longest shared one: the next bytes must differ.
            if p < len(prev) and k and prev[p] == k[0]:
                raise DecodeError("tree entry prefix is not the longest shared prefix")
            if keys and key <= prev:
                raise DecodeError("tree keys are not strictly increasing")
            append(key)
            prev = key
        if keys and (max(map(len, keys)) > MAX_KEY_LENGTH or not _keys_ok(keys)):
            raise DecodeError("tree key is not '<collection>/<record key>'")
    except DecodeError as e:
        raise InvalidCommit(f"tree node {cid}: {e.message}") from e
    heights = set(map(_height, keys))
    if len(heights) > 1:
        raise InvalidCommit(f"tree node {cid} mixes keys of different heights")
    if keys:
        node_layer = heights.pop()
        if layer is not None and node_layer != layer:
            raise InvalidCommit(f"tree node {cid} holds keys of the wrong height")
    elif layer is not None:
        if left is None:
            raise InvalidCommit(f"tree node {cid} is empty but is not the root")
        node_layer = layer
    elif left is None:
        node_layer = 0  # the empty tree
    else:
        raise InvalidCommit("the root of a tree must not be an entry-less node over a subtree")
    if node_layer == 0 and (left is not None or refs):
        raise InvalidCommit(f"tree node {cid} at layer 0 points to a subtree")
    node = _Node(node_layer, left, tuple(keys), tuple(vals), tuple(rights), cid, block)
    node.entries = data.e
    return node


def _keys_ok(keys: list[bytes]) -> bool:
    """True when every key is ``<collection>/<record key>`` of the key characters:
    checked on all keys at once, at C speed (a regex over them took a tenth of a
    node's decode). Joined by newlines (not a key character), the keys must hold
    nothing but key characters and exactly one "/" each (deleting the others leaves
    one "/" per key between the newlines), and no "/" may start or end a key."""
    joined = b"\n".join(keys)
    return (
        joined.translate(None, _KEY_CHARS_NO_SLASH) == b"/\n" * (len(keys) - 1) + b"/"
        and joined[0] != 0x2F
        and joined[-1] != 0x2F
        and b"\n/" not in joined
        and b"/\n" not in joined
    )


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix: the XOR of the two as integers has its
    highest set bit in the first byte that differs (all at C speed)."""
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (x.bit_length() + 7) // 8


def _encode_node(node: _Node) -> bytes:
    base = node.base
    if base is not None:
        # A loaded node with one subtree replaced (every node on the path above a
        # change): copy its decoded entries and re-point the one gap.
        src, gap = base
        assert src.entries is not None
        entries = src.entries
        if gap == 0:
            left = None if node.left is None else _ref_raw(node.left)
        else:
            left = None if src.left is None else _ref_raw(src.left)
            entries = list(entries)
            old = entries[gap - 1]
            right = node.rights[gap - 1]
            t = None if right is None else _ref_raw(right)
            entries[gap - 1] = _EntryData(old.k, old.p, t, old.v)
        if not src.loaded:
            # Keep no chain of built nodes alive through base (one per commit): this
            # node's own entries now serve a node derived from it.
            node.base = None
        node.entries = entries
        return _ENCODER.encode(_NodeData(entries, left))
    entries = []
    prev = b""
    for key, val, right in zip(node.keys, node.vals, node.rights, strict=True):
        p = _common_prefix(prev, key)
        t = None if right is None else _ref_raw(right)
        entries.append(_EntryData(key[p:], p, t, val))
        prev = key
    left = None if node.left is None else _ref_raw(node.left)
    # Kept, as a loaded node keeps what it decoded: a node derived from this one
    # by replacing one subtree (the path of the next write) copies them.
    node.entries = entries
    # Built here from typed fields in canonical order: the encoding is canonical.
    return _ENCODER.encode(_NodeData(entries, left))


def _ref_raw(ref: _Node | bytes) -> bytes:
    """The binary CID of a subtree."""
    if isinstance(ref, bytes):
        return ref
    return _node_cid(ref).to_bytes()


def _node_raw(node: _Node) -> bytes:
    return _node_cid(node).to_bytes()


def _node_cid(node: _Node) -> CID:
    if node._cid is None:
        block = _encode_node(node)
        node._block = block
        node._cid = cid_for_msgpack(block)
    return node._cid


class MST:
    """An immutable Merkle Search Tree. Build with :meth:`empty` or :meth:`load`."""

    __slots__ = ("_gen", "_lifted", "_loader", "_origin", "_root", "_writes")

    def __init__(
        self,
        loader: _Loader,
        root: _Node,
        origin: MST | None = None,
        writes: int = 0,
        lifted: bool = False,
        gen: int = 0,
    ):
        self._loader = loader
        self._root = root
        # Generations: a loaded or empty tree is 0, each write one more (see
        # new_blocks).
        self._gen = gen
        # Lineage, for verify_against: the tree this one was written from (None: it
        # was loaded or made empty), how many writes since, and whether a delete
        # lifted a subtree to the top (reading it in a wider range than before).
        self._origin = origin
        self._writes = writes
        self._lifted = lifted

    def _derived(self, root: _Node, lifted: bool = False) -> MST:
        origin = self if self._origin is None else self._origin  # (not `or`: __len__ walks)
        return MST(
            self._loader, root, origin, self._writes + 1, self._lifted or lifted, self._gen + 1
        )

    # -- construction ------------------------------------------------------------
    @classmethod
    def empty(cls, source: BlockSource | None = None) -> MST:
        return cls(_Loader(source or MemoryBlockStore()), _Node(0, None, (), (), ()))

    @classmethod
    def load(cls, source: BlockSource, root: CID) -> MST:
        loader = _Loader(source)
        return cls(loader, loader.load(root.to_bytes(), None))

    @property
    def source(self) -> BlockSource:
        """Where this tree reads the nodes it has not built itself."""
        return self._loader.source

    # -- reading -----------------------------------------------------------------
    def root(self) -> CID:
        """The root CID (computing the CIDs of nodes built since loading)."""
        return _node_cid(self._root)

    def _child(self, ref: Ref, layer: int, lo: bytes, hi: bytes) -> _Node | None:
        """The subtree ``ref`` on ``layer``, whose keys must all lie strictly between
        ``lo`` and ``hi`` (the keys around it above; :data:`_LO`/:data:`_HI` for open
        ends). Checked on every read from the block source, cache hits included: a
        cached node (or an entry-less node shared by two gaps) may sit in another
        range here."""
        if ref is None or isinstance(ref, _Node):
            # Built here (or loaded, checked then, and placed by this module's own
            # writes): only what comes from a block source needs the check.
            return ref
        node = self._loader.load(ref, layer)
        keys = node.keys
        if keys and (keys[0] <= lo or keys[-1] >= hi):
            raise InvalidCommit(f"tree node {_cid(ref)} holds a key outside its subtree's range")
        return node

    def get(self, key: str) -> CID | None:
        """The value stored under ``key``, or None."""
        k = validate_key(key)
        node: _Node | None = self._root
        lo, hi = _LO, _HI
        while node is not None:
            keys = node.keys
            i = bisect.bisect_left(keys, k)
            if i < len(keys):
                if keys[i] == k:
                    return _cid(node.vals[i])
                hi = keys[i]
            if node.layer == 0:
                return None
            if i:
                lo = keys[i - 1]
                ref = node.rights[i - 1]
            else:
                ref = node.left
            node = self._child(ref, node.layer - 1, lo, hi)
        return None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def items(self, *, after: str | None = None, prefix: str = "") -> Iterator[tuple[str, CID]]:
        """All (key, value) pairs in key order; ``after`` starts past a key,
        ``prefix`` keeps only keys that start with it (e.g. ``"app.bsky.feed.post/"``)."""
        lo = (after or "").encode("utf-8")
        start = max(lo, prefix.encode("utf-8"))
        pre = prefix.encode("utf-8")
        for key, val in self._walk(self._root, start, after is not None, _LO, _HI):
            if pre and not key.startswith(pre):
                if key > pre:
                    return
                continue
            yield key.decode("ascii"), val

    def _walk(
        self, node: _Node, start: bytes, exclusive: bool, lo: bytes, hi: bytes
    ) -> Iterator[tuple[bytes, CID]]:
        keys = node.keys
        n = len(keys)
        i = bisect.bisect_left(keys, start) if start else 0
        sub_layer = node.layer - 1
        if node.layer > 0:
            ref = node.left if i == 0 else node.rights[i - 1]
            child = self._child(ref, sub_layer, keys[i - 1] if i else lo, keys[i] if i < n else hi)
            if child is not None:
                yield from self._walk(
                    child, start, exclusive, keys[i - 1] if i else lo, keys[i] if i < n else hi
                )
        for j in range(i, n):
            key = keys[j]
            if not (exclusive and key == start):
                yield key, _cid(node.vals[j])
            if node.layer > 0:
                c_hi = keys[j + 1] if j + 1 < n else hi
                child = self._child(node.rights[j], sub_layer, key, c_hi)
                if child is not None:
                    yield from self._walk(child, b"", False, key, c_hi)

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    # -- writing -----------------------------------------------------------------
    def set(self, key: str, value: CID) -> MST:
        """Return a tree with ``key`` mapped to ``value`` (insert or replace)."""
        k = validate_key(key)
        h = key_height(k)
        raw = value.to_bytes()
        root = self._root
        if h > root.layer:
            # The key starts a new top layer: everything splits around it.
            lo, hi = self._split(root, k, _LO, _HI) if not root.is_empty() else (None, None)
            lo = _lift(lo, root.layer, h - 1)
            hi = _lift(hi, root.layer, h - 1)
            new_root = _Node(h, lo, (k,), (raw,), (hi,))
        else:
            new_root = self._insert(root, k, h, raw, _LO, _HI)
        return self._derived(new_root)

    def _insert(self, node: _Node, k: bytes, h: int, value: bytes, lo: bytes, hi: bytes) -> _Node:
        keys = node.keys
        i = bisect.bisect_left(keys, k)
        if i < len(keys) and keys[i] == k:
            if node.vals[i] == value:
                return node
            vals = (*node.vals[:i], value, *node.vals[i + 1 :])
            return _Node(node.layer, node.left, keys, vals, node.rights)
        sub_layer = node.layer - 1
        ref = node.left if i == 0 else node.rights[i - 1]
        c_lo = keys[i - 1] if i else lo
        c_hi = keys[i] if i < len(keys) else hi
        if h == node.layer:
            child = self._child(ref, sub_layer, c_lo, c_hi)
            below, above = self._split(child, k, c_lo, c_hi) if child is not None else (None, None)
            keys = (*node.keys[:i], k, *node.keys[i:])
            vals = (*node.vals[:i], value, *node.vals[i:])
            if i == 0:
                return _Node(node.layer, below, keys, vals, (above, *node.rights))
            rights = (*node.rights[: i - 1], below, above, *node.rights[i:])
            return _Node(node.layer, node.left, keys, vals, rights)
        # h < node.layer: descend into the gap the key falls in.
        child = self._child(ref, sub_layer, c_lo, c_hi)
        if child is None:
            child = _Node(sub_layer, None, (), (), ())
        new_child = self._insert(child, k, h, value, c_lo, c_hi)
        return _replace_ref(node, i, new_child)

    def _split(
        self, node: _Node | None, k: bytes, lo: bytes, hi: bytes
    ) -> tuple[_Node | None, _Node | None]:
        """Split a subtree (keys between ``lo`` and ``hi``) into the parts below and
        above ``k`` (not in the tree)."""
        if node is None:
            return None, None
        keys = node.keys
        i = bisect.bisect_left(keys, k)
        sub_layer = node.layer - 1
        ref = node.left if i == 0 else node.rights[i - 1]
        if node.layer:
            c_lo = keys[i - 1] if i else lo
            c_hi = keys[i] if i < len(keys) else hi
            lo_c, hi_c = self._split(self._child(ref, sub_layer, c_lo, c_hi), k, c_lo, c_hi)
        else:
            lo_c, hi_c = None, None
        if i == 0:
            below = _Node(node.layer, lo_c, (), (), ())
        else:
            rights = (*node.rights[: i - 1], lo_c)
            below = _Node(node.layer, node.left, node.keys[:i], node.vals[:i], rights)
        above = _Node(node.layer, hi_c, node.keys[i:], node.vals[i:], node.rights[i:])
        return _prune(below), _prune(above)

    def delete(self, key: str) -> MST:
        """Return a tree without ``key``. Raises RepoError if it is absent."""
        k = validate_key(key)
        new_root = self._delete(self._root, k, _LO, _HI)
        if new_root is None:
            return self._derived(_Node(0, None, (), (), ()))
        # Trim entry-less layers at the top: the root holds the highest key.
        lifted = False
        while not new_root.keys and new_root.left is not None:
            child = self._child(new_root.left, new_root.layer - 1, _LO, _HI)
            assert child is not None
            new_root = child
            lifted = True
        return self._derived(new_root, lifted)

    def _delete(self, node: _Node, k: bytes, lo: bytes, hi: bytes) -> _Node | None:
        keys = node.keys
        i = bisect.bisect_left(keys, k)
        sub_layer = node.layer - 1
        c_lo = keys[i - 1] if i else lo
        if i < len(keys) and keys[i] == k:
            if node.layer:
                left_ref = node.left if i == 0 else node.rights[i - 1]
                c_hi = keys[i + 1] if i + 1 < len(keys) else hi
                merged = self._merge(
                    self._child(left_ref, sub_layer, c_lo, k),
                    self._child(node.rights[i], sub_layer, k, c_hi),
                    c_lo,
                    k,
                    c_hi,
                )
            else:
                merged = None
            keys = node.keys[:i] + node.keys[i + 1 :]
            vals = node.vals[:i] + node.vals[i + 1 :]
            if i == 0:
                out = _Node(node.layer, merged, keys, vals, node.rights[1:])
            else:
                rights = (*node.rights[: i - 1], merged, *node.rights[i + 1 :])
                out = _Node(node.layer, node.left, keys, vals, rights)
            return _prune(out)
        if node.layer == 0:
            raise RepoError(f"no record at {k.decode('ascii')}", error="RecordNotFound")
        ref = node.left if i == 0 else node.rights[i - 1]
        c_hi = keys[i] if i < len(keys) else hi
        child = self._child(ref, sub_layer, c_lo, c_hi)
        if child is None:
            raise RepoError(f"no record at {k.decode('ascii')}", error="RecordNotFound")
        return _prune(_replace_ref(node, i, self._delete(child, k, c_lo, c_hi)))

    def _merge(
        self, a: _Node | None, b: _Node | None, lo: bytes, mid: bytes, hi: bytes
    ) -> _Node | None:
        """Join two adjacent subtrees of the same layer: ``a`` holds keys between
        ``lo`` and ``mid``, ``b`` keys between ``mid`` and ``hi``."""
        if a is None:
            return b
        if b is None:
            return a
        sub_layer = a.layer - 1
        if a.layer:
            a_last = a.rights[-1] if a.keys else a.left
            a_lo = a.keys[-1] if a.keys else lo
            b_hi = b.keys[0] if b.keys else hi
            joint = self._merge(
                self._child(a_last, sub_layer, a_lo, mid),
                self._child(b.left, sub_layer, mid, b_hi),
                a_lo,
                mid,
                b_hi,
            )
        else:
            joint = None
        if a.keys:
            return _Node(
                a.layer,
                a.left,
                a.keys + b.keys,
                a.vals + b.vals,
                (*a.rights[:-1], joint, *b.rights),
            )
        return _Node(a.layer, joint, b.keys, b.vals, b.rights)

    def apply(self, writes: Iterable[tuple[str, CID | None]]) -> MST:
        """Set (value) or delete (None) several keys in order."""
        tree = self
        for key, value in writes:
            tree = tree.delete(key) if value is None else tree.set(key, value)
        return tree

    # -- blocks ------------------------------------------------------------------
    def new_blocks(self, since: MST | None = None) -> dict[CID, bytes]:
        """Blocks of every node built since the tree was loaded (or made empty) and
        still reachable.

        With ``since``, a tree this one was written from (by any number of
        ``set``/``delete``) whose new blocks were taken before (as each commit of a
        repo takes its own), only the nodes built after ``since``: what this tree
        holds that ``since`` does not. Only those nodes are visited, so the cost is
        that of the writes in between, not of every write since loading (a repo kept
        in memory across commits would otherwise hand back, and store again, every
        node any earlier commit built).

        Each call stamps the nodes it returns with this tree's generation; a node
        a tree of generation ``since``'s or below handed out is one ``since`` holds
        (a node built on one branch of a lineage is never in another, and one that
        leaves a tree never comes back). A node of ``since`` that no call stamped is
        returned again: more than needed, never less."""
        floor = -1
        if since is not None:
            if since._loader is not self._loader or since._gen > self._gen:
                raise LocalProtocolError("new_blocks(since): not a tree this one was written from")
            floor = since._gen
        gen = self._gen
        out: dict[CID, bytes] = {}
        stack: list[_Node] = [self._root]
        while stack:
            node = stack.pop()
            if node.loaded or -1 < node.gen <= floor:
                continue
            if node.gen == -1:
                node.gen = gen
            cid = _node_cid(node)
            assert node._block is not None
            out[cid] = node._block
            for ref in (node.left, *node.rights):
                if isinstance(ref, _Node):
                    stack.append(ref)
        return out

    def all_blocks(self) -> Iterator[tuple[CID, bytes]]:
        """Every node block of the tree, root first (for an export)."""
        stack: list[tuple[_Node, bytes, bytes]] = [(self._root, _LO, _HI)]
        while stack:
            node, lo, hi = stack.pop()
            cid = _node_cid(node)
            assert node._block is not None
            yield cid, node._block
            sub = node.layer - 1
            bounds = (lo, *node.keys, hi)
            refs = (node.left, *node.rights)
            for j in range(len(refs) - 1, -1, -1):
                child = self._child(refs[j], sub, bounds[j], bounds[j + 1])
                if child is not None:
                    stack.append((child, bounds[j], bounds[j + 1]))

    def verify_structure(self) -> int:
        """Walk the whole tree checking that it is the canonical tree for its keys
        (every key in the right subtree, no empty nodes where none may be). Returns
        the number of keys. Raises InvalidCommit (or MissingBlock)."""
        return self._verify(self._root, _LO, _HI, is_root=True)

    def verify_against(self, base: MST) -> None:
        """Check that this tree is canonical, given that ``base`` is (a tree this
        node holds, or one rebuilt from it): read every part of this tree that is
        not a subtree of ``base`` found in a range that contains its range in
        ``base``, checking each node where it sits here. Only the nodes on the way to
        what differs are read, so it works on the partial tree of a commit event.

        A commit event needs this on top of its inversion: inverting reads some
        nodes of the new tree only after it has moved them (deleting a key lifts the
        subtree below it), so their range in the new tree is never checked there.
        Raises InvalidCommit (or MissingBlock).

        Shortcut: when ``base`` is this freshly loaded tree after exactly one write
        that lifted nothing (a commit event of one op), that write already read
        every node it touched here in its range here: deleting reads the path and
        the two seams it merges, inserting the path and the seam it splits, each
        from this root with this tree's ranges; and every subtree it did not read
        keeps, in ``base``, the range it has here (it stays between the same keys),
        where ``base`` being canonical puts its keys. Nothing is left to read."""
        if base._origin is self and self._origin is None and base._writes == 1 and not base._lifted:
            return
        ra, rb = base._root, self._root
        if ra.layer != rb.layer:
            _diff(_Cursor(base, ra), _Cursor(self, rb))
        else:
            self._check_against(base, ra, rb, ra.layer, _LO, _HI, _LO, _HI)

    def _check_against(
        self,
        base: MST,
        ra: _Node | bytes,
        rb: _Node | bytes,
        layer: int,
        a_lo: bytes,
        a_hi: bytes,
        b_lo: bytes,
        b_hi: bytes,
    ) -> None:
        """verify_against for one pair of subtrees on one layer: descend pair by
        pair while the two nodes hold the same keys (a change further down), and
        hand anything else to the diff walk."""
        if a_lo >= b_lo and a_hi <= b_hi and (ra is rb or _ref_raw(ra) == _ref_raw(rb)):
            return
        na = base._child(ra, layer, a_lo, a_hi)
        nb = self._child(rb, layer, b_lo, b_hi)
        assert na is not None
        assert nb is not None
        if not layer:
            return  # nb's keys were checked by _child, and it has no subtrees
        keys = na.keys
        if keys != nb.keys:
            if not self._check_one_key_apart(base, na, nb, a_lo, a_hi, b_lo, b_hi):
                _diff(_Cursor(base, na, a_lo, a_hi), _Cursor(self, nb, b_lo, b_hi))
            return
        sub = layer - 1
        n = len(keys)
        origin = na.base
        gaps: Iterable[int]
        if origin is not None and origin[0] is nb:
            # na is nb with one subtree replaced (how inverting an op rebuilds the
            # path): only that gap can differ, and the outer ones if the ranges do.
            gaps = sorted(
                {origin[1], *((0,) if a_lo < b_lo else ()), *((n,) if a_hi > b_hi else ())}
            )
        else:
            gaps = range(n + 1)
        for j in gaps:
            ca = na.left if j == 0 else na.rights[j - 1]
            cb = nb.left if j == 0 else nb.rights[j - 1]
            if cb is None or (ca is cb and 0 < j < n):
                continue  # nothing here, or the same subtree between the same keys
            lo_a = keys[j - 1] if j else a_lo
            hi_a = keys[j] if j < n else a_hi
            lo_b = keys[j - 1] if j else b_lo
            hi_b = keys[j] if j < n else b_hi
            if ca is None:
                # Only here: every key of it is new, read it all.
                _diff(_Cursor(base, None, lo_a, hi_a), _Cursor(self, cb, lo_b, hi_b, sub))
            else:
                self._check_against(base, ca, cb, sub, lo_a, hi_a, lo_b, hi_b)

    def _check_one_key_apart(
        self,
        base: MST,
        na: _Node,
        nb: _Node,
        a_lo: bytes,
        a_hi: bytes,
        b_lo: bytes,
        b_hi: bytes,
    ) -> bool:
        """verify_against for two nodes of one layer whose keys differ by one key
        (inverting a create or a delete of a key of this layer): the subtrees on
        either side of that key are diffed against the one subtree the other node
        has there; every other subtree is paired with its twin. False if the keys
        differ otherwise."""
        ka, kb = na.keys, nb.keys
        if len(kb) == len(ka) + 1:
            more, fewer, extra_in_b = kb, ka, True
        elif len(ka) == len(kb) + 1:
            more, fewer, extra_in_b = ka, kb, False
        else:
            return False
        i = 0
        while i < len(fewer) and fewer[i] == more[i]:
            i += 1
        if fewer[i:] != more[i + 1 :]:
            return False
        sub = na.layer - 1

        def gap(node: _Node, j: int, lo: bytes, hi: bytes) -> tuple[Ref, bytes, bytes]:
            keys = node.keys
            ref = node.left if j == 0 else node.rights[j - 1]
            return ref, keys[j - 1] if j else lo, keys[j] if j < len(keys) else hi

        # Twins: gap j of the node with fewer keys is gap j of the other before the
        # extra key and gap j + 1 after it; its gap i spans the extra key.
        for j in range(len(fewer) + 1):
            if j == i:
                continue
            ja, jb = (j, j if j < i else j + 1) if extra_in_b else (j if j < i else j + 1, j)
            ca, lo_a, hi_a = gap(na, ja, a_lo, a_hi)
            cb, lo_b, hi_b = gap(nb, jb, b_lo, b_hi)
            if cb is None:
                continue
            if ca is None:
                _diff(_Cursor(base, None), _Cursor(self, cb, lo_b, hi_b, sub))
            else:
                self._check_against(base, ca, cb, sub, lo_a, hi_a, lo_b, hi_b)
        # Around the extra key: its two neighbouring subtrees against the one gap.
        one, two = (base, na) if not extra_in_b else (self, nb)
        lone_tree, lone_node, lone_lo, lone_hi = (
            (base, na, a_lo, a_hi) if extra_in_b else (self, nb, b_lo, b_hi)
        )
        ref, lo, hi = gap(lone_node, i, lone_lo, lone_hi)
        lone = _Cursor(lone_tree, ref, lo, hi, sub)
        pair = _Cursor(one, None)
        p_lo, p_hi = (b_lo, b_hi) if extra_in_b else (a_lo, a_hi)
        left, l_lo, l_hi = gap(two, i, p_lo, p_hi)
        right, r_lo, r_hi = gap(two, i + 1, p_lo, p_hi)
        items: list[_Sub | tuple[bytes, bytes]] = []
        if left is not None:
            items.append(_Sub(left, sub, l_lo, l_hi))
        items.append((more[i], two.vals[i]))
        if right is not None:
            items.append(_Sub(right, sub, r_lo, r_hi))
        pair.stack.extend(reversed(items))
        if extra_in_b:
            _diff(lone, pair)
        else:
            _diff(pair, lone)
        return True

    def _verify(self, node: _Node, lo: bytes, hi: bytes, *, is_root: bool) -> int:
        # Key ranges are checked by _child on the way down.
        if not node.keys and not is_root and node.left is None:
            raise InvalidCommit("tree holds an empty node")
        count = len(node.keys)
        if node.layer == 0:
            return count
        sub = node.layer - 1
        bounds = (lo, *node.keys, hi)
        for j, ref in enumerate((node.left, *node.rights)):
            child = self._child(ref, sub, bounds[j], bounds[j + 1])
            if child is not None:
                count += self._verify(child, bounds[j], bounds[j + 1], is_root=False)
        return count

    # -- comparing ---------------------------------------------------------------
    def diff(self, other: MST) -> list[DiffEntry]:
        """What changes from ``self`` to ``other``, in key order.

        ``self`` is trusted to be canonical (a tree this node holds); ``other`` is
        checked as it is read. A subtree with the same CID in both is skipped
        without being read when its key range in ``self`` lies within its range in
        ``other`` (so its keys, in range in ``self``, are in range in ``other``);
        otherwise it is read (in an honest pair only along the edge of a key added
        above it)."""
        return _diff(_Cursor(self, self._root), _Cursor(other, other._root))

    def reloaded(self) -> tuple[MST, dict[CID, bytes]]:
        """This tree as if loaded afresh by its root: a tree of its own lineage whose
        every node is read by CID through its loader as a walk reaches it (key ranges
        checked on the way, as on any load), and the dict that collects the blocks
        of the nodes read, in the order they are read (to build proofs and commit
        events: the blocks a receiver's walk will need).

        Nodes held in memory are taken as they are, not decoded again (this tree is
        trusted: built here, or loaded and checked); only what lies below a node
        never read into memory comes from the tree's source."""
        loader = _MemoryLoader(self)
        return MST(loader, loader.load(self.root().to_bytes(), None)), loader.read

    # -- proofs ------------------------------------------------------------------
    def proof(self, key: str) -> dict[CID, bytes]:
        """The nodes on the path to ``key``: enough to show that the key is in the
        tree with its value, or that it is not."""
        tree, read = self.reloaded()
        tree.get(key)
        return read


def _diff(a: _Cursor, b: _Cursor) -> list[DiffEntry]:
    """The diff walk of :meth:`MST.diff` over two cursors."""
    out: list[DiffEntry] = []
    while True:
        ha, hb = a.head(), b.head()
        if ha is None and hb is None:
            return out
        if ha is None:
            assert hb is not None
            if isinstance(hb, _Sub):
                b.expand()
                continue
            out.append(DiffEntry(hb[0].decode("ascii"), None, _cid(hb[1])))
            b.pop()
            continue
        if hb is None:
            if isinstance(ha, _Sub):
                a.expand()
                continue
            out.append(DiffEntry(ha[0].decode("ascii"), _cid(ha[1]), None))
            a.pop()
            continue
        if isinstance(ha, _Sub) and isinstance(hb, _Sub):
            if ha.layer == hb.layer and ha.lo >= hb.lo and ha.hi <= hb.hi and ha.raw() == hb.raw():
                a.pop()
                b.pop()
            elif ha.layer > hb.layer:
                a.expand()
            elif hb.layer > ha.layer:
                b.expand()
            else:
                _expand_pair(a, b)
            continue
        if isinstance(ha, _Sub):
            a.expand()
            continue
        if isinstance(hb, _Sub):
            b.expand()
            continue
        (ka, va), (kb, vb) = ha, hb
        if ka < kb:
            out.append(DiffEntry(ka.decode("ascii"), _cid(va), None))
            a.pop()
        elif kb < ka:
            out.append(DiffEntry(kb.decode("ascii"), None, _cid(vb)))
            b.pop()
        else:
            if va != vb:
                out.append(DiffEntry(ka.decode("ascii"), _cid(va), _cid(vb)))
            a.pop()
            b.pop()


class _Sub:
    """A pending subtree of a :class:`_Cursor`: where it is, its layer and the key
    range it must hold. Not read until it is expanded (a skipped subtree's block
    need not be at hand)."""

    __slots__ = ("hi", "layer", "lo", "ref")

    def __init__(self, ref: _Node | bytes, layer: int, lo: bytes, hi: bytes):
        self.ref = ref
        self.layer = layer
        self.lo = lo
        self.hi = hi

    def raw(self) -> bytes:
        return _ref_raw(self.ref)


class _Cursor:
    """A stack of pending items (subtrees and leaves) of one tree, in key order."""

    def __init__(
        self,
        tree: MST,
        root: _Node | bytes | None,
        lo: bytes = _LO,
        hi: bytes = _HI,
        layer: int | None = None,
    ):
        """A cursor over the subtree ``root`` (None: nothing), whose keys lie
        between ``lo`` and ``hi``; ``layer`` is needed when ``root`` is a CID."""
        self.tree = tree
        self.stack: list[_Sub | tuple[bytes, bytes]] = []
        if root is not None:
            if isinstance(root, _Node):
                layer = root.layer
            assert layer is not None
            self.stack.append(_Sub(root, layer, lo, hi))

    def head(self) -> _Sub | tuple[bytes, bytes] | None:
        return self.stack[-1] if self.stack else None

    def pop(self) -> None:
        self.stack.pop()

    def take(self) -> tuple[_Node, _Sub]:
        """Pop the subtree at the head and read its node (checking its range)."""
        sub_tree = self.stack.pop()
        assert isinstance(sub_tree, _Sub)
        node = self.tree._child(sub_tree.ref, sub_tree.layer, sub_tree.lo, sub_tree.hi)
        assert node is not None
        return node, sub_tree

    def expand(self) -> None:
        node, sub_tree = self.take()
        lo = sub_tree.lo
        sub = node.layer - 1
        items: list[_Sub | tuple[bytes, bytes]] = []
        his = (*node.keys, sub_tree.hi)
        if node.left is not None:
            items.append(_Sub(node.left, sub, lo, his[0]))
        for j, (key, val, right) in enumerate(zip(node.keys, node.vals, node.rights, strict=True)):
            items.append((key, val))
            if right is not None:
                items.append(_Sub(right, sub, key, his[j + 1]))
        self.stack.extend(reversed(items))

    def push(self, node: _Node, sub_tree: _Sub) -> None:
        """Put back a node taken with :meth:`take`, expanded."""
        self.stack.append(sub_tree)
        self.expand()


def _expand_pair(a: _Cursor, b: _Cursor) -> None:
    """Expand the head subtrees of both cursors (same layer, not skippable). When
    the two nodes hold the same keys (a change further down, the common case),
    push only the entries and subtrees that differ, on both sides at once: what
    is left out is the same in both and in range (``a``'s range within ``b``'s),
    exactly what the diff would pop pair by pair. The keys on either side of a
    pushed subtree are pushed too, so the two streams stay aligned as they would
    be in a full expansion (and no subtree is read that that would not read)."""
    na, sa = a.take()
    nb, sb = b.take()
    keys = na.keys
    if keys != nb.keys:
        a.push(na, sa)
        b.push(nb, sb)
        return
    sub = na.layer - 1
    n = len(keys)
    vals_a, vals_b = na.vals, nb.vals
    refs_a = (na.left, *na.rights)
    refs_b = (nb.left, *nb.rights)
    # Gaps that may differ: refs that are not the same object (the tree a commit's
    # inversion builds shares every untouched ref with the tree it came from), and
    # the two outer gaps when a's range is not within b's. Inner gaps have the same
    # range on both sides (the same keys bound them).
    maybe = [j for j, ra, rb in zip(range(n + 1), refs_a, refs_b, strict=True) if ra is not rb]
    if sa.lo < sb.lo and (not maybe or maybe[0] != 0):
        maybe.insert(0, 0)
    if sa.hi > sb.hi and (not maybe or maybe[-1] != n):
        maybe.append(n)
    gaps = []
    for j in maybe:
        ra, rb = refs_a[j], refs_b[j]
        if ra is None and rb is None:
            continue
        if (
            ra is None
            or rb is None
            or (j == 0 and sa.lo < sb.lo)
            or (j == n and sa.hi > sb.hi)
            or _ref_raw(ra) != _ref_raw(rb)
        ):
            gaps.append(j)
    # Keys to push: those whose values differ, and both keys around each gap.
    key_set = {j - 1 for j in gaps if j}
    key_set.update(j for j in gaps if j < n)
    if vals_a is not vals_b:
        key_set.update(
            j
            for j, va, vb in zip(range(n), vals_a, vals_b, strict=True)
            if va is not vb and va != vb
        )
    gap_set = set(gaps)
    items_a: list[_Sub | tuple[bytes, bytes]] = []
    items_b: list[_Sub | tuple[bytes, bytes]] = []
    for j in sorted(gap_set | key_set):
        if j in gap_set:
            ra, rb = refs_a[j], refs_b[j]
            if ra is not None:
                items_a.append(
                    _Sub(ra, sub, keys[j - 1] if j else sa.lo, keys[j] if j < n else sa.hi)
                )
            if rb is not None:
                items_b.append(
                    _Sub(rb, sub, keys[j - 1] if j else sb.lo, keys[j] if j < n else sb.hi)
                )
        if j in key_set:
            items_a.append((keys[j], vals_a[j]))
            items_b.append((keys[j], vals_b[j]))
    a.stack.extend(reversed(items_a))
    b.stack.extend(reversed(items_b))


def _prune(node: _Node) -> _Node | None:
    return None if node.is_empty() else node


def _lift(node: _Node | None, layer: int, target: int) -> _Node | None:
    """Wrap a subtree in entry-less nodes until it sits at ``target`` layer."""
    if node is None:
        return None
    while layer < target:
        layer += 1
        node = _Node(layer, node, (), (), ())
    return node


def _replace_ref(node: _Node, i: int, child: _Node | None) -> _Node:
    """``node`` with the subtree in gap ``i`` (0 = left) replaced."""
    if i == 0:
        out = _Node(node.layer, child, node.keys, node.vals, node.rights)
    else:
        rights = (*node.rights[: i - 1], child, *node.rights[i:])
        out = _Node(node.layer, node.left, node.keys, node.vals, rights)
    if node.entries is not None:
        out.base = (node, i)
    return out
