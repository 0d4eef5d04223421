"""Closed trajectories in input space and sensitivity profiles along them.

A :class:`Trajectory` is a lazily evaluated curve ``t in [0, 1) -> z(t)`` (shape
``(b, *input_shape)`` for ``b`` values of ``t``). Kinds (Novak et al., ICLR 2018):

* ellipse through three points placed at angles ``pi/3, pi, 5pi/3``:
  ``z(t) = c + a cos(2 pi t) + b sin(2 pi t)`` with ``c, a, b`` solving
  ``x_i = c + a cos(theta_i) + b sin(theta_i)``; anchors at ``t = 1/6, 1/2, 5/6``;
* same-class / different-class ellipses through training points, and a random
  ellipse through three Gaussian points with the data's per-coordinate mean/std;
* horizontal translations: ``z(t) = (1-a) roll(x, s) + a roll(x, s+1)`` with
  ``s + a = t W`` (W = width; circular, hence closed);
* any user sequence of points, linearly interpolated.

:func:`trajectory_profile` measures along one: the Jacobian norm at ``m``
points, the transitions between finer samples per segment, their density per
unit length, and the curvature ``C ~ (1/2) sum_i ||f'(z_i) - f'(z_{i+1})||_F``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator, torch_generator
from jacspec._util.validation import check_choice, positive_int
from jacspec.data.batches import check_labels
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource
from jacspec.sensitivity.norms import norm_options, softmax_jacobian
from jacspec.sensitivity.regions import count_transitions

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "Trajectory",
    "TrajectoryProfile",
    "compare_trajectories",
    "different_class_ellipse",
    "ellipse",
    "points_trajectory",
    "profiles_frame",
    "random_ellipse",
    "same_class_ellipse",
    "trajectory_profile",
    "translation_trajectory",
]

KINDS = ("same_class", "different_class", "random", "translation")
ANGLES = (math.pi / 3, math.pi, 5 * math.pi / 3)


@dataclass(frozen=True)
class Trajectory:
    """A closed (or open) curve ``t -> z(t)``; call with ``t`` (b,) float64 in [0, 1)."""

    kind: str
    fn: Callable[[Tensor], Tensor] = field(repr=False)
    shape: tuple[int, ...]
    anchors: tuple[float, ...] = ()
    closed: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the curve is: kind, point shape, anchors' t, closed (JSON-able)."""
        return jsonable({"kind": self.kind, "shape": self.shape, "anchors": self.anchors,
                         "closed": self.closed})

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the settings (the curve itself is a function: call it)."""
        return {**self.summary(), "settings": jsonable(self.settings)}

    def to_frame(self, num_points: int = 64) -> pd.DataFrame:
        """``num_points`` samples ``t_i = i / num_points``: columns t, norm = ||z(t_i)||_2 and
        step = ||z(t_{i+1}) - z(t_i)||_2 (the last step closes the curve when ``closed``)."""
        t = torch.arange(num_points, dtype=torch.float64) / num_points
        with torch.no_grad():
            z = self(t).reshape(num_points, -1).to(torch.float64).cpu()
        nxt = torch.roll(z, -1, dims=0) if self.closed else torch.cat([z[1:], z[-1:]])
        return pd.DataFrame({"t": t.numpy(), "norm": z.norm(dim=1).numpy(),
                             "step": (nxt - z).norm(dim=1).numpy()})

    def __call__(self, t: Tensor | Sequence[float] | float) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        return self.fn(tt)

    def batches(self, num_points: int, batch_size: int = 1024) -> Iterator[Tensor]:
        """Points at ``t_i = i / num_points`` in batches ``(<= batch_size, *shape)``."""
        for start in range(0, num_points, batch_size):
            stop = min(start + batch_size, num_points)
            yield self(torch.arange(start, stop, dtype=torch.float64) / num_points)

    def points(self, num_points: int) -> Tensor:
        """All ``num_points`` points ``(num_points, *shape)`` (materialised)."""
        return self(torch.arange(num_points, dtype=torch.float64) / num_points)


def _vectors(*xs: Tensor) -> list[Tensor]:
    out = []
    for i, x in enumerate(xs):
        if not isinstance(x, Tensor):
            x = torch.as_tensor(np.asarray(x))
        if not x.is_floating_point():
            raise TypeError(f"point {i} must be floating point, got {x.dtype}")
        out.append(x)
    if any(x.shape != out[0].shape for x in out):
        raise ValueError(f"points must share one shape; got {[tuple(x.shape) for x in out]}")
    return out


def ellipse(x1: Tensor, x2: Tensor, x3: Tensor, *, kind: str = "ellipse") -> Trajectory:
    """Ellipse through ``x1, x2, x3`` at angles pi/3, pi, 5pi/3 (t = 1/6, 1/2, 5/6)."""
    p = _vectors(x1, x2, x3)
    dtype = p[0].dtype
    a_mat = torch.tensor([[1.0, math.cos(a), math.sin(a)] for a in ANGLES], dtype=torch.float64)
    stacked = torch.stack([v.reshape(-1).double() for v in p])  # (3, d)
    coef = torch.linalg.solve(a_mat, stacked)  # rows: c, a, b
    shape = tuple(p[0].shape)

    def fn(t: Tensor) -> Tensor:
        th = 2 * math.pi * t.double()
        basis = torch.stack([torch.ones_like(th), torch.cos(th), torch.sin(th)], dim=1)
        return (basis @ coef).to(dtype).reshape(len(t), *shape)

    return Trajectory(kind=kind, fn=fn, shape=shape, anchors=(1 / 6, 1 / 2, 5 / 6))


def _xy(data: Any) -> tuple[Tensor, Tensor | None]:
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, tuple):
        return torch.as_tensor(data.x), check_labels(torch.as_tensor(data.y), "data.y (labels)")
    if isinstance(data, tuple) and len(data) == 2:
        y = None if data[1] is None else check_labels(torch.as_tensor(data[1]), "data labels y")
        return torch.as_tensor(data[0]), y
    if isinstance(data, (Tensor, np.ndarray)):
        return torch.as_tensor(data), None
    raise TypeError(
        f"data must be a DataSet (.x, .y), an (x, y) tuple or a Tensor; got {type(data).__name__}"
    )


def same_class_ellipse(data: Any, *, seed: int = 0, label: int | None = None) -> Trajectory:
    """Ellipse through three distinct random points of one class (``label`` or random)."""
    x, y = _xy(data)
    if y is None:
        raise ValueError("data needs labels (x, y) to pick points of the same class")
    rng = numpy_generator(seed)
    ys = y.cpu().numpy()
    classes, counts = np.unique(ys, return_counts=True)
    ok = classes[counts >= 3]
    if label is None:
        if len(ok) == 0:
            raise ValueError("no class in data has 3 points; cannot build a same-class ellipse")
        label = int(rng.choice(ok))
    elif label not in set(ok.tolist()):
        raise ValueError(f"label={label!r} has fewer than 3 points in data")
    idx = rng.choice(np.flatnonzero(ys == label), size=3, replace=False)
    tr = ellipse(*(x[int(i)] for i in idx), kind="same_class")
    return _with_settings(tr, {"indices": [int(i) for i in idx], "labels": [int(label)] * 3,
                               "seed": seed})


def different_class_ellipse(data: Any, *, seed: int = 0) -> Trajectory:
    """Ellipse through three random points of three different classes."""
    x, y = _xy(data)
    if y is None:
        raise ValueError("data needs labels (x, y) to pick points of different classes")
    rng = numpy_generator(seed)
    ys = y.cpu().numpy()
    classes = np.unique(ys)
    if len(classes) < 3:
        raise ValueError("data has fewer than 3 classes; cannot build a different-class ellipse")
    chosen = rng.choice(classes, size=3, replace=False)
    idx = [int(rng.choice(np.flatnonzero(ys == c))) for c in chosen]
    tr = ellipse(*(x[i] for i in idx), kind="different_class")
    return _with_settings(tr, {"indices": idx, "labels": [int(c) for c in chosen], "seed": seed})


def random_ellipse(data: Any, *, seed: int = 0) -> Trajectory:
    """Ellipse through three points ``~ N(mean, diag(std^2))`` of the data's coordinates."""
    x, _ = _xy(data)
    if x.shape[0] < 2:
        raise ValueError("data needs at least 2 points to estimate its scale")
    xd = x.double().reshape(x.shape[0], -1)
    mean, std = xd.mean(0), xd.std(0)
    gen = torch_generator(seed)
    pts = mean + std * torch.randn((3, xd.shape[1]), generator=gen, dtype=torch.float64)
    pts = pts.to(x.dtype).reshape(3, *x.shape[1:])
    tr = ellipse(pts[0], pts[1], pts[2], kind="random")
    return _with_settings(tr, {"seed": seed})


