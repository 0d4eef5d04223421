"""``jacspec sensitivity``: Jacobian norms, trajectories and per-point loss bounds.

Example: ``jacspec sensitivity model.pt --data digits --points 256 --json out.json --plot figs``
(``--plot DIR`` writes sensitivity_profiles.png and sensitivity_per_point.png into DIR).
With ``--input-module NAME`` (a text model on a ``.npz`` of token ids) the norms and the
per-point bounds are taken at that module's output; trajectories run through input space
and are left out (with one line saying so), or refused when ``--kinds`` asks for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jacspec._util.validation import positive_int

log = logging.getLogger(__name__)

KIND_CHOICES = ("same_class", "different_class", "random", "translation")


def register(subparsers: Any) -> None:
    from jacspec.cli._common import (
        JSON_HELP,
        add_data_args,
        add_input_module_args,
        add_jacobian_args,
        add_model_args,
        plot_help,
    )

    p = subparsers.add_parser(
        "sensitivity",
        help="Jacobian norms, linear-region transitions along trajectories, per-point bounds",
        description="Sensitivity analysis after Novak et al. (ICLR 2018): mean softmax "
        "Jacobian norm on --data (--split, default test), profiles along ellipses through "
        "training points, a random ellipse and translations of a test point, and the "
        "per-point loss bounds of eqs. 5-7.",
    )
    add_model_args(p)
    add_data_args(p, default_split="test")
    p.add_argument("--points", type=int, default=256, metavar="K",
                   help="Jacobian points per trajectory (default 256)")
    p.add_argument("--refine", type=int, default=16,
                   help="activation-code samples per Jacobian point (default 16)")
    p.add_argument("--kinds", default=None,
                   help="comma-separated trajectory kinds (default: all four; none with "
                   "--input-module)")
    p.add_argument("--image-shape", default=None, metavar="H,W",
                   help="view flat inputs as H x W images for translations "
                   "(digits: 8,8 by default)")
    add_input_module_args(p)
    add_jacobian_args(p, dtype=False)  # --batch-size, --device (cli/_common.py)
    p.add_argument("--json", metavar="PATH", help=JSON_HELP)
    p.add_argument("--plot", metavar="DIR",
                   help=plot_help("sensitivity_profiles.png, sensitivity_per_point.png"))
    p.set_defaults(func=run)


def _image_shape(text: str | None, data: Any) -> tuple[int, ...] | None:
    if text:
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--image-shape={text!r} must look like H,W (e.g. 28,28)") from None
    if getattr(data, "name", "") == "digits" and tuple(data.x.shape[1:]) == (64,):
        return (8, 8)
    return None


def _kinds(args: argparse.Namespace) -> list[str]:
    """The trajectory kinds of ``--kinds`` (default all; none at an input module, where a
    trajectory through input space does not apply)."""
    if args.kinds is None:
        return [] if args.input_module is not None else list(KIND_CHOICES)
    if args.input_module is not None:
        raise ValueError(f"--kinds={args.kinds!r} cannot go with --input-module: trajectories "
                         "run through input space and token ids cannot be interpolated; drop "
                         "--kinds for the norms and per-point bounds at the module")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KIND_CHOICES]
    if bad or not kinds:
        raise ValueError(f"--kinds={args.kinds!r} must list some of {', '.join(KIND_CHOICES)}")
    return kinds


def run(args: argparse.Namespace) -> int:
    from jacspec.cli._common import (
        check_plot_dir,
        input_module_fields,
        jacobian_fields,
        load_data_from_args,
        load_model_from_args,
        save_figures,
        token_ids,
        write_json,
    )
    from jacspec.sensitivity.norms import per_point_generalization
    from jacspec.sensitivity.trajectories import compare_trajectories

    kinds = _kinds(args)
    positive_int("--points", args.points)
    positive_int("--refine", args.refine)
    plot_dir = check_plot_dir(args.plot)
    model = load_model_from_args(args)
    data = load_data_from_args(args)
    fields = input_module_fields(args)
    compute = jacobian_fields(args)  # batch_size, device
    per_point = per_point_generalization(model, token_ids(args, data), **compute, **fields)
    summary = per_point.summary()
    profiles = []
    if kinds:
        anchors = data if args.split == "train" else load_data_from_args(
            args, split="train", subset=False)
        profiles = compare_trajectories(
            model, anchors, kinds=kinds, test_data=data,
            image_shape=_image_shape(args.image_shape, data),
            num_points=args.points, refine=args.refine, seed=args.seed, **compute, **fields,
        )
    else:
        print("jacspec sensitivity: note: no trajectories at --input-module (they run through "
              "input space); the norms and per-point bounds are at its output", file=sys.stderr)
    payload: dict[str, Any] = {
        "model": str(args.model),
        "data": {"name": str(args.data), "split": args.split, "n": len(data)},
        "jacobian_norm_mean": summary["jacobian_norm_mean"],
        "trajectories": [
            {**p.summary(), "transitions": p.total_transitions,
             "jacobian_norm": p.jacobian_norm.tolist(),
             "transitions_per_segment": p.transitions.tolist(),
             "anchors": list(p.anchors), "anchor_jacobian_norm": p.anchor_jacobian_norm.tolist(),
             "settings": p.settings}
            for p in profiles
        ],
        "per_point": summary,
        "settings": {
            "model": str(args.model),
            "data": data.settings if hasattr(data, "settings") else str(args.data),
            "split": args.split, "kinds": kinds, "points": args.points,
            "refine": args.refine, "seed": args.seed, "batch_size": args.batch_size,
            **fields, "per_point": per_point.settings,
        },
    }
    if args.json != "-":
        line = ", ".join(f"{p.kind}: norm {p.summary()['jacobian_norm_mean']:.4g}, "
                         f"{p.total_transitions} transitions" for p in profiles)
        print(f"mean Jacobian norm {summary['jacobian_norm_mean']:.4g} on {len(data)} points; "
              f"eq. 6 holds for {summary['fraction_in_eq6']:.1%}" + (f"; {line}" if line else ""))
    write_json(payload, args.json)
    if plot_dir is not None:
        from jacspec.report.sensitivity_plots import plot_per_point, plot_profiles

        figures = {"sensitivity_per_point.png": plot_per_point(per_point)}
        if profiles:
            figures = {"sensitivity_profiles.png": plot_profiles(
                profiles, smooth=max(1, args.points // 64)), **figures}
        save_figures(figures, plot_dir, json_path=args.json, dpi=110)
    return 0
