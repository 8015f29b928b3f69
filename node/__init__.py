"""skyfed's IO shell: storage, the HTTP/WebSocket server, peers, views and the CLI."""
