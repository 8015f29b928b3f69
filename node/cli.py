"""The ``skyfed`` command line.

    skyfed node init  [--data-dir DIR] [--config FILE] [--port P] [--peer URL ...] [--update]
    skyfed node start [--config FILE] [--data-dir DIR] [--host H] [--port P] [--public-url URL]
                      [--peer URL ...] [--reconcile-interval SECONDS] [--log-format text|json]
                      [--dial-policy public|private|loopback] [--dial-allow CIDR ...]

    skyfed account create HANDLE [--node URL] [--password-stdin] [--no-rotation-key]
    skyfed account export [HANDLE] [--out PREFIX]     skyfed account import FILE
    skyfed account migrate --to URL [--without-old-node] [--car FILE] [--log FILE]
    skyfed account rotate-key [--node-signs]
    skyfed login HANDLE [--node URL] [--password-stdin]      skyfed logout
    skyfed accounts [list] | accounts use HANDLE       skyfed --as HANDLE COMMAND ...
    skyfed post "text" [--reply URI] [--quote URI] [--lang LANG]
    skyfed like URI | repost URI | delete URI | verify URI
    skyfed follow HANDLE | block HANDLE
    skyfed feed [--node URL] [--author HANDLE | --latest | --generator URI] [--limit N] [--cursor C]
    skyfed thread URI        skyfed profile [HANDLE]        skyfed tail [--cursor N]
    skyfed profile set [--display-name NAME] [--description TEXT]

    skyfed labelers list | add DID [--redact] | remove DID | set LABEL hide|warn|show
    skyfed label URI VALUE [--neg]       skyfed mute HANDLE | unmute HANDLE | mutes
    skyfed report URI|HANDLE [--reason-type spam] [--reason TEXT] [--labeler HANDLE]
    skyfed admin takedown HANDLE --reason TEXT [--scope host,serve,carry]
    skyfed admin reverse HANDLE --reason TEXT        skyfed admin list [--did DID]
    skyfed admin reports [--labeler DID] [--resolved]  skyfed admin resolve ID --note TEXT

Every client command takes ``--node URL`` (default: the node you logged in at, else
``$SKYFED_NODE``, else http://127.0.0.1:2583; ``127.0.0.1:2583`` without a scheme
means http for a loopback address), ``--json`` (raw JSON for scripts) and ``--as
HANDLE`` (act as another of your saved accounts, without switching to it).

The current session (node URL, handle, DID and tokens; never the password) is kept in
``credentials.json`` in the user's config directory (``$SKYFED_CONFIG_DIR``
overrides it), and every session you logged in to in ``accounts.json`` beside it,
both readable by the user alone (mode 0600). ``account create`` and ``login`` make
the new account current and keep the others (``skyfed accounts`` lists them,
``skyfed accounts use HANDLE`` switches). Tokens are sent only to the node that
issued them: pointed at another node, commands read anonymously. The rotation keys
``account create`` makes (one per DID, outranking the node's) are kept beside them
in ``rotation_keys.json``, also 0600.

Errors are one clear line on stderr and exit status 1, never a traceback; usage
errors exit 2.

A node holds a lock on its data dir while it runs (node/datalock.py): a second
``node start`` on it fails with "in use by pid N". A start that fails (the port is
taken) removes what it created. ``node init`` writes the config file with a random
``admin_token`` (mode 0600); run again, it reports each flag as kept or ignored, or
with ``--update`` writes them. The node logs to stderr (node/logs.py): key=value text,
or one JSON object a line with ``--log-format json``; ``-v`` adds debug lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import NodeConfig, describe_settings, load_config, load_or_create_secrets
from .datadir import NODE_UMASK, tighten
from .logs import LOG_FORMATS

__all__ = ["main"]

DEFAULT_NODE = "http://127.0.0.1:2583"
CREDENTIALS_FILE = "credentials.json"
ACCOUNTS_FILE = "accounts.json"
#: How many DID -> handle answers ``skyfed tail`` remembers (then it starts afresh).
TAIL_HANDLE_CACHE = 10_000
#: Seconds to wait for a node to accept the connection before saying it is unreachable.
CONNECT_TIMEOUT = 10.0


def _node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file with node settings")
    p.add_argument("--data-dir", type=Path, help="where the node keeps its database and keys")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 2583; 0 picks a free one)")
    p.add_argument("--public-url", help="URL clients reach this node at")
    p.add_argument(
        "--peer",
        action="append",
        dest="peers",
        metavar="URL",
        help="a peer node to keep a link to (repeatable)",
    )
    p.add_argument(
        "--atproto-source",
        action="append",
        dest="atproto_sources",
        metavar="URL",
        help="an atproto PDS or relay to follow: its posts are verified and shown "
        "(repeatable; docs/atproto-bridge.md)",
    )
    p.add_argument("--plc-directory", metavar="URL", help="PLC directory for did:plc")
    p.add_argument(
        "--dial-policy",
        choices=("public", "private", "loopback"),
        help="which addresses learned from peers may be dialled: public only (default), "
        "also private ranges, or also loopback (a local test network)",
    )
    p.add_argument(
        "--dial-allow",
        action="append",
        dest="dial_allow",
        metavar="CIDR",
        help="a network that may be dialled whatever --dial-policy says (repeatable)",
    )
    p.add_argument(
        "--reconcile-interval",
        type=float,
        help="seconds between negentropy rounds with each peer (default 30)",
    )
    p.add_argument(
        "--handle-domain",
        action="append",
        dest="handle_domains",
        help="handle suffix accounts may take here (repeatable; default .skyfed.test)",
    )
    p.add_argument(
        "--memory-ceiling-mb",
        type=int,
        help="the memory (MiB) this node's bounds on buffers, queues and streams are "
        "sized to stay under (default 1536; the bounds and their sum are logged at start; "
        "see docs/security.md, 'Memory bounds')",
    )


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_config(
        args.config,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        handle_domains=args.handle_domains,
        peers=args.peers,
        reconcile_interval=args.reconcile_interval,
        memory_ceiling_mb=args.memory_ceiling_mb,
        dial_policy=args.dial_policy,
        dial_allow=args.dial_allow,
        atproto_sources=args.atproto_sources,
        plc_directory=args.plc_directory,
    )


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--node",
        metavar="URL",
        help="the node to talk to (default: where you logged in, else $SKYFED_NODE, "
        f"else {DEFAULT_NODE})",
    )
    common.add_argument("--json", action="store_true", help="print raw JSON (for scripts)")
    common.add_argument(
        "--as",
        dest="as_account",
        metavar="HANDLE",
        default=argparse.SUPPRESS,  # keeps a `skyfed --as H cmd` given before the command
        help="act as this saved account (see `skyfed accounts`) without switching to it",
    )
    return common


def _password_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )


class _Parser(argparse.ArgumentParser):
    """A parser whose epilog may be a function, called only when help is shown: the
    list of settings ``node start --help`` ends with is read from NodeConfig's source
    (ast, inspect, tomli_w, platformdirs), which a node that starts never needs."""

    def __init__(self, *args: Any, lazy_epilog: Callable[[], str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self._lazy_epilog = lazy_epilog

    def format_help(self) -> str:
        if self._lazy_epilog is not None:
            self.epilog, self._lazy_epilog = self._lazy_epilog(), None
        return super().format_help()


def _settings_epilog() -> str:
    return "settings the --config TOML file takes (name = default):\n" + describe_settings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyfed",
        description="skyfed: a decentralized social network modelled on the AT Protocol.",
        epilog="Run `skyfed COMMAND --help` for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument(
        "--as",
        dest="as_account",
        metavar="HANDLE",
        help="act as this saved account (see `skyfed accounts`) without switching to it",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run and manage a node", description="Run a skyfed node.")
    node_sub = node.add_subparsers(
        dest="node_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    init = node_sub.add_parser(
        "init",
        help="make the node's key, token secret and a config file",
        description="Create the data directory, the node key and a config file.",
    )
    _node_options(init)
    init.add_argument(
        "--update",
        action="store_true",
        help="write the given flags into an existing config file (and add an admin "
        "token if it has none) instead of reporting them as ignored",
    )
    start = node_sub.add_parser(
        "start",
        help="start a node and serve until Ctrl-C",
        description="Start a node; Ctrl-C or SIGTERM shuts it down cleanly. Flags "
        "override the config file, which overrides the defaults.",
        lazy_epilog=_settings_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _node_options(start)
    start.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on stderr as key=value text (default) or one JSON object each",
    )

    common = [_client_options()]

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, parents=common)

    account = sub.add_parser(
        "account",
        help="create, export, import, move or re-key an account",
        description="Manage accounts: create one, export or import its repository, "
        "move it to another node, rotate its signing key.",
    )
    account_sub = account.add_subparsers(dest="account_command", required=True, metavar="ACTION")
    create = account_sub.add_parser(
        "create",
        help="create an account and log in",
        description="Create an account on a node (its home) and keep the session.",
        parents=common,
    )
    create.add_argument("handle", metavar="HANDLE", help="e.g. alice.skyfed.test")
    create.add_argument("--email", help="an email address for the account (optional)")
    create.add_argument(
        "--no-rotation-key",
        action="store_true",
        help="do not make a rotation key of your own (then only the node can move or "
        "re-key the account)",
    )
    _password_options(create)
    _add_portability_commands(account_sub, common)

    login = command("login", "log in and keep the session")
    login.add_argument("handle", metavar="HANDLE", help="your handle (or DID)")
    _password_options(login)
    command("logout", "end the session and forget its tokens")
    accounts = sub.add_parser(
        "accounts",
        help="list your saved accounts, or switch between them",
        description="The accounts you logged in to from here (kept in accounts.json, "
        "0600). `*` marks the current one, which commands act as; `skyfed accounts use "
        "HANDLE` switches, and `--as HANDLE` acts as another for one command.",
        parents=common,
    )
    accounts_sub = accounts.add_subparsers(dest="accounts_command", metavar="ACTION")
    accounts_sub.add_parser("list", help="list your saved accounts (the default)", parents=common)
    use = accounts_sub.add_parser("use", help="make a saved account current", parents=common)
    use.add_argument("handle", metavar="HANDLE", help="its handle or DID")

    post = command("post", "post text (links, @mentions and #tags become facets)")
    post.add_argument("text", metavar="TEXT", help="what to say (at most 300 characters)")
    post.add_argument("--reply", metavar="URI", help="reply to this post (AT-URI)")
    post.add_argument("--quote", metavar="URI", help="quote this post (AT-URI)")
    post.add_argument(
        "--image",
        action="append",
        dest="images",
        metavar="FILE",
        help="attach a PNG, JPEG, GIF or WebP image (repeatable, at most 4)",
    )
    post.add_argument(
        "--alt",
        action="append",
        dest="alts",
        metavar="TEXT",
        help="alt text for the images, in the same order (repeatable)",
    )
    post.add_argument(
        "--lang",
        action="append",
        dest="langs",
        metavar="LANG",
        help="language of the text, e.g. en (repeatable)",
    )
    for name, what in (("like", "like a post"), ("repost", "repost a post")):
        command(name, what).add_argument("uri", metavar="URI", help="the post's AT-URI")
    command("follow", "follow an account").add_argument(
        "actor", metavar="HANDLE", help="handle or DID"
    )
    command("block", "block an account (neither of you sees the other)").add_argument(
        "actor", metavar="HANDLE", help="handle or DID"
    )
    command("delete", "delete one of your records (post, like, follow...)").add_argument(
        "uri", metavar="URI", help="the record's AT-URI"
    )

    feed = command(
        "feed",
        "show posts",
        "Show posts: your timeline when you are logged in at this node, else the "
        "node's latest posts from the whole network.",
    )
    which = feed.add_mutually_exclusive_group()
    which.add_argument("--author", metavar="HANDLE", help="one account's posts and reposts")
    which.add_argument("--latest", action="store_true", help="the network's latest posts")
    which.add_argument(
        "--generator", metavar="URI", help="a custom feed (its feed generator record's AT-URI)"
    )
    feed.add_argument("--limit", type=int, default=30, help="how many (1-100, default 30)")
    feed.add_argument("--cursor", help="continue from here (printed under the last page)")
    feed.add_argument("--reveal", action="store_true", help="show the text of warned posts")

    thread = command("thread", "show a post with its parents and replies")
    thread.add_argument("uri", metavar="URI", help="the post's AT-URI")
    thread.add_argument("--depth", type=int, help="levels of replies (default 6)")
    thread.add_argument("--parent-height", type=int, help="levels of parents (default 80)")
    thread.add_argument("--reveal", action="store_true", help="show the text of warned posts")

    profile = command(
        "profile",
        "show an account's profile, or change yours (profile set ...)",
        "Show an account's profile: `skyfed profile [HANDLE]`. Change yours: `skyfed "
        'profile set --display-name "Alice" --description "..."` (an empty value '
        "removes the field).",
    )
    profile.add_argument(
        "actor", metavar="HANDLE", nargs="?", help="handle or DID (default: you), or `set`"
    )
    changes = profile.add_argument_group("profile set")
    changes.add_argument("--display-name", metavar="NAME", help="the name pages show")
    changes.add_argument("--description", metavar="TEXT", help="your bio")
    changes.add_argument(
        "--avatar", metavar="FILE", type=Path, help="not supported yet (the node keeps no images)"
    )
    follows = command("follows", "list whom an account follows (or its followers)")
    follows.add_argument("actor", metavar="HANDLE", nargs="?", help="handle or DID (default: you)")
    follows.add_argument("--followers", action="store_true", help="list followers instead")

    command(
        "verify",
        "check a record against its author's signed commit",
        "Fetch the record's proof from the node and check it against the author's "
        "signed commit and identity: the node need not be the author's home.",
    ).add_argument("uri", metavar="URI", help="the record's AT-URI")

    tail = command("tail", "follow the node's live firehose (Ctrl-C ends)")
    tail.add_argument("--cursor", type=int, help="replay from this sequence number first")
    _moderation_parsers(sub, common)
    _notification_search_parsers(sub, common)

    # skyfed cluster run|up|down: the multi-node harness (node/cluster/commands.py).
    from .cluster.commands import add_commands as add_cluster_commands

    add_cluster_commands(sub)
    return parser


# The settings ``node init`` writes into a new config file whether or not they were
# given (so the file shows an operator where to change them).
_INIT_SETTINGS = ("data_dir", "host", "port", "handle_domains", "dial_policy")


_FLAGS = {
    "peers": "--peer",
    "atproto_sources": "--atproto-source",
    "handle_domains": "--handle-domain",
}


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The node settings named on the command line, as TOML values."""
    given = {
        "data_dir": args.data_dir,
        "host": args.host,
        "port": args.port,
        "public_url": args.public_url,
        "handle_domains": args.handle_domains,
        "peers": args.peers,
        "reconcile_interval": args.reconcile_interval,
        "atproto_sources": args.atproto_sources,
        "plc_directory": args.plc_directory,
    }
    return {k: _toml_value(v) for k, v in given.items() if v is not None}


