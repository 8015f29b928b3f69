"""The ``skyfed`` command line.

    skyfed node init  [--data-dir DIR] [--config FILE]
    skyfed node start [--config FILE] [--data-dir DIR] [--host H] [--port P] [--public-url URL]
                      [--peer URL ...] [--reconcile-interval SECONDS]

Errors are one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import NodeConfig, load_config, load_or_create_secrets

__all__ = ["main"]


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
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyfed",
        description="skyfed: a decentralized social network modelled on the AT Protocol.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run and manage a node", description="Run a skyfed node.")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    init = node_sub.add_parser(
        "init",
        help="make the node's key, token secret and a config file",
        description="Create the data directory, the node key and a config file.",
    )
    _node_options(init)
    start = node_sub.add_parser(
        "start",
        help="start a node and serve until Ctrl-C",
        description="Start a node; Ctrl-C or SIGTERM shuts it down cleanly.",
    )
    _node_options(start)
    return parser


def _cmd_node_init(args: argparse.Namespace) -> int:
    cfg = _config(args)
    secrets = load_or_create_secrets(cfg.data_dir)
    path = args.config or cfg.data_dir / "skyfed.toml"
    if not path.exists():
        domains = ", ".join(f'"{d}"' for d in cfg.handle_domains)
        path.write_text(
            "# skyfed node settings; see `skyfed node start --help`\n"
            f'data_dir = "{cfg.data_dir}"\n'
            f'host = "{cfg.host}"\n'
            f"port = {cfg.port}\n"
            f"handle_domains = [{domains}]\n"
        )
    print(f"node key:   {secrets.node_key.did_key()}")
    print(f"data dir:   {cfg.data_dir}")
    print(f"config:     {path}")
    print(f"start with: skyfed node start --config {path}")
    return 0


async def _run_node(cfg: NodeConfig) -> None:
    from .app import Node

    node = Node(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with node:
        print(f"skyfed node {node.node_did}", flush=True)
        print(f"listening on {node.url}", flush=True)
        await stop.wait()
        print("shutting down", flush=True)


def _cmd_node_start(args: argparse.Namespace) -> int:
    asyncio.run(_run_node(_config(args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
