"""Study 2's results page (issue 19): scores the held-out store exactly as
docs/results/mnist_study2.md pre-registers and writes docs/results/mnist_study2_results.md.

    .venv/bin/python experiments/mnist_study2_report.py            # the held-out store
    .venv/bin/python experiments/mnist_study2_report.py --store S --out P --draws 200

Every table of the page comes from ``jacspec zoo score --confirm`` (the CLI, called in this
process): the primary test (§1.5, §5) and the secondary analyses S1, S2, S3 and S5 (§5.6).
The CLI's stdout is kept verbatim on the page beside each command, and its ``--json`` is
what the Markdown tables are drawn from, so a reader re-running a command gets the table.
The descriptive sections (exclusions, §7.1's train loss, the share of ``ww_alpha`` in
[2, 6], the Marchenko-Pastur columns) read the store directly.

Metric lists, roles and comparators are §2's; nothing here reads the gap to choose them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file

from mnist_study_common import fmt

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "docs" / "results" / "mnist_study2.sqlite"
OUT = ROOT / "docs" / "results" / "mnist_study2_results.md"
TOTAL = 512  # §4.2: two 2^6 grids x 4 seeds

# --------------------------------------------------------------------------- §2's metric lists

#: §2.2: the 14 shape columns (𝒮_train, before §2.4's inclusion rules) and the 7 scale ones.
SHAPE = ("rank", "stable_rank", "entropy", "effective_rank", "alpha", "D", "sigma",
         "num_pl_spikes", "rand_distance", "rand_hist_jsd", "num_above_rand_max", "num_traps",
         "mp_softrank", "num_spikes")
SCALE = ("trace", "lambda_max", "xmin", "alpha_weighted", "log_alpha_norm", "rand_lambda_max",
         "lambda_plus")
#: §2.3: the test-input comparators beyond the 7 scale columns.
TEST_EXTRA = ("test_logit_jacobian_norm", "test_max_softmax", "test_softmax_entropy",
              "esd_test_max_softmax", "esd_test_softmax_entropy")
#: §3: every baseline computed from training inputs or weights (S5), train_loss included.
BASELINES = ("train_loss", "pacbayes_mag_flatness", "sharpness_mag_flatness", "path_norm",
             "path_norm_over_margin", "log_prod_fro_over_margin", "log_prod_spec_over_margin",
             "steps_to_ce01", "steps_ce01_to_ce001", "train_margin_p10", "train_margin_median",
             "log_prod_fro", "log_prod_spec", "weight_norm_sum", "dist_init", "num_params",
             "train_logit_jacobian_norm", "ww_alpha", "ww_alpha_weighted", "ww_log_norm")
FACTORS = ("depth", "width", "lr", "batch_size", "weight_decay", "dropout")


def cols(split: str, names: Sequence[str]) -> list[str]:
    return [f"jac_{split}_{n}" for n in names]


def analyses() -> dict[str, dict[str, Any]]:
    """Each analysis of §5-5.6: its title, shape list, comparators, Z and --where."""
    s_train, c_train = cols("train", SHAPE), [*cols("train", SCALE), "train_logit_jacobian_norm"]
    s1_comp = [c for c in c_train if c != "jac_train_trace"] + ["train_jacobian_norm"]
    return {
        "primary": {"title": "Primary test (§1.5, §5): train-point shape metrics given "
                    "train_jacobian_norm, MLP + CNN", "shape": s_train, "comparators": c_train,
                    "given": "train_jacobian_norm", "where": []},
        "S1": {"title": "S1 (secondary): the ESD's own trace as Z", "shape": s_train,
               "comparators": s1_comp, "given": "jac_train_trace", "where": []},
        "S2": {"title": "S2 (secondary, PGDL-inadmissible): test-point shape metrics given "
               "test_jacobian_norm", "shape": cols("test", SHAPE),
               "comparators": [*cols("test", SCALE), *TEST_EXTRA],
               "given": "test_jacobian_norm", "where": []},
        "S3_mlp": {"title": "S3 (secondary): MLPs alone", "shape": s_train,
                   "comparators": c_train, "given": "train_jacobian_norm",
                   "where": ["model=mlp"]},
        "S3_cnn": {"title": "S3 (secondary): CNNs alone", "shape": s_train,
                   "comparators": c_train, "given": "train_jacobian_norm",
                   "where": ["model=cnn"]},
        # Not pre-registered: the primary test without the one comparator that is NaN for
        # some networks (no MP bulk above the rank tolerance), so that no network drops out.
        "R1": {"title": "R1 (robustness, NOT pre-registered): the primary test without "
               "jac_train_lambda_plus", "shape": s_train,
               "comparators": [c for c in c_train if c != "jac_train_lambda_plus"],
               "given": "train_jacobian_norm", "where": []},
        # S5: the baselines are put in the shape slot so that each is scored on its own
        # finite networks (the comparators' finite set is shared by every row); train_loss,
        # always finite, is the one comparator. Only the descriptive columns are shown.
        "S5": {"title": "S5 (secondary): the baselines of §3, descriptive", "shape":
               [b for b in BASELINES if b != "train_loss"], "comparators": ["train_loss"],
               "given": "train_jacobian_norm", "where": []},
    }


# --------------------------------------------------------------------------- running the CLI


def command(store: Path, a: dict[str, Any], draws: int, json_path: str | None) -> list[str]:
    """The ``jacspec zoo score --confirm`` arguments of analysis ``a``."""
    argv = ["zoo", "score", str(store), "--confirm", "--shape", ",".join(a["shape"]),
            "--comparators", ",".join(a["comparators"]), "--given", a["given"],
            "--family", "model"]
    for w in a["where"]:
        argv += ["--where", w]
    if draws != 2000:
        argv += ["--confirm-draws", str(draws)]
    if json_path:
        argv += ["--json", json_path]
    return argv


def run_cli(argv: list[str]) -> tuple[str, int]:
    """``jacspec <argv>`` in this process: (stdout, exit code)."""
    from jacspec.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return buf.getvalue(), int(code or 0)


def score_all(store: Path, draws: int) -> dict[str, dict[str, Any]]:
    """Every analysis through the CLI: its argv (for the page), stdout and JSON result."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, a in analyses().items():
            path = str(Path(tmp) / f"{key}.json")
            t0 = time.perf_counter()
            stdout, code = run_cli(command(store, a, draws, path))
            if code != 0:
                raise RuntimeError(f"jacspec zoo score failed for {key} (exit {code})")
            result = json.loads(Path(path).read_text())
            shown = command(Path("docs/results") / store.name, a, draws, None)
            out[key] = {**a, "argv": shown, "stdout": stdout.replace(f"wrote {path}\n", ""),
                        "result": result, "seconds": time.perf_counter() - t0}
    return out


