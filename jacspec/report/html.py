"""One self-contained HTML page for any jacspec result: :func:`write_report`.

The page holds, per result, its settings, its tables, its figures and its warnings, plus
the versions of jacspec, torch, numpy and Python that wrote it. Everything is inline: the
figures are PNG ``data:`` URIs, the style sheet is in ``<style>``, no font, script or image
is fetched, so the file opens offline and can be mailed or archived as it is.

Inputs (one, a list of them, or a ``{label: input}`` mapping):

- an analysis (:func:`jacspec.analyze`'s result, or its ``jacspec analyze --json`` file);
- the ``jacspec demo --json`` file (metrics side by side);
- sensitivity results (:class:`~jacspec.sensitivity.norms.PerPointSensitivity`,
  :class:`~jacspec.sensitivity.trajectories.TrajectoryProfile` objects or the
  ``jacspec sensitivity --json`` file);
- theory results (``mean_field``, ``critical_point``, ``jacobian_spectrum``,
  ``simulate_spectrum`` or the ``jacspec theory ... --json`` files);
- a zoo (its SQLite results store: score table and scatter plots of each metric against the
  gap; or a :class:`~jacspec.zoo.score.ScoreTable` / ``jacspec zoo score --json`` file:
  score table only);
- a tracking result: a DataFrame (or an object whose ``to_frame()`` is one) with a ``step``
  column and one column per metric, or a JSON/JSONL/CSV/SQLite file of such rows;
- a :class:`Section` built by hand;
- any other result with ``to_dict()`` (and optionally ``to_frame()``, ``plot()``).

Every table cell shows its number with 4 significant digits and carries the exact value
(``repr`` of the float) in ``data-value``, with ``data-row``/``data-key`` naming the row and
the column, so the numbers of the page can be checked against the JSON.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import io
import json
import math
import os
import platform
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "Section", "Table", "build_section", "detect_kind", "load_input",
           "render_html", "versions", "write_report"]

#: Kinds of result a section can show.
KINDS = ("analysis", "comparison", "sensitivity", "theory", "zoo", "tracking", "result")
MAIN = "input->output"
#: Rows shown of a long table (the rest is counted under it).
MAX_ROWS = 500
FIGURE_DPI = 100
_CAPTIONS = {
    "esd_loglog.png": "ESD on log-log axes with the power-law fit (xmin, xmax marked)",
    "esd_linear.png": "ESD on linear axes with the Marchenko-Pastur bulk of the row's fit",
    "esd_randomized.png": "ESD against the ESD of the entry-shuffled Jacobian (randomized null)",
    "esd_slq.png": "Estimated ESD (stochastic Lanczos quadrature): CDF and density",
}


@dataclass
class Table:
    """A table of the page: ``frame``'s index names the rows (``data-row``), its columns the
    quantities (``data-key``); ``transpose`` shows quantities as rows (None: when there are
    more columns than rows)."""

    caption: str
    frame: Any
    name: str = "table"
    transpose: bool | None = None
    note: str = ""


@dataclass
class Section:
    """One result on the page: settings, tables, figures (``(caption, PNG bytes)``), warnings
    and notes. Build one by hand to add anything to a report."""

    title: str
    kind: str = "result"
    settings: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_figure(self, caption: str, figure: Any, *, dpi: int = FIGURE_DPI) -> None:
        """Append a matplotlib Figure (rendered to PNG now) or PNG bytes."""
        self.figures.append((caption, figure if isinstance(figure, bytes)
                             else figure_png(figure, dpi=dpi)))


# --- small helpers ----------------------------------------------------------------------


def figure_png(fig: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """The PNG bytes of a matplotlib Figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("figure bytes are not a PNG image")
    return struct.unpack(">II", data[16:24])


