"""``jacspec demo``: true-label against random-label training on built-in digits."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jacspec.cli._common import (
    JSON_HELP,
    announce,
    check_plot_dir,
    format_table,
    plot_help,
    save_figures,
    write_json,
)
from jacspec.spectra.metrics import METRIC_COLUMNS

#: Rows of the side-by-side table, in this order.
DEMO_ROWS = (
    "train_accuracy",
    "test_accuracy",
    "epochs",
    *METRIC_COLUMNS,
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "xmin",
    "D",
    "num_pl_spikes",
    "num_spikes",
    "mp_softrank",
    "rand_distance",
    "rand_lambda_max",
    "num_traps",
    "warning",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train MLPs on digits with true and random labels and compare their Jacobian ESDs",
        description="Train an MLP on scikit-learn's digits with true labels and one with "
        "random labels (both to 100% training accuracy), compute both data-Jacobian ESDs on "
        "the training set, print the metric tables side by side and write figures.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="default folder of --plot and of --json (DIR/demo.json)")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help=plot_help("esd_true_vs_random.png, esd_randomized_true_labels.png, "
                                  "esd_randomized_random_labels.png; default: --out"))
    p.add_argument("--json", metavar="PATH", default=None,
                   help=f"{JSON_HELP}; default: --out/demo.json")
    p.add_argument("--report", metavar="PATH", default=None,
                   help="write one self-contained HTML page of the comparison, both analyses "
                   "and the figures to PATH; default: report.html in the --plot folder "
                   "(--out/report.html)")
    p.add_argument("--width", type=int, default=256, help="hidden units per layer (default 256)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from jacspec.analysis import analyze
    from jacspec.data.datasets import load_dataset
    from jacspec.models.builders import mlp
    from jacspec.models.train import evaluate, train
    from jacspec.report.analysis import demo_figure, demo_null_figures

    plot_dir = check_plot_dir(args.plot if args.plot is not None else args.out)
    report_path = Path(args.report) if args.report is not None else plot_dir / "report.html"
    if report_path.is_dir():
        raise ValueError(f"--report {args.report!r} is a folder; --report takes the HTML file "
                         "to write (e.g. --report demo_out/report.html)")
    json_path = args.json if args.json is not None else str(Path(args.out) / "demo.json")
    train_set = load_dataset("digits", "train")
    test_set = load_dataset("digits", "test")
    variants = {
        "true labels": train_set,
        "random labels": train_set.with_random_labels(seed=args.seed),
    }
    columns: dict[str, dict] = {}
    analyses = {}
    for label, data in variants.items():
        t0 = time.perf_counter()
        model = mlp(
            data.input_shape, data.num_classes, width=args.width, depth=args.depth, seed=args.seed
        )
        result = train(model, data, seed=args.seed, max_epochs=500)
        test_acc, _ = evaluate(model, test_set.x, test_set.y)
        analysis = analyze(model, data, seed=args.seed)
        analyses[label] = analysis
        metrics = analysis.table.loc["input->output"].to_dict()
        columns[label] = {
            "train_accuracy": result.train_accuracy,
            "test_accuracy": test_acc,
            "epochs": result.epochs,
            **metrics,
        }
        print(
            f"{label}: trained {result.epochs} epochs to train accuracy "
            f"{result.train_accuracy:.3f} ({result.reached}), test accuracy {test_acc:.3f}, "
            f"analysed in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    table = pd.DataFrame(columns).reindex(list(DEMO_ROWS))
    if json_path != "-":
        with pd.option_context("display.width", 160):
            print("Jacobian ESD of M/n on the digits training set (softmax output)")
            print(format_table(table))
    figures = {"esd_true_vs_random.png": demo_figure(analyses)}
    for label, null_fig in demo_null_figures(analyses).items():
        figures[f"esd_randomized_{label.replace(' ', '_')}.png"] = null_fig
    payload = {
        "settings": {
            "data": "digits",
            "split": "train",
            "width": args.width,
            "depth": args.depth,
            "seed": args.seed,
            "scale": "n",
            "output": "softmax",
        },
        "metrics": columns,
    }
    write_json(payload, json_path)
    save_figures(figures, plot_dir, json_path=json_path)
    from jacspec.report.html import build_section, write_report

    comparison = build_section(payload, title="True against random labels")
    comparison.add_figure("Jacobian ESDs of both networks (log-log) with their power-law fits",
                          figures["esd_true_vs_random.png"])
    report = write_report([comparison, *(build_section(a, title=f"Analysis: {label}")
                                         for label, a in analyses.items())],
                          report_path, title="jacspec demo: true against random labels "
                          "on digits")
    announce([report], json_path)
    return 0
