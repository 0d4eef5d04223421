"""Study 2 of issue 19: the held-out zoo that docs/results/mnist_study2.md pre-registers.

    .venv/bin/python experiments/mnist_study2.py zoo --max-minutes 170   # resumable
    .venv/bin/python experiments/mnist_study2.py pilot                   # section 4.4's pilot
    .venv/bin/python experiments/mnist_study2.py zoo --smoke             # tiny, < 1 minute

``zoo`` trains the 512 networks of section 4.2 (two complete 2^6 grids, MLP and CNN, seeds
201-204; ``experiments/mnist_study2.toml``) into ``docs/results/mnist_study2.sqlite``.
``pilot`` trains the five networks of section 4.4 (old split, seed 900, ResNet-8 width 16
included) into ``docs/results/mnist_study2_pilot.sqlite``. Both resume: finished networks in
the store are skipped, networks an interrupted call left running are redone, and a call
with ``--max-minutes M`` stops launching networks so that it ends within about M minutes
(``mnist_study_common.run_zoo``, as ``experiments/mnist_study.py zoo`` does), so a killed
call loses only the networks it was training.

Every configuration carries the metric list of the TOML's ``[fixed] metrics``. The script
refuses to start while a listed metric is not in ``jacspec.zoo.run.metrics.REGISTRY`` (the
store keeps no checkpoints, so a network measured without a metric cannot get it later).
``--smoke`` trains two tiny networks (one per family, 200 digits, 2 epochs) into a
temporary store (or ``--store``) and skips unregistered metrics with a logged note, to
check the code only.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file

from mnist_study_common import run_zoo

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "mnist_study2.toml"
STORE = ROOT / "docs" / "results" / "mnist_study2.sqlite"
PILOT_STORE = ROOT / "docs" / "results" / "mnist_study2_pilot.sqlite"
STAGES = ("zoo", "pilot")

#: What --smoke changes in every configuration: 200 digits, 2 epochs, few points.
SMOKE = {"n_train": 200, "n_test": 200, "max_epochs": 2, "n_jacobian": 50, "n_esd": 40}
#: Modules that register metrics when imported (the flatness baselines of section 3).
METRIC_MODULES = ("jacspec.zoo.run.flatness",)

log = logging.getLogger("mnist_study2")


# --------------------------------------------------------------------------- design


def read_design(path: str | Path = CONFIG) -> dict[str, Any]:
    """The design of the TOML: ``fixed`` (every network's keys), ``families`` (name ->
    ``{"fixed", "grid"}``), ``seeds``, ``null`` (keys set to null), ``order_seed`` and
    ``pilot`` (``{"seed", "fixed", "networks"}``)."""
    import tomllib

    with open(path, "rb") as fh:
        spec = tomllib.load(fh)
    study = spec.get("study", {})
    seeds = [int(s) for s in study.get("seeds", [])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"[study] seeds must be distinct integers; got {seeds}")
    families = dict(study.get("families", {}))
    if not families:
        raise ValueError("[study.families] must name at least one family")
    return {"sweep": dict(spec.get("sweep", {})), "fixed": dict(spec.get("fixed", {})),
            "families": families, "seeds": seeds, "null": list(study.get("null", [])),
            "order_seed": int(study.get("order_seed", 0)),
            "pilot": dict(study.get("pilot", {}))}


def _with_nulls(config: dict[str, Any], design: dict[str, Any]) -> dict[str, Any]:
    return {**config, **{key: None for key in design["null"]}}


def family_configs(design: dict[str, Any], family: str) -> list[dict[str, Any]]:
    """The configurations (no seed) of one family's complete grid, in grid order."""
    from jacspec.zoo.run.sweep import expand

    part = design["families"][family]
    fixed = {**design["fixed"], **dict(part.get("fixed", {}))}
    sweep = expand({"sweep": design["sweep"], "fixed": fixed, "grid": dict(part["grid"])})
    return [_with_nulls(dict(c), design) for c in sweep.configs]