def versions() -> dict[str, str]:
    """Versions of jacspec, torch, numpy, pandas, matplotlib and Python writing the page
    (read from the installed distributions: nothing is imported for it)."""
    from jacspec import __version__

    out = {"jacspec": __version__}
    for dist in ("torch", "numpy", "pandas", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    return out


def _is_number(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _cell(value: Any) -> tuple[str, str | None]:
    """(text, exact value or None) of one cell: numbers with 4 significant digits and their
    exact ``repr``; None and NaN as ``nan``; lists and dicts summarised."""
    import numpy as np

    if value is None:
        return "nan", "nan"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), None
    if isinstance(value, (int, np.integer)):
        return str(int(value)), str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.4g}", repr(v)
    if isinstance(value, Mapping):
        parts = [f"{k}={_cell(v)[0]}" for k, v in value.items()
                 if not isinstance(v, (Mapping, list, tuple, np.ndarray))]
        return ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else ""), None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if len(items) <= 6 and all(_is_number(v) or isinstance(v, str) for v in items):
            return ", ".join(_cell(v)[0] for v in items), None
        return f"[{len(items)} values]", None
    try:
        import pandas as pd

        if pd.isna(value):
            return "nan", "nan"
    except (TypeError, ValueError):
        pass
    return str(value), None


def _scalars(d: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of ``d`` that are not lists or dicts (nor in ``skip``)."""
    import numpy as np

    return {k: v for k, v in d.items() if k not in skip
            and not isinstance(v, (Mapping, list, tuple, np.ndarray))}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _frame(records: Any, index: str | None = None) -> Any:
    import pandas as pd

    frame = pd.DataFrame(records)
    if index is not None and index in frame:
        frame = frame.set_index(index)
    return frame


def _warnings_of(frame: Any) -> list[str]:
    """Row warnings (``warning`` column) and quantities a float32 Jacobian left unresolved
    (``unresolved`` column, named unless the row's warning already says so) of a table, one
    sentence per row."""
    cols = getattr(frame, "columns", ())
    if "warning" not in cols and "unresolved" not in cols:
        return []

    def text(value: Any) -> str:
        t = value.strip() if isinstance(value, str) else ""
        return "" if t.lower() in ("none", "nan", "ok") else t

    out = []
    for row in frame.index:
        warning = text(frame.at[row, "warning"]) if "warning" in cols else ""
        unresolved = text(frame.at[row, "unresolved"]) if "unresolved" in cols else ""
        parts = [warning] if warning else []
        if unresolved and "resolve" not in warning:
            parts.append(f"float32 could not resolve {unresolved}")
        if unresolved:
            parts.append("rerun with dtype=torch.float64 (--dtype float64) to resolve it")
        if parts:
            out.append(f"{row}: " + "; ".join(parts))
    return out


def _explicit_warnings(d: Mapping[str, Any]) -> list[str]:
    """Entries named ``warning``/``warnings`` anywhere in a (settings) mapping."""
    out: list[str] = []
    for k, v in d.items():
        if k in ("warning", "warnings"):
            if isinstance(v, str) and v.strip():
                out.append(v.strip())
            elif isinstance(v, (list, tuple)):
                out.extend(str(x) for x in v if str(x).strip())
        elif isinstance(v, Mapping):
            out.extend(_explicit_warnings(v))
    return out


# --- reading inputs ---------------------------------------------------------------------


def _sqlite_tables(path: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: [r[1] for r in con.execute(f"PRAGMA table_info('{n}')")] for n in names}
    finally:
        con.close()


def _is_zoo_store(path: Path) -> bool:
    tables = _sqlite_tables(path)
    return "runs" in tables and {"config_hash", "config", "status"} <= set(tables["runs"])


def load_input(path: str | os.PathLike[str]) -> Any:
    """What a file holds, ready for :func:`build_section`: a JSON file's payload, the rows of
    a JSONL/CSV tracking file (a DataFrame), a zoo store (its :class:`Path`, tagged) or the
    rows of an SQLite table with a ``step`` column."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise OSError(f"input {str(path)!r} does not exist")
    if p.is_dir():
        raise ValueError(f"input {str(path)!r} is a folder; jacspec report takes JSON files "
                         "(from --json), tracking files (.jsonl, .csv) or SQLite stores")
    with p.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        if _is_zoo_store(p):
            return _ZooStore(p)
        for table, cols in _sqlite_tables(p).items():
            if "step" in cols:
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                try:
                    frame = pd.read_sql_query(f"SELECT * FROM '{table}'", con)
                finally:
                    con.close()
                return _expand_json_columns(frame)
        raise ValueError(f"{p}: an SQLite file that is neither a zoo store (table runs) nor a "
                         "tracking store (a table with a step column)")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not a text file; jacspec report reads the JSON files of "
                         "--json, JSONL/CSV tracking files and SQLite stores") from None
    if suffix == ".jsonl":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        first = json.loads(lines[0]) if lines else {}
        if isinstance(first, Mapping) and first.get("format") == "jacspec-track":
            from jacspec.track import Tracker

            return Tracker.load(p)
        return _frame([json.loads(ln) for ln in lines])
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            return _frame([json.loads(ln) for ln in lines])
        except json.JSONDecodeError:
            raise ValueError(f"{p} is not JSON ({exc.msg} at line {exc.lineno}); jacspec "
                             "report reads the JSON files of --json, JSONL/CSV tracking "
                             "files and SQLite stores") from None


def _expand_json_columns(frame: Any) -> Any:
    """Columns holding JSON objects (a store's ``metrics`` text) spread into columns."""
    import pandas as pd

    for col in list(frame.columns):
        s = frame[col]
        if s.dtype == object and s.map(lambda v: isinstance(v, str) and v[:1] == "{").all():
            try:
                wide = pd.DataFrame([json.loads(v) for v in s], index=frame.index)
            except json.JSONDecodeError:
                continue
            frame = pd.concat([frame.drop(columns=[col]), wide], axis=1)
    return frame


@dataclass(frozen=True)
class _ZooStore:
    path: Path


def _records_with_step(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(r, Mapping) and "step" in r for r in value))


