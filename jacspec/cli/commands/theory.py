"""``jacspec theory``: mean field, critical line and free-probability JJ^T spectra.

    jacspec theory meanfield --activation tanh --sigma-w2 1.05 --sigma-b2 2.01e-5
    jacspec theory critical --activation tanh --sigma-b2 2.01e-5
    jacspec theory spectrum --activation relu --weight-init gaussian --depth 8 \\
        --sigma-w2 2 --sigma-b2 0 [--simulate 400] [--json out.json] [--plot figs]

``--weight-init`` is the distribution of the weight matrices (i.i.d. Gaussian or Haar
orthogonal), not a weights file; ``--weights`` and ``--samples`` are accepted as deprecated
spellings of ``--weight-init`` and ``--instances``.

Each prints its numbers as a table; ``--json PATH`` also writes them as JSON (``-``: JSON on
stdout instead of the table); ``--plot DIR`` writes ``theory_spectrum.png`` into DIR.
"""

from __future__ import annotations

import argparse
import sys

from jacspec._util.validation import check_choice, positive_int
from jacspec.cli._common import (
    JSON_HELP,
    SEED_HELP,
    add_deprecated_alias,
    check_plot_dir,
    format_mapping,
    plot_help,
    save_figures,
    write_json,
)


def _emit(payload: dict, path: str | None) -> None:
    """The scalars of ``payload`` as a table on stdout (unless ``--json -``), then the JSON."""
    if path != "-":
        print(format_mapping(payload))
    write_json(payload, path)


#: Weight distributions of ``--weight-init`` (jacspec.theory.freeprob.WEIGHTS; listed here so
#: that building the parser imports no numerics).
WEIGHT_INITS = ("gaussian", "orthogonal")
ACTIVATION_HELP = ("activation by name (linear, relu, tanh, hard_tanh, erf, sigmoid, "
                   "hard_sigmoid, relu6, selu, gelu, silu, shifted_relu)")
SIGMA_W2_HELP = "weight variance sigma_w^2 (W_ij ~ N(0, sigma_w^2 / N) at width N)"
SIGMA_B2_HELP = "bias variance sigma_b^2"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "theory", help="random-network theory: mean field and Jacobian spectra",
        description="Mean-field signal propagation and free-probability spectra of JJ^T.",
    )
    sub = parser.add_subparsers(dest="theory_command", metavar="WHAT")

    mf = sub.add_parser("meanfield", help="q*, chi, c*, xi_q, xi_c at (sigma_w^2, sigma_b^2)")
    mf.add_argument("--activation", required=True, help=ACTIVATION_HELP)
    mf.add_argument("--sigma-w2", type=float, required=True, help=SIGMA_W2_HELP)
    mf.add_argument("--sigma-b2", type=float, required=True, help=SIGMA_B2_HELP)
    mf.add_argument("--json", metavar="PATH", default=None, help=JSON_HELP)
    mf.set_defaults(func=run, theory_func=_run_meanfield)

    cr = sub.add_parser("critical", help="sigma_w^2 and q* on the critical line chi = 1")
    cr.add_argument("--activation", required=True, help=ACTIVATION_HELP)
    cr.add_argument("--sigma-b2", type=float, required=True, help=SIGMA_B2_HELP)
    cr.add_argument("--json", metavar="PATH", default=None, help=JSON_HELP)
    cr.set_defaults(func=run, theory_func=_run_critical)

    sp = sub.add_parser("spectrum", help="density, atoms, m1, m2, lambda_max of JJ^T")
    sp.add_argument("--activation", required=True, help=ACTIVATION_HELP)
    dist = sp.add_mutually_exclusive_group(required=True)
    init = dist.add_argument(
        "--weight-init", metavar="{" + ",".join(WEIGHT_INITS) + "}",
        help="distribution of the weight matrices: i.i.d. gaussian or Haar orthogonal "
        "(not a weights file)")
    add_deprecated_alias(dist, "--weights", init)
    sp.add_argument("--depth", type=int, required=True, help="number of layers L")
    sp.add_argument("--sigma-w2", type=float, required=True, help=SIGMA_W2_HELP)
    sp.add_argument("--sigma-b2", type=float, required=True, help=SIGMA_B2_HELP)
    sp.add_argument("--points", type=int, default=1000,
                    help="points of the density grid (default 1000)")
    sp.add_argument("--simulate", type=int, default=None, metavar="N",
                    help="also simulate networks of width N and compare")
    instances = sp.add_argument("--instances", type=int, default=1, metavar="K",
                                help="simulated network instances to pool (default 1)")
    add_deprecated_alias(sp, "--samples", instances)
    sp.add_argument("--seed", type=int, default=0, help=SEED_HELP + " of the simulation")
    sp.add_argument("--json", metavar="PATH", default=None, help=JSON_HELP)
    sp.add_argument("--plot", metavar="DIR", default=None,
                    help=plot_help("theory_spectrum.png (density of log10 lambda, "
                                   "with the simulation when --simulate)"))
    sp.set_defaults(func=run, theory_func=_run_spectrum)
    parser.set_defaults(func=run, theory_func=None, _theory_parser=parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "theory_func", None) is None:
        args._theory_parser.print_help(sys.stderr)
        return 2
    return args.theory_func(args)


def _run_meanfield(args: argparse.Namespace) -> int:
    from jacspec.theory import mean_field

    _emit(mean_field(args.activation, args.sigma_w2, args.sigma_b2).to_dict(), args.json)
    return 0


def _run_critical(args: argparse.Namespace) -> int:
    from jacspec.theory import critical_point

    _emit(critical_point(args.activation, args.sigma_b2).to_dict(), args.json)
    return 0


def _run_spectrum(args: argparse.Namespace) -> int:
    from jacspec.theory import compare, jacobian_spectrum, simulate_spectrum

    check_choice("--weight-init", args.weight_init, WEIGHT_INITS)
    positive_int("--simulate", args.simulate, allow_none=True)
    positive_int("--instances", args.instances)
    plot_dir = check_plot_dir(args.plot)
    theory = jacobian_spectrum(args.activation, args.weight_init, args.depth, args.sigma_w2,
                               args.sigma_b2, num_points=args.points)
    payload = theory.to_dict()
    sim = None
    if args.simulate is not None:
        sim = simulate_spectrum(args.activation, args.weight_init, args.depth, args.sigma_w2,
                                args.sigma_b2, width=args.simulate,
                                num_instances=args.instances, seed=args.seed)
        cmp = compare(theory, sim)
        payload.update(sim_m1=sim.m1, sim_m2=sim.m2, sim_variance=sim.variance,
                       sim_lambda_max=sim.lambda_max, ks=cmp.ks,
                       m1_rel_err=cmp.m1_rel_err, m2_rel_err=cmp.m2_rel_err)
        payload["simulation"] = sim.to_dict()
    _emit(payload, args.json)
    if plot_dir is not None:
        from jacspec.report.theory_plots import theory_vs_simulation

        fig = theory_vs_simulation([theory], [sim] if sim is not None else None)
        save_figures({"theory_spectrum.png": fig}, plot_dir, json_path=args.json, dpi=110)
    return 0
