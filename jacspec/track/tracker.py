"""Watch the Jacobian spectrum of a network while it trains, from any training loop.

``Tracker(probe_data, metrics=..., every=N)`` fixes a probe subset once (``n`` examples drawn
with ``seed``); ``tracker.step(model, step)`` then computes, when ``step % every == 0``, the
chosen metrics of ``model`` on that probe:

- ESD metrics of the input-output data Jacobian, exactly the columns of
  :func:`jacspec.analyze`'s ``"input->output"`` row (rank, trace, lambda_max, stable_rank,
  entropy, alpha, ...), and of each layer row when ``layers=`` is given;
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
survives a crash; :meth:`Tracker.load` reads one back.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import hashlib
import inspect
import math
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAIN = "input->output"

#: Columns of :func:`jacspec.analyze`'s table that a tracker can record, by what they need.
SPECTRAL_METRICS = (
    "num_evals", "rank", "trace", "lambda_max", "stable_rank", "log_norm",
    "log_spectral_norm", "entropy", "effective_rank",
)
HEAVY_TAIL_METRICS = (
    "alpha", "alpha_weighted", "log_alpha_norm", "xmin", "xmax", "D", "sigma",
    "num_pl_spikes", "num_spikes", "mp_softrank", "mp_lambda_plus", "tol",
)
#: Need the randomized null (an extra shuffled ESD per call): computed only when asked for.
NULL_METRICS = ("rand_distance", "rand_lambda_max", "num_traps", "num_above_rand_max",
                "rand_hist_jsd")
NORM_METRICS = ("jacobian_norm",)
ESD_METRICS = SPECTRAL_METRICS + HEAVY_TAIL_METRICS + NULL_METRICS
METRICS = ESD_METRICS + NORM_METRICS
DEFAULT_METRICS = ("rank", "trace", "lambda_max", "stable_rank", "entropy", "alpha",
                   "jacobian_norm")
NORM_OUTPUTS = ("softmax", "logits")
#: analyze() keywords the tracker sets itself (explicit arguments, or decided by ``metrics``).
_OWN = ("model", "data", "layers", "output", "scale", "dtype", "device", "batch_size", "seed",
        "randomize", "progress", "fit_kwargs")
#: Seed sequence tail of the probe subset: the same draw as ``load_dataset(..., n=, seed=)``.
_SUBSET_KEY = 0x5B5E7


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or \
            int(value) < 1:
        accepted = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return int(value)


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
        if not isinstance(m, str) or m not in METRICS:
            import difflib

            close = difflib.get_close_matches(str(m), METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"metrics has {m!r}{hint}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(chosen))


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before any work, keywords that :func:`jacspec.analyze` (and its power-law fit)
    does not take, and those the tracker sets itself."""
    import jacspec

    own = [k for k in options if k in _OWN]
    if own:
        raise TypeError(
            f"Tracker sets {own[0]!r} itself; pass it as a Tracker argument (randomize follows "
            "metrics: it is on when a rand_* metric or num_traps/num_above_rand_max is tracked)"
        )
    accepted = [p for p in inspect.signature(jacspec.analyze).parameters if p not in _OWN]
    params = list(inspect.signature(jacspec.fit_powerlaw).parameters.values())[1:]
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


