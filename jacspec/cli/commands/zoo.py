"""``jacspec zoo``: run a model-zoo sweep, show its status, score its metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jacspec._util.json import dumps


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("zoo", help="train model zoos and score generalization "
                                   "metrics (Kendall tau, Psi, CMI)")
    sub = parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    parser.set_defaults(func=run)

    p = sub.add_parser("run", help="run every configuration of a sweep file not yet done")
    p.add_argument("config", help="sweep file (.toml, .yaml)")
    p.add_argument("--store", required=True, help="SQLite results store (created if missing)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool or a Ray cluster (default local)")
    p.add_argument("--address", default=None, help="Ray cluster: auto or HOST:PORT")
    p.add_argument("--workers", type=int, default=None, help="worker processes (local)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--group", type=int, default=None, help="jobs per task")
    p.add_argument("--retry-failed", action="store_true", help="rerun failed runs too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up when Ray has not started within SECONDS (default: 60)")
    p.set_defaults(zoo_func=_run)

    p = sub.add_parser("status", help="count runs by status; list failed runs and their errors")
    p.add_argument("store", help="results store")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the counts as JSON to the file PATH ('-': stdout)")
    p.set_defaults(zoo_func=_status)

    p = sub.add_parser("migrate", help="rewrite older zoo checkpoints of a store as jacspec "
                       "checkpoints (readable by jacspec analyze)")
    p.add_argument("store", help="results store")
    p.set_defaults(zoo_func=_migrate)

    p = sub.add_parser("score", help="score every metric against the generalization gap")
    p.add_argument("store", help="results store")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the scores as JSON to the file PATH ('-': stdout)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write every figure into the folder DIR (created if missing): "
                   "zoo_gap_*.png, zoo_pairs_*.png, zoo_curves_*.png; each written path "
                   "is printed")
    p.add_argument("--gap", default="gap", help="column holding the gap (default: gap)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="score only the runs whose configuration has KEY=VALUE (repeatable; "
                   "VALUE read as a number, true/false or text), e.g. --where width=128")
    p.add_argument("--converged", action="store_true",
                   help="score only the runs that reached their training criterion (the "
                   "others are excluded, as Novak et al. do)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="add a 95%% percentile-bootstrap interval to every score from N "
                   "resamples (default 0: none; see jacspec.zoo.rank.intervals)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    g = p.add_argument_group(
        "pre-registered test (study 2, docs/results/mnist_study2.md; jacspec.zoo.rank.confirm)")
    g.add_argument("--confirm", action="store_true",
                   help="run the confirmatory test: partial Kendall tau given --given within "
                   "--family, Delta_S against the best comparator, max-T lower bounds, Psi_Z, "
                   "and the verdict; only converged runs are scored")
    g.add_argument("--shape", default=None, metavar="A,B,...",
                   help="shape-metric columns tested (comma-separated)")
    g.add_argument("--comparators", default=None, metavar="C,D,...",
                   help="scale-metric columns compared against (comma-separated)")
    g.add_argument("--given", default="train_jacobian_norm", metavar="Z",
                   help="the norm conditioned on (default train_jacobian_norm)")
    g.add_argument("--family", default="model", metavar="KEY",
                   help="configuration key of the architecture family; pairs never cross it "
                   "(default model)")
    g.add_argument("--confirm-draws", type=int, default=2000, metavar="B",
                   help="cluster-bootstrap draws (default 2000, as pre-registered)")
    g.add_argument("--confirm-seed", type=int, default=19,
                   help="seed of numpy.random.default_rng for the test (default 19)")
    p.set_defaults(zoo_func=_score)


def run(args: argparse.Namespace) -> int:
    func = getattr(args, "zoo_func", None)
    if func is None:
        raise ValueError("zoo needs a sub-command: run, status, score or migrate")
    return int(func(args) or 0)


def _where(items: list[str]) -> dict[str, Any]:
    """``["width=128", "augment=false"]`` -> ``{"width": 128, "augment": False}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where takes KEY=VALUE (e.g. --where width=128); got {item!r}")
        out[key.strip()] = _literal(text.strip())
    return out


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    text = dumps(data, indent=2)
    if path and path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def _run(args: argparse.Namespace) -> int:
    """Run the sweep; exit 1 (first error on stderr) when any of its runs failed."""
    from jacspec.zoo.run.store import Store
    from jacspec.zoo.run.sweep import RAY_START_TIMEOUT, load_sweep, run_sweep

    sweep = load_sweep(args.config)
    timeout = RAY_START_TIMEOUT if args.ray_timeout is None else args.ray_timeout
    summary = run_sweep(sweep, args.store, backend=args.backend, workers=args.workers,
                        address=args.address, group=args.group, threads=args.threads,
                        retry_failed=args.retry_failed, progress=not args.no_progress,
                        ray_timeout=timeout)
    _write_json(None, summary.to_dict())
    if summary.ok:
        return 0
    errors = dict(summary.errors)
    if not errors:  # failed in an earlier call and not retried
        with Store(args.store, readonly=True) as store:
            errors = store.errors()
    h, err = next(iter(errors.items()), ("?", ""))
    failed = summary.failed + summary.previously_failed
    old = (f" ({summary.previously_failed} from an earlier call, not retried: --retry-failed "
           "reruns them)" if summary.previously_failed else "")
    sys.stderr.write(f"jacspec zoo: {failed} of {summary.total} runs failed{old}; first error "
                     f"(run {h}): {_first_line(err)}; every failure: jacspec zoo status "
                     f"{args.store}\n")
    return 1


