"""The HTTP face: the aiohttp application, XRPC handlers, auth, rate limits, firehose, web pages."""