def zoo_configs(design: dict[str, Any]) -> list[dict[str, Any]]:
    """Every network of the held-out zoo in run order: the configurations of every family
    in one shuffled order (``order_seed``; any prefix is a random part of the design), each
    followed by its seed replicates."""
    configs = [c for family in design["families"] for c in family_configs(design, family)]
    order = np.random.default_rng(design["order_seed"]).permutation(len(configs))
    return [{**configs[int(i)], "seed": s} for i in order for s in design["seeds"]]


def pilot_configs(design: dict[str, Any]) -> list[dict[str, Any]]:
    """The pilot's networks (section 4.4): every network's keys, then the pilot's, then
    each network's own, with the pilot's seed."""
    pilot = design["pilot"]
    if not pilot.get("networks"):
        raise ValueError("[study.pilot] must list its networks ([[study.pilot.networks]])")
    base = {**design["fixed"], **dict(pilot.get("fixed", {}))}
    return [_with_nulls({**base, **dict(net), "seed": int(pilot["seed"])}, design)
            for net in pilot["networks"]]


def smoke_configs(design: dict[str, Any]) -> list[dict[str, Any]]:
    """Two tiny networks: the last configuration of each of the first two families (the
    held-out split; the largest network, with weight decay and dropout), first seed, with
    :data:`SMOKE`'s sizes."""
    out = []
    for family in list(design["families"])[:2]:
        out.append({**family_configs(design, family)[-1], **SMOKE, "seed": design["seeds"][0]})
    return out


# --------------------------------------------------------------------------- metrics


def _import_metric_modules() -> None:
    """Import the modules that register metrics, where they exist."""
    import jacspec.zoo.run.metrics  # noqa: F401 - the registry itself

    for name in METRIC_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def missing_metrics(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The metric names the configurations list that are not registered."""
    from jacspec.zoo.run.metrics import REGISTRY

    _import_metric_modules()
    names = dict.fromkeys(n for c in configs for n in (c.get("metrics") or []))
    return [n for n in names if n not in REGISTRY]


def check_metrics(configs: list[dict[str, Any]], *, skip_missing: bool
                  ) -> list[dict[str, Any]]:
    """The configurations, refused (ValueError) when a listed metric is not registered; with
    ``skip_missing`` (``--smoke``) those metrics are dropped from every configuration with a
    logged note instead."""
    from jacspec.zoo.run.metrics import REGISTRY

    missing = missing_metrics(configs)
    if not missing:
        return configs
    if not skip_missing:
        raise ValueError(f"metrics {', '.join(missing)} are listed in {CONFIG.name} but not "
                         f"registered in jacspec.zoo.run.metrics.REGISTRY (registered: "
                         f"{', '.join(sorted(REGISTRY))}); study 2 cannot run without them")
    log.warning("smoke run: skipping unregistered metrics %s", ", ".join(missing))
    return [{**c, "metrics": [n for n in c["metrics"] if n not in missing]} for c in configs]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", default=str(CONFIG), help="the design (TOML)")
    parser.add_argument("--store", default=None, help=f"zoo store (default {STORE}, pilot "
                        f"{PILOT_STORE}, --smoke a temporary folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop launching networks so the call ends within about this")
    parser.add_argument("--max-runs", type=int, default=None, help="run at most N networks")
    parser.add_argument("--smoke", action="store_true",
                        help="two tiny networks to a temporary store, unregistered metrics "
                        "skipped; checks the code")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    design = read_design(args.config)
    if args.smoke:
        configs = smoke_configs(design)
        store = Path(args.store) if args.store else Path(
            tempfile.mkdtemp(prefix="mnist_study2_smoke_")) / "smoke.sqlite"
    elif args.stage == "pilot":
        configs = pilot_configs(design)
        store = Path(args.store) if args.store else PILOT_STORE
    else:
        configs = zoo_configs(design)
        store = Path(args.store) if args.store else STORE
    try:
        configs = check_metrics(copy.deepcopy(configs), skip_missing=args.smoke)
    except ValueError as exc:
        print(f"mnist_study2: {exc}", file=sys.stderr)
        return 2
    summary = run_zoo(configs, store, workers=args.workers, max_minutes=args.max_minutes,
                      max_runs=args.max_runs)
    print(f"{args.stage}{' (smoke)' if args.smoke else ''}: ran {summary['ran']} "
          f"({summary['failed']} failed), stopped: {summary['stopped']}; store {store}: "
          f"{summary['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