def _toml_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.expanduser().resolve())  # the node may start from another cwd
    if isinstance(value, tuple | list):
        return [_toml_value(v) for v in value]
    return value


def _write_config(path: Path, values: dict[str, Any], *, replace: bool) -> None:
    """Write a node's TOML file, readable by its owner alone (it holds the admin token)."""
    import tomli_w

    text = "# skyfed node settings; every setting: `skyfed node start --help`\n"
    text += tomli_w.dumps(values)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir, usually
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if replace:
        os.replace(tmp, path)
    else:
        os.link(tmp, path)  # fails if the file appeared meanwhile
        tmp.unlink()


def _cmd_node_init(args: argparse.Namespace) -> int:
    """Make (or, with --update, change) a node's data dir, secrets and config file.

    On an existing config file, flags that disagree with it are reported as ignored
    unless ``--update`` is given, never dropped silently."""
    import secrets as secrets_module
    import tomllib

    given = _given_settings(args)
    path = args.config
    if path is None:
        data_dir = Path(given.get("data_dir") or load_config(None).data_dir)
        path = data_dir / "skyfed.toml"
    path = path.expanduser().resolve()  # printed to paste from anywhere
    if path.exists():
        with open(path, "rb") as f:
            current = tomllib.load(f)
        cfg = load_config(path)  # refuses unknown settings before anything is changed
        kept, ignored, changed = [], [], []
        for name, value in given.items():
            old = current.get(name)
            if old == value:
                kept.append(f"{name} = {value!r}")
            elif args.update:
                changed.append(f"{name}: {old!r} -> {value!r}")
                current[name] = value
            else:
                flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
                ignored.append(f"{flag} {value!r} (the file has {old!r})")
        if args.update and not current.get("admin_token"):
            current["admin_token"] = secrets_module.token_urlsafe(32)
            changed.append("admin_token: added")
        if changed:
            _write_config(path, current, replace=True)
            cfg = load_config(path)
        print(f"config:     {path} (existing)")
        for line in changed:
            print(f"  updated   {line}")
        for line in kept:
            print(f"  kept      {line}")
        for line in ignored:
            print(f"  ignored   {line}")
        if ignored:
            print("  (run `skyfed node init --update` with the same flags to write them)")
        if not current.get("admin_token"):
            print("  no admin_token: `skyfed node init --update` adds one")
    else:
        cfg = load_config(None, **given)
        values: dict[str, Any] = {n: _toml_value(getattr(cfg, n)) for n in _INIT_SETTINGS}
        values.update(given)
        # A node with a domain of its own shares none: only it confirms handles under
        # it, and no other node's confirmation counts without a pin (docs/security.md,
        # Handles). The default domain is the harness's shared one.
        if "shared_handle_domains" not in given:
            default = cfg.handle_domains == NodeConfig().handle_domains
            values["shared_handle_domains"] = list(cfg.shared_handle_domains) if default else []
        values["admin_token"] = secrets_module.token_urlsafe(32)
        _write_config(path, values, replace=False)
        print(f"config:     {path} (new, mode 0600: it holds the admin token)")
    node_secrets = load_or_create_secrets(cfg.data_dir)
    print(f"node key:   {node_secrets.node_key.did_key()}")
    print(f"data dir:   {cfg.data_dir}")
    print(f"start with: skyfed node start --config {path}")
    print(f"admin with: skyfed admin takedown HANDLE --reason TEXT --node-config {path}")
    return 0