def translation_trajectory(
    x: Tensor, *, image_shape: Sequence[int] | None = None, kind: str = "translation"
) -> Trajectory:
    """Closed trajectory of horizontal (last-axis) circular shifts of ``x``.

    ``z(t) = (1 - a) roll(x, s) + a roll(x, s + 1)``, ``s = floor(tW)``, ``a = tW - s``;
    ``image_shape`` views a flat ``x`` as an image (e.g. (8, 8)); otherwise the last
    axis of ``x`` is shifted (the sequence of a 1-D input). Anchor at ``t = 0``.
    """
    (x,) = _vectors(x)
    shape = tuple(x.shape)
    view = tuple(int(s) for s in image_shape) if image_shape is not None else shape
    if math.prod(view) != x.numel():
        raise ValueError(f"image_shape={image_shape!r} does not match {x.numel()} input values")
    img = x.reshape(view)
    width = view[-1]
    if width < 2:
        raise ValueError("the shifted axis must have at least 2 entries")
    rolls = torch.stack([torch.roll(img, s, dims=-1) for s in range(width)])  # (W, *view)

    def fn(t: Tensor) -> Tensor:
        u = (t.double() % 1.0) * width
        s = torch.floor(u).long().clamp(0, width - 1)
        a = (u - s).to(x.dtype).reshape(-1, *([1] * len(view)))
        z = (1 - a) * rolls[s] + a * rolls[(s + 1) % width]
        return z.reshape(len(t), *shape)

    return Trajectory(kind=kind, fn=fn, shape=shape, anchors=(0.0,),
                      settings={"width": width, "image_shape": list(view)})


