"""``relist <command>``: thin front-ends over the library.  Exit codes: 0 ok, 1 a
negative answer (e.g. a signature that does not pass), 2 usage, configuration or IO
error."""

from __future__ import annotations

import argparse
import sys

from relist import BUILD, __version__

__all__ = ["main"]


def _serve(args) -> int:
    from relist.config import load
    from relist.server import serve
    return serve(load(args.config))


def _demo(args) -> int:
    from relist.demo import run
    return run(verbose=args.verbose, fixtures=args.fixtures, keep=args.keep)


# Commands that live in their own module: each has add_parser(sub) which registers
# the sub-command and sets ``func``.
COMMAND_MODULES: tuple[str, ...] = ("bounces", "check", "check_config", "explain", "keys", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relist", description=__doc__.split(".")[0])
    parser.add_argument("--version", action="version", version=f"relist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("serve", help="run the relay (and the ingress listener, if configured)")
    p.add_argument("-c", "--config",
                   help="configuration file (default: $RELIST_CONFIG, else built-in defaults)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("demo", help="run relist on an embedded default with a sink MTA and DNS on loopback")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print what relist did to each transaction, and the relayed messages' headers")
    p.add_argument("--fixtures", help="corpus directory (default: the fixtures/mailman corpus)")
    p.add_argument("--keep", metavar="DIR", help="keep the store (relist.db), a relist.toml for it and the "
                   "demo's keys in DIR (must not exist), for relist explain and relist report")
    p.set_defaults(func=_demo)

    import importlib
    for name in COMMAND_MODULES:
        importlib.import_module(f"relist.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if BUILD.running == "none":    # RELIST_CORE asked for what cannot be (relist/core_build.py)
        print(f"relist: {BUILD.reason}", file=sys.stderr)
        return 2
    from relist.config import ConfigError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"relist: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"relist: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
