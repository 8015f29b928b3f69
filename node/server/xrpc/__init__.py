"""The XRPC handlers, one module per lexicon namespace, each with its ``ROUTES``;
server/app.py gathers them (this package imports nothing itself, so a service such as
portability can use the handler helpers in ``base`` without a cycle)."""