def points_trajectory(points: Tensor, *, closed: bool = True, kind: str = "points") -> Trajectory:
    """Piecewise-linear curve through ``points`` (k, *shape); ``t = i/k`` hits point i.

    When ``closed`` the last point is joined back to the first; otherwise ``t`` in
    [0, 1) spans ``z_0 .. z_{k-1}`` in ``k`` steps with ``t = i/k`` still at point i
    and the final step held at the last point.
    """
    if not isinstance(points, Tensor):
        points = torch.as_tensor(np.asarray(points))
    if points.dim() < 1 or points.shape[0] < 2:
        raise ValueError("points must be a tensor (k, *shape) with k >= 2")
    k = points.shape[0]

    def fn(t: Tensor) -> Tensor:
        u = (t.double() % 1.0) * k
        i = torch.floor(u).long().clamp(0, k - 1)
        a = (u - i).to(points.dtype).reshape(-1, *([1] * (points.dim() - 1)))
        j = (i + 1) % k if closed else (i + 1).clamp(max=k - 1)
        return (1 - a) * points[i] + a * points[j]

    return Trajectory(kind=kind, fn=fn, shape=tuple(points.shape[1:]),
                      anchors=tuple(i / k for i in range(k)) if k <= 16 else (),
                      closed=closed, settings={"num_anchor_points": k})


def _with_settings(tr: Trajectory, settings: dict[str, Any]) -> Trajectory:
    return Trajectory(kind=tr.kind, fn=tr.fn, shape=tr.shape, anchors=tr.anchors,
                      closed=tr.closed, settings={**tr.settings, **settings})