def fix_probe(data: Any, n: int | None, seed: int) -> tuple[Any, Any]:
    """``(x, y)`` tensors of the probe: ``n`` examples of ``data`` drawn without replacement
    with ``seed`` (all of them when ``n`` is None), in the data's order.

    Any data form jacspec accepts (:func:`jacspec.data.batches.iter_batches`); the data are
    read once (a one-shot iterator is fine). The draw is ``load_dataset(..., n=n, seed=seed)``'s,
    so a ``DataSet`` gives the same subset. ``y`` is None unless every batch has labels.
    """
    import torch

    from jacspec.data.batches import data_length, iter_batches

    total = data_length(data)
    if n is not None and total is not None and n > total:
        raise ValueError(f"n={n} exceeds the {total} examples of probe_data; pass n <= {total} "
                         "or n=None for all of them")
    wanted: np.ndarray | None = None
    if n is not None and total is not None:
        wanted = _draw(total, n, seed)
    xs: list[torch.Tensor] = []
    ys: list[Any] = []
    pos = 0
    for x, y in iter_batches(data):
        b = int(x.shape[0])
        if wanted is None:
            xs.append(x.detach().cpu().clone())
            ys.append(None if y is None else y.detach().cpu().clone())
        else:
            lo, hi = np.searchsorted(wanted, [pos, pos + b])
            if hi > lo:
                local = torch.from_numpy(wanted[lo:hi] - pos)
                xs.append(x.detach().cpu()[local].clone())
                ys.append(None if y is None else y.detach().cpu()[local].clone())
            if hi == len(wanted):
                pos += b
                break
        pos += b
    if not xs or sum(int(x.shape[0]) for x in xs) == 0:
        raise ValueError("probe_data is empty; expected at least one example")
    x_all = torch.cat(xs)
    y_all = None if any(y is None for y in ys) else torch.cat(ys)
    if wanted is not None and x_all.shape[0] < n:
        raise ValueError(f"probe_data yielded {pos} examples, fewer than its length said "
                         f"({total}); cannot draw n={n}")
    if n is not None and wanted is None:
        if n > x_all.shape[0]:
            raise ValueError(f"n={n} exceeds the {x_all.shape[0]} examples of probe_data; pass "
                             f"n <= {x_all.shape[0]} or n=None for all of them")
        idx = torch.from_numpy(_draw(int(x_all.shape[0]), n, seed))
        x_all = x_all[idx]
        y_all = None if y_all is None else y_all[idx]
    if not x_all.is_floating_point():
        raise TypeError(f"probe_data inputs must be floating point; got {x_all.dtype}")
    return x_all, y_all


def _draw(total: int, n: int, seed: int) -> np.ndarray:
    if n == total:
        return np.arange(total)
    rng = np.random.default_rng([int(seed), _SUBSET_KEY])
    return np.sort(rng.choice(total, size=n, replace=False))


