"""Command-line interface: ``jacspec COMMAND``; commands live in ``jacspec/cli/commands``."""

from jacspec.cli.main import main

__all__ = ["main"]
