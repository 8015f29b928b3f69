"""Peers: links, gossip, reconciliation, ingest, the dial policy."""
