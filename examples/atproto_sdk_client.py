#!/usr/bin/env python3
"""Drive a skyfed node with the stock atproto Python SDK (``pip install atproto``).

    .venv/bin/python examples/atproto_sdk_client.py http://127.0.0.1:2583
    .venv/bin/python examples/atproto_sdk_client.py http://127.0.0.1:2583 --handle me.skyfed.test \\
        --password 'a long password'

Nothing here is skyfed code: it is the same ``atproto.Client`` that talks to
bsky.social, given the node's URL. Without ``--handle`` it makes a fresh account on
one of the node's handle domains; with one it logs in, and makes the account first if
the node does not know the handle. Then it posts, replies to the post, likes it, and
reads it all back through the SDK's typed models.
"""

from __future__ import annotations

import argparse
import secrets
import sys

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)
from atproto import Client, models
from atproto_client.exceptions import AtProtocolError, NetworkError, RequestErrorBase
from atproto_client.models.common import XrpcError


def sign_in(sdk: Client, handle: str | None, password: str | None) -> None:
    """Log in as ``handle``, creating the account first when the node lacks it."""
    if handle is None:
        server = sdk.com.atproto.server.describe_server()
        handle = f"sdk-{secrets.token_hex(3)}{server.available_user_domains[0]}"
    password = password or secrets.token_urlsafe(16)
    try:
        sdk.resolve_handle(handle)
    except AtProtocolError:
        sdk.com.atproto.server.create_account(
            models.ComAtprotoServerCreateAccount.Data(handle=handle, password=password)
        )
        print(f"created @{handle}")
    sdk.login(handle, password)  # createSession, then app.bsky.actor.getProfile


def main(url: str, handle: str | None, password: str | None) -> int:
    sdk = Client(base_url=url)
    sign_in(sdk, handle, password)
    assert sdk.me is not None
    print(f"logged in as @{sdk.me.handle} ({sdk.me.did})")

    post = sdk.send_post("Hello from the stock atproto SDK, talking to a skyfed node.")
    ref = models.create_strong_ref(post)
    sdk.send_post(
        "…and a reply, also sent by the SDK.",
        reply_to=models.AppBskyFeedPost.ReplyRef(root=ref, parent=ref),
    )
    sdk.like(post.uri, post.cid)

    thread = sdk.get_post_thread(post.uri).thread
    if not isinstance(thread, models.AppBskyFeedDefs.ThreadViewPost):
        print(f"error: the thread came back as {type(thread).__name__}", file=sys.stderr)
        return 1
    root = thread.post
    print(f"post {root.uri}")
    print(f"  {root.record.text}")
    print(f"  likes: {root.like_count}, replies: {root.reply_count}")
    for child in thread.replies or []:
        if isinstance(child, models.AppBskyFeedDefs.ThreadViewPost):
            print(f"  ↳ @{child.post.author.handle}: {child.post.record.text}")

    feed = sdk.get_author_feed(sdk.me.did, limit=10)
    print(f"author feed: {len(feed.feed)} posts")
    profile = sdk.get_profile(sdk.me.did)
    counts = f"{profile.posts_count} posts, {profile.followers_count} followers"
    print(f"profile: @{profile.handle}, {counts}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node_url", help="the node's URL, e.g. http://127.0.0.1:2583")
    parser.add_argument("--handle", help="log in as this handle (made if the node lacks it)")
    parser.add_argument("--password", help="its password (random for a fresh account)")
    args = parser.parse_args()
    if args.handle and not args.password:
        parser.error("--handle needs --password")
    try:
        sys.exit(main(args.node_url, args.handle, args.password))
    except NetworkError as e:
        print(f"error: cannot reach {args.node_url}: {e.__cause__ or e}", file=sys.stderr)
        sys.exit(1)
    except RequestErrorBase as e:
        answer = e.response
        if answer is None:
            print(f"error: {e!r}", file=sys.stderr)
        elif isinstance(answer.content, XrpcError):
            error, message = answer.content.error, answer.content.message
            print(f"error: {answer.status_code} {error}: {message}", file=sys.stderr)
        else:
            print(f"error: HTTP {answer.status_code}", file=sys.stderr)
        sys.exit(1)