def _status(args: argparse.Namespace) -> int:
    """Counts by status and, per failed run, its error (JSON key ``failures``)."""
    from jacspec.zoo.run.store import Store

    if not Path(args.store).exists():
        raise OSError(f"store {args.store} does not exist")
    with Store(args.store, readonly=True) as store:
        counts = store.counts()
        failures = store.failures()
    _write_json(args.json, {**counts, "failures": failures,
                            "settings": {"store": str(args.store)}})
    if args.json and args.json != "-":
        sys.stdout.write(" ".join(f"{k}={v}" for k, v in counts.items()) + "\n")
        for f in failures:
            sys.stdout.write(f"failed {f['config_hash']} (attempts={f['attempts']}): "
                             f"{_first_line(f['error'])}\n")
        sys.stdout.write(f"wrote {args.json}\n")
    elif failures:
        sys.stderr.write(f"{len(failures)} failed runs; first error (run "
                         f"{failures[0]['config_hash']}): {_first_line(failures[0]['error'])}\n")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from jacspec.zoo.run.store import Store

    if not Path(args.store).exists():
        raise OSError(f"store {args.store} does not exist")
    with Store(args.store) as store:
        paths = store.migrate_checkpoints()
    for path in paths:
        sys.stdout.write(f"rewrote {path}\n")
    sys.stdout.write(f"{len(paths)} checkpoints migrated\n")
    return 0


def _columns(option: str, text: str | None) -> list[str]:
    items = [c.strip() for c in (text or "").split(",") if c.strip()]
    if not items:
        raise ValueError(f"{option} takes a comma-separated list of metric columns "
                         f"(e.g. {option} jac_train_alpha,jac_train_entropy); got {text!r}")
    return items


_CONFIRM_COLUMNS = ["role", "networks", "tau", "tau_lo", "tau_hi", "partial_tau",
                    "partial_tau_lo", "partial_tau_hi", "delta", "se", "lower_bound",
                    "p_adjusted", "psi", "psi_z", "psi_z_q05", "psi_z_q95"]


