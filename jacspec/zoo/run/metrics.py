"""Metrics measured on each trained network of a zoo: a registry of
``name -> function(model, data: MetricData) -> dict`` (scalars; numpy arrays of rank >= 1 are
stored as files). Metrics whose module or package is missing are skipped with a logged note.

Registered: ``accuracy`` (train/test accuracy and loss, ``gap = train_acc - test_acc``),
``jacobian_norm`` (mean ``||J(x)||_F`` of the softmax over test and train points),
``transitions`` (activation-code transitions along ellipses through three same-class test
points), ``jacobian_esd`` (every column of :func:`jacspec.analyze`'s row for the
data-Jacobian ESD, ``jac_{train,test}_*``: spectral, power-law, Marchenko-Pastur and
randomized-null metrics), ``weightwatcher`` (``ww_alpha``, ``ww_alpha_weighted``,
``ww_log_norm`` from the weightwatcher package), ``margin`` (the output margin
``gamma(x) = f(x)_y - max_{j != y} f(x)_j`` of the logits on the training set: its 10th
percentile, Jiang et al. 2020's choice, its median, and ``1 / gamma_p10``), ``baselines``
(``num_params``, ``weight_norm_sum = sum_l ||W_l||_F``, ``log_prod_fro = sum_l log ||W_l||_F``,
``log_prod_spec = sum_l log ||W_l||_2``, ``dist_init = ||theta - theta_0||_2``),
``logit_jacobian_norm`` (mean ``||J(x)||_F`` of the logits on the points of
``jacobian_norm``), ``confidence`` (mean max-softmax and prediction entropy on the test points
of ``jacobian_norm`` and of ``jacobian_esd``), ``ce_steps`` (optimizer steps to train
cross-entropy 0.1 and from there to the end, from the run's history),
``flatness`` (``pacbayes_mag_flatness``, ``sharpness_mag_flatness``: Jiang et al. 2020's
magnitude-aware PAC-Bayes flatness and sharpness, :mod:`jacspec.zoo.run.flatness`), ``path_norm``
(``path_norm``, ``path_norm_over_margin``) and ``over_margin`` (``log_prod_fro_over_margin``,
``log_prod_spec_over_margin``), BatchNorm folded into the preceding layer for these three.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from jacspec._util.extras import require
from jacspec.analysis.columns import SKETCH_COLUMNS
from jacspec.data.datasets import DataSet

if TYPE_CHECKING:
    from jacspec.models.train import TrainResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MetricData:
    """What a metric may look at: the training set (as trained on), the test set, the
    initial weights, the run's configuration and, once training is over, its
    :class:`jacspec.models.train.TrainResult` (None at the checkpoints measured during training)."""

    train: DataSet
    test: DataSet
    init_state: Mapping[str, torch.Tensor] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    train_result: TrainResult | None = None


MetricFn = Callable[[nn.Module, MetricData], dict[str, Any]]
REGISTRY: dict[str, MetricFn] = {}

DEFAULT_METRICS = ("accuracy", "jacobian_norm", "transitions", "jacobian_esd", "weightwatcher",
                   "margin", "baselines")
DEFAULT_CURVE_METRICS = ("accuracy", "jacobian_norm", "weightwatcher", "baselines")


_NOTED: set[str] = set()


def register(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding ``fn(model, data) -> dict`` to :data:`REGISTRY` under ``name``."""

    def deco(fn: MetricFn) -> MetricFn:
        REGISTRY[name] = fn
        return fn

    return deco