def _fingerprint(x: Any, y: Any) -> str:
    h = hashlib.sha256()
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def untouched(model: Any, *, eval_mode: bool = True) -> Iterator[None]:
    """Run a block with ``model`` in eval mode (``eval_mode``), then put back exactly: every
    module's ``training`` flag, every parameter's ``.grad`` (the same tensor) and
    ``requires_grad``, and the torch CPU/CUDA, numpy and Python ``random`` global states."""
    import torch

    flags = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if cuda else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        if eval_mode:
            for m, _ in flags:
                m.training = False
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.training = flag
        for p, grad, req in params:
            if p.grad is not grad:
                p.grad = grad
            if p.requires_grad != req:
                p.requires_grad_(req)
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


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
        self.every = _positive_int("every", every)
        n = _positive_int("n", n, allow_none=True)
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
        batch_size = _positive_int("batch_size", batch_size, allow_none=True)
        self._options = _check_options(analyze_options)
        self._output, self._scale, self._dtype, self._device = output, scale, dtype, device
        self._batch_size, self._norm_output, self._copy = batch_size, norm_output, bool(copy)
        self._seed, self._layers = int(seed), layers
        x, y = fix_probe(probe_data, n, int(seed))
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
                      "labels": y is not None, "sha256": _fingerprint(x, y)},
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
        from torch import nn

        import jacspec

        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or \
                int(step) < 0:
            raise ValueError(f"step must be a non-negative integer; got {step!r}")
        step = int(step)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
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
            row = self._measure(jacspec, target)
        seconds = time.perf_counter() - start
        out = {"step": step, "wall_time": time.time(), "seconds": seconds, **row}
        if self._store is not None:
            self._store.append(out)
        self._rows.pop(step, None)
        self._rows[step] = out
        return dict(out)

    def _measure(self, jacspec: Any, model: Any) -> dict[str, Any]:
        common = dict(dtype=self._dtype, device=self._device, batch_size=self._batch_size)
        out: dict[str, Any] = {}
        esd_wanted = [m for m in self.metrics if m in ESD_METRICS]
        warning = ""
        if esd_wanted or self._layers is not None:
            result = jacspec.analyze(
                model, self._probe, output=self._output, scale=self._scale,
                layers=self._layers, randomize=self._randomize, seed=self._seed, **common,
                **self._options,
            )
            table = result.table
            main = table.loc[MAIN]
            for m in esd_wanted:
                out[m] = _value(main[m]) if m in table.columns else math.nan
            w = main.get("warning", "")
            warning = w if isinstance(w, str) else ""
            if self._layers is not None:
                layer_metrics = esd_wanted or list(SPECTRAL_METRICS[:4])
                out["layers"] = {
                    str(label): {m: (_value(r[m]) if m in table.columns else math.nan)
                                 for m in layer_metrics}
                    for label, r in table.drop(index=MAIN).iterrows()
                }
        if "jacobian_norm" in self.metrics:
            kwargs = dict(common)
            if "device" not in inspect.signature(jacspec.jacobian_norms).parameters:
                kwargs.pop("device")  # computed where the model lives
            norms = jacspec.jacobian_norms(model, self._probe, output=self._norm_output, **kwargs)
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
        by default: those tracked), one panel each (:func:`jacspec.track.plots.plot_tracking`)."""
        from jacspec.track.plots import plot_tracking

        return plot_tracking(self.frame(), metrics=metrics)


#: Checkpoint file suffixes :func:`find_checkpoints` picks up.
CHECKPOINT_SUFFIXES = (".pt", ".pth")
_STEP_WORD = re.compile(r"(?:global_step|step|iteration|iter|it)[=_-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step number in a checkpoint's file name: the digits after ``step``/``iter``
    (``step_000100.pt``, ``epoch=2-step=300.pt``), else the last digits of the name
    (``ckpt-100.pt``); None when the name has no digits."""
    stem = Path(path).stem
    found = _STEP_WORD.findall(stem)
    if found:
        return int(found[-1])
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def find_checkpoints(folder: str | os.PathLike) -> tuple[list[tuple[int, Path]], str]:
    """``([(step, path), ...] ascending, how)`` for the ``*.pt``/``*.pth`` files of ``folder``.

    Steps come from the file names (:func:`checkpoint_step`, ``how="name"``); when some name
    has no number, the files are ordered by modification time and numbered 0, 1, ...
    (``how="mtime"``). Two files with one step number are refused.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} does not exist (or is not a "
                                "folder)")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if not files:
        raise ValueError(f"checkpoint folder {str(root)!r} holds no {'/'.join(CHECKPOINT_SUFFIXES)}"
                         " files (jacspec.save_checkpoint writes them, e.g. step_000100.pt)")
    steps = [checkpoint_step(p) for p in files]
    if any(s is None for s in steps):
        by_time = sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
        return list(enumerate(by_time)), "mtime"
    seen: dict[int, Path] = {}
    for s, p in zip(steps, files, strict=True):
        assert s is not None
        if s in seen:
            raise ValueError(f"checkpoints {seen[s].name!r} and {p.name!r} in {str(root)!r} both "
                             f"name step {s}; keep one checkpoint per step")
        seen[s] = p
    return sorted(seen.items()), "name"


def track_checkpoints(
    tracker: Tracker,
    folder: str | os.PathLike,
    *,
    trust: bool = False,
    skip_tracked: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``tracker`` over the checkpoints of ``folder`` (:func:`find_checkpoints`), loading
    each with :func:`jacspec.load_model` (``trust`` as there); steps not divisible by
    ``tracker.every`` are passed over, and (``skip_tracked``) so are steps already in the
    tracker (a store continued after an interruption). Returns the new rows."""
    import jacspec

    found, _ = find_checkpoints(folder)
    todo = [(s, p) for s, p in found if s % tracker.every == 0 and
            not (skip_tracked and s in tracker._rows)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="track", unit="ckpt")
    rows = []
    try:
        for s, p in todo:
            model = jacspec.load_model(p, trust=trust)
            row = tracker.step(model, s)
            if row is not None:
                row["checkpoint"] = str(p)
                rows.append(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


def _versions() -> dict[str, str]:
    import torch

    import jacspec

    return {"jacspec": jacspec.__version__, "torch": torch.__version__,
            "numpy": np.__version__}


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Tracker",
    "checkpoint_step",
    "find_checkpoints",
    "fix_probe",
    "track_checkpoints",
    "untouched",
]
