"""Command-line entry point ``jacspec``.

Each sub-command lives in ``jacspec/cli/commands/<name>.py`` and exposes
``register(subparsers)``; this module only discovers them, parses arguments and
turns the user errors ``ValueError``/``TypeError``/``OSError`` (bad input, missing or
unreadable files) into one line on stderr and exit 2. Any other exception (``KeyError``,
``AttributeError``, ...) is a bug in jacspec, not in the user's input: it propagates with
its traceback so it can be reported.

Output convention of every command: ``--json PATH`` writes one JSON file (``-``: to stdout,
which then carries nothing else); ``--plot DIR`` writes every figure of the command into the
folder DIR (created if missing) under fixed names; each written file is printed as
``wrote PATH``, one line each, on stdout (on stderr when ``--json -``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

import jacspec.cli.commands

#: Exceptions that mean bad input; the CLI prints their first line and exits 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jacspec",
        description="Measure neural networks through their input-output Jacobians.",
        epilog="Output of every command: --json PATH writes one JSON file ('-': stdout); "
        "--plot DIR writes every figure into the folder DIR under fixed names; each written "
        "file is printed as 'wrote PATH'.",
    )
    parser.add_argument("--version", action="version", version=f"jacspec {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(jacspec.cli.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"jacspec.cli.commands.{info.name}")
        module.register(sub)
    return parser


def _version() -> str:
    from jacspec import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except USER_ERRORS as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        from jacspec.cli._common import data_shape_hint

        msg = data_shape_hint(args, msg)
        print(f"jacspec {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jacspec {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
