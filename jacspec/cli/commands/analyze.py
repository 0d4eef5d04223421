"""``jacspec analyze MODEL --data NAME|FILE``: the Jacobian ESD and its metric table."""

from __future__ import annotations

import argparse
import sys

from jacspec.cli._common import (
    JSON_HELP,
    LAYERS_HELP,
    NO_PROGRESS_HELP,
    OUTPUT_HELP,
    add_data_args,
    add_input_module_args,
    add_jacobian_args,
    add_model_args,
    announce,
    check_plot_dir,
    format_table,
    input_module_fields,
    jacobian_fields,
    load_data_from_args,
    load_model_from_args,
    plot_help,
    to_json,
    token_ids,
    write_json,
)
from jacspec.cli._wording import cli_wording


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="ESD of the data Jacobian of MODEL on a data set, with its metric table",
        description="Compute the data Jacobian's correlation matrix ESD and its metrics "
        "(WeightWatcher's column names), optionally per layer.",
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--output", choices=["softmax", "logits", "log_softmax"], default="softmax",
                   help=OUTPUT_HELP)
    p.add_argument("--scale", choices=["n", "none"], default="n", help="eigenvalues of M/n or M")
    add_jacobian_args(p)  # --dtype, --batch-size, --device
    p.add_argument("--side", choices=["auto", "dual", "primal"], default="auto",
                   help="Gram side: primal JJ^T (n x n), dual J^TJ (kd x kd) or auto (the "
                   "smaller); both have the same nonzero eigenvalues")
    p.add_argument(
        "--method",
        choices=["exact", "auto", "slq"],
        default="exact",
        help="exact eigenvalues, or a stochastic Lanczos estimate when exact is out of reach",
    )
    p.add_argument(
        "--jacobian-method",
        choices=["auto", "replicate", "batched_grad", "loop"],
        default="auto",
        help="the engine's batched backward for the input->output Jacobian on the direct "
        "route (same numbers; the factored route has its own backward)",
    )
    p.add_argument(
        "--route",
        choices=["auto", "direct", "factored"],
        default="auto",
        help="input->output rows: direct J = dg/dx, factored A L through the first linear "
        "layer (same Gram, smaller dual; jacspec.jacobian.factored) or auto (factored when it "
        "applies, is cheaper and the randomized null does not need J's entries)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help=LAYERS_HELP,
    )
    add_input_module_args(p)
    p.add_argument("--no-randomize", action="store_true", help="skip the randomized null")
    p.add_argument(
        "--sketch",
        type=_sketch_arg,
        default="auto",
        metavar="R",
        help="sketch the k outputs with R shared random projections (an unbiased estimate of "
        "M at R/k of the backward passes); auto: R=64 when k >= 200; 0: exact",
    )
    p.add_argument("--max-memory-gib", type=_positive_gib, default=None, metavar="GIB",
                   help="refuse a Gram matrix larger than GIB gibibytes")
    p.add_argument("--json", metavar="PATH", help=f"{JSON_HELP}: settings, eigenvalues, metrics")
    p.add_argument(
        "--plot",
        metavar="DIR",
        help=plot_help(
            "esd_loglog.png, esd_linear.png, esd_randomized.png (exact ESD) or esd_slq.png "
            "(estimated density)"
        ),
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plot_dir = check_plot_dir(args.plot)
    fields = jacobian_fields(args)  # --device checked before any work
    model = load_model_from_args(args)
    data = load_data_from_args(args)
    model_data = token_ids(args, data)
    layers = None
    if args.layers:
        layers = "all" if args.layers == "all" else [s for s in args.layers.split(",") if s]
    max_memory = None if args.max_memory_gib is None else max(1, int(args.max_memory_gib * 2**30))
    try:
        result = _analyze(args, model, model_data, layers, max_memory, fields)
    except ValueError as exc:
        raise ValueError(cli_wording(str(exc))) from None
    rows = result.table
    if "method" in rows and (rows["method"] == "skipped").all():
        reasons = "; ".join(f"{m}: {w}" for m, w in zip(rows.index, rows["warning"], strict=True))
        hint = ("raise --max-memory-gib" if "one example's Jacobian" in reasons
                else "pass --method auto for an estimate, or raise --max-memory-gib")
        raise ValueError(f"nothing could be computed ({cli_wording(reasons)}); {hint}")
    if args.json != "-":
        with _pandas_wide():
            print(format_table(result.table.T))
    payload = result.to_dict()
    payload["settings"]["data"] = data.settings if hasattr(data, "settings") else str(args.data)
    payload["settings"]["model"] = str(args.model)
    write_json(payload, args.json)
    if plot_dir is not None:
        from jacspec.report.analysis import save_analysis_figures

        announce(save_analysis_figures(result, plot_dir), args.json)
    return 0


def _positive_gib(text: str) -> float:
    """``--max-memory-gib``: a positive number of gibibytes."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of GiB; got {text!r}")
    return value


#: analyze's keywords that the CLI takes as flags of the same name.
_SAME_NAME = ("output", "scale", "side", "method", "jacobian_method", "route", "sketch", "seed")


def _analyze(args: argparse.Namespace, model: object, data: object, layers: object,
             max_memory: int | None, fields: dict[str, object]) -> object:
    from jacspec.analysis import analyze

    same = {name: getattr(args, name) for name in _SAME_NAME}  # flag name = keyword name
    return analyze(model, data, layers=layers, randomize=not args.no_randomize,
                   max_memory=max_memory, progress=not args.no_progress and sys.stderr.isatty(),
                   **same, **input_module_fields(args), **fields)  # fields: dtype, batch, device


def _sketch_arg(text: str) -> int | str:
    """``--sketch``: ``auto`` or a non-negative integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer number of projections or 'auto'; got {text!r}"
        )
    return value


class _pandas_wide:
    def __enter__(self) -> None:
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 50)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


__all__ = ["register", "run", "to_json"]
