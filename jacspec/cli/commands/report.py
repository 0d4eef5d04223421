"""``jacspec report``: one self-contained HTML page from the files other commands write.

Example: ``jacspec analyze model.pt --data digits --json a.json`` then
``jacspec report a.json sens.json zoo.sqlite track.jsonl --out report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page (figures embedded) from JSON files and stores",
        description="Write one HTML page that opens offline (figures embedded as PNG, no "
        "network access) holding the settings, versions, tables, figures and warnings of each "
        "INPUT. The kind of each input is detected from its content: the --json file of "
        "jacspec analyze, demo, sensitivity, theory, zoo score or track; a zoo results store "
        "(SQLite: scores and metric-vs-gap scatter plots); a tracker store (.jsonl) or a "
        "CSV of tracked rows with a step column.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="JSON file written with --json, zoo store (.sqlite), tracker store "
                   "(.jsonl) or CSV with a step column; one section each, in this order")
    p.add_argument("--out", default="report.html", metavar="PATH",
                   help="the HTML file to write (default: report.html; its folder is created "
                   "if missing)")
    p.add_argument("--title", default=None,
                   help="heading of the page (default: 'jacspec report', with the input's "
                   "title for a single input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jacspec.cli._common import announce
    from jacspec.report.html import write_report

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out!r} is a folder; --out takes the HTML file to write "
                         "(e.g. --out report.html)")
    for name in args.inputs:
        if not Path(name).exists():
            raise FileNotFoundError(f"input {name!r} does not exist")
    announce([write_report(list(args.inputs), out, title=args.title)])
    return 0