def measure(model: nn.Module, data: MetricData, names: Iterable[str]
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the named metrics; returns (scalars, arrays). Unknown names raise ValueError; a
    metric whose dependency is not installed (ImportError) is skipped with a logged note."""
    names = list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; registered: {', '.join(sorted(REGISTRY))}")
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    model.eval()
    for name in names:
        try:
            out = REGISTRY[name](model, data)
        except ImportError as exc:
            if name not in _NOTED:
                logger.warning("metric %r skipped: %s", name, exc)
                _NOTED.add(name)
            continue
        for key, value in out.items():
            if isinstance(value, np.ndarray) and value.ndim >= 1:
                arrays[key] = value
            elif isinstance(value, torch.Tensor) and value.ndim >= 1:
                arrays[key] = value.detach().cpu().numpy()
            else:
                scalars[key] = float(value) if isinstance(value, (np.floating, torch.Tensor)) \
                    else value
    return scalars, arrays


def _take(data: DataSet, n: int) -> DataSet:
    return data if n >= len(data) else data.subset(n, seed=0)


@register("accuracy")
def accuracy_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Train/test accuracy and mean cross-entropy, ``gap`` and ``loss_gap = test - train``."""
    from jacspec.models.train import evaluate

    dtype = next(model.parameters()).dtype
    tr_acc, tr_loss = evaluate(model, data.train.x.to(dtype), data.train.y)
    te_acc, te_loss = evaluate(model, data.test.x.to(dtype), data.test.y)
    return {"train_accuracy": tr_acc, "train_loss": tr_loss, "test_accuracy": te_acc,
            "test_loss": te_loss, "gap": tr_acc - te_acc, "loss_gap": te_loss - tr_loss}


@register("jacobian_norm")
def jacobian_norm_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Mean softmax Jacobian Frobenius norm on (up to 1000) test and train points."""
    from jacspec.sensitivity.norms import mean_jacobian_norm

    return {"test_jacobian_norm": mean_jacobian_norm(model, _norm_points(data, "test").x),
            "train_jacobian_norm": mean_jacobian_norm(model, _norm_points(data, "train").x)}


@register("transitions")
def transition_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Mean transitions along 2 closed ellipses through same-class test points (1024 points
    each), and the same per hidden unit."""
    from jacspec.sensitivity.regions import count_transitions
    from jacspec.sensitivity.trajectories import same_class_ellipse

    totals, units = [], 1
    for seed in range(2):
        traj = same_class_ellipse(data.test, seed=seed)
        tr = count_transitions(model, traj, num_points=1024, keep_distances=False)
        totals.append(tr.total)
        units = max(tr.num_units, 1)
    mean = float(np.mean(totals))
    return {"test_transitions": mean, "test_transitions_per_unit": mean / units}


#: Columns of analyze()'s row that describe the computation, not the spectrum (the sketch's
#: r and error bars, zero width for the exact rows measured here, included).
_SETTING_COLUMNS = ("n", "k", "d", "num_evals", "tol") + SKETCH_COLUMNS


@register("jacobian_esd")
def jacobian_esd_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Every numeric column of :func:`jacspec.analyze`'s ``input->output`` row (spectral
    metrics, the power-law fit with WeightWatcher's names, the Marchenko-Pastur fit and the
    randomized null: ``rand_distance``, ``num_traps``, ...) of the softmax data-Jacobian ESD
    on (up to ``n_esd``) train and test points, as ``jac_{train,test}_<column>``; float64
    Jacobians (a saturated network's small eigenvalues are below what float32 resolves);
    eigenvalue arrays ``esd_train``/``esd_test``."""
    from jacspec.analysis import analyze

    seed = int(data.config.get("seed", 0))
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        result = analyze(model, _esd_points(data, split).x, output="softmax",
                         dtype=torch.float64, randomize=True, seed=seed)
        row = result.table.loc["input->output"]
        out[f"esd_{split}"] = np.asarray(result.esds["input->output"].eigenvalues, np.float64)
        for k, v in row.items():
            if k in _SETTING_COLUMNS or isinstance(v, (str, bool, np.bool_)) or v is None:
                continue
            if isinstance(v, (int, float, np.integer, np.floating)):
                out[f"jac_{split}_{k}"] = float(v)
    return out


@register("weightwatcher")
def weightwatcher_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """WeightWatcher's layer-averaged ``alpha``, ``alpha_weighted`` and ``log_norm``."""
    ww = _import_weightwatcher()

    with contextlib.redirect_stdout(io.StringIO()), _quiet("weightwatcher"):
        watcher = ww.WeightWatcher(model=model)
        details = watcher.analyze()
        summary = watcher.get_summary(details)
    out = {}
    for key in ("alpha", "alpha_weighted", "log_norm"):
        v = summary.get(key)
        out[f"ww_{key}"] = float(v) if v is not None and math.isfinite(float(v)) else math.nan
    return out


def _import_weightwatcher() -> Any:
    """Import weightwatcher (optional extra) without keeping the root-logger set-up
    (``logging.basicConfig(level=INFO)``) that it performs on import."""
    import sys

    if "weightwatcher" in sys.modules:
        return sys.modules["weightwatcher"]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            weightwatcher = require("weightwatcher", "zoo", "jacspec.zoo's metric 'weightwatcher'")
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    return weightwatcher


@contextlib.contextmanager
def _quiet(name: str):
    lg = logging.getLogger(name)
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(level)


@register("margin")
def margin_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Output margin on the training set (labels as trained on):
    ``gamma_i = f(x_i)_{y_i} - max_{j != y_i} f(x_i)_j`` (logits); ``train_margin_p10`` (the
    10th percentile, Jiang et al. 2020's margin), ``train_margin_median`` and
    ``inverse_margin = 1 / train_margin_p10`` (larger predicts a larger gap; NaN when the
    percentile is <= 0)."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        logits = torch.cat([model(xb.to(dtype)) for xb in data.train.x.split(2048)]).double()
    y = data.train.y.long()
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), -math.inf).max(dim=1).values
    gamma = (true - other).numpy()
    p10, med = float(np.percentile(gamma, 10)), float(np.median(gamma))
    return {"train_margin_p10": p10, "train_margin_median": med,
            "inverse_margin": 1.0 / p10 if p10 > 0 else math.nan}