# --------------------------------------------------------------------------- Markdown


def interval(r: dict[str, Any], key: str, lo: str = "_lo", hi: str = "_hi") -> str:
    return f"{fmt(r.get(key))} [{fmt(r.get(key + lo))}, {fmt(r.get(key + hi))}]"


def sign_errors(r: dict[str, Any]) -> str:
    n = r.get("sign_errors_count")
    if not n:
        return "none counted"
    return (f"n {int(n)}: mean {fmt(r.get('sign_errors_mean'), 2)}, p50/75/90 "
            f"{fmt(r.get('sign_errors_p50'), 2)}/{fmt(r.get('sign_errors_p75'), 2)}/"
            f"{fmt(r.get('sign_errors_p90'), 2)}, max {fmt(r.get('sign_errors_max'), 2)}")


def metric_table(result: dict[str, Any], *, test_columns: bool = True,
                 relabel: dict[str, str] | None = None) -> list[str]:
    """§5.4's table: one row per metric, the noise ceiling included (``relabel``: role
    names shown instead of the test's, e.g. S5's baselines)."""
    rows = result["rows"]
    fams = sorted(result["icc"])
    head = ["metric", "role", "nets", "tau-a [95%]", "partial tau given Z [95%]"]
    if test_columns:
        head += ["Delta", "se", "L_S", "p_S"]
    head += ["Psi [95%]", "Psi_Z [95%]", *[f"CMI {f} [95%]" for f in fams], "sign errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {"shape": 0, "excluded_shape": 1, "comparator": 2, "excluded_comparator": 3,
             "given": 4, "noise_ceiling": 5}
    for m, r in sorted(rows.items(), key=lambda kv: (order.get(kv[1]["role"], 9), kv[0])):
        role = (relabel or {}).get(r["role"], r["role"])
        cells = [f"`{m}`", role.replace("_", " "), str(r["networks"]),
                 interval(r, "tau"), interval(r, "partial_tau")]
        if test_columns:
            cells += [fmt(r.get("delta")), fmt(r.get("se")), fmt(r.get("lower_bound")),
                      fmt(r.get("p_adjusted"))]
        cells += [interval(r, "psi"), interval(r, "psi_z")]
        cells += [interval(r, f"cmi_{f}") for f in fams]
        cells.append(sign_errors(r))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict_lines(result: dict[str, Any]) -> list[str]:
    v = result["verdict"]
    best, up = v.get("best") or {}, v.get("largest_upper_abs_partial") or {}
    out = [f"**Verdict: {v['answer']}.** " + (
        f"Supported by: {', '.join(f'`{m}`' for m in v['supported'])}." if v["supported"]
        else "No confirmatory shape metric meets the three conditions of §1.5.")]
    if best:
        out.append(
            f"The largest studentised Delta is `{best['metric']}`'s: Delta_S "
            f"{fmt(best['delta'], 4)} (marginal 95% interval [{fmt(best['delta_lo'], 4)}, "
            f"{fmt(best['delta_hi'], 4)}]), simultaneous one-sided 95% lower bound L_S "
            f"{fmt(best['lower_bound'], 4)} (max-T critical value "
            f"{fmt(result['critical'], 3)}), adjusted p {fmt(best['p_adjusted'], 3)}; its "
            f"partial tau given Z is {fmt(best['partial_tau'], 4)} "
            f"[{fmt(best['partial_tau_lo'], 4)}, {fmt(best['partial_tau_hi'], 4)}].")
    if v["answer"] == "no" and up:
        out.append(f"The data exclude |partial tau| above {fmt(up['value'], 3)} for every "
                   f"confirmatory shape metric (largest one-sided 95% upper bound, "
                   f"`{up['metric']}`).")
    for m, conds in (v.get("failed") or {}).items():
        if conds:
            out.append(f"`{m}` has L_S > 0 but fails {', '.join(conds)}.")
    return [" ".join(out)]


