"""skyfed's sans-IO protocol core.

Everything that decides whether data is valid lives here: identifiers, canonical
msgpack, CIDs, keys, records, Merkle Search Tree repositories, signed commits,
identity logs, labels and negentropy. ``protocol.atproto`` verifies atproto's own
formats (DAG-CBOR, k256/p256, Sync 1.1 commit events) for following atproto hosts.
No asyncio, no sockets, no files, no clock and no randomness of its own: time and
entropy are passed in by the caller.
"""
