"""Command-line entry point ``jacspec``.

Each sub-command lives in ``jacspec/cli/commands/<name>.py`` and exposes
``register(subparsers)``; this module only discovers them, parses arguments, prints every
warning and log record as one line ``jacspec CMD: warning: ...`` and turns the user errors
``ValueError``/``TypeError``/``OSError`` (bad input, missing or unreadable files) and
``MissingExtraError`` (an optional package the command needs is not installed: the line names
the extra) into one line on stderr and exit 2. Any other exception (``KeyError``,
``AttributeError``, another ``ImportError``, ...) is a bug in jacspec, not in the user's
input: it propagates with its traceback so it can be reported.

Output convention of every command: ``--json PATH`` writes one JSON file (``-``: to stdout,
which then carries nothing else); ``--plot DIR`` writes every figure of the command into the
folder DIR (created if missing) under fixed names; each written file is printed as
``wrote PATH``, one line each, on stdout (on stderr when ``--json -``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jacspec.cli.commands
from jacspec._util.extras import MissingExtraError
from jacspec.cli._wording import cli_wording

#: Exceptions that mean bad input (or a missing extra); the CLI prints their first line and
#: exits 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError,
                                                MissingExtraError)


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


def _one_line_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``jacspec CMD: warning: MESSAGE`` (first line
    of the message, no source line) on stderr: a user reads what happened and to which row,
    not a Python location."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = str(message).strip().splitlines()
        print(f"jacspec {command}: warning: {cli_wording(text[0]) if text else category.__name__}",
              file=sys.stderr)

    return show


class _LogLine(logging.Formatter):
    """Log records as ``jacspec CMD: warning: MESSAGE`` (level in lower case, CLI wording)."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        return (f"jacspec {self.command}: {record.levelname.lower()}: "
                f"{cli_wording(record.getMessage())}")


@contextlib.contextmanager
def _one_line_logs(command: str, verbose: bool) -> Iterator[None]:
    """For the command's duration, jacspec's log records go to stderr as one line each
    (:class:`_LogLine`; INFO with ``-v``, else WARNING and above); the logging configuration
    is restored afterwards (nothing outside the ``jacspec`` logger is touched)."""
    logger = logging.getLogger("jacspec")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogLine(command))
    old = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(), _one_line_logs(args.command, args.verbose):
            warnings.showwarning = _one_line_warning(args.command)
            # the libraries' deprecation notes are for their API's callers (jacspec), not
            # for the command's user; jacspec's own stay shown
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category)
                warnings.filterwarnings("default", category=category, module="jacspec")
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