def detect_kind(payload: Any) -> str:
    """The kind (:data:`KINDS`) of a JSON payload from its keys; ValueError when it is none
    that jacspec writes."""
    if _records_with_step(payload):
        return "tracking"
    if not isinstance(payload, Mapping):
        raise ValueError(f"cannot report a JSON {type(payload).__name__}: expected an object "
                         "written by a jacspec command, or a list of tracking rows with 'step'")
    keys = set(payload)
    metrics = payload.get("metrics")
    if {"factors", "gap"} <= keys and isinstance(metrics, Mapping):
        return "zoo"
    if keys & {"trajectories", "per_point"} and "jacobian_norm_mean" in keys | set(
            payload.get("per_point") or {}):
        return "sensitivity"
    if "eigenvalues" in keys and isinstance(metrics, Mapping):
        return "analysis"
    if isinstance(metrics, Mapping) and metrics and all(isinstance(v, Mapping)
                                                        for v in metrics.values()):
        return "comparison"
    if {"grid", "density"} <= keys or {"q_star", "chi"} <= keys or (
            {"sigma_w2", "sigma_b2", "q_star"} <= keys):
        return "theory"
    if isinstance(payload.get("step"), list) or any(_records_with_step(v)
                                                    for v in payload.values()):
        return "tracking"
    shown = ", ".join(sorted(map(str, keys))[:8]) or "(none)"
    raise ValueError(f"cannot tell which jacspec result this is (keys: {shown}); expected the "
                     "JSON of jacspec analyze, demo, sensitivity, theory, zoo score or a "
                     "tracker's rows (with 'step')")


# --- sections ---------------------------------------------------------------------------


def _settings_title(kind: str, settings: Mapping[str, Any], fallback: str) -> str:
    model, data = settings.get("model"), settings.get("data")
    if isinstance(data, Mapping):
        data = data.get("name")
    if model and data:
        return f"{fallback}: {Path(str(model)).name} on {data}"
    return fallback


def _analysis_object(a: Any, title: str | None) -> Section:
    from jacspec.report.analysis import analysis_figures

    d = a.to_dict()
    settings = dict(d.get("settings", {}))
    table = a.to_frame() if hasattr(a, "to_frame") else a.table
    sec = Section(title or _settings_title("analysis", settings, "Analysis"), "analysis",
                  settings=settings)
    sec.tables.append(Table("Metrics, one row per matrix", table, "metrics"))
    if d.get("estimate"):
        sec.tables.append(Table("Estimated ESD (SLQ)", _frame([d["estimate"]]), "estimate"))
    sec.warnings += _warnings_of(table) + _explicit_warnings(settings)
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
        table = _frame(d["layers"], "name")
    else:
        table = _frame([{"name": MAIN, **metrics}], "name")
    sec = Section(title or _settings_title("analysis", settings, "Analysis"), "analysis",
                  settings=settings)
    sec.tables.append(Table("Metrics, one row per matrix", table, "metrics"))
    if d.get("estimate"):
        sec.tables.append(Table("Estimated ESD (SLQ)", _frame([_scalars(d["estimate"])]),
                                "estimate"))
    sec.warnings += _warnings_of(table) + _explicit_warnings(settings)
    ev = np.asarray([v for v in (d.get("eigenvalues") or []) if v is not None], dtype=float)
    if ev.size and (ev > 0).any():
        rank = metrics.get("rank")
        top = ev[: max(int(rank), 1)] if isinstance(rank, int) else ev
        label = f"{MAIN}: ESD of {'M/n' if settings.get('scale') == 'n' else 'M'}"
        xmin = metrics.get("xmin")
        sec.add_figure("ESD on log-log axes (eigenvalues above the rank tolerance; the fit's "
                       "alpha and xmin are in the table)", plot_esd_loglog(top, title=label))
        sec.add_figure("ESD on linear axes (xmin of the power-law fit dashed)",
                       plot_esd_linear(ev, xmin=xmin if _is_number(xmin) else None,
                                       title=label))
    return sec