def largest_partials(result: dict[str, Any]) -> list[str]:
    """The largest |partial tau given Z| among the shape metrics and among the comparators:
    what the verdict's Delta_S compares."""
    out = []
    for role, what in (("shape", "shape metrics"), ("comparator", "scale comparators")):
        rows = {m: r for m, r in result["rows"].items()
                if r["role"] == role and np.isfinite(r.get("partial_tau", np.nan))}
        if rows:
            m = max(rows, key=lambda k: abs(rows[k]["partial_tau"]))
            out.append(f"Largest |partial tau given Z| among the {what}: `{m}` "
                       f"{interval(rows[m], 'partial_tau')}.")
    return [" ".join(out)]


def excluded_columns(result: dict[str, Any]) -> list[str]:
    ex = result["excluded"]
    if not ex:
        return ["Every listed column passed §2.4's inclusion rules."]
    return ["Left out by §2.4's rules (reported in the table as 'excluded', scored "
            "descriptively):", ""] + [
        f"- `{c}`: {v['reason']} ({v['nonfinite']} non-finite, {v['distinct']} distinct)"
        for c, v in sorted(ex.items())]


def section(key: str, s: dict[str, Any]) -> list[str]:
    r = s["result"]
    c = r["counts"]
    out = [f"## {s['title']}", "", "```", "jacspec " + " ".join(s["argv"]), "```", "",
           f"{c['networks']} converged networks scored ({c['excluded_not_converged']} not "
           f"converged, excluded); configurations per family: "
           f"{', '.join(f'{k} {v}' for k, v in c['configurations'].items())}; ICC(1) of the "
           f"gap across seeds: {', '.join(f'{k} {fmt(v)}' for k, v in r['icc'].items())}. "
           f"Z = `{s['given']}`.", ""]
    if key != "S5":
        out += verdict_lines(r) + [""]
        if key != "primary":
            out += ["(Secondary: this verdict line applies §1.5's rule to this table; it is "
                    "not the study's verdict.)", ""]
    relabel = {k: "baseline" for k in ("shape", "comparator", "excluded_shape",
                                        "excluded_comparator")} if key == "S5" else None
    out += metric_table(r, test_columns=key != "S5", relabel=relabel) + [""]
    missing = {f: r["rows"][s["given"]].get(f"cmi_{f}_missing", 0) for f in r["icc"]}
    if any(missing.values()):
        out += ["CMI is undefined (–) for a family with a configuration that has no scored "
                "network (§6): configurations without one: " + ", ".join(
                    f"{f} {m}" for f, m in missing.items()) + ".", ""]
    if key != "S5":
        out += excluded_columns(r) + [""]
    out += ["<details><summary>the command's output</summary>", "", "```",
            s["stdout"].rstrip(), "```", "", "</details>", ""]
    return out