def _confirm(args: argparse.Namespace) -> int:
    """``zoo score --confirm``: the pre-registered test; the table on stdout."""
    from jacspec.zoo.rank.confirm import confirm_store

    if args.confirm_draws < 2:
        raise ValueError(f"--confirm-draws must be a number of draws >= 2, got "
                         f"{args.confirm_draws}")
    result = confirm_store(args.store, _columns("--shape", args.shape),
                           _columns("--comparators", args.comparators),
                           where=_where(args.where), z=args.given, family=args.family,
                           gap=args.gap, B=args.confirm_draws, rng_seed=args.confirm_seed)
    if args.json:
        _write_json(args.json, result.to_dict())
        if args.json == "-":
            return 0
    frame = result.to_frame()
    out = sys.stdout
    out.write(frame[_CONFIRM_COLUMNS].to_string(float_format=lambda v: f"{v:.4g}") + "\n")
    for col, info in result.excluded.items():
        out.write(f"excluded {col}: {info['reason']} ({info['nonfinite']} non-finite, "
                  f"{info['distinct']} distinct values)\n")
    thin = sorted({t for r in result.rows.values() for t in r.get("psi_z_thin", [])})
    if thin:
        out.write(f"Psi_Z factors with fewer than {result.settings['min_pairs']} counted "
                  f"pairs (left out of a metric's family mean): {', '.join(thin)}\n")
    c = result.counts
    out.write(f"networks: {c['networks']} converged ({c['excluded_not_converged']} not "
              f"converged, excluded); configurations: {c['configurations']}; ICC(1) of the "
              f"gap: {', '.join(f'{k} {v:.3f}' for k, v in result.icc.items())}\n")
    v = result.verdict
    best = v.best
    line = f"verdict: {v.answer}"
    if best:
        line += (f"; largest Delta/se: {best['metric']} Delta {best['delta']:.4f} "
                 f"[{best['delta_lo']:.4f}, {best['delta_hi']:.4f}], simultaneous lower "
                 f"bound {best['lower_bound']:.4f} (c = {result.critical:.3f}), partial tau "
                 f"{best['partial_tau']:.4f} [{best['partial_tau_lo']:.4f}, "
                 f"{best['partial_tau_hi']:.4f}]")
    if v.answer == "no" and v.largest_upper_abs_partial:
        u = v.largest_upper_abs_partial
        line += f"; largest 95% upper bound of |partial tau|: {u['value']:.4f} ({u['metric']})"
    out.write(line + "\n")
    for metric, conds in v.failed.items():
        if conds:
            out.write(f"{metric}: lower bound above 0 but failed {', '.join(conds)}\n")
    if args.json:
        out.write(f"wrote {args.json}\n")
    return 0


def _score(args: argparse.Namespace) -> int:
    from jacspec.zoo.rank.score import score_store

    if not Path(args.store).exists():
        raise OSError(f"store {args.store} does not exist")
    if not args.confirm and (args.shape or args.comparators):
        raise ValueError("--shape and --comparators select the metrics of the confirmatory "
                         "test: add --confirm")
    if args.confirm:
        if args.plot or args.bootstrap:
            raise ValueError("--confirm does not take --plot or --bootstrap (its intervals "
                             "come from --confirm-draws)")
        return _confirm(args)
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be a number of resamples >= 0, got {args.bootstrap}")
    table = score_store(args.store, gap=args.gap, where=_where(args.where),
                        converged=args.converged, bootstrap=args.bootstrap, seed=args.seed)
    _write_json(args.json, table.to_dict())
    if args.json and args.json != "-":
        cols = ["kendall_tau", "psi", "cmi", "robust_sign_error"]
        if args.bootstrap:
            cols = [f"{c}{end}" for c in cols for end in ("", "_lo", "_hi")]
        frame = table.to_frame()[cols]
        sys.stdout.write(frame.to_string(float_format=lambda v: f"{v:.4g}") + "\n")
        aliased = table.settings.get("aliased") or {}
        sys.stdout.write(f"factors: {', '.join(table.factors)}" + "".join(
            f" ({k} follows {v})" for k, v in aliased.items()) + "\n")
        sys.stdout.write(f"best: {table.best}\n")
        sys.stdout.write(f"wrote {args.json}\n")
    if args.plot:
        from jacspec.report.zoo_plots import save_zoo_figures

        for path in save_zoo_figures(args.store, args.plot, table=table):
            (sys.stderr if args.json == "-" else sys.stdout).write(f"wrote {path}\n")
    return 0