def _comparison_payload(d: Mapping[str, Any], title: str | None) -> Section:
    metrics = d["metrics"]
    frame = _frame([{"name": k, **v} for k, v in metrics.items()], "name")
    sec = Section(title or "Comparison", "comparison", settings=dict(d.get("settings") or {}))
    sec.tables.append(Table("Metrics side by side", frame, "metrics", transpose=True))
    sec.warnings += _warnings_of(frame)
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
                                _frame([{"name": "data", "jacobian_norm_mean":
                                         d["jacobian_norm_mean"]}], "name"), "overview"))
    if per_point:
        sec.tables.append(Table("Per-point loss bounds (Novak et al. eqs. 5-7)",
                                _frame([{"name": "per_point", **_scalars(per_point)}], "name"),
                                "per_point"))
    if trajectories:
        rows = [{"name": str(t.get("kind", i)), **_scalars(t)}
                for i, t in enumerate(trajectories)]
        sec.tables.append(Table("Trajectories", _frame(rows, "name"), "trajectories"))
        sec.add_figure("Jacobian norm and linear-region transitions along each trajectory",
                       plot_trajectory_records(trajectories))
    sec.warnings += _explicit_warnings(d)
    return sec


def _theory_payload(d: Mapping[str, Any], title: str | None, obj: Any = None) -> Section:
    from types import SimpleNamespace

    import numpy as np

    kind = ("spectrum" if "grid" in d else "mean field" if "chi" in d else "critical point")
    act = d.get("activation", "")
    sec = Section(title or f"Theory: {kind} ({act})", "theory",
                  settings=dict(d["settings"]) if isinstance(d.get("settings"), Mapping) else {})
    sim = d.get("simulation") if isinstance(d.get("simulation"), Mapping) else None
    row = {"name": "theory", **_scalars(d)}
    sec.tables.append(Table(f"{kind.capitalize()}", _frame([row], "name"), "theory"))
    if d.get("atoms"):
        sec.tables.append(Table("Point masses (atoms)", _frame(list(d["atoms"])), "atoms"))
    if sim is not None:
        sec.tables.append(Table("Simulated networks", _frame([{"name": "simulation",
                                                               **_scalars(sim)}], "name"),
                                "simulation"))
    if "grid" in d and "density" in d:
        from jacspec.theory.plots import theory_vs_simulation

        spec = obj if obj is not None else SimpleNamespace(
            **{k: d.get(k) for k in ("activation", "weights", "depth", "sigma_w2", "sigma_b2")},
            grid=np.asarray(d["grid"], dtype=float),
            density=np.asarray([np.nan if v is None else v for v in d["density"]], dtype=float),
            atoms=[dict(a) for a in d.get("atoms") or []])
        sec.add_figure("Density of log10 lambda of JJ^T (free probability)",
                       theory_vs_simulation([spec]))
    sec.warnings += _explicit_warnings(d)
    return sec


def _zoo_section(table: Any, title: str | None, store: Path | None = None) -> Section:
    import numpy as np

    d = table.to_dict() if hasattr(table, "to_dict") else dict(table)
    scores = d.get("metrics") or {}
    rows = [{"name": m, **_scalars(s)} for m, s in scores.items()]
    frame = _frame(rows, "name")
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
                **_scalars(p)} for p in paired]
        sec.tables.append(Table("Paired comparisons (one factor changed, all else fixed)",
                                _frame(prs, "name"), "paired", transpose=False))
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
    from jacspec.zoo.score import score_store

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
        sec.warnings += _warnings_of(shown)
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

    rows = [{"name": p.kind, **_scalars(p.summary())} for p in profiles]
    sec = Section(title or "Sensitivity along trajectories", "sensitivity",
                  settings=dict(getattr(profiles[0], "settings", {}) or {}))
    sec.tables.append(Table("Trajectories", _frame(rows, "name"), "trajectories"))
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
                            _frame([{"name": "per_point", **_scalars(summary)}], "name"),
                            "per_point"))
    sec.add_figure("Jacobian norms against the loss with the bounds of eqs. 5-7",
                   plot_per_point(result))
    return sec


