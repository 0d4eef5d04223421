"""``jacspec track CHECKPOINT_DIR --data NAME|FILE``: tracked metrics over saved checkpoints.

Example: ``jacspec track runs/mlp --data digits --n 256 --every 100 --json track.json --plot
figs --store track.jsonl`` (``--plot DIR`` writes track.png, and track_layers.png with
``--layers``). A folder of weights (state_dicts, PyTorch Lightning ``.ckpt`` files) is read
into its architecture: ``jacspec track package.module:factory --weights runs/mlp --data
digits``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from jacspec.cli._common import (
        JSON_HELP,
        add_data_args,
        add_input_module_args,
        add_jacobian_args,
        plot_help,
    )

    p = subparsers.add_parser(
        "track",
        help="the Jacobian spectrum's metrics at every saved checkpoint of a training run",
        description="Run jacspec's tracker over the checkpoints of CHECKPOINT_DIR (its *.pt, "
        "*.pth and *.ckpt files: jacspec checkpoints from jacspec.save_checkpoint, "
        "TorchScript files or exported programs), or over a folder of weights for "
        "MODEL_FACTORY (package.module:factory --weights DIR: state_dicts or PyTorch Lightning "
        ".ckpt files), ordered by the step number in their names (step_000100.pt, "
        "epoch=2-step=300.ckpt). Files without a number beside numbered ones (best.pt, "
        "last.ckpt) are left out with a warning; when no name has a number, the files are "
        "ordered by modification time (steps 0, 1, ...). Every checkpoint is measured on the "
        "same probe: --n examples of --data drawn with --seed.",
    )
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR|MODEL_FACTORY",
                   help="folder holding one checkpoint file per training step, or the "
                   "architecture as package.module:factory (optionally with literal "
                   "arguments, 'package.module:factory(10, width=64)') with --weights DIR")
    p.add_argument("--weights", metavar="DIR", default=None,
                   help="with MODEL_FACTORY: the folder of its weights, one state_dict or "
                   "Lightning .ckpt file per step (a 'model.' or other prefix of the keys "
                   "is dropped)")
    add_data_args(p)
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="measure only the checkpoints whose step is a multiple of K "
                   "(default 1: all)")
    p.add_argument("--metrics", default=None, metavar="M1,M2,...",
                   help="comma-separated metrics (default: rank, trace, lambda_max, "
                   "stable_rank, entropy, alpha, jacobian_norm); any numeric column of "
                   "jacspec analyze's table (lambda_plus, mp_sigma2, rand_distance, "
                   "lambda_max_se, ...: jacspec.analysis.columns.ROW_METRICS), or "
                   "jacobian_norm (mean softmax Jacobian Frobenius norm)")
    p.add_argument("--layers", default=None,
                   help="'all' or comma-separated module names: add layer-wise rows")
    p.add_argument("--output", choices=["softmax", "logits", "log_softmax"], default="softmax",
                   help="the output whose Jacobian's ESD is measured (default softmax)")
    add_jacobian_args(p)  # --dtype, --batch-size, --device (cli/_common.py)
    add_input_module_args(p)
    p.add_argument("--trust", action="store_true",
                   help="allow unpickling code from the checkpoints (only for files you trust)")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="append each row to the JSON-lines file PATH as it is computed; an "
                   "existing store is continued (checkpoints already in it are skipped)")
    p.add_argument("--json", metavar="PATH", help=f"{JSON_HELP}: settings, summary, rows")
    p.add_argument("--plot", metavar="DIR",
                   help=plot_help("track.png (and track_layers.png with --layers)"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jacspec.cli._common import (
        announce,
        check_plot_dir,
        format_table,
        info_stream,
        input_module_fields,
        jacobian_fields,
        load_data_from_args,
        save_figures,
        token_ids,
        write_json,
    )
    from jacspec.track.checkpoints import (
        UnnumberedCheckpointsWarning,
        scan_checkpoints,
        track_checkpoints,
        unnumbered_message,
    )
    from jacspec.track.tracker import DEFAULT_METRICS, Tracker

    plot_dir = check_plot_dir(args.plot)
    if args.every < 1:
        raise ValueError(f"--every must be a positive integer; got {args.every}")
    metrics = DEFAULT_METRICS
    if args.metrics is not None:
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        if not metrics:
            raise ValueError("--metrics is empty; name at least one metric")
    layers = None
    if args.layers:
        layers = "all" if args.layers == "all" else [s for s in args.layers.split(",") if s]
    factory, folder = _factory_and_folder(args)
    found, how, unnumbered = scan_checkpoints(folder)
    if unnumbered:
        print(f"jacspec track: warning: {unnumbered_message(unnumbered)}", file=sys.stderr)
    data = load_data_from_args(args, subset=False)
    tracker = Tracker(
        token_ids(args, data), metrics, every=args.every, n=args.n, seed=args.seed,
        layers=layers, store=args.store, output=args.output, **jacobian_fields(args),
        **input_module_fields(args),
    )
    before = len(tracker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnnumberedCheckpointsWarning)  # printed above
        new = track_checkpoints(tracker, folder, factory=factory, trust=args.trust,
                                progress=not args.no_progress and sys.stderr.isatty())
    if not len(tracker):
        steps = ", ".join(str(s) for s, _ in found[:8]) + (", ..." if len(found) > 8 else "")
        raise ValueError(f"no checkpoint step in {folder!r} is a multiple of "
                         f"--every {args.every} (steps: {steps})")
    files = {s: p.name for s, p in found}
    stream = info_stream(args.json)
    if before:
        print(f"continued {args.store}: {before} steps already there", file=stream)
    if args.json != "-":
        frame = tracker.frame().drop(columns=["wall_time"]).set_index("step")
        frame.insert(0, "file", [files.get(int(s), "") for s in frame.index])
        if (frame["warning"] == "").all():
            frame = frame.drop(columns=["warning"])
        print(format_table(frame), file=stream)
    payload = tracker.to_dict()
    payload["settings"]["data"] = data.settings if hasattr(data, "settings") else str(args.data)
    payload["settings"]["checkpoint_dir"] = str(folder)
    payload["settings"]["model_factory"] = factory
    payload["settings"]["steps_from"] = how
    payload["settings"]["unnumbered"] = [str(p) for p in unnumbered]
    paths = {s: str(p) for s, p in found}
    for row in payload["rows"]:
        row["checkpoint"] = paths.get(row["step"])
    payload["summary"]["new_steps"] = len(new)
    if args.store is not None:
        announce([args.store], args.json)
    write_json(payload, args.json)
    if plot_dir is not None:
        from jacspec.report.report_figures import tracking_figures

        figures = tracking_figures(tracker)
        save_figures(figures, plot_dir, json_path=args.json)
    return 0


def _factory_and_folder(args: argparse.Namespace) -> tuple[str | None, str]:
    """``(MODEL_FACTORY or None, the folder of checkpoints)`` from the positional argument and
    ``--weights``, each wrong combination refused with what to pass instead."""
    from jacspec.models.loading import parse_factory

    target, weights = str(args.checkpoint_dir), args.weights
    if Path(target).is_dir():
        if weights is not None:
            raise ValueError(f"--weights goes with a package.module:factory MODEL_FACTORY; "
                             f"{target!r} is a folder of checkpoints: drop --weights, or name "
                             "the architecture: jacspec track package.module:factory "
                             f"--weights {weights}")
        return None, target
    if Path(target).exists() or ":" not in target or target.startswith((".", "/")):
        raise FileNotFoundError(f"checkpoint folder {target!r} does not exist (or is not a "
                                "folder); pass a folder of checkpoints, or "
                                "package.module:factory --weights DIR")
    parse_factory(target)
    if weights is None:
        raise ValueError(f"MODEL_FACTORY {target!r} needs --weights DIR, the folder of its "
                         "weights (one state_dict or Lightning .ckpt file per step)")
    if Path(weights).is_file():
        raise ValueError(f"--weights {weights!r} is a file; jacspec track takes the folder of "
                         "weights (for one file: jacspec analyze MODEL --weights FILE)")
    return target, str(weights)


__all__ = ["register", "run"]
