"""skyfed's IO shell: storage, the HTTP/WebSocket server, peers, views and the CLI."""

#: The node software's version, as /xrpc/_health and skyfed.node.getInfo report it.
VERSION = "0.1.0"
