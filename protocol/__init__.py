"""skyfed's sans-IO protocol core.

Everything that decides whether data is valid lives here: identifiers, canonical
msgpack, CIDs, keys, records, Merkle Search Tree repositories, signed commits,
identity logs, labels and negentropy. No asyncio, no sockets, no files, no clock and
no randomness of its own: time and entropy are passed in by the caller.
"""
