"""Study 2's pre-registered test (``docs/results/mnist_study2.md``), on any zoo: does a
Jacobian-spectrum *shape* metric predict the generalization gap beyond the Jacobian norm?

:func:`confirmatory_test` scores a frame of converged networks exactly as the page fixes it:

- every rank statistic runs over the pairs of distinct networks of the same family (§1.2);
- ``tau_SG.Z`` is Kendall's partial tau-b given ``Z`` (§1.3,
  :func:`~jacspec.zoo.rank.confirm_stats.partial_kendall`); marginal taus are Jiang et al.'s tau-a;
- ``Delta_S = |tau_SG.Z| - max_C |tau_CG.Z|`` over the comparators ``C`` (§1.5), with the
  paired two-stage cluster bootstrap (configurations within a family, then seeds within a
  configuration; B = 2,000, ``numpy.random.default_rng(19)``) and the single-step max-T
  lower bound ``L_S`` and adjusted ``p_S`` (§5.1-5.3,
  :func:`~jacspec.zoo.rank.confirm_stats.max_t`);
- ``Psi_Z`` within quintiles of ``Z`` and plain Psi, with bounds from the counted pairs
  resampled within each factor and family, the same generator continued (§1.4, §5.4);
- CMI on draws of one converged seed per configuration, the distribution of environment
  sign errors, the noise ceiling ``other_seeds_gap`` and the gap's ICC(1) (§5.5, §6);
- the metric-inclusion rules of §2.4 (more than 5% non-finite, or fewer than 10 distinct
  values: left out of the test and reported descriptively), and :func:`verdict` (§1.5).

Order of the generator: the ``B`` cluster draws, then the Psi_Z pair draws, then the Psi
pair draws, then the CMI draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator
from jacspec.zoo.rank.confirm_grid import (
    converged_cmi,
    family_factors,
    family_noise,
    psi_many,
    psi_within_strata,
    sign_error_summary,
    sign_errors,
    z_strata,
)
from jacspec.zoo.rank.confirm_stats import (
    MaxT,
    clopper_pearson_bound,
    cluster_bootstrap_indices,
    icc1,
    kendall_tau_b_within,
    max_t,
    other_seeds_gap,
    pair_counts,
    partial_from_taus,
    partial_kendall,
    within_group_pairs,
)
from jacspec.zoo.rank.grid import as_text, group_codes

__all__ = ["ConfirmResult", "MaxT", "Verdict", "clopper_pearson_bound",
           "cluster_bootstrap_indices", "confirm_store", "confirmatory_test", "converged_cmi",
           "icc1", "inclusion", "kendall_tau_b_within", "max_t", "other_seeds_gap",
           "partial_kendall", "psi_within_strata", "sign_error_summary", "verdict",
           "within_group_pairs", "z_strata"]

NOISE_CEILING = "other_seeds_gap"


@dataclass(frozen=True)
class Verdict:
    """§1.5's answer: "yes" iff some shape metric of the confirmatory family has ``L_S > 0``,
    ``|tau_SG.Z| >= min_abs_tau`` and a sign-consistent ``Psi_Z`` whose one-sided 95% bound
    excludes 0; with the numbers the results page must report."""

    answer: str
    supported: tuple[str, ...]
    conditions: dict[str, dict[str, bool]]
    failed: dict[str, list[str]]
    best: dict[str, Any]
    largest_upper_abs_partial: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"answer": self.answer, "supported": self.supported,
                         "conditions": self.conditions, "failed": self.failed,
                         "best": self.best,
                         "largest_upper_abs_partial": self.largest_upper_abs_partial,
                         "settings": self.settings})

    def to_frame(self) -> pd.DataFrame:
        """One row per shape metric of the test: the three conditions."""
        rows = [{"metric": m, **c} for m, c in self.conditions.items()]
        return (pd.DataFrame(rows).set_index("metric") if rows
                else pd.DataFrame({"answer": [self.answer]}))

    def summary(self) -> dict[str, Any]:
        return jsonable({"answer": self.answer, "supported": self.supported,
                         "best": self.best, "failed": self.failed,
                         "largest_upper_abs_partial": self.largest_upper_abs_partial})


def verdict(table: pd.DataFrame | ConfirmResult, *, min_abs_tau: float = 0.10) -> Verdict:
    """§1.5 applied to a table of :func:`confirmatory_test` (its rows of role ``shape``):

    1. ``lower_bound > 0`` (the max-T simultaneous one-sided 95% bound of ``Delta_S``);
    2. ``|partial_tau| >= min_abs_tau``;
    3. ``psi_z`` has the sign of ``partial_tau`` and its one-sided 95% bound in that
       direction (``psi_z_q05 > 0`` for a positive tau, ``psi_z_q95 < 0`` for a negative one)
       excludes 0; checked for the metrics passing 1 and 2.

    ``failed`` names, for each metric passing condition 1, the conditions it failed.
    ``best`` is the metric with the largest ``Delta_S / se_S`` with its Delta, simultaneous
    bound, marginal interval and partial tau with interval; ``largest_upper_abs_partial``
    is the largest one-sided 95% upper bound of ``|tau_SG.Z|`` (the 95% quantile of its
    draws) among the metrics: the effect size the data exclude.
    """
    frame = table.to_frame() if isinstance(table, ConfirmResult) else table
    need = ["role", "partial_tau", "partial_tau_lo", "partial_tau_hi", "partial_abs_q95",
            "delta", "se", "studentised", "lower_bound", "delta_lo", "delta_hi",
            "p_adjusted", "psi_z", "psi_z_q05", "psi_z_q95"]
    missing = [c for c in need if c not in frame]
    if missing:
        raise ValueError(f"table lacks the columns {missing}: pass confirmatory_test's result "
                         "or its to_frame()")
    shape = frame[frame["role"] == "shape"]
    conditions: dict[str, dict[str, bool]] = {}
    failed: dict[str, list[str]] = {}
    supported = []
    for name, r in shape.iterrows():
        c1 = bool(np.isfinite(r["lower_bound"]) and r["lower_bound"] > 0)
        c2 = bool(np.isfinite(r["partial_tau"]) and abs(r["partial_tau"]) >= min_abs_tau)
        sign = np.sign(r["partial_tau"]) if np.isfinite(r["partial_tau"]) else 0.0
        bound = r["psi_z_q05"] if sign > 0 else r["psi_z_q95"]
        c3 = bool(sign != 0 and np.isfinite(r["psi_z"]) and np.sign(r["psi_z"]) == sign
                  and np.isfinite(bound) and sign * bound > 0)
        conditions[str(name)] = {"lower_bound_above_0": c1, "abs_partial_at_least": c2,
                                 "psi_z_consistent": c3}
        if c1 and c2 and c3:
            supported.append(str(name))
        if c1:
            failed[str(name)] = [k for k, v in (("abs_partial_at_least", c2),
                                                ("psi_z_consistent", c3)) if not v]
    best: dict[str, Any] = {}
    stud = shape["studentised"].astype(float)
    if stud.notna().any():
        b = stud.idxmax()
        r = shape.loc[b]
        best = {"metric": str(b), **{k: float(r[k]) for k in (
            "delta", "se", "studentised", "lower_bound", "delta_lo", "delta_hi", "p_adjusted",
            "partial_tau", "partial_tau_lo", "partial_tau_hi")}}
    upper: dict[str, Any] = {}
    q = shape["partial_abs_q95"].astype(float)
    if q.notna().any():
        upper = {"metric": str(q.idxmax()), "value": float(q.max())}
    return Verdict(answer="yes" if supported else "no", supported=tuple(supported),
                   conditions=conditions, failed=failed, best=best,
                   largest_upper_abs_partial=upper,
                   settings={"min_abs_tau": float(min_abs_tau)})


def inclusion(frame: pd.DataFrame, columns: Sequence[str], *, max_nonfinite: float = 0.05,
              min_distinct: int = 10) -> dict[str, dict[str, Any]]:
    """§2.4's rules per column: ``nonfinite`` (count), ``distinct`` (finite values) and
    ``reason`` (None when the column enters the test; else ``"non-finite for more than
    5%"`` or ``"fewer than 10 distinct values"``). They read the metric only, never the
    gap."""
    n = len(frame)
    out = {}
    for c in columns:
        v = pd.to_numeric(frame[c], errors="coerce").to_numpy(float)
        bad = int(np.count_nonzero(~np.isfinite(v)))
        distinct = int(np.unique(v[np.isfinite(v)]).size)
        reason = None
        if n and bad / n > max_nonfinite:
            reason = f"non-finite for more than {max_nonfinite:.0%} of the networks"
        elif distinct < min_distinct:
            reason = f"fewer than {min_distinct} distinct values"
        out[c] = {"nonfinite": bad, "distinct": distinct, "reason": reason}
    return out


@dataclass(frozen=True)
class ConfirmResult:
    """The pre-registered test on one zoo: one row per metric (``rows``), the max-T
    adjustment, the verdict and what produced them."""

    rows: dict[str, dict[str, Any]]
    verdict: Verdict
    critical: float
    excluded: dict[str, dict[str, Any]]
    per_factor: tuple[dict[str, Any], ...]
    icc: dict[str, float]
    counts: dict[str, Any]
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """One row per metric (index ``metric``): ``role`` (shape, comparator, given,
        noise_ceiling, excluded_shape, excluded_comparator), ``networks``, tau-a and partial
        tau with 95% intervals, Delta, se, L_S, p_S (shape rows), Psi and Psi_Z with
        intervals, CMI per family with interval, and the sign-error distribution."""
        rows = [{"metric": m, **{k: v for k, v in r.items() if not isinstance(v, (dict, list))}}
                for m, r in self.rows.items()]
        return pd.DataFrame(rows).set_index("metric")

    def per_factor_frame(self) -> pd.DataFrame:
        """psi_f and psi_Z,f for every metric, family and factor, with counted pairs and 95%
        percentile intervals of the counted pairs resampled within the factor."""
        return pd.DataFrame(list(self.per_factor))

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"rows": self.rows, "verdict": self.verdict, "critical": self.critical,
                         "excluded": self.excluded, "per_factor": self.per_factor,
                         "icc": self.icc, "counts": self.counts, "settings": self.settings})

    def summary(self) -> dict[str, Any]:
        """The verdict and its numbers, the critical value, the excluded columns, ICC(1)."""
        return jsonable({"verdict": self.verdict.summary(), "critical": self.critical,
                         "excluded": {k: v["reason"] for k, v in self.excluded.items()},
                         "icc": self.icc, "counts": self.counts})


def _tau_draws(W: np.ndarray, pi: np.ndarray, pj: np.ndarray, mask: np.ndarray,
               g: np.ndarray, z: np.ndarray, values: Mapping[str, np.ndarray]
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (tau_a draws, partial tau draws)}`` of every variable under ``mask``, for
    each row of the multiplicities ``W``; tau-b from weighted pair sums (:func:`pair_counts`)."""
    def sgn(x: np.ndarray) -> np.ndarray:
        s = np.sign(x[pi] - x[pj])
        return np.where(np.isfinite(s), s, 0.0)

    sg, sz = sgn(g), sgn(z)
    names = list(values)
    cols = [np.ones(pi.size), sg * sg, sz * sz, sg * sz]
    for n in names:
        sv = sgn(values[n])
        cols += [sv * sv, sv * sg, sv * sz]
    S = pair_counts(W * mask[None, :], pi, pj, np.column_stack(cols))
    with np.errstate(invalid="ignore", divide="ignore"):
        t_gz = S[:, 3] / np.sqrt(S[:, 1] * S[:, 2])
        out = {}
        for k, n in enumerate(names):
            vv, vg, vz = S[:, 4 + 3 * k], S[:, 5 + 3 * k], S[:, 6 + 3 * k]
            tau_a = np.where(S[:, 0] > 0, vg / S[:, 0], np.nan)
            t_vg, t_vz = vg / np.sqrt(vv * S[:, 1]), vz / np.sqrt(vv * S[:, 2])
            out[n] = (tau_a, partial_from_taus(t_vg, t_vz, t_gz))
    return out


def _pct(d: np.ndarray, qs: Sequence[float]) -> list[float]:
    d = d[np.isfinite(d)]
    return [float(v) for v in np.quantile(d, qs)] if d.size else [float("nan")] * len(qs)


def confirmatory_test(frame: pd.DataFrame, shape: Sequence[str], comparators: Sequence[str],
                      *, z: str = "train_jacobian_norm", family: str = "model",
                      config_keys: Sequence[str] | None = None, seed: str = "seed",
                      gap: str = "gap", B: int = 2000, rng_seed: int = 19,
                      level: float = 0.95, strata: int = 5, min_pairs: int = 10,
                      max_nonfinite: float = 0.05, min_distinct: int = 10,
                      min_abs_tau: float = 0.10, noise_ceiling: bool = True,
                      cmi: bool = True, converged: str | None = "converged") -> ConfirmResult:
    """Study 2's test of H1 on ``frame`` (one row per trained network).

    ``shape``: the candidate shape metrics 𝒮; ``comparators``: the scale metrics 𝒞; ``z``:
    the conditioning norm; ``family``: the architecture-family column (pairs never cross
    it); ``config_keys``: the configuration columns (a configuration is a combination of
    their values but ``seed``; the factors of a family are those that vary within it);
    ``converged``: a column of run status (rows where it is false are excluded and counted;
    ignored when absent; None: use every row). Columns of ``shape`` / ``comparators`` failing
    :func:`inclusion` are left out of the test and scored descriptively. Returns a
    :class:`ConfirmResult` whose ``verdict`` applies §1.5.
    """
    shape, comparators = list(shape), list(comparators)
    keys = _check_test_arguments(frame, shape, comparators, z=z, family=family,
                                 config_keys=config_keys, seed=seed, gap=gap, B=B)
    d, n_excluded = _converged_rows(frame, converged)
    if noise_ceiling:
        d[NOISE_CEILING] = other_seeds_gap(d, keys, gap=gap, seed=seed).to_numpy()
    incl = inclusion(d, [*shape, *comparators], max_nonfinite=max_nonfinite,
                     min_distinct=min_distinct)
    S = [c for c in shape if incl[c]["reason"] is None]
    C = [c for c in comparators if incl[c]["reason"] is None]
    if not C:
        raise ValueError(f"no comparator passes the inclusion rules: {incl}")
    excluded = {c: v for c, v in incl.items() if v["reason"] is not None}
    roles = {**{c: "shape" for c in S}, **{c: "comparator" for c in C}, z: "given",
             **({NOISE_CEILING: "noise_ceiling"} if noise_ceiling else {}),
             **{c: "excluded_shape" for c in shape if c in excluded},
             **{c: "excluded_comparator" for c in comparators if c in excluded}}
    num = {c: pd.to_numeric(d[c], errors="coerce").to_numpy(float) for c in roles}
    g = pd.to_numeric(d[gap], errors="coerce").to_numpy(float)
    base = np.isfinite(g) & np.isfinite(num[z])
    for c in C:
        base &= np.isfinite(num[c])
    masks = {c: base & np.isfinite(num[c]) for c in roles}

    fam = as_text(d[family]).to_numpy()
    conf = group_codes(d, keys)
    rng = numpy_generator(rng_seed)
    tau_a, partial, comp_under = _bootstrap_taus(fam, conf, int(B), rng, masks, num, g,
                                                 num[z], C)
    mt = _max_t_of(S, C, partial, comp_under, int(B), level)

    names = list(roles)
    mask_mat = np.column_stack([masks[c] for c in names])
    fam_factors = family_factors(d, keys, family=family, seed=seed)
    common = {"gap": gap, "family": family, "fam_factors": fam_factors, "seed": seed,
              "min_pairs": min_pairs, "B": int(B), "rng": rng}
    psi_z = psi_many(d, names, mask_mat, stratum=z_strata(num[z], fam, strata), **common)
    psi = psi_many(d, names, mask_mat, stratum=None, **common)
    cmis = converged_cmi(d, names, factors=keys, gap=gap, family=family, seed=seed, B=int(B),
                         rng=rng, masks=mask_mat, level=level, fam_factors=fam_factors
                         ) if cmi else {}
    noise = family_noise(d, fam_factors, gap=gap, family=family, seed=seed)
    out_rows: dict[str, dict[str, Any]] = {}
    per_factor = []
    for c in names:
        errs = sign_errors(d, c, gap=gap, family=family, seed=seed, fam_factors=fam_factors,
                           noise=noise, mask=masks[c])
        out_rows[c] = _metric_row(roles[c], masks[c], tau_a[c], partial[c],
                                  mt if c in S else None, c, psi[c], psi_z[c],
                                  cmis.get(c, {}), errs, level)
        per_factor += _per_factor_rows(c, psi[c], psi_z[c])
    settings = {"shape": shape, "comparators": comparators, "confirmatory": S,
                "comparator_set": C, "z": z, "family": family, "config_keys": keys,
                "seed": seed, "gap": gap, "B": int(B), "rng_seed": int(rng_seed),
                "level": float(level), "strata": int(strata), "min_pairs": int(min_pairs),
                "max_nonfinite": float(max_nonfinite), "min_distinct": int(min_distinct),
                "min_abs_tau": float(min_abs_tau), "noise_ceiling": bool(noise_ceiling),
                "cmi": bool(cmi), "converged": converged}
    return _result(out_rows, mt, excluded, per_factor, g, fam, conf, fam_factors,
                   n_excluded, settings, min_abs_tau)


def _check_test_arguments(frame: pd.DataFrame, shape: list[str], comparators: list[str], *,
                          z: str, family: str, config_keys: Sequence[str] | None, seed: str,
                          gap: str, B: Any) -> list[str]:
    """:func:`confirmatory_test`'s arguments checked in order (the first bad one raises);
    returns the configuration keys (``family`` first, ``seed`` left out)."""
    if not shape:
        raise ValueError("shape must name at least one shape-metric column")
    if not comparators:
        raise ValueError("comparators must name at least one scale-metric column")
    if config_keys is None:
        raise ValueError("config_keys must name the configuration columns of the frame "
                         "(e.g. the keys of the sweep); confirm_store reads them from a store")
    both = set(shape) & set(comparators)
    if both or z in shape or z in comparators:
        raise ValueError(f"shape, comparators and z must not overlap; {sorted(both) or z} "
                         "appears twice")
    keys = [k for k in dict.fromkeys([family, *config_keys]) if k != seed]
    needed = [*shape, *comparators, z, gap, family, seed, *keys]
    missing = [c for c in dict.fromkeys(needed) if c not in frame]
    if missing:
        raise ValueError(f"columns {missing} are not in the frame")
    if not isinstance(B, (int, np.integer)) or isinstance(B, bool) or B < 2:
        raise ValueError(f"B must be a number of bootstrap draws >= 2, got {B!r}")
    return keys


def _converged_rows(frame: pd.DataFrame, converged: str | None) -> tuple[pd.DataFrame, int]:
    """A fresh copy of the rows whose ``converged`` column is true (every row when it is None
    or absent; NaN counts as false) and how many were left out; at least 2 must remain."""
    d = frame
    n_excluded = 0
    if converged is not None and converged in frame:
        ok = frame[converged].map(lambda v: bool(v) if v == v else False).to_numpy(bool)
        n_excluded = int((~ok).sum())
        d = frame[ok]
    d = d.reset_index(drop=True).copy()
    if len(d) < 2:
        raise ValueError(f"the frame has {len(d)} converged networks; the test needs at least 2")
    return d, n_excluded


def _bootstrap_taus(fam: np.ndarray, conf: np.ndarray, B: int, rng: np.random.Generator,
                    masks: Mapping[str, np.ndarray], num: Mapping[str, np.ndarray],
                    g: np.ndarray, zz: np.ndarray, C: Sequence[str]
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                               dict[str, np.ndarray]]:
    """Tau-a and partial tau of every variable, on the data (row 0) and on ``B`` two-stage
    cluster-bootstrap draws (rows 1..B), pairs within a family; and, for each variable, the
    comparators' partial taus under its mask, (B+1, k). Variables sharing a mask share one
    pass over the pairs."""
    draws = cluster_bootstrap_indices(fam, conf, B, rng)
    n = len(fam)
    W = np.vstack([np.ones(n)] + [np.bincount(r, minlength=n) for r in draws])
    pi, pj = within_group_pairs(fam)
    tau_a, partial, comp_under = {}, {}, {}
    for key in dict.fromkeys(m.tobytes() for m in masks.values()):
        rows = [c for c in masks if masks[c].tobytes() == key]
        mask = masks[rows[0]]
        names = list(dict.fromkeys([*C, *rows]))
        res = _tau_draws(W, pi, pj, mask, g, zz, {n: num[n] for n in names})
        comp = np.stack([res[c][1] for c in C], axis=1)  # (B+1, k)
        for c in rows:
            tau_a[c], partial[c] = res[c]
            comp_under[c] = comp
    return tau_a, partial, comp_under


def _max_t_of(S: Sequence[str], C: Sequence[str], partial: Mapping[str, np.ndarray],
              comp_under: Mapping[str, np.ndarray], B: int, level: float) -> MaxT | None:
    """The max-T comparison of every confirmatory shape metric with the comparators (None
    when no shape metric is confirmatory)."""
    return max_t([partial[s][0] for s in S], np.column_stack([partial[s][1:] for s in S])
                 if S else np.zeros((B, 0)),
                 np.stack([comp_under[s][0] for s in S]) if S else np.zeros((0, len(C))),
                 np.stack([comp_under[s][1:] for s in S], axis=1) if S
                 else np.zeros((B, 0, len(C))), names=S, level=level) if S else None


def _metric_row(role: str, mask: np.ndarray, ta: np.ndarray, pt: np.ndarray,
                mt: MaxT | None, name: str, psi: Mapping[str, Any], psi_z: Mapping[str, Any],
                cmis: Mapping[str, Mapping[str, Any]], errs: Mapping[str, Any],
                level: float) -> dict[str, Any]:
    """One variable's row of the result: taus with percentile bounds, the max-T columns
    (``mt``: only for a confirmatory shape metric, else NaN), Psi and Psi_Z with their
    quantiles, the CMI per factor and the sign errors."""
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    r: dict[str, Any] = {"role": role, "networks": int(mask.sum())}
    r["tau"] = float(ta[0])
    r["tau_lo"], r["tau_hi"] = _pct(ta[1:], [lo_q, hi_q])
    r["partial_tau"] = float(pt[0])
    r["partial_tau_lo"], r["partial_tau_hi"] = _pct(pt[1:], [lo_q, hi_q])
    r["partial_abs_q95"] = _pct(np.abs(pt[1:]), [0.95])[0]
    for k in ("delta", "se", "studentised", "lower_bound", "p_adjusted", "delta_lo",
              "delta_hi"):
        r[k] = float("nan")
    if mt is not None:
        row = mt.to_frame().loc[name]
        r.update({k: float(row[k]) for k in row.index})
    for tag, res in (("psi", psi), ("psi_z", psi_z)):
        r[tag] = res["value"]
        qs = _pct(res["draws"], [lo_q, hi_q, 0.05, 0.95])
        r[f"{tag}_lo"], r[f"{tag}_hi"], r[f"{tag}_q05"], r[f"{tag}_q95"] = qs
        r[f"{tag}_thin"] = list(res["thin"])
    for f, vals in cmis.items():
        r[f"cmi_{f}"], r[f"cmi_{f}_lo"], r[f"cmi_{f}_hi"] = vals["value"], vals["lo"], \
            vals["hi"]
        r[f"cmi_{f}_missing"] = vals["missing"]
    r.update({f"sign_errors_{k}": v for k, v in errs.items()})
    return r


def _per_factor_rows(name: str, psi: Mapping[str, Any], psi_z: Mapping[str, Any]
                     ) -> list[dict[str, Any]]:
    """Psi and Psi_Z of one variable for each family and factor, with their pair counts."""
    out = []
    for key, v in psi["per_factor"].items():
        vz = psi_z["per_factor"][key]
        out.append({"metric": name, "family": v["family"], "factor": v["factor"],
                    "psi": v["psi"], "psi_lo": v["lo"], "psi_hi": v["hi"], "pairs": v["pairs"],
                    "psi_z": vz["psi"], "psi_z_lo": vz["lo"], "psi_z_hi": vz["hi"],
                    "pairs_z": vz["pairs"]})
    return out


def _result(out_rows: dict[str, dict[str, Any]], mt: MaxT | None,
            excluded: dict[str, Any], per_factor: list[dict[str, Any]], g: np.ndarray,
            fam: np.ndarray, conf: np.ndarray, fam_factors: Any, n_excluded: int,
            settings: dict[str, Any], min_abs_tau: float) -> ConfirmResult:
    """The :class:`ConfirmResult`: the rows, the gap's ICC and the counts per family, and the
    verdict read from the rows' frame."""
    icc = {f: icc1(g[fam == f], conf[fam == f]) for f in sorted(set(fam))}
    counts = {"networks": int(len(g)), "excluded_not_converged": n_excluded,
              "configurations": {f: int(np.unique(conf[fam == f]).size)
                                 for f in sorted(set(fam))},
              "factors": fam_factors}
    partial_result = ConfirmResult(rows=out_rows, verdict=Verdict("no", (), {}, {}, {}, {}),
                                   critical=float(mt.critical) if mt else float("nan"),
                                   excluded=excluded, per_factor=tuple(per_factor), icc=icc,
                                   counts=counts, settings=settings)
    v = verdict(partial_result.to_frame(), min_abs_tau=min_abs_tau)
    return ConfirmResult(rows=out_rows, verdict=v, critical=partial_result.critical,
                         excluded=excluded, per_factor=tuple(per_factor), icc=icc,
                         counts=counts, settings=settings)


def confirm_store(path: str, shape: Sequence[str], comparators: Sequence[str], *,
                  where: Mapping[str, Any] | None = None, **kwargs: Any) -> ConfirmResult:
    """:func:`confirmatory_test` on the finished runs of the store at ``path`` (its
    configuration keys as ``config_keys``; ``where`` as in
    :func:`jacspec.zoo.rank.score.score_store`); ``kwargs`` go to :func:`confirmatory_test`."""
    from jacspec.zoo.rank.grid import select_runs
    from jacspec.zoo.run.store import Store

    with Store(path, readonly=True) as store:
        df = store.runs(status="done")
        keys = sorted({k for c in store.configs().values() for k in c})
    if df.empty:
        raise ValueError(f"store {path} has no finished runs to score")
    df = select_runs(df, where=where, keys=keys)
    if df.empty:
        raise ValueError(f"store {path}: no finished run matches where={dict(where or {})}")
    fam = kwargs.get("family", "model")
    if fam not in keys:
        raise ValueError(f"family: {fam!r} is not a configuration key of the store; "
                         f"accepted: {', '.join(keys)}")
    return confirmatory_test(df, shape, comparators, config_keys=keys, **kwargs)