def _release_startup_memory() -> None:
    """Hand the heap that start-up used and freed (imports, migrations, first queries)
    back to the OS. A node process idles at about 2.5 MB less RSS (bench/cluster.py);
    glibc only, and a no-op elsewhere."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: glibc's mallopt parameter numbers (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Allocations this large get their own mapping, returned to the OS when freed.
_MMAP_THRESHOLD = 256 * 1024


def _return_large_buffers() -> None:
    """Make glibc map every allocation of 256 KiB or more on its own, so that it goes
    back to the OS when freed. By default the threshold rises to the largest block
    freed (up to 32 MiB), after which such buffers (a slow reader's backlog, a repo
    chunk) come from the heap and stay in RSS after they are freed: issue 13 saw a
    node keep 2 GB after the sockets that made it grow had closed. glibc only; a
    no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def _start_leftovers(data_dir: Path) -> Callable[[], None]:
    """A function that removes what a node start is about to create in ``data_dir``
    (the directory itself if it is new, else only the new files in it). It is called
    with the data dir's lock held, and never lets that lock go to a second start while
    it still removes anything: the lock file stays in a data dir that existed (as
    :meth:`DataDirLock.release` leaves it), and in a new one it is removed only after
    everything else, and then the directories only if empty, so a start that takes a
    fresh lock file at that moment keeps all it makes."""
    import shutil

    from .datalock import LOCK_FILE

    made: Path | None = None
    before: set[str] = set()
    if not data_dir.exists():
        made = data_dir  # the outermost directory this start will create
        while not made.parent.exists():
            made = made.parent
    else:
        before = {p.name for p in data_dir.iterdir()}

    def clean() -> None:
        if not data_dir.is_dir():
            return
        for p in list(data_dir.iterdir()):
            if p.name in before or p.name == LOCK_FILE:
                continue
            if made is not None and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() or p.is_symlink():
                p.unlink(missing_ok=True)
        if made is None:
            return
        (data_dir / LOCK_FILE).unlink(missing_ok=True)
        d = data_dir
        while True:
            try:
                d.rmdir()  # only if empty: never another start's files
            except OSError:
                return
            if d == made:
                return
            d = d.parent

    return clean


async def _run_node(cfg: NodeConfig) -> None:
    from .datalock import DataDirLock
    from .wiring import Node

    _return_large_buffers()
    clean = _start_leftovers(cfg.data_dir)
    # Locked before the node key is made, so two first starts cannot both make one,
    # and held until the clean-up is done. DataDirInUse (raised here) touches nothing.
    lock = DataDirLock(cfg.data_dir)
    lock.acquire()
    try:
        try:
            node = Node(cfg, lock=lock)
            await node.start()
        except BaseException:
            clean()  # a node that never ran leaves no key or database behind
            raise
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            print(f"skyfed node {node.node_did}", flush=True)
            print(f"listening on {node.url}", flush=True)
            _release_startup_memory()
            await stop.wait()
            print("shutting down", flush=True)
        finally:
            await node.stop()
    finally:
        lock.release()


def _cmd_node_start(args: argparse.Namespace) -> int:
    from .logs import configure_logging

    configure_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    config = _config(args)
    if args.config is not None:
        tighten(config.data_dir, [args.config])  # it may hold the admin token
    # Everything a node process writes is its own: whatever creates a file without a
    # mode (a library, a future feature) still makes it owner-only.
    os.umask(NODE_UMASK)
    # aiohttp's frozenlist in pure Python (its documented switch, read at import):
    # the C++ build maps libstdc++ into the process for nothing else, 1.1 MB of an
    # idle node's RSS; the lists it holds (the app's signal handlers) are frozen at
    # start and only iterated after.
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    asyncio.run(_run_node(config))
    return 0


# -- credentials ---------------------------------------------------------------------