# --------------------------------------------------------------------------- descriptive


def load_runs(store: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every run of the store (any status) and its status counts."""
    from jacspec.zoo.run.store import Store

    with Store(str(store), readonly=True) as st:
        return st.runs(status=None), st.counts()


def exclusions(df: pd.DataFrame) -> list[str]:
    """§4.3: every network not converged or failed, and the counts per factor level."""
    done = df[df["status"] == "done"]
    bad = done[~done["converged"].astype(bool)]
    failed = df[df["status"] == "failed"]
    out = [f"{len(bad)} of {len(done)} finished networks missed train CE <= 0.01 within the "
           f"cap and are excluded from every score; {len(failed)} runs failed."]
    if len(bad):
        keys = ["model", *FACTORS, "seed"]
        out += ["", "| " + " | ".join([*keys, "train CE", "epochs"]) + " |",
                "|" + "---|" * (len(keys) + 2)]
        for _, r in bad.sort_values(keys).iterrows():
            out.append("| " + " | ".join([*(str(r[k]) for k in keys),
                                          fmt(r["train_loss"], 4), str(r["epochs"])]) + " |")
        out += ["", "Excluded per factor level (of the finished networks at that level):", ""]
        for f in FACTORS:
            parts = []
            for (m, v), g in done.groupby(["model", f]):
                parts.append(f"{m} {f}={v}: {int((~g['converged'].astype(bool)).sum())}/"
                             f"{len(g)}")
            out.append(f"- {'; '.join(parts)}")
    if len(failed):
        out += ["", "Failed runs:", ""] + [f"- {r['config_hash']}: {r['error']}"
                                           for _, r in failed.iterrows()]
    return out


def descriptive(df: pd.DataFrame, primary: dict[str, Any]) -> list[str]:
    """§7.1's train loss, §2.5's ww_alpha range and the MP columns' coverage."""
    from jacspec.zoo.rank.confirm import kendall_tau_b_within

    d = df[(df["status"] == "done") & df["converged"].astype(bool)]
    fam = d["model"].astype(str).to_numpy()
    num = {c: pd.to_numeric(d[c], errors="coerce").to_numpy(float) for c in d.columns
           if c.startswith(("jac_", "train_", "ww_")) or c == "gap"}
    out = ["## Descriptive (§7.1, §2.5, §2.1, §2.4)", ""]
    listed = {c for a in analyses().values() for c in (*a["shape"], *a["comparators"])}
    for c in sorted(listed & set(num)):
        bad = d[~np.isfinite(num[c])]
        if 0 < len(bad) <= 10:
            who = "; ".join(f"{r['model']} depth {r['depth']} width {r['width']} lr {r['lr']} "
                            f"batch {r['batch_size']} wd {r['weight_decay']} dropout "
                            f"{r['dropout']} seed {r['seed']}" for _, r in bad.iterrows())
            out.append(f"- **`{c}` is non-finite for {len(bad)} converged networks** ({who}); "
                       f"under §2.4 they leave every statistic that uses the column.")
        elif len(bad):
            out.append(f"- `{c}` is non-finite for {len(bad)} of {len(d)} converged networks.")
    tl = num["train_loss"]
    out.append(f"- **Final train loss (§7.1).** Converged networks end at train CE "
               f"{fmt(np.nanmin(tl), 4)}-{fmt(np.nanmax(tl), 4)} (median "
               f"{fmt(np.nanmedian(tl), 4)}). Within-family tau-b of `train_loss` with the "
               f"gap: {fmt(kendall_tau_b_within(tl, num['gap'], fam))}.")
    best = (primary["verdict"].get("best") or {}).get("metric")
    if best:
        out[-1] += (f" With `{best}` (the primary test's largest studentised Delta): "
                    f"{fmt(kendall_tau_b_within(tl, num[best], fam))}.")
    ww = num.get("ww_alpha")
    if ww is not None:
        fin = ww[np.isfinite(ww)]
        share = float(np.mean((fin >= 2) & (fin <= 6))) if fin.size else float("nan")
        out.append(f"- **ww_alpha (§2.5).** {fin.size} finite values, median "
                   f"{fmt(np.median(fin) if fin.size else np.nan)}, max "
                   f"{fmt(fin.max() if fin.size else np.nan)}; share in [2, 6], the range of "
                   f"Martin & Mahoney's claims: {fmt(share)}.")
    for split in ("train", "test"):
        sr = num.get(f"jac_{split}_mp_softrank")
        if sr is None:
            continue
        ok = np.isfinite(sr)
        out.append(f"- **MP columns, {split} points (§2.1).** `jac_{split}_mp_softrank` is "
                   f"finite (a bulk above the rank tolerance was found) for {int(ok.sum())} "
                   f"of {sr.size} networks; where finite its range is "
                   f"{np.min(sr[ok]) if ok.any() else np.nan:.3g} to "
                   f"{np.max(sr[ok]) if ok.any() else np.nan:.3g}. A softrank far below 1 "
                   f"means the fitted bulk is the smallest eigenvalues above the tolerance, "
                   f"not a noise bulk under the top of the spectrum.")
    return out + [""]


# --------------------------------------------------------------------------- page


def page(store: Path, draws: int) -> str:
    df, _ = load_runs(store)
    done = int((df["status"] == "done").sum())
    t0 = time.perf_counter()
    scored = score_all(store, draws)
    primary = scored["primary"]["result"]
    lines = [
        "# Study 2 results: does the Jacobian spectrum's shape predict the generalization "
        "gap beyond its scale? (issue 19)", "",
        f"Pre-registered in [mnist_study2.md](mnist_study2.md); store "
        f"`docs/results/{store.name}` ({done} of {TOTAL} networks finished"
        + ("" if done >= TOTAL else ": **the zoo is not complete; this page is not the "
           "study's result**") + "). Generated by `experiments/mnist_study2_report.py`"
        + ("" if draws == 2000 else f" with {draws} bootstrap draws (not the registered "
           "2,000)") + f" in {time.perf_counter() - t0:.0f} s.", "",
        "**Answer to H1** (a Jacobian-spectrum shape metric predicts the gap beyond the "
        "Jacobian norm, on the pooled MLP + CNN zoo):", "", *verdict_lines(primary), "",
        *largest_partials(primary), "",
        "ResNet-8 (§4.2's optional family, S4) was not run: see the Deviations of "
        "[mnist_study2.md](mnist_study2.md#deviations).", "",
        "## Networks", "", *exclusions(df), ""]
    for key, s in scored.items():
        lines += section(key, s)
    lines += descriptive(df, primary)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=str(STORE))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws (registered: 2000)")
    args = p.parse_args(argv)
    store = Path(args.store)
    if not store.exists():
        print(f"mnist_study2_report: --store {store} does not exist", file=sys.stderr)
        return 2
    Path(args.out).write_text(page(store, args.draws))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
