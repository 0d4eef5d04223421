"""``jacspec demo``: true-label against random-label training on built-in digits."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jacspec.commands._common import to_json

#: Rows of the side-by-side table, in this order.
DEMO_ROWS = (
    "train_accuracy",
    "test_accuracy",
    "epochs",
    "num_evals",
    "rank",
    "trace",
    "lambda_max",
    "stable_rank",
    "log_norm",
    "log_spectral_norm",
    "entropy",
    "effective_rank",
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
        "random labels (both to 100%% training accuracy), compute both data-Jacobian ESDs on "
        "the training set, print the metric tables side by side and write figures.",
    )
    p.add_argument("--out", default="demo_out", help="folder for figures and JSON")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from jacspec.analysis import analyze
    from jacspec.datasets import load_dataset
    from jacspec.models import mlp
    from jacspec.report.analysis import demo_figure, demo_null_figures
    from jacspec.train import evaluate, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print("Jacobian ESD of M/n on the digits training set (softmax output)")
        print(table.to_string())
    fig = demo_figure(analyses)
    fig_path = out / "esd_true_vs_random.png"
    fig.savefig(fig_path, dpi=120, bbox_inches="tight")
    for label, null_fig in demo_null_figures(analyses).items():
        null_fig.savefig(
            out / f"esd_randomized_{label.replace(' ', '_')}.png", dpi=120, bbox_inches="tight"
        )
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
    (out / "demo.json").write_text(to_json(json.loads(to_json(payload))) + "\n")
    print(f"\nfigures: {out}/*.png\ntables: {out / 'demo.json'}")
    return 0
