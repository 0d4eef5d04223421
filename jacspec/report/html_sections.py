"""The :class:`~jacspec.report.html_render.Section` of each kind of result
(:func:`build_section`): analyses (objects and JSON), the demo's comparison, sensitivity,
theory, zoo scores and stores, tracking frames and trackers, and any result with
``to_dict()``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jacspec._util.names import MAIN
from jacspec.report.html_inputs import ZooStore, detect_kind, load_input, records_with_step
from jacspec.report.html_render import (
    Section,
    Table,
    explicit_warnings,
    frame_of,
    is_number,
    scalars,
    warnings_of,
)

__all__ = ["build_section"]

_CAPTIONS = {
    "esd_loglog.png": "ESD on log-log axes with the power-law fit (xmin, xmax marked)",
    "esd_linear.png": "ESD on linear axes with the Marchenko-Pastur bulk of the row's fit",
    "esd_randomized.png": "ESD against the ESD of the entry-shuffled Jacobian (randomized null)",
    "esd_slq.png": "Estimated ESD (stochastic Lanczos quadrature): CDF and density",
}


def _settings_title(kind: str, settings: Mapping[str, Any], fallback: str) -> str:
    model, data = settings.get("model"), settings.get("data")
    if isinstance(data, Mapping):
        data = data.get("name")
    if model and data:
        return f"{fallback}: {Path(str(model)).name} on {data}"
    return fallback


def _sketch_notes(table: Any, settings: Mapping[str, Any]) -> list[str]:
    """One sentence per sketched row (``method`` "sketched"): r, the seed, its error bars and
    how to get the exact row."""
    cols = getattr(table, "columns", ())
    if "method" not in cols:
        return []
    sk = settings.get("sketch") if isinstance(settings.get("sketch"), Mapping) else {}
    out = []
    for row in table.index:
        if table.at[row, "method"] != "sketched":
            continue

        def num(c: str, row: Any = row) -> str:
            v = table.at[row, c] if c in cols else None
            return f"{v:.4g}" if is_number(v) else "n/a"

        out.append(
            f"{row}: sketched from r={num('sketch_r')} random output projections of "
            f"k={num('k')} outputs (seed {sk.get('seed', 'n/a')}), an unbiased estimate with "
            f"jackknife error bars: lambda_max {num('lambda_max')} (se {num('lambda_max_se')}), "
            f"trace {num('trace')} (se {num('trace_se')}); sketch=0 (--sketch 0) gives the "
            "exact row"
        )
    return out


def _analysis_object(a: Any, title: str | None) -> Section:
    from jacspec.report.analysis import analysis_figures

    d = a.to_dict()
    settings = dict(d.get("settings", {}))
    table = a.to_frame() if hasattr(a, "to_frame") else a.table
    sec = Section(title or _settings_title("analysis", settings, "Analysis"), "analysis",
                  settings=settings)
    sec.tables.append(Table("Metrics, one row per matrix", table, "metrics"))
    if d.get("estimate"):
        sec.tables.append(Table("Estimated ESD (SLQ)", frame_of([d["estimate"]]), "estimate"))
    sec.warnings += (_sketch_notes(table, settings) + warnings_of(table)
                     + explicit_warnings(settings))
    if MAIN in getattr(a, "esds", {}) or getattr(a, "estimate", None) is not None:
        for name, fig in analysis_figures(a).items():
            sec.add_figure(_CAPTIONS.get(name, name), fig)
    return sec


def _analysis_payload(d: Mapping[str, Any], title: str | None) -> Section:
    import numpy as np

    from jacspec.report.esd_plots import plot_esd_linear, plot_esd_loglog

    settings = dict(d.get("settings") or {})
    metrics = dict(d.get("metrics") or {})
    if d.get("layers"):
        table = frame_of(d["layers"], "name")
    else:
        table = frame_of([{"name": MAIN, **metrics}], "name")
    sec = Section(title or _settings_title("analysis", settings, "Analysis"), "analysis",
                  settings=settings)
    sec.tables.append(Table("Metrics, one row per matrix", table, "metrics"))
    if d.get("estimate"):
        sec.tables.append(Table("Estimated ESD (SLQ)", frame_of([scalars(d["estimate"])]),
                                "estimate"))
    sec.warnings += (_sketch_notes(table, settings) + warnings_of(table)
                     + explicit_warnings(settings))
    ev = np.asarray([v for v in (d.get("eigenvalues") or []) if v is not None], dtype=float)
    if ev.size and (ev > 0).any():
        rank = metrics.get("rank")
        top = ev[: max(int(rank), 1)] if isinstance(rank, int) else ev
        label = f"{MAIN}: ESD of {'M/n' if settings.get('scale') == 'n' else 'M'}"
        xmin = metrics.get("xmin")
        sec.add_figure("ESD on log-log axes (eigenvalues above the rank tolerance; the fit's "
                       "alpha and xmin are in the table)", plot_esd_loglog(top, title=label))
        sec.add_figure("ESD on linear axes (xmin of the power-law fit dashed)",
                       plot_esd_linear(ev, xmin=xmin if is_number(xmin) else None,
                                       title=label))
    return sec


def _comparison_payload(d: Mapping[str, Any], title: str | None) -> Section:
    metrics = d["metrics"]
    frame = frame_of([{"name": k, **v} for k, v in metrics.items()], "name")
    sec = Section(title or "Comparison", "comparison", settings=dict(d.get("settings") or {}))
    sec.tables.append(Table("Metrics side by side", frame, "metrics", transpose=True))
    sec.warnings += warnings_of(frame)
    return sec


def _sensitivity_payload(d: Mapping[str, Any], title: str | None) -> Section:
    from jacspec.report.report_figures import plot_trajectory_records

    trajectories = list(d.get("trajectories") or [])
    settings: dict[str, Any] = {k: v for k, v in d.items()
                                if k in ("model", "data")}
    if trajectories and isinstance(trajectories[0].get("settings"), Mapping):
        settings["trajectories"] = trajectories[0]["settings"]
    per_point = dict(d.get("per_point") or {})
    if isinstance(per_point.get("settings"), Mapping):
        settings["per_point"] = per_point["settings"]
    sec = Section(title or _settings_title("sensitivity", settings, "Sensitivity"),
                  "sensitivity", settings=settings)
    if "jacobian_norm_mean" in d:
        sec.tables.append(Table("Mean softmax Jacobian norm on the data",
                                frame_of([{"name": "data", "jacobian_norm_mean":
                                           d["jacobian_norm_mean"]}], "name"), "overview"))
    if per_point:
        sec.tables.append(Table("Per-point loss bounds (Novak et al. eqs. 5-7)",
                                frame_of([{"name": "per_point", **scalars(per_point)}], "name"),
                                "per_point"))
    if trajectories:
        rows = [{"name": str(t.get("kind", i)), **scalars(t)}
                for i, t in enumerate(trajectories)]
        sec.tables.append(Table("Trajectories", frame_of(rows, "name"), "trajectories"))
        sec.add_figure("Jacobian norm and linear-region transitions along each trajectory",
                       plot_trajectory_records(trajectories))
    sec.warnings += explicit_warnings(d)
    return sec


def _theory_payload(d: Mapping[str, Any], title: str | None, obj: Any = None) -> Section:
    from types import SimpleNamespace

    import numpy as np

    kind = ("spectrum" if "grid" in d else "mean field" if "chi" in d else "critical point")
    act = d.get("activation", "")
    sec = Section(title or f"Theory: {kind} ({act})", "theory",
                  settings=dict(d["settings"]) if isinstance(d.get("settings"), Mapping) else {})
    sim = d.get("simulation") if isinstance(d.get("simulation"), Mapping) else None
    row = {"name": "theory", **scalars(d)}
    sec.tables.append(Table(f"{kind.capitalize()}", frame_of([row], "name"), "theory"))
    if d.get("atoms"):
        sec.tables.append(Table("Point masses (atoms)", frame_of(list(d["atoms"])), "atoms"))
    if sim is not None:
        sec.tables.append(Table("Simulated networks", frame_of([{"name": "simulation",
                                                                 **scalars(sim)}], "name"),
                                "simulation"))
    if "grid" in d and "density" in d:
        from jacspec.report.theory_plots import theory_vs_simulation

        spec = obj if obj is not None else SimpleNamespace(
            **{k: d.get(k) for k in ("activation", "weights", "depth", "sigma_w2", "sigma_b2")},
            grid=np.asarray(d["grid"], dtype=float),
            density=np.asarray([np.nan if v is None else v for v in d["density"]], dtype=float),
            atoms=[dict(a) for a in d.get("atoms") or []])
        sec.add_figure("Density of log10 lambda of JJ^T (free probability)",
                       theory_vs_simulation([spec]))
    sec.warnings += explicit_warnings(d)
    return sec


def _zoo_section(table: Any, title: str | None, store: Path | None = None) -> Section:
    import numpy as np

    d = table.to_dict() if hasattr(table, "to_dict") else dict(table)
    scores = d.get("metrics") or {}
    rows = [{"name": m, **scalars(s)} for m, s in scores.items()]
    frame = frame_of(rows, "name")
    if "kendall_tau" in frame:
        order = np.argsort(-np.abs(frame["kendall_tau"].to_numpy(dtype=float, na_value=np.nan)),
                           kind="stable")
        frame = frame.iloc[order]
    settings = {k: d.get(k) for k in ("gap", "factors", "num_models", "complete_grid", "noise",
                                      "best") if k in d}
    if store is not None:
        settings["store"] = str(store)
    sec = Section(title or (f"Zoo: {store.name}" if store else "Zoo scores"), "zoo",
                  settings=settings)
    sec.tables.append(Table("Scores of each metric against the generalization gap "
                            "(sorted by |Kendall tau|)", frame, "scores", transpose=False))
    paired = [p for p in d.get("paired") or [] if isinstance(p, Mapping)]
    if paired:
        prs = [{"name": f"{p.get('metric')} | {p.get('factor')}: {p.get('a')} vs {p.get('b')}",
                **scalars(p)} for p in paired]
        sec.tables.append(Table("Paired comparisons (one factor changed, all else fixed)",
                                frame_of(prs, "name"), "paired", transpose=False))
    if d.get("complete_grid") is False:
        sec.warnings.append("the configurations do not form a complete grid of the factors: "
                            "CMI is not computed (nan)")
    if store is None:
        sec.notes.append("Scatter plots of each metric against the gap need the runs: report "
                         "the zoo's results store (jacspec report STORE).")
        return sec
    import tempfile

    from jacspec.report.zoo_plots import save_zoo_figures

    ranked = [m for m in frame.index if m in scores][:6]
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_zoo_figures(store, tmp, table=table, metrics=ranked):
            name = path.stem.removeprefix("zoo_")
            what, _, metric = name.partition("_")
            caption = {"gap": f"{metric} against the gap, one point per model",
                       "pairs": f"paired comparison: {metric}",
                       "curves": f"{metric} over training"}.get(what, name)
            sec.figures.append((caption, path.read_bytes()))
    return sec


def _zoo_store(path: Path, title: str | None) -> Section:
    from jacspec.zoo.rank.score import score_store

    return _zoo_section(score_store(str(path)), title, store=path)


def _split_layers(frame: Any) -> tuple[Any, Any]:
    """(frame without a ``layers`` column, the layer rows as a ``step, matrix, ...`` frame or
    None): a tracker's JSON rows hold each step's layer metrics as ``{matrix: {metric: v}}``."""
    import pandas as pd

    if "layers" not in frame or not frame["layers"].map(lambda v: isinstance(v, Mapping)).any():
        return frame, None
    records = [{"step": step, "matrix": str(m), **dict(vals)}
               for step, layers in zip(frame["step"], frame["layers"], strict=True)
               if isinstance(layers, Mapping) for m, vals in layers.items()]
    return frame.drop(columns=["layers"]), pd.DataFrame.from_records(records)


def _tracking_section(frame: Any, title: str | None, settings: Mapping[str, Any] | None = None,
                      layer_frame: Any = None) -> Section:
    """Metrics at each tracked step (table and one panel per metric against ``step``), and
    the layer rows (``step, matrix, ...``) likewise when given."""
    from jacspec.report.report_figures import group_column, metric_columns, plot_tracking

    frame = frame.reset_index(drop=True) if "step" in frame else frame.reset_index()
    if "step" not in frame:
        raise ValueError("a tracking result needs a 'step' column; columns: "
                         f"{', '.join(map(str, frame.columns))}")
    frame, nested = _split_layers(frame)
    if layer_frame is None or len(layer_frame) == 0:
        layer_frame = nested
    sec = Section(title or "Tracking", "tracking", settings=dict(settings or {}))
    for name, part, caption in (("tracking", frame, "Metrics at each tracked step"),
                                ("layers", layer_frame, "Layer rows at each tracked step")):
        if part is None or len(part) == 0:
            continue
        group = group_column(part)
        part = part.sort_values(["step"] + ([group] if group else []),
                                kind="stable").reset_index(drop=True)
        shown = part.copy()
        shown.index = _index([f"step {s}" + (f" {g}" if group else "") for s, g in zip(
            part["step"], part[group] if group else part["step"], strict=True)], "row")
        sec.tables.append(Table(caption, shown, name, transpose=False))
        sec.warnings += warnings_of(shown)
        metrics = metric_columns(part)
        what = caption.split(" at ")[0]
        for i in range(0, len(metrics), 12):
            sec.add_figure(f"{what} against the training step" + (
                f" (one line per {group})" if group else ""),
                plot_tracking(part, metrics[i:i + 12]))
    return sec


def _index(labels: Sequence[str], name: str) -> Any:
    import pandas as pd

    return pd.Index(labels, name=name)


def _profiles_section(profiles: Sequence[Any], title: str | None) -> Section:
    from jacspec.report.sensitivity_plots import plot_profiles

    rows = [{"name": p.kind, **scalars(p.summary())} for p in profiles]
    sec = Section(title or "Sensitivity along trajectories", "sensitivity",
                  settings=dict(getattr(profiles[0], "settings", {}) or {}))
    sec.tables.append(Table("Trajectories", frame_of(rows, "name"), "trajectories"))
    smooth = max(1, len(profiles[0].t) // 64)
    sec.add_figure("Jacobian norm and transitions per unit length along each trajectory",
                   plot_profiles(list(profiles), smooth=smooth))
    return sec


def _per_point_section(result: Any, title: str | None) -> Section:
    from jacspec.report.sensitivity_plots import plot_per_point

    summary = dict(result.summary())
    sec = Section(title or "Per-point sensitivity", "sensitivity",
                  settings=dict(summary.pop("settings", None) or getattr(result, "settings", {})))
    sec.tables.append(Table("Per-point loss bounds (Novak et al. eqs. 5-7)",
                            frame_of([{"name": "per_point", **scalars(summary)}], "name"),
                            "per_point"))
    sec.add_figure("Jacobian norms against the loss with the bounds of eqs. 5-7",
                   plot_per_point(result))
    return sec


def is_profile(obj: Any) -> bool:
    """True for a sensitivity profile (a trajectory result: kind, t, norms, transitions)."""
    return all(hasattr(obj, a) for a in ("kind", "t", "jacobian_norm", "transitions",
                                         "summary"))


def _frame_with_step(obj: Any) -> Any:
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj if "step" in obj.columns or obj.index.name == "step" else None
    to_frame = getattr(obj, "to_frame", None)
    if callable(to_frame) and not hasattr(obj, "esds"):
        try:
            frame = to_frame()
        except TypeError:
            return None
        if isinstance(frame, pd.DataFrame) and ("step" in frame.columns
                                                or frame.index.name == "step"):
            return frame
    return None


def build_section(result: Any, *, title: str | None = None) -> Section:
    """The :class:`Section` of one result (object, JSON payload, file path or Section)."""
    import pandas as pd

    if isinstance(result, Section):
        return result
    if isinstance(result, (str, os.PathLike)):
        loaded = load_input(result)
        try:
            return build_section(loaded, title=title or Path(result).name)
        except ValueError as exc:
            if str(result) in str(exc):
                raise
            raise ValueError(f"{result}: {exc}") from exc
    if isinstance(result, ZooStore):
        return _zoo_store(result.path, title)
    if hasattr(result, "table") and hasattr(result, "esds"):
        return _analysis_object(result, title)
    if hasattr(result, "scores") and hasattr(result, "factors") and hasattr(result, "gap"):
        return _zoo_section(result, title)
    if is_profile(result):
        return _profiles_section([result], title)
    if isinstance(result, (list, tuple)) and result and all(is_profile(p) for p in result):
        return _profiles_section(result, title)
    if hasattr(result, "frame") and hasattr(result, "M") and hasattr(result, "summary"):
        return _per_point_section(result, title)
    frame = _frame_with_step(result)
    if frame is not None:
        settings = getattr(result, "settings", None)
        layer_frame = getattr(result, "layer_frame", None)
        return _tracking_section(frame, title, settings if isinstance(settings, Mapping)
                                 else None, layer_frame() if callable(layer_frame) else None)
    if isinstance(result, pd.DataFrame):
        raise ValueError("a DataFrame is reported as a tracking result and needs a 'step' "
                         f"column; it has {', '.join(map(str, result.columns))}")
    if hasattr(result, "grid") and hasattr(result, "density") and hasattr(result, "to_dict"):
        return _theory_payload(result.to_dict(), title, obj=result)
    if hasattr(result, "eigenvalues") and hasattr(result, "width") and hasattr(result,
                                                                              "to_dict"):
        return _simulation_section(result, title)
    if isinstance(result, (Mapping, list)):
        return _payload_section(result, title)
    if callable(getattr(result, "to_dict", None)):
        return _generic_section(result, title)
    raise TypeError(f"cannot report a {type(result).__name__}: pass a jacspec result "
                    "(analyze, sensitivity, theory, zoo, tracker), its JSON (a dict or a "
                    "file path), a DataFrame with a 'step' column or a Section")


def _payload_section(d: Any, title: str | None) -> Section:
    kind = detect_kind(d)
    if kind == "analysis":
        return _analysis_payload(d, title)
    if kind == "comparison":
        return _comparison_payload(d, title)
    if kind == "sensitivity":
        return _sensitivity_payload(d, title)
    if kind == "theory":
        return _theory_payload(d, title)
    if kind == "zoo":
        return _zoo_section(d, title)
    # tracking
    if isinstance(d, list):
        return _tracking_section(frame_of(d), title)
    if isinstance(d.get("step"), list):
        return _tracking_section(frame_of({k: v for k, v in d.items() if isinstance(v, list)}),
                                 title, d.get("settings"))
    key = next(k for k, v in d.items() if records_with_step(v))
    return _tracking_section(frame_of(d[key]), title,
                             d.get("settings") if isinstance(d.get("settings"), Mapping)
                             else None)


def _simulation_section(sim: Any, title: str | None) -> Section:
    from jacspec.report.report_figures import plot_simulated_spectrum

    d = sim.to_dict()
    sec = Section(title or f"Theory: simulated spectrum ({d.get('activation', '')})", "theory")
    sec.tables.append(Table("Simulated networks", frame_of([{"name": "simulation",
                                                             **scalars(d)}], "name"),
                            "simulation"))
    sec.add_figure("Histogram of log10 lambda of the simulated JJ^T",
                   plot_simulated_spectrum(sim.eigenvalues, floor=float(d.get("floor") or 0)))
    return sec


def _generic_section(obj: Any, title: str | None) -> Section:
    import pandas as pd

    d = obj.to_dict()
    try:
        return _payload_section(d, title)
    except ValueError:
        pass
    sec = Section(title or type(obj).__name__, "result",
                  settings=dict(getattr(obj, "settings", None) or d.get("settings") or {}))
    sec.tables.append(Table("Values", frame_of([{"name": type(obj).__name__,
                                                 **scalars(d, skip=("settings",))}], "name"),
                            "values"))
    to_frame = getattr(obj, "to_frame", None)
    if callable(to_frame):
        frame = to_frame()
        if isinstance(frame, pd.DataFrame) and not frame.empty:
            sec.tables.append(Table("Table", frame, "frame"))
    plot = getattr(obj, "plot", None)
    if callable(plot):
        figs = plot()
        items = figs.items() if isinstance(figs, Mapping) else [(type(obj).__name__, figs)]
        for caption, fig in items:
            sec.add_figure(str(caption), fig)
    sec.warnings += explicit_warnings(d)
    return sec