@register("baselines")
def baseline_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Parameter count, ``sum_l ||W_l||_F``, ``sum_l log ||W_l||_F`` and
    ``sum_l log ||W_l||_2`` over weight matrices/kernels (a kernel as its
    (out, in * kh * kw) matrix), and ``||theta - theta_0||_2`` (NaN without initial weights)."""
    params = dict(model.named_parameters())
    num = sum(p.numel() for p in params.values())
    weights = [p.detach().double().reshape(p.shape[0], -1) for p in params.values() if p.ndim >= 2]
    fro = [float(w.norm()) for w in weights]
    spec = [float(torch.linalg.matrix_norm(w, ord=2)) for w in weights]
    wsum = float(sum(fro))
    dist = math.nan
    if data.init_state is not None:
        sq = 0.0
        for k, p in params.items():
            if k in data.init_state:
                sq += float((p.detach().double() - data.init_state[k].double()).pow(2).sum())
        dist = math.sqrt(sq)
    return {"num_params": float(num), "weight_norm_sum": wsum,
            "log_prod_fro": float(sum(_log(v) for v in fro)),
            "log_prod_spec": float(sum(_log(v) for v in spec)), "dist_init": dist}


# ------------------------------------------------ study 2 (issue 19): points, logits, confidence


def _norm_points(data: MetricData, split: str) -> DataSet:
    """The points of the Jacobian norms: up to ``n_jacobian`` (1000) of the ``split`` set,
    ``subset(n, seed=0)`` (the whole set when it is no larger)."""
    return _take(data.train if split == "train" else data.test,
                 int(data.config.get("n_jacobian", 1000)))


def _esd_points(data: MetricData, split: str) -> DataSet:
    """The points of the Jacobian ESDs (``jac_{train,test}_*``): up to ``n_esd`` (200) of the
    ``split`` set, chosen as :func:`_norm_points` chooses."""
    return _take(data.train if split == "train" else data.test,
                 int(data.config.get("n_esd", 200)))


@register("logit_jacobian_norm")
def logit_jacobian_norm_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Mean Frobenius norm of the logits' Jacobian ``||d f(x) / d x||_F`` on the points of
    ``jacobian_norm`` (``train_logit_jacobian_norm``, ``test_logit_jacobian_norm``)."""
    from jacspec.sensitivity.norms import mean_jacobian_norm

    return {f"{split}_logit_jacobian_norm": mean_jacobian_norm(
        model, _norm_points(data, split).x, output="logits") for split in ("train", "test")}


