"""Watch the Jacobian spectrum of a network while it trains, from any training loop.

``Tracker(probe_data, metrics=..., every=N)`` fixes a probe subset once (``n`` examples drawn
with ``seed``); ``tracker.step(model, step)`` then computes, when ``step % every == 0``, the
chosen metrics of ``model`` on that probe:

- ESD metrics of the input-output data Jacobian: any numeric column of
  :func:`jacspec.analyze`'s ``"input->output"`` row (rank, trace, lambda_max, stable_rank,
  entropy, alpha, lambda_plus, ...; the list is analyze's own,
  :data:`jacspec.analysis.columns.ROW_METRICS`), and of each layer row when ``layers=`` is
  given;
- ``jacobian_norm``: ``mean_i ||J(x_i)||_F`` of the softmax (or logits) Jacobian over the probe
  (Novak et al.'s sensitivity, from :func:`jacspec.jacobian_norms`).

The model is left exactly as it was: the ``training`` flag of every module, every parameter's
``.grad`` and ``requires_grad``, every buffer, and the random states (torch's CPU and CUDA
generators, numpy's and Python's global ones) are the same after the call, so a training run
with the tracker gives bitwise the same weights as one without. A model in training mode is
evaluated in eval mode without a copy: every module's ``training`` flag is set to False for
the call and set back to its own value afterwards (this is what ``model.eval()`` does for every
torch layer; a module whose ``train()`` override does more than set the flag should be
tracked with ``copy=True``, which evaluates an eval-mode deep copy instead).

Rows go to an append-only JSON-lines store (``store=PATH``, :mod:`jacspec.track.store`) that
survives a crash; :meth:`Tracker.load` reads one back. The probe is drawn by
:mod:`jacspec.track.probe`, the model is guarded by
:func:`jacspec.jacobian.model_prep.untouched` (buffers too are put back bit for bit) and a
folder of checkpoints is tracked by :mod:`jacspec.track.checkpoints` (their names are
re-exported here).
"""

from __future__ import annotations

import copy as _copy
import inspect
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jacspec._util.names import MAIN
from jacspec._util.validation import positive_int
from jacspec.analysis.columns import NULL_COLUMNS, ROW_METRICS
from jacspec.spectra.metrics import METRIC_COLUMNS
from jacspec.track.checkpoints import (
    CHECKPOINT_SUFFIXES,
    checkpoint_step,
    find_checkpoints,
    track_checkpoints,
)
from jacspec.track.probe import fingerprint, fix_probe

#: Columns of :func:`jacspec.analyze`'s table that a tracker can record: every numeric column
#: of a row, as analyze declares them (:data:`jacspec.analysis.columns.ROW_METRICS`).
ESD_METRICS = ROW_METRICS
#: The spectral metrics (:data:`jacspec.spectra.metrics.METRIC_COLUMNS`).
SPECTRAL_METRICS = METRIC_COLUMNS
#: Need the randomized null (an extra shuffled ESD per call): computed only when asked for.
NULL_METRICS = NULL_COLUMNS
NORM_METRICS = ("jacobian_norm",)
METRICS = ESD_METRICS + NORM_METRICS
#: Names offered before that are not analyze's columns, refused naming the column to use
#: (``mp_lambda_plus`` was always NaN: analyze's column is ``lambda_plus``).
RENAMED = {"mp_lambda_plus": "lambda_plus"}
DEFAULT_METRICS = ("rank", "trace", "lambda_max", "stable_rank", "entropy", "alpha",
                   "jacobian_norm")
NORM_OUTPUTS = ("softmax", "logits")
#: analyze() keywords the tracker sets itself (explicit arguments, or decided by ``metrics``).
_OWN = ("model", "data", "layers", "output", "scale", "dtype", "device", "batch_size", "seed",
        "randomize", "progress", "fit_kwargs")