class CliError(Exception):
    """A failure to report as one line (exit status 1)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    node: str
    handle: str
    did: str
    access_jwt: str
    refresh_jwt: str


def config_dir() -> Path:
    """``$SKYFED_CONFIG_DIR``, else the platform's per-user config directory."""
    override = os.environ.get("SKYFED_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("skyfed"))


def _credentials_from(data: Any) -> Credentials:
    return Credentials(*(str(data[f.name]) for f in dataclasses.fields(Credentials)))


def load_credentials() -> Credentials | None:
    """The current session, or None."""
    path = config_dir() / CREDENTIALS_FILE
    try:
        return _credentials_from(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError(f"cannot read {path} ({e}); run `skyfed login HANDLE` again") from e


def load_accounts() -> dict[str, Credentials]:
    """Every saved session by DID (the current one included, also when it was saved
    by a version that kept only one)."""
    path = config_dir() / ACCOUNTS_FILE
    out: dict[str, Credentials] = {}
    try:
        for item in json.loads(path.read_text()):
            creds = _credentials_from(item)
            out[creds.did] = creds
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError(f"cannot read {path} ({e}); fix or delete it, then log in again") from e
    current = load_credentials()
    if current is not None:
        out[current.did] = current
    return out


def _save_accounts(accounts: dict[str, Credentials]) -> None:
    items = [asdict(c) for c in sorted(accounts.values(), key=lambda c: c.handle)]
    _write_private(config_dir() / ACCOUNTS_FILE, json.dumps(items, indent=2) + "\n")


def save_credentials(creds: Credentials, *, current: bool = True) -> None:
    """Keep a session readable by the user alone, atomically (no torn file): in the
    saved accounts and, if ``current``, as the one commands act as."""
    accounts = load_accounts()
    accounts[creds.did] = creds
    _save_accounts(accounts)
    if current:
        _write_private(config_dir() / CREDENTIALS_FILE, json.dumps(asdict(creds), indent=2) + "\n")


def forget_account(did: str) -> None:
    """Drop a saved session (and the current one, if it is that account)."""
    accounts = load_accounts()
    accounts.pop(did, None)
    current = load_credentials()
    if current is not None and current.did == did:
        (config_dir() / CREDENTIALS_FILE).unlink(missing_ok=True)
    _save_accounts(accounts)


def find_account(name: str) -> Credentials:
    """A saved session by handle (with or without ``@``) or DID."""
    wanted = name.removeprefix("@").lower()
    for creds in load_accounts().values():
        if wanted in (creds.handle.lower(), creds.did.lower()):
            return creds
    raise CliError(
        f"no saved account {name}: `skyfed accounts` lists yours; add it with "
        f"`skyfed login {wanted} --node URL`"
    )


# -- client commands -----------------------------------------------------------------


def _same_node(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


class Context:
    """What a client command needs: the node, the saved session, the output."""

    def __init__(self, args: argparse.Namespace):
        from .client import node_url
        from .client.render import Renderer, make_console

        self.args = args
        as_account = getattr(args, "as_account", None)
        current = load_credentials()
        self.creds = find_account(as_account) if as_account else current
        #: Whether the session in use is the current one (else it came from --as, and
        #: refreshed tokens are saved without switching to it). --as naming the
        #: current account is the current one: its tokens must go to credentials.json,
        #: which wins over accounts.json when both hold it.
        self.current = self.creds is current or (
            current is not None and self.creds is not None and self.creds.did == current.did
        )
        try:
            self.url: str = node_url(
                args.node
                or (self.creds.node if self.creds else None)
                or os.environ.get("SKYFED_NODE")
                or DEFAULT_NODE
            )
        except ValueError as e:
            raise CliError(f"--node {e}") from e
        self.console = make_console()
        self.moderation = load_moderation()
        self.render = Renderer(
            self.console, moderation=self.moderation, reveal=bool(getattr(args, "reveal", False))
        )

    @property
    def logged_in_here(self) -> bool:
        return self.creds is not None and _same_node(self.creds.node, self.url)

    def require_login(self) -> Credentials:
        if self.creds is None:
            saved = sorted(f"@{c.handle}" for c in load_accounts().values())
            if saved:
                raise CliError(
                    f"no current account: `skyfed accounts use HANDLE` picks one of "
                    f"{', '.join(saved)}, or give --as HANDLE"
                )
            raise CliError("not logged in; run `skyfed login HANDLE` first")
        if not self.logged_in_here:
            raise CliError(
                f"you are logged in at {self.creds.node}, not {self.url}; "
                "writes go to your home node (leave out --node)"
            )
        return self.creds

    def output(self, data: Any, plain: Callable[[], None]) -> None:
        if self.args.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            plain()


async def _with_client(ctx: Context, body: Callable[[Any], Awaitable[int]]) -> int:
    import aiohttp

    from .client import Client, Session

    # A node that never answers the dial (a dropped packet, a wrong address) is named
    # after CONNECT_TIMEOUT, not after aiohttp's five minutes; reads may take long
    # (the firehose).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        Client(ctx.url, moderation=ctx.moderation, session=http) as client,
    ):
        before = ctx.creds if ctx.logged_in_here else None
        if before is not None:
            client.session = Session(
                before.did, before.handle, before.access_jwt, before.refresh_jwt
            )
        try:
            return await body(client)
        finally:
            # A refresh rotates both tokens: keep the new ones even if the command failed.
            s = client.session
            if s is not None:
                after = Credentials(ctx.url, s.handle, s.did, s.access_jwt, s.refresh_jwt)
                if after != before:
                    # A new session (create, login) becomes current; refreshed tokens
                    # of a --as account are kept without switching to it.
                    save_credentials(after, current=ctx.current or before is None)
                    ctx.creds = after


def _read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            if confirm and getpass.getpass("Again: ") != password:
                raise CliError("the passwords do not match")
        except EOFError as e:
            raise CliError("no password given (use --password-stdin to pipe one)") from e
    if not password:
        raise CliError("the password is empty")
    return password


async def _cmd_account_create(ctx: Context) -> int:
    password = _read_password(ctx.args, confirm=True)
    key = None if ctx.args.no_rotation_key else _new_rotation_key()

    async def run(client: Any) -> int:
        session = await client.create_account(
            ctx.args.handle,
            password,
            email=ctx.args.email,
            recovery_key=None if key is None else key.did_key(),
        )
        where = "" if key is None else str(save_rotation_key(session.did, key))
        ctx.output(
            {"did": session.did, "handle": session.handle, "node": ctx.url, "rotationKey": where},
            lambda: print(
                f"created @{session.handle} ({session.did}) at {ctx.url}"
                + (f"\nyour rotation key is in {where}: keep it safe" if where else "")
                + _others_note(session.did)
            ),
        )
        return 0

    return await _with_client(ctx, run)


async def _cmd_login(ctx: Context) -> int:
    password = _read_password(ctx.args, confirm=False)

    async def run(client: Any) -> int:
        session = await client.login(ctx.args.handle, password)
        ctx.output(
            {"did": session.did, "handle": session.handle, "node": ctx.url},
            lambda: print(
                f"logged in as @{session.handle} ({session.did}) at {ctx.url}"
                + _others_note(session.did)
            ),
        )
        return 0

    return await _with_client(ctx, run)


def _others_note(did: str) -> str:
    """After a new session: which other saved accounts stay a `--as` away."""
    others = sorted(f"@{c.handle}" for c in load_accounts().values() if c.did != did)
    if not others:
        return ""
    return (
        f"\nnow acting as this account; also saved: {', '.join(others)} "
        "(`skyfed accounts use HANDLE` switches, `--as HANDLE` acts as one for a command)"
    )


async def _cmd_accounts(ctx: Context) -> int:
    current = load_credentials()
    accounts = sorted(load_accounts().values(), key=lambda c: c.handle)
    if getattr(ctx.args, "accounts_command", None) == "use":
        chosen = find_account(ctx.args.handle)
        save_credentials(chosen)
        ctx.output(
            {"did": chosen.did, "handle": chosen.handle, "node": chosen.node},
            lambda: print(f"now acting as @{chosen.handle} ({chosen.did}) at {chosen.node}"),
        )
        return 0

    def plain() -> None:
        if not accounts:
            print("no saved accounts: `skyfed account create HANDLE --node URL` or `skyfed login`")
        for c in accounts:
            mark = "*" if current is not None and c.did == current.did else " "
            print(f"{mark} @{c.handle}  {c.did}  {c.node}")

    data = [
        {
            "handle": c.handle,
            "did": c.did,
            "node": c.node,
            "current": current is not None and c.did == current.did,
        }
        for c in accounts
    ]
    ctx.output(data, plain)
    return 0


async def _cmd_logout(ctx: Context) -> int:
    if ctx.creds is None:
        ctx.output({"loggedOut": False}, lambda: print("not logged in"))
        return 0
    handle = ctx.creds.handle
    ctx.url = ctx.creds.node  # the session lives at its home, whatever --node says
    from .client import XrpcError

    async def run(client: Any) -> int:
        try:
            await client.logout()
        except XrpcError as e:
            if e.status >= 500:
                raise
            client.session = None  # already expired or revoked: forgetting it is enough
        return 0

    await _with_client(ctx, run)
    forget_account(ctx.creds.did)
    ctx.output({"loggedOut": True}, lambda: print(f"logged out @{handle}"))
    return 0


def _ref_out(ctx: Context, verb: str, ref: Any) -> None:
    ctx.output(ref.to_json(), lambda: print(f"{verb} {ref.uri}"))


async def _cmd_post(ctx: Context) -> int:
    ctx.require_login()
    a = ctx.args
    if not a.text.strip():
        raise CliError('the post is empty: give its text, e.g. skyfed post "hello"')

    images = _read_images(a.images or [], a.alts or [])

    async def run(client: Any) -> int:
        ref = await client.post(
            a.text, reply_to=a.reply, quote=a.quote, langs=a.langs, images=images
        )
        _ref_out(ctx, "posted", ref)
        return 0

    return await _with_client(ctx, run)


#: Largest image file the CLI reads (a node refuses more than its own limit anyway).
_MAX_IMAGE_FILE = 16 * 1024 * 1024


def _read_images(paths: list[str], alts: list[str]) -> list[tuple[bytes, str]]:
    if len(paths) > 4:
        raise CliError("a post holds at most 4 images")
    if len(alts) > len(paths):
        raise CliError("more --alt texts than --image files")
    out = []
    for i, name in enumerate(paths):
        path = Path(name).expanduser()
        try:
            if path.stat().st_size > _MAX_IMAGE_FILE:
                raise CliError(f"{name}: over {_MAX_IMAGE_FILE // 2**20} MiB")
            data = path.read_bytes()
        except OSError as e:
            raise CliError(f"cannot read {name}: {e.strerror or e}") from None
        out.append((data, alts[i] if i < len(alts) else ""))
    return out


def _write(verb: str, method: str, attr: str) -> Callable[[Context], Coroutine[Any, Any, int]]:
    async def cmd(ctx: Context) -> int:
        ctx.require_login()

        async def run(client: Any) -> int:
            ref = await getattr(client, method)(getattr(ctx.args, attr))
            _ref_out(ctx, verb, ref)
            return 0

        return await _with_client(ctx, run)

    return cmd


async def _cmd_delete(ctx: Context) -> int:
    ctx.require_login()

    async def run(client: Any) -> int:
        await client.delete(ctx.args.uri)
        ctx.output({"uri": ctx.args.uri}, lambda: print(f"deleted {ctx.args.uri}"))
        return 0

    return await _with_client(ctx, run)


async def _cmd_feed(ctx: Context) -> int:
    a = ctx.args
    if not 1 <= a.limit <= 100:
        raise CliError("--limit must be between 1 and 100")

    async def run(client: Any) -> int:
        if a.author:
            page = await client.author_feed(a.author, limit=a.limit, cursor=a.cursor)
        elif a.generator:
            page = await client.custom_feed(a.generator, limit=a.limit, cursor=a.cursor)
        elif a.latest or client.session is None:
            page = await client.latest(limit=a.limit, cursor=a.cursor)
        else:
            page = await client.timeline(limit=a.limit, cursor=a.cursor)
        ctx.output(page, lambda: ctx.render.feed(page))
        return 0

    return await _with_client(ctx, run)


async def _cmd_thread(ctx: Context) -> int:
    a = ctx.args

    async def run(client: Any) -> int:
        page = await client.thread(a.uri, depth=a.depth, parent_height=a.parent_height)
        ctx.output(page, lambda: ctx.render.thread(page))
        return 0

    return await _with_client(ctx, run)


def _actor_or_me(ctx: Context) -> str:
    if ctx.args.actor:
        return str(ctx.args.actor).removeprefix("@")
    if ctx.creds is None:
        raise CliError("whose? give a HANDLE (or log in to mean yourself)")
    return ctx.creds.did


async def _cmd_profile_set(ctx: Context) -> int:
    a = ctx.args
    if a.avatar is not None:
        raise CliError(
            "--avatar is not supported yet: nodes do not store images (blobs) yet. "
            "--display-name and --description work"
        )
    if a.display_name is None and a.description is None:
        raise CliError('say what to change: --display-name "NAME" and/or --description "TEXT"')
    ctx.require_login()

    async def run(client: Any) -> int:
        ref = await client.set_profile(display_name=a.display_name, description=a.description)
        view = await client.profile(client.did)

        def plain() -> None:
            print("profile updated:")
            ctx.render.profile(view)

        ctx.output({**ref.to_json(), "profile": view}, plain)
        return 0

    return await _with_client(ctx, run)


async def _cmd_profile(ctx: Context) -> int:
    a = ctx.args
    if a.actor == "set":
        return await _cmd_profile_set(ctx)
    if a.display_name is not None or a.description is not None or a.avatar is not None:
        raise CliError("to change your profile: skyfed profile set --display-name ... (with `set`)")
    actor = _actor_or_me(ctx)

    async def run(client: Any) -> int:
        view = await client.profile(actor)
        ctx.output(view, lambda: ctx.render.profile(view))
        return 0

    return await _with_client(ctx, run)


async def _cmd_follows(ctx: Context) -> int:
    actor = _actor_or_me(ctx)
    key = "followers" if ctx.args.followers else "follows"

    async def run(client: Any) -> int:
        page = await getattr(client, key)(actor, limit=100)
        ctx.output(page, lambda: ctx.render.actors(page.get(key, [])))
        return 0

    return await _with_client(ctx, run)


async def _cmd_verify(ctx: Context) -> int:
    async def run(client: Any) -> int:
        ref = await client.verify_record(ctx.args.uri)
        ctx.output(
            {**ref.to_json(), "verified": True},
            lambda: print(f"verified {ref.uri}\n  cid {ref.cid} is in the author's signed repo"),
        )
        return 0

    return await _with_client(ctx, run)


async def _cmd_tail(ctx: Context) -> int:
    from protocol.errors import SkyfedError
    from protocol.handles import INVALID_HANDLE

    from .client import XrpcError
    from .client.render import event_json

    handles: dict[str, str] = {}

    async def handle_of(client: Any, did: object) -> None:
        # Who wrote it reads better than a DID, but only a handle the node confirms
        # (docs/protocol.md §11.7): a log's claim alone is anyone's to make, so an
        # unconfirmed one shows as handle.invalid (describeRepo answers so).
        if not isinstance(did, str) or did in handles:
            return
        if len(handles) >= TAIL_HANDLE_CACHE:
            handles.clear()
        try:
            out = await client.call(
                "com.atproto.repo.describeRepo", params={"repo": did}, auth=None
            )
            handles[did] = str(out["handle"]) if out.get("handleIsCorrect") else INVALID_HANDLE
        except (XrpcError, SkyfedError, KeyError, ValueError, TypeError, AttributeError):
            handles[did] = ""  # unknown here: the DID is shown

    async def run(client: Any) -> int:
        client.session = None  # the firehose is public
        async for header, body in client.subscribe(cursor=ctx.args.cursor):
            if header.get("op") == -1:
                raise CliError(f"{body.get('error')}: {body.get('message', '')}")
            if ctx.args.json:
                print(json.dumps(event_json(header, body), ensure_ascii=False), flush=True)
            else:
                if header.get("t") == "#identity":
                    # The event names the handle only if the node confirms it.
                    handles[str(body.get("did"))] = str(body.get("handle") or INVALID_HANDLE)
                await handle_of(client, body.get("repo"))
                ctx.render.event(header, body, handles=handles)
                ctx.console.file.flush()
        raise CliError(f"{ctx.url} closed the stream")

    return await _with_client(ctx, run)


# -- portable identity: export, import, migrate, rotate-key --------------------------

ROTATION_KEYS_FILE = "rotation_keys.json"


def _add_portability_commands(account_sub: Any, common: list[argparse.ArgumentParser]) -> None:
    export = account_sub.add_parser(
        "export",
        help="save your repository (CAR) and identity log to files",
        description="Save an account's whole repository as a CAR file and its signed "
        "identity log as JSON, from any node that holds them (default: your account, "
        "from your home node). With them and your rotation key you can move the account "
        "even if its node disappears.",
        parents=common,
    )
    export.add_argument("actor", metavar="HANDLE", nargs="?", help="handle or DID (default: you)")
    export.add_argument(
        "--out",
        metavar="PREFIX",
        help="write PREFIX.car and PREFIX.identity.json (default: the handle)",
    )
    imp = account_sub.add_parser(
        "import",
        help="load your repository from a CAR file into your account here",
        description="Import a CAR file (from `skyfed account export` or any getRepo) into "
        "the account you are logged in as, at its node. The head commit must be signed by "
        "a key your identity has named; a newer copy already held is kept.",
        parents=common,
    )
    imp.add_argument("car", metavar="FILE", type=Path, help="the CAR file")
    migrate = account_sub.add_parser(
        "migrate",
        help="move your account to another node",
        description="Move your account to the node at --to. By default your current node "
        "helps: it vouches for you and signs the identity change. With "
        "--without-old-node (your node is gone or refuses), your own rotation key does "
        "both and the repository comes from the new node's copy or --car. Your DID, "
        "handle, followers and posts stay; you end logged in at the new node. The "
        "password becomes your password there, and your current node asks for it too "
        "before it signs the change.",
        parents=common,
    )
    migrate.add_argument("--to", metavar="URL", required=True, help="the node to move to")
    migrate.add_argument(
        "--without-old-node",
        action="store_true",
        help="do not contact the current node: sign with your local rotation key",
    )
    migrate.add_argument("--car", metavar="FILE", type=Path, help="a repository export to use")
    migrate.add_argument(
        "--log", metavar="FILE", type=Path, help="an identity log export (PREFIX.identity.json)"
    )
    _password_options(migrate)
    rotate = account_sub.add_parser(
        "rotate-key",
        help="give your account a new signing key",
        description="Your node makes a new signing key for your account; an identity op "
        "naming it is signed with your local rotation key (else by the node), and from "
        "then on every node refuses commits signed by the old key.",
        parents=common,
    )
    rotate.add_argument(
        "--node-signs",
        action="store_true",
        help="let the node sign the op even if you hold a rotation key",
    )


def _new_rotation_key() -> Any:
    import secrets

    from protocol.keys import SigningKey

    return SigningKey.from_seed(secrets.token_bytes(32))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the user alone, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rotation_keys() -> dict[str, str]:
    path = config_dir() / ROTATION_KEYS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path} ({e})") from e
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def save_rotation_key(did: str, key: Any) -> Path:
    """Keep the user's rotation key for ``did`` next to the credentials (mode 0600)."""
    keys = _rotation_keys()
    keys[did] = key.to_str()
    path = config_dir() / ROTATION_KEYS_FILE
    _write_private(path, json.dumps(keys, indent=2) + "\n")
    return path


def load_rotation_key(did: str) -> Any:
    """The locally held rotation key for ``did``, or None."""
    from protocol.errors import SkyfedError
    from protocol.keys import SigningKey

    text = _rotation_keys().get(did)
    if text is None:
        return None
    try:
        return SigningKey.from_str(text)
    except SkyfedError as e:
        raise CliError(f"the rotation key for {did} is damaged: {e}") from e


async def _cmd_account_export(ctx: Context) -> int:
    import base64

    from .counts import format_count

    async def run(client: Any) -> int:
        actor = _actor_or_me(ctx)
        did = actor if actor.startswith("did:") else await client.resolve_handle(actor)
        car = await client.export_repo(did)
        ops = await client.identity_log(did)
        state = await client.identity(did)
        prefix = ctx.args.out or state.handle
        car_path, log_path = Path(f"{prefix}.car"), Path(f"{prefix}.identity.json")
        log = {"did": did, "ops": [base64.b64encode(op).decode("ascii") for op in ops]}
        _write_files({car_path: car, log_path: (json.dumps(log, indent=2) + "\n").encode()})
        ctx.output(
            {"did": did, "car": str(car_path), "log": str(log_path), "bytes": len(car)},
            lambda: print(
                f"exported {did}: {car_path} ({format_count(len(car), 'byte')}), {log_path}"
            ),
        )
        return 0

    return await _with_client(ctx, run)


def _write_files(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        try:
            path.write_bytes(data)
        except OSError as e:
            raise CliError(f"cannot write {path}: {e.strerror or e}") from e


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CliError(f"cannot read the {what} {path}: {e.strerror or e}") from e


def _read_log(path: Path) -> tuple[str, list[bytes]]:
    import base64
    import binascii

    try:
        data = json.loads(_read_file(path, "identity log"))
        return str(data["did"]), [base64.b64decode(op, validate=True) for op in data["ops"]]
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise CliError(f"{path} is not an identity log export ({e})") from e


async def _cmd_account_import(ctx: Context) -> int:
    ctx.require_login()
    car = _read_file(ctx.args.car, "CAR file")

    async def run(client: Any) -> int:
        out = await client.import_repo(car)
        what = "imported" if out["imported"] else "kept the newer copy held here, at"
        ctx.output(out, lambda: print(f"{what} rev {out['rev']} ({out['cid']})"))
        return 0

    return await _with_client(ctx, run)


async def _cmd_account_migrate(ctx: Context) -> int:
    from .client import UNPROTECTED_WARNING, Client, Session, migrate_account, node_url

    a = ctx.args
    creds = ctx.creds
    if creds is None:
        raise CliError("not logged in; run `skyfed login HANDLE` at your current node first")
    try:
        to = node_url(a.to)
    except ValueError as e:
        raise CliError(f"--to {e}") from e
    if _same_node(to, creds.node):
        raise CliError(f"you already live at {creds.node}")
    key = load_rotation_key(creds.did)
    if a.without_old_node and key is None:
        raise CliError(
            f"no rotation key for {creds.did} in {config_dir() / ROTATION_KEYS_FILE}: "
            "without the old node, only a rotation key you hold can move the account"
        )
    car = None if a.car is None else _read_file(a.car, "CAR file")
    log = None
    if a.log is not None:
        log_did, log = _read_log(a.log)
        if log_did != creds.did:
            raise CliError(f"{a.log} is the identity log of {log_did}, not {creds.did}")
    password = _read_password(a, confirm=True)
    if key is None:
        print(f"warning: {UNPROTECTED_WARNING}", file=sys.stderr)
    async with Client(to) as new:
        if a.without_old_node:
            session = await migrate_account(
                new, creds.did, password, rotation_key=key, car=car, log=log
            )
        else:
            async with Client(creds.node) as old:
                old.session = Session(creds.did, creds.handle, creds.access_jwt, creds.refresh_jwt)
                session = await migrate_account(
                    new, creds.did, password, old=old, rotation_key=key, car=car, log=log
                )
    save_credentials(
        Credentials(to, session.handle, session.did, session.access_jwt, session.refresh_jwt),
        current=ctx.current,
    )
    ctx.output(
        {"did": session.did, "handle": session.handle, "node": to},
        lambda: print(f"moved @{session.handle} ({session.did}) to {to}; logged in there"),
    )
    return 0


async def _cmd_account_rotate_key(ctx: Context) -> int:
    from .client import rotate_signing_key

    creds = ctx.require_login()
    key = None if ctx.args.node_signs else load_rotation_key(creds.did)

    async def run(client: Any) -> int:
        new_key = await rotate_signing_key(client, key)
        signer = "the node's rotation key" if key is None else "your rotation key"
        ctx.output(
            {"did": creds.did, "signingKey": new_key},
            lambda: print(f"new signing key {new_key} (op signed by {signer})"),
        )
        return 0

    return await _with_client(ctx, run)


_CLIENT_COMMANDS: dict[str, Callable[[Context], Coroutine[Any, Any, int]]] = {
    "account create": _cmd_account_create,
    "account export": _cmd_account_export,
    "account import": _cmd_account_import,
    "account migrate": _cmd_account_migrate,
    "account rotate-key": _cmd_account_rotate_key,
    "login": _cmd_login,
    "logout": _cmd_logout,
    "accounts": _cmd_accounts,
    "post": _cmd_post,
    "like": _write("liked", "like", "uri"),
    "repost": _write("reposted", "repost", "uri"),
    "follow": _write("followed", "follow", "actor"),
    "block": _write("blocked", "block", "actor"),
    "delete": _cmd_delete,
    "feed": _cmd_feed,
    "thread": _cmd_thread,
    "profile": _cmd_profile,
    "follows": _cmd_follows,
    "verify": _cmd_verify,
    "tail": _cmd_tail,
}


# -- moderation: labelers, labels, mutes, node admin ------------------------------------
#
# A reader's labelers and label behaviours live in moderation.json next to the
# credentials; every view request names the labelers, and the renderer hides or
# warns as the settings say. `skyfed admin` speaks to a node's admin endpoints with
# the node's admin token (from $SKYFED_ADMIN_TOKEN, --token-file or the node's TOML).

MODERATION_FILE = "moderation.json"
#: createReport's reason types (com.atproto.moderation.defs#reason...).
REPORT_REASONS = ("spam", "violation", "misleading", "sexual", "rude", "other")


def load_moderation() -> Any:
    from protocol.errors import SkyfedError
    from protocol.moderation import ModerationPrefs

    path = config_dir() / MODERATION_FILE
    try:
        return ModerationPrefs.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return ModerationPrefs()
    except (OSError, ValueError, SkyfedError) as e:
        raise CliError(f"cannot read {path} ({e}); fix or delete it") from e


def save_moderation(prefs: Any) -> Path:
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / MODERATION_FILE
    tmp = directory / f".{MODERATION_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(prefs.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _moderation_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    labelers = sub.add_parser(
        "labelers",
        help="choose the labelers you listen to and what their labels do",
        description="Your moderation settings (kept in moderation.json in the config "
        "directory): the labelers whose labels your views carry, and what each label "
        "does: hide, warn or show. !hide and !takedown always hide, !warn always warns.",
    )
    lsub = labelers.add_subparsers(dest="moderation_command", required=True, metavar="ACTION")
    lsub.add_parser("list", help="show your labelers and label settings", parents=common)
    add = lsub.add_parser("add", help="subscribe to a labeler", parents=common)
    add.add_argument("labeler", metavar="HANDLE", help="the labeler's handle or DID")
    add.add_argument(
        "--redact", action="store_true", help="its !takedown labels remove content from views"
    )
    remove = lsub.add_parser("remove", help="unsubscribe from a labeler", parents=common)
    remove.add_argument("labeler", metavar="HANDLE", help="the labeler's handle or DID")
    setting = lsub.add_parser("set", help="what a label does for you", parents=common)
    setting.add_argument("val", metavar="LABEL", help="a label value, e.g. spam")
    setting.add_argument("behaviour", choices=["hide", "warn", "show"])

    label = sub.add_parser("label", help="label a post or account, as a labeler", parents=common)
    label.add_argument("uri", metavar="URI", help="a post's AT-URI, or an account's DID")
    label.add_argument("val", metavar="VALUE", help="e.g. spam, !warn, !hide")
    label.add_argument("--neg", action="store_true", help="retract this label")
    for name, what in (("mute", "mute an account (private to your node)"), ("unmute", "unmute")):
        sub.add_parser(name, help=what, parents=common).add_argument(
            "actor", metavar="HANDLE", help="handle or DID"
        )
    sub.add_parser("mutes", help="list the accounts you mute", parents=common)
    report = sub.add_parser(
        "report",
        help="report a post or an account to the node's admin (or a labeler hosted there)",
        parents=common,
    )
    report.add_argument("target", metavar="TARGET", help="a post's AT-URI, or a handle or DID")
    report.add_argument("--reason-type", choices=REPORT_REASONS, default="spam")
    report.add_argument("--reason", help="what is wrong, in your words")
    report.add_argument("--labeler", help="send it to this labeler (hosted on the node)")

    admin = sub.add_parser(
        "admin",
        help="node policy, for the node's admin",
        description="Apply this node's policy to an account, with the node's admin token "
        "($SKYFED_ADMIN_TOKEN, --token-file, or admin_token in --node-config). It changes "
        "this node only; the account stays readable through other nodes.",
    )
    asub = admin.add_subparsers(dest="moderation_command", required=True, metavar="ACTION")
    down = asub.add_parser("takedown", help="take an account down on this node", parents=common)
    down.add_argument("actor", metavar="HANDLE", help="handle or DID")
    down.add_argument("--reason", required=True, help="why (published)")
    down.add_argument(
        "--scope",
        default="host,serve,carry",
        help="what this node refuses: host, serve, carry (comma-separated; default all)",
    )
    back = asub.add_parser("reverse", help="reverse an account's takedown", parents=common)
    back.add_argument("actor", metavar="HANDLE", help="handle or DID")
    back.add_argument("--reason", required=True, help="why (published)")
    for p in (down, back):
        p.add_argument("--token-file", type=Path, help="a file holding the admin token")
        p.add_argument("--node-config", type=Path, help="the node's TOML (its admin_token)")
    listing = asub.add_parser(
        "list", help="the node's published moderation actions and policy", parents=common
    )
    listing.add_argument("--did", help="only actions on this account")
    listing.add_argument("--limit", type=int, default=50, help="how many (1-500)")
    reports = asub.add_parser(
        "reports", help="the reports queued for this node's admin and its labelers", parents=common
    )
    reports.add_argument("--labeler", help="only this hosted labeler's queue (a DID)")
    reports.add_argument("--node-only", action="store_true", help="only the node admin's own queue")
    reports.add_argument("--resolved", action="store_true", help="include resolved reports")
    reports.add_argument("--limit", type=int, default=50, help="how many (1-500)")
    resolve = asub.add_parser("resolve", help="close a report with a note", parents=common)
    resolve.add_argument("id", type=int, metavar="ID", help="the report's number")
    resolve.add_argument("--note", required=True, help="what was done")
    for p in (reports, resolve):
        p.add_argument("--token-file", type=Path, help="a file holding the admin token")
        p.add_argument("--node-config", type=Path, help="the node's TOML (its admin_token)")


def _admin_token(args: argparse.Namespace) -> str:
    """The admin token: --token-file, else --node-config, else $SKYFED_ADMIN_TOKEN,
    else the default data dir's skyfed.toml (what `skyfed node init` wrote)."""
    from .config import default_data_dir

    looked: list[str] = []
    token: str | None = None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        looked.append(f"--token-file {args.token_file} (empty)")
    elif args.node_config is not None:
        token = load_config(args.node_config).admin_token
        looked.append(f"admin_token in --node-config {args.node_config} (not set)")
    else:
        token = os.environ.get("SKYFED_ADMIN_TOKEN")
        looked.append("$SKYFED_ADMIN_TOKEN (unset)")
        default = default_data_dir() / "skyfed.toml"
        if not token and default.exists():
            token = load_config(default).admin_token
            looked.append(f"admin_token in {default} (not set)")
        elif not token:
            looked.append(f"{default} (no such file)")
    if not token:
        raise CliError(
            "no admin token: looked at "
            + "; ".join(looked)
            + ". `skyfed node init` writes one into the node's skyfed.toml "
            "(`--update` adds one to an existing file); pass it with --node-config FILE"
        )
    return token


async def _cmd_labelers_list(ctx: Context) -> int:
    prefs = ctx.moderation
    from protocol.moderation import DEFAULT_BEHAVIOURS, GLOBAL_BEHAVIOURS

    def plain() -> None:
        if not prefs.labelers:
            print("no labelers: your views carry no labels (skyfed labelers add HANDLE)")
        for p in prefs.labelers:
            print(f"labeler {p.did}{' (redact)' if p.redact else ''}")
        rules = {**GLOBAL_BEHAVIOURS, **DEFAULT_BEHAVIOURS, **prefs.behaviours}
        for val in sorted(rules):
            print(f"  {val}: {prefs.behaviour(val)}")
        print("  any other label: show")

    ctx.output(prefs.to_json(), plain)
    return 0


async def _labeler_did(ctx: Context) -> str:
    actor = str(ctx.args.labeler).removeprefix("@")
    if actor.startswith("did:"):
        return actor

    async def run(client: Any) -> int:
        ctx.args.resolved = await client.resolve_handle(actor)
        return 0

    await _with_client(ctx, run)
    return str(ctx.args.resolved)


async def _cmd_labelers_add(ctx: Context) -> int:
    did = await _labeler_did(ctx)
    prefs = ctx.moderation.subscribe(did, redact=ctx.args.redact)
    save_moderation(prefs)
    ctx.output(prefs.to_json(), lambda: print(f"listening to labeler {did}"))
    return 0


async def _cmd_labelers_remove(ctx: Context) -> int:
    did = await _labeler_did(ctx)
    prefs = ctx.moderation.unsubscribe(did)
    save_moderation(prefs)
    ctx.output(prefs.to_json(), lambda: print(f"no longer listening to {did}"))
    return 0


async def _cmd_labelers_set(ctx: Context) -> int:
    prefs = ctx.moderation.with_behaviour(ctx.args.val, ctx.args.behaviour)
    save_moderation(prefs)
    ctx.output(prefs.to_json(), lambda: print(f"{ctx.args.val}: {ctx.args.behaviour}"))
    return 0


async def _cmd_label(ctx: Context) -> int:
    ctx.require_login()

    async def run(client: Any) -> int:
        label = await client.label(ctx.args.uri, ctx.args.val, neg=ctx.args.neg)
        verb = "retracted" if ctx.args.neg else "labelled"
        ctx.output(label, lambda: print(f"{verb} {label['uri']} {label['val']}"))
        return 0

    return await _with_client(ctx, run)


def _mute_command(verb: str, method: str) -> Callable[[Context], Coroutine[Any, Any, int]]:
    async def cmd(ctx: Context) -> int:
        ctx.require_login()

        async def run(client: Any) -> int:
            await getattr(client, method)(ctx.args.actor)
            ctx.output({"actor": ctx.args.actor}, lambda: print(f"{verb} {ctx.args.actor}"))
            return 0

        return await _with_client(ctx, run)

    return cmd


async def _cmd_mutes(ctx: Context) -> int:
    ctx.require_login()

    async def run(client: Any) -> int:
        page = await client.mutes(limit=100)
        ctx.output(page, lambda: ctx.render.actors(page.get("mutes", [])))
        return 0

    return await _with_client(ctx, run)


def _takedown_line(t: dict[str, Any]) -> str:
    state = "active" if t.get("active") else f"reversed {t.get('reversedAt')}"
    line = f"#{t['id']} {t['did']} [{','.join(t['scopes'])}] {t['createdAt']} ({state})"
    line += f"\n    reason: {t['reason']}"
    if t.get("reverseReason"):
        line += f"\n    reversed because: {t['reverseReason']}"
    return line


async def _cmd_admin_takedown(ctx: Context) -> int:
    token = _admin_token(ctx.args)
    scopes = [s.strip() for s in ctx.args.scope.split(",") if s.strip()]
    if not scopes:
        raise CliError("--scope must name at least one of host, serve, carry")

    async def run(client: Any) -> int:
        client.session = None  # the admin token, never an account's
        t = await client.take_down(
            ctx.args.actor, ctx.args.reason, admin_token=token, scopes=scopes
        )
        ctx.output(t, lambda: print("took down " + _takedown_line(t)))
        return 0

    return await _with_client(ctx, run)


async def _cmd_admin_reverse(ctx: Context) -> int:
    token = _admin_token(ctx.args)

    async def run(client: Any) -> int:
        client.session = None
        t = await client.reverse_takedown(ctx.args.actor, ctx.args.reason, admin_token=token)
        ctx.output(t, lambda: print("reversed " + _takedown_line(t)))
        return 0

    return await _with_client(ctx, run)


async def _cmd_admin_list(ctx: Context) -> int:
    if not 1 <= ctx.args.limit <= 500:
        raise CliError("--limit must be between 1 and 500")

    async def run(client: Any) -> int:
        page = await client.moderation_actions(limit=ctx.args.limit, did=ctx.args.did)

        def plain() -> None:
            statement = page.get("policy", {}).get("statement")
            print(f"node {page.get('node')}")
            if statement:
                print(f"policy: {statement}")
            if not page.get("actions"):
                print("no moderation actions")
            for t in page.get("actions", []):
                print(_takedown_line(t))

        ctx.output(page, plain)
        return 0

    return await _with_client(ctx, run)


async def _cmd_report(ctx: Context) -> int:
    ctx.require_login()

    async def run(client: Any) -> int:
        labeler = ctx.args.labeler
        if labeler is not None:
            labeler = await client._did(labeler)
        r = await client.report(
            ctx.args.target,
            "com.atproto.moderation.defs#reason" + ctx.args.reason_type.capitalize(),
            reason=ctx.args.reason,
            labeler=labeler,
        )
        ctx.output(r, lambda: print(f"reported as #{r['id']} to {labeler or 'the node admin'}"))
        return 0

    return await _with_client(ctx, run)


def _report_line(r: dict[str, Any]) -> str:
    subject = r.get("subject", {})
    what = subject.get("uri") or subject.get("did") or "?"
    queue = r.get("labeler") or "node admin"
    state = f"resolved {r['resolvedAt']}: {r.get('resolution')}" if r.get("resolvedAt") else "open"
    line = f"#{r['id']} {r['reasonType'].rsplit('#', 1)[-1]} {what} by {r['reportedBy']}"
    line += f" {r['createdAt']} [{queue}] ({state})"
    if r.get("reason"):
        line += f"\n    {r['reason']}"
    return line


async def _cmd_admin_reports(ctx: Context) -> int:
    token = _admin_token(ctx.args)
    if not 1 <= ctx.args.limit <= 500:
        raise CliError("--limit must be between 1 and 500")

    async def run(client: Any) -> int:
        client.session = None
        page = await client.reports(
            admin_token=token,
            limit=ctx.args.limit,
            labeler=ctx.args.labeler,
            queue="node" if ctx.args.node_only else None,
            resolved=ctx.args.resolved,
        )

        def plain() -> None:
            if not page.get("reports"):
                print("no reports")
            for r in page.get("reports", []):
                print(_report_line(r))

        ctx.output(page, plain)
        return 0

    return await _with_client(ctx, run)


async def _cmd_admin_resolve(ctx: Context) -> int:
    token = _admin_token(ctx.args)

    async def run(client: Any) -> int:
        client.session = None
        r = await client.resolve_report(ctx.args.id, ctx.args.note, admin_token=token)
        ctx.output(r, lambda: print("resolved " + _report_line(r)))
        return 0

    return await _with_client(ctx, run)


_MODERATION_COMMANDS: dict[str, Callable[[Context], Coroutine[Any, Any, int]]] = {
    "labelers list": _cmd_labelers_list,
    "labelers add": _cmd_labelers_add,
    "labelers remove": _cmd_labelers_remove,
    "labelers set": _cmd_labelers_set,
    "label": _cmd_label,
    "mute": _mute_command("muted", "mute"),
    "unmute": _mute_command("unmuted", "unmute"),
    "mutes": _cmd_mutes,
    "admin takedown": _cmd_admin_takedown,
    "admin reverse": _cmd_admin_reverse,
    "admin list": _cmd_admin_list,
    "report": _cmd_report,
    "admin reports": _cmd_admin_reports,
    "admin resolve": _cmd_admin_resolve,
}
_CLIENT_COMMANDS.update(_MODERATION_COMMANDS)


# -- notifications and search ------------------------------------------------------


def _notification_search_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    notes = sub.add_parser(
        "notifications",
        help="show who liked, reposted, followed, replied to, mentioned or quoted you",
        description="Your notifications, newest first (● marks unread ones). "
        "--mark-read marks everything shown so far read.",
        parents=common,
    )
    notes.add_argument("--limit", type=int, default=30, help="how many (1-100, default 30)")
    notes.add_argument("--cursor", help="continue from here (printed under the last page)")
    notes.add_argument(
        "--reason",
        action="append",
        dest="reasons",
        choices=("like", "repost", "follow", "reply", "mention", "quote"),
        help="only these (repeatable)",
    )
    notes.add_argument("--unread", action="store_true", help="only print how many are unread")
    notes.add_argument("--mark-read", action="store_true", help="mark them all read")
    search = sub.add_parser(
        "search",
        help="search posts (or, with --actors, people)",
        description='Search every post the node holds: words, "exact phrases", -word, '
        "from:HANDLE, mentions:HANDLE, lang:en, since:2025-01-01, until:..., domain:example.com. "
        "With --actors, search handles, display names and bios.",
        parents=common,
    )
    search.add_argument("query", metavar="QUERY", help="what to look for")
    search.add_argument("--actors", action="store_true", help="search people, not posts")
    search.add_argument("--top", action="store_true", help="most engaged first (default newest)")
    search.add_argument("--limit", type=int, default=25, help="how many (1-100, default 25)")
    search.add_argument("--cursor", help="continue from here (printed under the last page)")
    search.add_argument("--reveal", action="store_true", help="show the text of warned posts")


async def _cmd_notifications(ctx: Context) -> int:
    a = ctx.args
    if not 1 <= a.limit <= 100:
        raise CliError("--limit must be between 1 and 100")
    ctx.require_login()

    async def run(client: Any) -> int:
        if a.unread:
            count = await client.unread_count()
            ctx.output({"count": count}, lambda: print(f"{count} unread"))
            return 0
        page = await client.notifications(limit=a.limit, cursor=a.cursor, reasons=a.reasons)
        ctx.output(page, lambda: ctx.render.notifications(page))
        if a.mark_read:
            await client.update_seen()
        return 0

    return await _with_client(ctx, run)


async def _cmd_search(ctx: Context) -> int:
    a = ctx.args
    if not 1 <= a.limit <= 100:
        raise CliError("--limit must be between 1 and 100")
    if not a.query.strip():
        raise CliError('say what to look for, e.g. skyfed search "hello world"')

    async def run(client: Any) -> int:
        if a.actors:
            page = await client.search_actors(a.query, limit=a.limit, cursor=a.cursor)
            ctx.output(page, lambda: ctx.render.actors(page.get("actors", [])))
            if page.get("cursor") and not ctx.args.json:
                print(f"more: --cursor {page['cursor']}")
            return 0
        sort = "top" if a.top else None
        page = await client.search_posts(a.query, limit=a.limit, cursor=a.cursor, sort=sort)
        ctx.output(page, lambda: ctx.render.search_posts(page))
        return 0

    return await _with_client(ctx, run)


_CLIENT_COMMANDS["notifications"] = _cmd_notifications
_CLIENT_COMMANDS["search"] = _cmd_search


def _run_client_command(name: str, args: argparse.Namespace) -> int:
    import aiohttp

    from protocol.errors import SkyfedError

    from .client import NotANodeError, RecordNotFoundError, VerificationError, XrpcError

    url = args.node or "the node"
    ctx: Context | None = None
    try:
        ctx = Context(args)
        url = ctx.url
        code = asyncio.run(_CLIENT_COMMANDS[name](ctx))
        sys.stdout.flush()  # here, so a reader that went away is seen below
        return code
    except KeyboardInterrupt:
        return 0 if name == "tail" else 130
    except CliError as e:
        return _fail(str(e))
    except NotANodeError as e:
        return _fail(e.message)
    except RecordNotFoundError as e:
        return _fail(
            f"not found: {e.message}. The author's signed repository checked out "
            "without it; nothing was tampered with"
        )
    except XrpcError as e:
        hint = ""
        if e.error in ("ExpiredToken", "InvalidToken", "AuthRequired", "AuthMissing"):
            hint = " (run `skyfed login HANDLE`)"
        return _fail(f"{e.error}: {e.message}{hint}")
    except VerificationError as e:
        return _fail(f"verification failed: {e.message}")
    except SkyfedError as e:
        return _fail(str(e))
    except aiohttp.ClientResponseError as e:
        return _fail(f"{url} answered {e.status}: {e.message}")
    except BrokenPipeError:
        # The reader went away (`skyfed feed | head`): it had what it wanted, so stop
        # quietly and successfully, and keep Python from complaining again when it
        # flushes stdout at exit (the docs' "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except aiohttp.ConnectionTimeoutError:
        return _fail(_unreachable(url, ctx, f"no answer within {CONNECT_TIMEOUT:g} s"))
    except aiohttp.ClientConnectorError as e:
        refused = isinstance(e.os_error, ConnectionRefusedError)
        reason = "nothing is listening there" if refused else e.os_error.strerror
        return _fail(_unreachable(url, ctx, reason or str(e.os_error)))
    except aiohttp.InvalidURL as e:
        return _fail(f"{e} is not a URL a node can have: give --node http(s)://HOST:PORT")
    except aiohttp.ServerDisconnectedError:
        return _fail(f"{url} closed the connection without an answer: is it a skyfed node?")
    except (aiohttp.ClientError, OSError) as e:
        return _fail(_unreachable(url, ctx, str(e) or type(e).__name__))
    except Exception as e:
        # Still one line; -v shows where it came from.
        logging.getLogger("skyfed.cli").info("unexpected error", exc_info=True)
        return _fail(f"unexpected {type(e).__name__}: {e}")


def _unreachable(url: str, ctx: Context | None, reason: str) -> str:
    """What to do when nothing answers at ``url``."""
    if ctx is not None and ctx.creds is not None and ctx.logged_in_here:
        return (
            f"cannot reach {url}, the home node of @{ctx.creds.handle} ({reason}). If it "
            "is down for good: read through another node with `--node URL`, or move with "
            "`skyfed account migrate --to URL --without-old-node`"
        )
    return (
        f"cannot reach {url} ({reason}): is a node running there? Start one with "
        "`skyfed node start`, or name another with `--node URL`"
    )


def _fail(message: str) -> int:
    print(f"skyfed: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "account":
        return _run_client_command(f"account {args.account_command}", args)
    if args.command in ("labelers", "admin"):
        return _run_client_command(f"{args.command} {args.moderation_command}", args)
    if args.command in _CLIENT_COMMANDS:
        return _run_client_command(args.command, args)
    if args.command == "cluster":
        from .cluster.commands import run_command as run_cluster_command

        return run_cluster_command(args)
    handlers = {("node", "init"): _cmd_node_init, ("node", "start"): _cmd_node_start}
    handler = handlers[(args.command, str(getattr(args, "node_command", "")))]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as e:
        print(f"skyfed: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