def _softmax_confidence(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Means over the rows of ``x`` of ``max_j p_j(x)`` and of ``-sum_j p_j ln p_j``
    (``0 ln 0 = 0``), ``p = softmax(f(x))`` in float64; no labels read."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        logits = torch.cat([model(xb.to(dtype)) for xb in x.split(2048)]).double()
    p = torch.softmax(logits, dim=1)
    entropy = torch.special.entr(p).sum(dim=1)
    return float(p.max(dim=1).values.mean()), float(entropy.mean())


@register("confidence")
def confidence_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """Mean max-softmax and mean prediction entropy (nats) on the test points of
    ``jacobian_norm`` (``test_max_softmax``, ``test_softmax_entropy``) and on the test points
    of ``jacobian_esd`` (``esd_test_max_softmax``, ``esd_test_softmax_entropy``)."""
    top, ent = _softmax_confidence(model, _norm_points(data, "test").x)
    esd_top, esd_ent = _softmax_confidence(model, _esd_points(data, "test").x)
    return {"test_max_softmax": top, "test_softmax_entropy": ent,
            "esd_test_max_softmax": esd_top, "esd_test_softmax_entropy": esd_ent}


#: The cross-entropy of Jiang et al.'s ``#steps to reach CE 0.1``.
CE_MILESTONE = 0.1


@register("ce_steps")
def ce_steps_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """From the run's training history: ``steps_to_ce01``, the optimizer steps at the end
    of the first epoch whose full-train cross-entropy (eval mode) is ``<= 0.1`` (0 when the
    initial network already is), and ``steps_ce01_to_ce001 = steps - steps_to_ce01`` (the
    steps from there to the end of training); NaN when the loss never reached 0.1 or no
    history is given (the checkpoints measured during training)."""
    res = data.train_result
    nan = {"steps_to_ce01": math.nan, "steps_ce01_to_ce001": math.nan}
    if res is None or len(res.step_history) != len(res.history):
        return nan
    for (_, _, loss), steps in zip(res.history, res.step_history, strict=True):
        if loss <= CE_MILESTONE:
            return {"steps_to_ce01": float(steps),
                    "steps_ce01_to_ce001": float(res.steps - steps)}
    return nan


def _log(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf


# --- Jiang et al. 2020's flatness and norm baselines (jacspec.zoo.run.flatness; study 2, §3) ---


def _flatness_subset(model: nn.Module, data: MetricData) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed subset ``subset(1000, seed=0)`` of the training set (all of it when smaller),
    inputs in the model's dtype."""
    from jacspec.zoo.run.flatness import SUBSET_SIZE

    sub = _take(data.train, SUBSET_SIZE)
    return sub.x.to(next(model.parameters()).dtype), sub.y


def _margin_p10(model: nn.Module, data: MetricData) -> float:
    """``gamma = train_margin_p10`` of :func:`margin_metrics`, measured on an eval-mode copy
    (the user's model keeps its mode and BatchNorm statistics)."""
    import copy

    return float(margin_metrics(copy.deepcopy(model).eval(), data)["train_margin_p10"])


@register("flatness")
def flatness_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """``pacbayes_mag_flatness = 1 / sigma'^2`` and ``sharpness_mag_flatness = 1 / alpha'^2``
    (magnitude-aware PAC-Bayes flatness and sharpness, :mod:`jacspec.zoo.run.flatness`) on the
    1,000-digit training subset, seeded by the run's ``seed``."""
    from jacspec.zoo.run.flatness import pacbayes_mag_flatness, sharpness_mag_flatness

    x, y = _flatness_subset(model, data)
    seed = int(data.config.get("seed", 0))
    return {"pacbayes_mag_flatness": pacbayes_mag_flatness(model, x, y, seed=seed),
            "sharpness_mag_flatness": sharpness_mag_flatness(model, x, y, seed=seed)}


@register("path_norm")
def path_norm_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """``path_norm = sum_j f_{w∘w}(1)_j`` and ``path_norm_over_margin = path_norm / gamma^2``,
    ``gamma = train_margin_p10`` (the ``margin`` metric; NaN when ``gamma <= 0``)."""
    from jacspec.zoo.run.flatness import path_norm

    value = path_norm(model, tuple(data.train.x.shape[1:]))
    gamma = _margin_p10(model, data)
    return {"path_norm": value,
            "path_norm_over_margin": value / gamma ** 2 if gamma > 0 else math.nan}


@register("over_margin")
def over_margin_metrics(model: nn.Module, data: MetricData) -> dict[str, Any]:
    """``log_prod_fro_over_margin = sum_l log ||W_l||_F^2 - 2 log gamma`` and
    ``log_prod_spec_over_margin = sum_l log ||W_l||_2^2 - 2 log gamma`` (BatchNorm folded,
    ``gamma = train_margin_p10``; NaN when ``gamma <= 0``)."""
    from jacspec.zoo.run.flatness import norms_over_margin

    x, _ = _flatness_subset(model, data)
    gamma = _margin_p10(model, data)
    return norms_over_margin(model, gamma, example=x[:256])