#: The analyze options saying where the Jacobian is taken (the norms take them too).
_AT_MODULE = ("input_module", "output_key", "position")


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        chosen = tuple(metrics)
    except TypeError:
        raise TypeError(f"metrics must be a sequence of metric names; got "
                        f"{type(metrics).__name__}") from None
    if not chosen:
        raise ValueError(f"metrics is empty; choose from {', '.join(METRICS)}")
    for m in chosen:
        if isinstance(m, str) and m in RENAMED:
            raise ValueError(f"metrics has {m!r}, which is not a column of analyze; its column "
                             f"is {RENAMED[m]!r}: track {RENAMED[m]!r} instead")
        if not isinstance(m, str) or m not in METRICS:
            import difflib

            close = difflib.get_close_matches(str(m), METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"metrics has {m!r}{hint}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(chosen))


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before any work, keywords that :func:`jacspec.analyze` (and its power-law fit)
    does not take, and those the tracker sets itself."""
    from jacspec.analysis import analyze
    from jacspec.heavytail.powerlaw import fit_powerlaw

    own = [k for k in options if k in _OWN]
    if own:
        raise TypeError(
            f"Tracker sets {own[0]!r} itself; pass it as a Tracker argument (randomize follows "
            "metrics: it is on when a rand_* metric or num_traps/num_above_rand_max is tracked)"
        )
    accepted = [p for p in inspect.signature(analyze).parameters if p not in _OWN]
    accepted += list(_AT_MODULE)  # JacobianOptions fields analyze takes as keywords
    params = list(inspect.signature(fit_powerlaw).parameters.values())[1:]
    fit = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if key not in accepted and key not in fit:
            import difflib

            close = difflib.get_close_matches(key, accepted + fit + ["metrics", "every", "n",
                                                                     "layers", "store"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"Tracker() got an unexpected keyword {key!r}{hint}; analyze options accepted: "
                f"{', '.join(accepted + fit)}"
            )
    return dict(options)



def _value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


class Tracker:
    """Metrics of a training network's Jacobian spectrum on a fixed probe, every ``every`` steps.

    ``probe_data``: any data form jacspec accepts; ``n`` examples are drawn once with ``seed``
    (all when None). ``metrics``: names from :data:`METRICS` (``analyze``'s columns and
    ``jacobian_norm``). ``layers``: None, ``"all"`` or module names: layer rows as in
    :func:`jacspec.analyze` (their ESD metrics, under ``"layers"`` in each row). ``store``: a
    ``.jsonl`` path (rows appended, fsync'd; an existing store is continued). ``output``,
    ``scale``, ``dtype``, ``device``, ``batch_size`` and ``**analyze_options`` (``side``,
    ``method``, ``max_memory``, power-law options, ...) go to :func:`jacspec.analyze`;
    ``norm_output`` is the output of ``jacobian_norm`` (``"softmax"`` or ``"logits"``);
    ``copy=True`` evaluates a deep copy of the model instead of flipping its mode flags.
    """

    def __init__(
        self,
        probe_data: Any,
        metrics: Sequence[str] = DEFAULT_METRICS,
        *,
        every: int = 100,
        n: int | None = None,
        seed: int = 0,
        layers: str | Sequence[str] | None = None,
        store: str | os.PathLike | None = None,
        output: str = "softmax",
        scale: str = "n",
        dtype: Any = None,
        device: Any = None,
        batch_size: int | None = None,
        norm_output: str = "softmax",
        copy: bool = False,
        **analyze_options: Any,
    ) -> None:
        from jacspec._util.validation import check_choice

        self.metrics = _check_metrics(metrics)
        self.every = positive_int("every", every)
        n = positive_int("n", n, allow_none=True)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}")
        if layers is not None and not isinstance(layers, str):
            layers = list(layers)
            if not all(isinstance(name, str) for name in layers):
                raise TypeError("layers must be None, 'all' or a list of module names")
        check_choice("norm_output", norm_output, NORM_OUTPUTS)
        if dtype is not None:
            import torch

            if dtype not in (torch.float32, torch.float64):
                raise ValueError(f"dtype must be torch.float32, torch.float64 or None; got "
                                 f"{dtype!r}")
        if device is not None:  # refused now, not at the first step
            from jacspec.jacobian.options import check_device_available

            device = check_device_available(device)
        batch_size = positive_int("batch_size", batch_size, allow_none=True)
        self._options = _check_options(analyze_options)
        self._output, self._scale, self._dtype, self._device = output, scale, dtype, device
        self._batch_size, self._norm_output, self._copy = batch_size, norm_output, bool(copy)
        self._seed, self._layers = int(seed), layers
        x, y = fix_probe(probe_data, n, int(seed),
                         any_dtype=self._options.get("input_module") is not None)
        self._probe: tuple[Any, Any] | None = (x, y)
        self._settings = {
            "metrics": list(self.metrics),
            "every": self.every,
            "n": int(x.shape[0]),
            "seed": int(seed),
            "layers": layers,
            "output": output,
            "scale": scale,
            "dtype": None if dtype is None else str(dtype).replace("torch.", ""),
            "device": None if device is None else str(device),
            "batch_size": batch_size,
            "norm_output": norm_output,
            "copy": bool(copy),
            "randomize": self._randomize,
            "analyze": dict(self._options),
            "probe": {"n": int(x.shape[0]), "shape": list(x.shape[1:]), "dtype": str(x.dtype),
                      "labels": y is not None, "sha256": fingerprint(x, y)},
            "store": None if store is None else str(store),
            "versions": _versions(),
        }
        self._rows: dict[int, dict[str, Any]] = {}
        self._store = None
        if store is not None:
            from jacspec.track.store import Store, dedupe

            self._store = Store(store, self._settings)
            for row in dedupe(self._store.rows):
                self._rows[row["step"]] = row

    # -- construction from a store ----------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tracker:
        """The tracker recorded in the store ``path`` (its settings and rows; read only: it has
        no probe data, so it cannot :meth:`step`; create ``Tracker(probe_data, store=path)``
        with the same arguments to continue the store)."""
        from jacspec.track.store import dedupe, read_store

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"store {str(p)!r} does not exist (or is not a file)")
        settings, rows, _ = read_store(p)
        if not settings and not rows:
            raise ValueError(f"store {str(p)!r} holds no header line; it is empty")
        self = cls.__new__(cls)
        self.metrics = tuple(settings.get("metrics", ()))
        self.every = int(settings.get("every", 1))
        self._settings = settings
        self._probe = None
        self._store = None
        self._layers = settings.get("layers")
        self._rows = {row["step"]: row for row in dedupe(rows)}
        return self

    # -- the measurement ---------------------------------------------------------------------

    @property
    def _randomize(self) -> bool:
        return any(m in NULL_METRICS for m in self.metrics)

    def step(self, model: Any, step: int, *, force: bool = False) -> dict[str, Any] | None:
        """Measure ``model`` at training step ``step`` when ``step % every == 0`` (or
        ``force``); returns the row (``step``, ``wall_time`` (seconds since the epoch),
        ``seconds`` (this call's cost), the metrics, ``warning``, and ``layers``: {row label:
        {metric: value}} when layers are tracked), else None. The row is also appended to the
        store. ``model`` is left exactly as it was (see the module docstring)."""
        import torch

        from jacspec.jacobian.model_prep import check_model, untouched

        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or \
                int(step) < 0:
            raise ValueError(f"step must be a non-negative integer; got {step!r}")
        step = int(step)
        check_model(model)
        if self._probe is None:
            raise ValueError("this tracker was loaded from a store and has no probe data; "
                             "create Tracker(probe_data, ..., store=PATH) to continue the store")
        if not force and step % self.every:
            return None
        start = time.perf_counter()
        with untouched(model, eval_mode=not self._copy):
            target = model
            if self._copy:
                with torch.no_grad():
                    target = _copy.deepcopy(model)
                for m in target.modules():
                    m.training = False
            row = self._measure(target)
        seconds = time.perf_counter() - start
        out = {"step": step, "wall_time": time.time(), "seconds": seconds, **row}
        if self._store is not None:
            self._store.append(out)
        self._rows.pop(step, None)
        self._rows[step] = out
        return dict(out)

    def _measure(self, model: Any) -> dict[str, Any]:
        from jacspec.analysis import analyze
        from jacspec.sensitivity.norms import jacobian_norms

        common = dict(dtype=self._dtype, device=self._device, batch_size=self._batch_size)
        out: dict[str, Any] = {}
        esd_wanted = [m for m in self.metrics if m in ESD_METRICS]
        warning = ""
        if esd_wanted or self._layers is not None:
            result = analyze(
                model, self._probe, output=self._output, scale=self._scale,
                layers=self._layers, randomize=self._randomize, seed=self._seed, **common,
                **self._options,
            )
            table = result.table
            main = table.loc[MAIN]
            for m in esd_wanted:  # analyze's every row has every column of ROW_METRICS
                out[m] = _value(main[m])
            w = main.get("warning", "")
            warning = w if isinstance(w, str) else ""
            if self._layers is not None:
                layer_metrics = esd_wanted or list(SPECTRAL_METRICS[:4])
                out["layers"] = {
                    str(label): {m: _value(r[m]) for m in layer_metrics}
                    for label, r in table.drop(index=MAIN).iterrows()
                }
        if "jacobian_norm" in self.metrics:
            kwargs = dict(common)
            kwargs.update({k: self._options[k] for k in _AT_MODULE if k in self._options})
            norms = jacobian_norms(model, self._probe, output=self._norm_output, **kwargs)
            out["jacobian_norm"] = float(norms.double().mean())
        ordered = {m: out[m] for m in self.metrics if m in out}
        ordered["warning"] = warning
        if "layers" in out:
            ordered["layers"] = out["layers"]
        return ordered

    # -- results -----------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """How the rows were computed (metrics, probe size and fingerprint, options, versions)."""
        return dict(self._settings)

    @property
    def probe(self) -> tuple[Any, Any] | None:
        """The fixed probe ``(x, y)`` (None for a tracker loaded from a store)."""
        return self._probe

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Tracked rows, one per step, by step (a recomputed step keeps its latest row)."""
        return [dict(self._rows[s]) for s in sorted(self._rows)]

    @property
    def steps(self) -> list[int]:
        """The tracked steps, ascending."""
        return sorted(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return (f"Tracker(metrics={list(self.metrics)}, every={self.every}, "
                f"n={self._settings.get('n')}, tracked={len(self)})")

    def frame(self) -> Any:
        """Tidy DataFrame, one row per tracked step: ``step``, ``wall_time``, ``seconds``, the
        metrics and ``warning`` (layer rows: :meth:`layer_frame`)."""
        import pandas as pd

        cols = ["step", "wall_time", "seconds", *self.metrics, "warning"]
        records = [{k: v for k, v in r.items() if k != "layers"} for r in self.rows]
        frame = pd.DataFrame.from_records(records, columns=cols)
        for m in self.metrics:
            frame[m] = pd.to_numeric(frame[m], errors="coerce")
        frame["warning"] = frame["warning"].fillna("")
        return frame

    def to_frame(self) -> Any:
        """Same as :meth:`frame`."""
        return self.frame()

    def layer_frame(self) -> Any:
        """Tidy DataFrame of the layer rows: one row per (step, matrix), columns ``step``,
        ``matrix`` and the ESD metrics (empty without ``layers=``)."""
        import pandas as pd

        records = []
        for r in self.rows:
            for label, values in (r.get("layers") or {}).items():
                records.append({"step": r["step"], "matrix": label, **values})
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return pd.DataFrame(columns=["step", "matrix"])
        for c in frame.columns.drop(["step", "matrix"]):
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
        return frame

    def summary(self) -> dict[str, Any]:
        """``tracked_steps``, ``first_step``, ``last_step``, ``seconds_per_step`` (mean cost of
        a call) and, per metric, its ``first``, ``last``, ``min`` and ``max`` values."""
        frame = self.frame()
        out: dict[str, Any] = {
            "tracked_steps": len(frame),
            "first_step": int(frame["step"].min()) if len(frame) else None,
            "last_step": int(frame["step"].max()) if len(frame) else None,
            "seconds_per_step": float(frame["seconds"].mean()) if len(frame) else None,
            "metrics": {},
        }
        for m in self.metrics:
            col = frame[m].dropna()
            if len(col):
                out["metrics"][m] = {"first": float(col.iloc[0]), "last": float(col.iloc[-1]),
                                     "min": float(col.min()), "max": float(col.max())}
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "summary", "rows"}`` (JSON-ready: NaN written as None)."""
        from jacspec.track.store import jsonable

        return jsonable({"settings": self.settings, "summary": self.summary(),
                         "rows": self.rows})

    def plot(self, metrics: Sequence[str] | None = None) -> Any:
        """Figure of the tracked metrics against step (alpha, lambda_max, stable_rank, entropy
        by default: those tracked), one panel each
        (:func:`jacspec.report.report_figures.plot_tracker`)."""
        from jacspec.report.report_figures import plot_tracker

        return plot_tracker(self, metrics)

def _versions() -> dict[str, str]:
    import torch

    from jacspec import __version__

    return {"jacspec": __version__, "torch": torch.__version__,
            "numpy": np.__version__}


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_METRICS",
    "METRICS",
    "Tracker",
    "checkpoint_step",
    "find_checkpoints",
    "fix_probe",
    "track_checkpoints",
]