@dataclass(frozen=True)
class TrajectoryProfile:
    """Measurements along a trajectory at ``t_j = j/m`` (arrays of length ``m``).

    ``jacobian_norm[j] = ||J(z(t_j))||_F``; ``transitions[j]`` counts code changes
    between the ``refine`` fine samples of segment ``[t_j, t_{j+1})`` (and the
    first sample of the next); ``segment_length[j]`` is that segment's length in
    input space; ``curvature[j] = ||f'(z_j) - f'(z_{j+1})||_F / 2``.
    """

    kind: str
    t: np.ndarray
    jacobian_norm: np.ndarray
    transitions: np.ndarray
    segment_length: np.ndarray
    curvature: np.ndarray
    anchors: tuple[float, ...]
    anchor_jacobian_norm: np.ndarray
    approximate: bool
    settings: dict[str, Any]

    @property
    def total_transitions(self) -> int:
        return int(self.transitions.sum())

    @property
    def length(self) -> float:
        return float(self.segment_length.sum())

    @property
    def transition_density(self) -> np.ndarray:
        """Transitions per unit length in each segment."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.segment_length > 0, self.transitions / self.segment_length, 0.0)

    def summary(self) -> dict[str, Any]:
        """Scalars: mean/median norm, anchor norm, transitions, density, curvature (JSON-able:
        no anchors -> anchor_jacobian_norm_mean None; a zero anchor norm ->
        median_over_anchor None)."""
        return jsonable(self._scalars())

    def _scalars(self) -> dict[str, Any]:
        """:meth:`summary` with NaN/Inf kept as floats (for tables)."""
        med = float(np.median(self.jacobian_norm))
        anchor = float(np.mean(self.anchor_jacobian_norm)) if len(self.anchors) else float("nan")
        return {
            "kind": self.kind,
            "num_points": int(len(self.t)),
            "jacobian_norm_mean": float(np.mean(self.jacobian_norm)),
            "jacobian_norm_median": med,
            "anchor_jacobian_norm_mean": anchor,
            "median_over_anchor": med / anchor if anchor > 0 else float("inf"),
            "transitions": self.total_transitions,
            "length": self.length,
            "transition_density": self.total_transitions / self.length if self.length else 0.0,
            "curvature": float(self.curvature.sum()),
            "approximate_codes": self.approximate,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per segment ``[t_j, t_{j+1})``."""
        return pd.DataFrame({
            "kind": self.kind,
            "t": self.t,
            "jacobian_norm": self.jacobian_norm,
            "transitions": self.transitions,
            "segment_length": self.segment_length,
            "transition_density": self.transition_density,
            "curvature": self.curvature,
        })

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the per-segment arrays, the anchors and the settings."""
        return jsonable({
            **self._scalars(),
            "t": self.t.tolist(),
            "jacobian_norm": self.jacobian_norm.tolist(),
            "transitions_per_segment": self.transitions.tolist(),
            "transition_density_per_segment": self.transition_density.tolist(),
            "curvature_per_segment": self.curvature.tolist(),
            "anchors": list(self.anchors),
            "anchor_jacobian_norm": self.anchor_jacobian_norm.tolist(),
            "settings": dict(self.settings),
        })

    def plot(self, **kwargs: Any) -> Any:
        """Norm, transitions and curvature along the trajectory
        (:func:`jacspec.report.sensitivity_plots.plot_profiles`)."""
        from jacspec.report.sensitivity_plots import plot_profiles

        return plot_profiles([self], **kwargs)


def _segment_lengths(tr: Trajectory, fine: int, refine: int, batch_size: int) -> np.ndarray:
    """Length of each of the ``fine/refine`` segments, summing ``||z_{i+1} - z_i||``."""
    steps: list[np.ndarray] = []
    first = last = None
    for batch in tr.batches(fine, batch_size):
        flat = batch.double().reshape(batch.shape[0], -1)
        chain = flat if last is None else torch.cat([last, flat])
        steps.append((chain[1:] - chain[:-1]).norm(dim=1).numpy())
        first = flat[:1] if first is None else first
        last = flat[-1:]
    assert first is not None and last is not None
    steps.append((first - last).norm(dim=1).numpy() if tr.closed else np.zeros(1))
    return np.concatenate(steps).reshape(-1, refine).sum(axis=1)


def _refuse_input_module(opts: JacobianOptions, what: str = "trajectory_profile") -> None:
    """A trajectory runs through input space: ``input_module`` is refused (ValueError).

    Not generalised to curves through the module's output ``h``: a point between two
    examples' ``h`` has no token ids, attention mask or token types of its own, so the
    function ``h -> logits`` (and the activation codes counted along the curve) would depend
    on which example lends them; that choice is the user's, made explicit by a module
    ``h -> logits`` for the trajectory (the message says how)."""
    if opts.input_module is not None:
        raise ValueError(
            f"input_module={opts.input_module!r} is not supported by {what}: a trajectory runs "
            "through the model's input space and token ids cannot be interpolated; for the "
            "norms at the examples use jacspec.jacobian_norms(model, data, input_module=...), "
            "or pass a module mapping h to logits with the other inputs fixed (e.g. a "
            "HuggingFace model called with inputs_embeds=h and one attention_mask) and a "
            "trajectory through h (ellipse(h1, h2, h3) of three examples of one length)"
        )


def trajectory_profile(
    model: nn.Module,
    trajectory: Trajectory,
    *,
    num_points: int = 256,
    refine: int = 16,
    output: str = "softmax",
    curvature_output: str = "logits",
    code_batch_size: int = 4096,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> TrajectoryProfile:
    """Jacobian norm, transitions, density and curvature along ``trajectory``.

    Jacobians at ``num_points`` points ``t_j = j/num_points`` (one batch at a time,
    the last one carried over for the curvature); activation codes at
    ``num_points * refine`` points, counted with :func:`jacspec.count_transitions`.
    ``options`` or its fields as keywords (``dtype``, ``device``, ``batch_size``, default
    256 here, ``jacobian_method``, ``check_independence``, ``progress``, ``route``) as in
    :func:`jacspec.sensitivity.norms.jacobian_norms`; a sketch is refused.
    """
    check_choice("output", output, ("softmax", "logits"))
    check_choice("curvature_output", curvature_output, ("softmax", "logits"))
    for name, v in (("num_points", num_points), ("refine", refine)):
        positive_int(name, v)
    opts = norm_options(options, **fields)
    _refuse_input_module(opts)
    if opts.batch_size is None:
        opts = opts.replace(batch_size=256)
    batch_size, progress = opts.batch_size, opts.progress
    m = num_points
    norms: list[Tensor] = []
    curv: list[Tensor] = []
    first = last = None
    for jb in JacobianSource.from_model(model, trajectory.batches(m, batch_size), opts):
        jl = jb.jac.reshape(jb.jac.shape[0], jb.jac.shape[1], -1)
        js = softmax_jacobian(jl, jb.out)
        norms.append((js if output == "softmax" else jl).pow(2).sum(dim=(1, 2)).sqrt())
        jc = js if curvature_output == "softmax" else jl
        chain = jc if last is None else torch.cat([last, jc])
        curv.append(0.5 * (chain[1:] - chain[:-1]).pow(2).sum(dim=(1, 2)).sqrt())
        first = jc[:1] if first is None else first
        last = jc[-1:]
    assert first is not None and last is not None
    wrap = 0.5 * (first - last).pow(2).sum().sqrt() if trajectory.closed else torch.zeros(())
    curv.append(wrap.reshape(1))
    fine = m * refine
    trans = count_transitions(model, trajectory, closed=trajectory.closed, num_points=fine,
                              batch_size=code_batch_size, progress=progress)
    assert trans.distances is not None
    dist = trans.distances
    if not trajectory.closed:
        dist = np.concatenate([dist, np.zeros(1, dtype=dist.dtype)])
    per_segment = dist.reshape(m, refine).sum(axis=1)
    lengths = _segment_lengths(trajectory, fine, refine, code_batch_size)
    if trajectory.anchors:
        anchor_pts = trajectory(torch.tensor(trajectory.anchors, dtype=torch.float64))
        anchor_norm = torch.cat([
            softmax_jacobian(jb.jac, jb.out).pow(2).flatten(1).sum(1).sqrt()
            if output == "softmax" else jb.jac.pow(2).flatten(1).sum(1).sqrt()
            for jb in JacobianSource.from_model(model, anchor_pts, opts.replace(progress=False))
        ]).double().cpu().numpy()
    else:
        anchor_norm = np.zeros(0)
    return TrajectoryProfile(
        kind=trajectory.kind,
        t=np.arange(m) / m,
        jacobian_norm=torch.cat(norms).double().cpu().numpy(),
        transitions=per_segment.astype(np.int64),
        segment_length=lengths,
        curvature=torch.cat(curv).double().cpu().numpy(),
        anchors=tuple(trajectory.anchors),
        anchor_jacobian_norm=anchor_norm,
        approximate=trans.approximate,
        settings={
            "num_points": m, "refine": refine, "output": output,
            "curvature_output": curvature_output, "closed": trajectory.closed,
            "jacobian": opts.to_dict(), **trajectory.settings,
        },
    )


def compare_trajectories(
    model: nn.Module,
    data: Any,
    *,
    kinds: Sequence[str] = KINDS,
    test_data: Any = None,
    image_shape: Sequence[int] | None = None,
    num_points: int = 256,
    refine: int = 16,
    seed: int = 0,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> list[TrajectoryProfile]:
    """One profile per kind: ellipses through ``data`` points, translation of a test point.

    The translation trajectory shifts a random point of ``test_data`` (default
    ``data``) along its last axis (or ``image_shape``'s last axis). ``options`` or its
    fields as keywords reach every :func:`trajectory_profile`.
    """
    opts = norm_options(options, **fields)
    _refuse_input_module(opts, "compare_trajectories")
    out = []
    for kind in kinds:
        check_choice("kind", kind, KINDS)
        if kind == "same_class":
            tr = same_class_ellipse(data, seed=seed)
        elif kind == "different_class":
            tr = different_class_ellipse(data, seed=seed)
        elif kind == "random":
            tr = random_ellipse(data, seed=seed)
        else:
            xt, _ = _xy(test_data if test_data is not None else data)
            i = int(numpy_generator(seed).integers(xt.shape[0]))
            tr = _with_settings(translation_trajectory(xt[i], image_shape=image_shape),
                                {"index": i, "seed": seed})
        out.append(trajectory_profile(model, tr, num_points=num_points, refine=refine,
                                      options=opts))
    return out


def profiles_frame(profiles: Sequence[TrajectoryProfile]) -> pd.DataFrame:
    """Summary table, one row per profile (see :meth:`TrajectoryProfile.summary`)."""
    return pd.DataFrame([p._scalars() for p in profiles])
