"""Verifying real atproto data: the sans-IO half of following atproto PDSes and relays.

skyfed's own protocol differs from atproto on purpose (ed25519, canonical msgpack,
``did:skyfed``); this package reads atproto's wire formats as they are, strictly,
so a skyfed node can follow atproto hosts (issue #17). Nothing here does IO: bytes
and parsed JSON in, typed values (or a :class:`~protocol.errors.RemoteProtocolError`)
out. One module, one job:

* :mod:`.dagcbor` -- DAG-CBOR with the atproto data model's strictness, its JSON form.
* :mod:`.cid` -- CIDv1 (dag-cbor / raw, sha-256), binary and base32.
* :mod:`.crypto` -- k256 / p256 multikeys and ``did:key``, low-S ECDSA verification.
* :mod:`.car` -- CAR v1 reading with every block checked against its CID.
* :mod:`.mst` -- the Merkle Search Tree: heights, node format, build, load, edit.
* :mod:`.commit` -- signed commits (v3) and Sync 1.1 commit-event verification.
* :mod:`.firehose` -- ``subscribeRepos`` frames: header + body, every message type.
* :mod:`.diddoc` -- a DID document to its signing key, PDS endpoint and handle.

``docs/atproto-bridge.md`` describes what is checked and how it differs from skyfed.
"""