def _is_profile(obj: Any) -> bool:
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
    if isinstance(result, _ZooStore):
        return _zoo_store(result.path, title)
    if hasattr(result, "table") and hasattr(result, "esds"):
        return _analysis_object(result, title)
    if hasattr(result, "scores") and hasattr(result, "factors") and hasattr(result, "gap"):
        return _zoo_section(result, title)
    if _is_profile(result):
        return _profiles_section([result], title)
    if isinstance(result, (list, tuple)) and result and all(_is_profile(p) for p in result):
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
        return _tracking_section(_frame(d), title)
    if isinstance(d.get("step"), list):
        return _tracking_section(_frame({k: v for k, v in d.items() if isinstance(v, list)}),
                                 title, d.get("settings"))
    key = next(k for k, v in d.items() if _records_with_step(v))
    return _tracking_section(_frame(d[key]), title,
                             d.get("settings") if isinstance(d.get("settings"), Mapping)
                             else None)


def _simulation_section(sim: Any, title: str | None) -> Section:
    from jacspec.report.report_figures import plot_simulated_spectrum

    d = sim.to_dict()
    sec = Section(title or f"Theory: simulated spectrum ({d.get('activation', '')})", "theory")
    sec.tables.append(Table("Simulated networks", _frame([{"name": "simulation",
                                                           **_scalars(d)}], "name"),
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
    sec.tables.append(Table("Values", _frame([{"name": type(obj).__name__,
                                                **_scalars(d, skip=("settings",))}], "name"),
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
    sec.warnings += _explicit_warnings(d)
    return sec


# --- rendering --------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2f5fb3;
        --warn-bg: #fff6e0; --warn-line: #e0a800; --head: #eef2f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
             "Liberation Sans", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 10px; padding-top: 14px;
     border-top: 3px solid var(--accent); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.meta { color: var(--muted); margin: 0 0 14px; }
.kind { display: inline-block; font-size: 12px; font-weight: 600; color: #fff;
        background: var(--accent); border-radius: 10px; padding: 1px 9px; margin-left: 8px;
        vertical-align: middle; text-transform: uppercase; letter-spacing: .04em; }
nav ol { margin: 6px 0 0 18px; padding: 0; }
nav a { color: var(--accent); text-decoration: none; }
.scroll { overflow-x: auto; max-width: 100%; }
.tall { max-height: 560px; overflow-y: auto; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: left;
         vertical-align: top; }
thead th { background: var(--head); position: sticky; top: 0; }
tbody th { background: #f7f9fc; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
         font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
         font-size: 12.5px; }
table.settings td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
                    font-size: 12.5px; word-break: break-word; max-width: 760px; }
.warnings { background: var(--warn-bg); border-left: 5px solid var(--warn-line);
            padding: 8px 14px; margin: 10px 0; }
.warnings h3 { margin: 2px 0 4px; }
.warnings ul { margin: 0; padding-left: 20px; }
.note { color: var(--muted); font-style: italic; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
           gap: 16px; align-items: start; }
figure { margin: 0; padding: 8px; border: 1px solid var(--line); border-radius: 6px;
         background: #fff; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; width: 100%; max-width: 100%; height: auto; margin: 0 auto; }
figure.wide img { width: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.cols { display: flex; flex-wrap: wrap; gap: 10px 32px; align-items: flex-start; }
.cols > div { min-width: 0; max-width: 100%; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 40px;
         border-top: 1px solid var(--line); padding-top: 8px; }
"""

#: Marks the page loaded and counts the figures the browser decoded (for checks in a
#: browser; the page does not need it to display).
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok += 1; }
  }
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.imagesOk = String(ok);
  document.body.dataset.loaded = "1";
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _td(row: Any, key: Any, value: Any) -> str:
    text, exact = _cell(value)
    attrs = f' data-row="{_e(row)}" data-key="{_e(key)}"'
    if exact is not None:
        return f'<td class="num"{attrs} data-value="{_e(exact)}" title="{_e(exact)}">' \
               f"{_e(text)}</td>"
    return f"<td{attrs}>{_e(text)}</td>"


def _render_table(t: Table) -> str:
    frame = t.frame
    rows = list(frame.index)
    cols = [c for c in frame.columns]
    more = ""
    if len(rows) > MAX_ROWS:
        more = f'<p class="note">{len(rows) - MAX_ROWS} more rows not shown.</p>'
        rows = rows[:MAX_ROWS]
    transpose = t.transpose if t.transpose is not None else len(cols) > len(rows)
    values = frame.to_dict(orient="index") if frame.index.is_unique else None

    def get(r_pos: int, r: Any, c: Any) -> Any:
        if values is not None:
            return values[r][c]
        return frame.iloc[r_pos][c]

    name = frame.index.name or ""

    def one(columns: Sequence[Any]) -> str:
        out = [f'<table class="data" data-table="{_e(t.name)}">']
        if transpose:
            out.append("<thead><tr><th>quantity</th>"
                       + "".join(f"<th>{_e(r)}</th>" for r in rows) + "</tr></thead><tbody>")
            for c in columns:
                out.append(f"<tr><th>{_e(c)}</th>" + "".join(
                    _td(r, c, get(i, r, c)) for i, r in enumerate(rows)) + "</tr>")
        else:
            out.append(f"<thead><tr><th>{_e(name)}</th>"
                       + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead><tbody>")
            for i, r in enumerate(rows):
                out.append(f"<tr><th>{_e(r)}</th>"
                           + "".join(_td(r, c, get(i, r, c)) for c in columns) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    # a narrow transposed table (one or two results, many quantities) in side-by-side parts
    parts = 1
    if transpose and len(rows) <= 2 and len(cols) > 16:
        parts = min(3 if len(rows) == 1 else 2, math.ceil(len(cols) / 12))
    per = math.ceil(len(cols) / parts) if cols else 1
    chunks = [cols[i:i + per] for i in range(0, len(cols), per)] or [[]]
    body = "".join(one(c) for c in chunks)
    if len(chunks) > 1:
        body = f'<div class="cols">{body}</div>'
    tall = " tall" if not transpose and len(rows) > 60 else ""
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    return (f"<h3>{_e(t.caption)}</h3>{note}<div class=\"scroll{tall}\">"
            + body + "</div>" + more)


def _render_settings(settings: Mapping[str, Any], name: str = "settings") -> str:
    """Key/value tables of the (flattened) settings, in up to three columns when long."""
    flat = _flatten(settings)
    if not flat:
        return ""
    rows = []
    for k, v in flat.items():
        if isinstance(v, (list, tuple)) and len(v) > 12:
            text, exact = f"[{len(v)} values]", None
        elif isinstance(v, (list, tuple)):
            text, exact = ", ".join(_cell(x)[0] for x in v) or "[]", None
        elif isinstance(v, str):
            text, exact = v, None
        elif v is None:
            text, exact = "none", None
        elif isinstance(v, Mapping):
            text, exact = "{}", None
        else:
            text, exact = _cell(v)
        attr = (f' class="num" data-value="{_e(exact)}"' if exact is not None else "")
        rows.append(f'<tr><th>{_e(k)}</th><td data-key="{_e(k)}"{attr}>{_e(text)}</td></tr>')
    ncols = 1 if len(rows) <= 16 else 2 if len(rows) <= 48 else 3
    per = math.ceil(len(rows) / ncols)
    tables = [f'<table class="settings" data-table="{_e(name)}"><tbody>'
              + "".join(rows[i:i + per]) + "</tbody></table>" for i in range(0, len(rows), per)]
    return '<div class="cols">' + "".join(tables) + "</div>"


def _render_section(sec: Section, anchor: str) -> str:
    parts = [f'<section id="{anchor}" data-kind="{_e(sec.kind)}">',
             f'<h2>{_e(sec.title)}<span class="kind">{_e(sec.kind)}</span></h2>']
    if sec.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in dict.fromkeys(sec.warnings))
        parts.append(f'<div class="warnings" data-warnings="{len(set(sec.warnings))}">'
                     f"<h3>Warnings</h3><ul>{items}</ul></div>")
    for note in sec.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')
    settings = _render_settings(sec.settings)
    blocks = [_render_table(t) for t in sec.tables]
    if settings and len(_flatten(sec.settings)) > 16:
        parts.append("<h3>Settings</h3>" + settings)
    elif settings:
        blocks.insert(0, "<h3>Settings</h3>" + settings)
    parts.append('<div class="cols">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
    if sec.figures:
        parts.append('<h3>Figures</h3><div class="figures">')
        for caption, png in sec.figures:
            w, h = png_size(png)
            data = base64.b64encode(png).decode("ascii")
            wide = ' class="wide"' if w > 760 else ""
            parts.append(f'<figure{wide}><img src="data:image/png;base64,{data}" width="{w}" '
                         f'height="{h}" alt="{_e(caption)}"><figcaption>{_e(caption)}'
                         "</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(sections: Sequence[Section], *, title: str = "jacspec report") -> str:
    """The page of ``sections`` as one HTML string (no external resource)."""
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    vers = versions()
    head = (f'<p class="meta">Written {_e(stamp)} by jacspec {_e(vers["jacspec"])}; '
            f"{len(sections)} result{'s' if len(sections) != 1 else ''}. Numbers show 4 "
            "significant digits; hover a number for its exact value.</p>")
    vtable = _render_settings(vers, "versions")
    nav = ""
    if len(sections) > 1:
        nav = ("<nav><h3>Contents</h3><ol>" + "".join(
            f'<li><a href="#s{i}">{_e(s.title)}</a> ({_e(s.kind)})</li>'
            for i, s in enumerate(sections, 1)) + "</ol></nav>")
    total_warnings = sum(len(set(s.warnings)) for s in sections)
    summary = (f'<p class="meta">{total_warnings} warning{"s" if total_warnings != 1 else ""}'
               " in all (shown in each section).</p>" if total_warnings else "")
    body = "\n".join(_render_section(s, f"s{i}") for i, s in enumerate(sections, 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"jacspec {_e(vers['jacspec'])}\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body data-loaded=\"0\">\n<main>\n<h1>{_e(title)}</h1>\n{head}\n{summary}\n"
        f"<div class=\"cols\"><div><h3>Versions</h3>{vtable}</div>"
        f"{'<div>' + nav + '</div>' if nav else ''}</div>\n{body}\n"
        "<footer>Self-contained page written by jacspec.report.html.write_report: figures "
        "are embedded PNG images; nothing is loaded from the network.</footer>\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _items(result_or_results: Any) -> list[tuple[str | None, Any]]:
    """``[(label or None, input)]`` of a result, a list of them or a ``{label: input}``."""
    import pandas as pd

    if isinstance(result_or_results, Mapping):
        try:
            detect_kind(result_or_results)
            return [(None, result_or_results)]
        except ValueError:
            values = list(result_or_results.values())
            if values and all(not isinstance(v, (int, float, bool)) and v is not None
                              for v in values):
                return [(str(k), v) for k, v in result_or_results.items()]
            raise
    if isinstance(result_or_results, (list, tuple)) and not _records_with_step(
            list(result_or_results)):
        if not result_or_results:
            raise ValueError("result_or_results is empty; pass at least one result")
        if all(_is_profile(p) for p in result_or_results):
            return [(None, list(result_or_results))]
        return [(None, r) for r in result_or_results]
    if isinstance(result_or_results, pd.Series):
        raise TypeError("a Series cannot be reported; pass a DataFrame with a 'step' column")
    return [(None, result_or_results)]


def write_report(result_or_results: Any, path: str | os.PathLike[str], *,
                 title: str | None = None) -> Path:
    """Write one self-contained HTML page of the results to ``path``; returns the path.

    ``result_or_results``: a result, a JSON payload, a file path (JSON, JSONL, CSV or SQLite
    store), a :class:`Section`, a list of those, or ``{label: result}`` (labels become the
    section titles). ``title``: the page's heading (default ``"jacspec report"``, or that of
    the single result). The parent folder is created if missing.
    """
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; write_report takes a file path "
                         "(e.g. report.html)")
    sections = [build_section(r, title=label) for label, r in _items(result_or_results)]
    if title is None:
        title = ("jacspec report" if len(sections) != 1
                 else f"jacspec report: {sections[0].title}")
    text = render_html(sections, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
