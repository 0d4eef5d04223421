"""One result contract for every public result type of jacspec.

Every result has ``settings`` (a dict of what produced it), ``to_dict()`` (plain JSON: it
round-trips through ``json.dumps``/``json.loads`` unchanged, NaN written as None),
``to_frame()`` (a pandas DataFrame with at least one row), ``summary()`` (a method returning
a JSON-able dict) and, where a figure exists, ``plot()`` returning a matplotlib Figure.

The result types are discovered from the façade: every class exported by ``jacspec``
(``__all__`` and the moved names) and every jacspec class a façade function is annotated to
return must be either in :data:`CASES` (built from a tiny case here) or in
:data:`NOT_RESULTS` (with the reason), so a new result type cannot escape this test.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import itertools
import json
import math
import typing
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import jacspec

# ----------------------------------------------------------------------------- tiny cases


def _api(name: str) -> Any:
    """A façade or moved name, from the module that defines it (no DeprecationWarning)."""
    return getattr(importlib.import_module({**jacspec._FACADE, **jacspec._MOVED}[name]), name)


@cache
def _model() -> torch.nn.Module:
    from jacspec.models.builders import mlp

    return mlp(4, 3, width=8, depth=2, seed=0).double().eval()


@cache
def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.arange(12) % 3
    return x, y


def _pareto() -> np.ndarray:
    return np.random.default_rng(0).pareto(1.5, 300) + 1.0


def _matrix() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(30, 50))


def _esd() -> Any:
    return _api("esd")(_model(), _data()[0])


def _gram() -> Any:
    return _api("gram")(_model(), _data()[0])


def _estimate() -> Any:
    return _api("estimate_esd")(_model(), _data()[0], method="slq", num_steps=8,
                                num_vectors=2, num_points=32)


def _plan() -> Any:
    return _api("plan_esd")(100, 30)


def _operator_matrix() -> np.ndarray:
    a = _matrix()
    return a @ a.T / a.shape[1]


def _slq() -> Any:
    return _api("slq_density")(_operator_matrix(), num_steps=8, num_vectors=2)


def _top() -> Any:
    return _api("top_eigenvalues")(_operator_matrix(), k=3, num_steps=10)


def _trace() -> Any:
    return _api("hutchinson_trace")(_operator_matrix(), 10)


def _analysis() -> Any:
    from jacspec.analysis import analyze

    return analyze(_model(), _data()[0], seed=0)


def _powerlaw() -> Any:
    from jacspec.heavytail.powerlaw import fit_powerlaw

    return fit_powerlaw(_pareto())


def _mp() -> Any:
    from jacspec.heavytail.mp import fit_mp
    from jacspec.heavytail.randomized import matrix_esd

    a = _matrix()
    return fit_mp(matrix_esd(a), a.shape[0] / a.shape[1], rows=a.shape[0])


def _null() -> Any:
    from jacspec.heavytail.randomized import randomized_null

    return randomized_null(_matrix(), seed=0)


def _train() -> Any:
    from jacspec.data.datasets import DataSet
    from jacspec.models.builders import mlp
    from jacspec.models.train import train

    x, y = _data()
    data = DataSet(x.float(), y, 3, "tiny")
    return train(mlp(4, 3, width=8, seed=0), data, max_epochs=2, batch_size=6, seed=0)


def _per_point() -> Any:
    from jacspec.sensitivity.norms import per_point_generalization

    return per_point_generalization(_model(), _data())


def _trajectory() -> Any:
    from jacspec.sensitivity.trajectories import ellipse

    x = _data()[0]
    return ellipse(x[0], x[1], x[2])


def _profile() -> Any:
    from jacspec.sensitivity.trajectories import trajectory_profile

    return trajectory_profile(_model(), _trajectory(), num_points=8, refine=2)


def _codes() -> Any:
    from jacspec.sensitivity.regions import activation_codes

    return activation_codes(_model(), _data()[0])


def _transitions() -> Any:
    from jacspec.sensitivity.regions import count_transitions

    return count_transitions(_model(), _data()[0])


def _mean_field() -> Any:
    from jacspec.theory import mean_field

    return mean_field("tanh", 1.5, 0.05)


def _critical() -> Any:
    from jacspec.theory import critical_point

    return critical_point("tanh", 0.05)


@cache
def _theory() -> Any:
    from jacspec.theory import jacobian_spectrum

    return jacobian_spectrum("hard_tanh", "orthogonal", 2, 1.2, 0.05, num_points=60)


@cache
def _simulated() -> Any:
    from jacspec.theory import simulate_spectrum

    return simulate_spectrum("hard_tanh", "orthogonal", 2, 1.2, 0.05, width=16, num_inputs=2,
                             num_instances=2, seed=0)


def _comparison() -> Any:
    from jacspec.theory import compare

    return compare(_theory(), _simulated())


def _universal() -> Any:
    from jacspec.theory import universal_spectrum

    return universal_spectrum("smooth", 1.0, num_points=60)


def _scores() -> Any:
    from jacspec.zoo.rank.score import score_metrics

    rng = np.random.default_rng(0)
    rows = [{"a": a, "b": b, "seed": s} for a, b, s in itertools.product([0, 1, 2], [0, 1], [0, 1])]
    df = pd.DataFrame(rows)
    df["gap"] = rng.normal(size=len(df))
    df["mu"] = 0.6 * df["gap"] + rng.normal(size=len(df))
    return score_metrics(df, ["mu"], ["a", "b"])


def _tracker() -> Any:
    tracker = _api("Tracker")(_data()[0], every=1, seed=0)
    tracker.step(_model(), 0)
    tracker.step(_model(), 1)
    return tracker


#: Result type name -> (builder, has a figure, marks).
CASES: dict[str, tuple[Callable[[], Any], bool, tuple[pytest.MarkDecorator, ...]]] = {
    "ESD": (_esd, True, ()),
    "Gram": (_gram, False, ()),
    "ESDEstimate": (_estimate, True, ()),
    "EsdPlan": (_plan, False, ()),
    "SpectralDensity": (_slq, False, ()),
    "TopEigenvalues": (_top, False, ()),
    "TraceEstimate": (_trace, False, ()),
    "Analysis": (_analysis, True, ()),
    "PowerLawFit": (_powerlaw, False, ()),
    "MPFit": (_mp, False, ()),
    "RandomizedNull": (_null, True, ()),
    "TrainResult": (_train, False, ()),
    "PerPointSensitivity": (_per_point, True, ()),
    "Trajectory": (_trajectory, False, ()),
    "TrajectoryProfile": (_profile, True, ()),
    "ActivationCodes": (_codes, False, ()),
    "Transitions": (_transitions, False, ()),
    "MeanField": (_mean_field, False, ()),
    "CriticalPoint": (_critical, False, ()),
    "JacobianSpectrum": (_theory, True, ()),
    "SimulatedSpectrum": (_simulated, False, ()),
    "Comparison": (_comparison, False, ()),
    "UniversalSpectrum": (_universal, False, ()),
    "ScoreTable": (_scores, False, ()),
    "Tracker": (_tracker, True, ()),
}

#: Classes the façade exposes that are not results, and why.
NOT_RESULTS: dict[str, str] = {
    "DataSet": "input data (tensors and labels), not a measurement",
    "CifarResNet": "a model (nn.Module, jacspec.resnet), the input of every measurement",
    "JacobianBatch": "one streamed batch of Jacobian rows (iter_jacobians), not a result",
    "JacobianOptions": "the options of a Jacobian computation (an input)",
    "JacobianSource": "re-iterable rows of the data Jacobian (an input of the spectra)",
    "GramOperator": "a linear operator (matvecs of M), the input of the Krylov methods",
    "Spectrum": "the interface exact and estimated spectra share (an abstract base)",
    "Erf": "an activation module (torch.nn.Module)",
}


# ----------------------------------------------------------------------------- discovery


def _facade_objects() -> dict[str, Any]:
    names = {**jacspec._FACADE, **jacspec._MOVED}
    out = {}
    for name, module in names.items():
        out[name] = getattr(importlib.import_module(module), name)
    return out


def _classes_in(annotation: Any) -> set[type]:
    """jacspec classes named by a (possibly generic) return annotation."""
    found: set[type] = set()
    if isinstance(annotation, type) and annotation.__module__.startswith("jacspec"):
        found.add(annotation)
    for arg in typing.get_args(annotation):
        found |= _classes_in(arg)
    return found


def _public_classes() -> dict[str, type]:
    classes: dict[str, type] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, obj in _facade_objects().items():
            if isinstance(obj, type):
                classes[name] = obj
            elif inspect.isfunction(obj):
                try:
                    hints = typing.get_type_hints(obj)
                except Exception:  # an annotation that cannot be resolved names no class
                    continue
                for cls in _classes_in(hints.get("return")):
                    classes.setdefault(cls.__name__, cls)
    return classes


def test_every_public_class_is_a_checked_result_or_listed_as_not_one() -> None:
    classes = _public_classes()
    unknown = sorted(set(classes) - set(CASES) - set(NOT_RESULTS))
    assert not unknown, (
        f"public classes {unknown} are neither in CASES (result contract) nor in NOT_RESULTS")
    for name in CASES:
        if name not in classes:
            continue  # reachable through its subpackage only: still checked below
        assert classes[name].__name__ == name


# ----------------------------------------------------------------------------- the contract


def _no_nan(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _no_nan(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, bool))


def _params() -> list[Any]:
    return [pytest.param(name, id=name, marks=marks) for name, (_, _, marks) in CASES.items()]


@cache
def _built(name: str) -> Any:
    torch.manual_seed(0)
    return CASES[name][0]()


@pytest.mark.parametrize("name", _params())
def test_result_contract(name: str) -> None:
    result = _built(name)
    assert type(result).__name__ == name
    if dataclasses.is_dataclass(result):
        params = type(result).__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, f"{name} is a dataclass but not frozen"

    assert isinstance(result.settings, dict)

    d = result.to_dict()
    assert isinstance(d, dict) and d
    assert _no_nan(d), f"{name}.to_dict() holds a value JSON cannot carry (NaN, numpy, ...)"
    assert json.loads(json.dumps(d, allow_nan=False)) == d

    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) >= 1

    assert callable(result.summary), f"{name}.summary must be a method"
    s = result.summary()
    assert isinstance(s, dict) and s
    assert json.loads(json.dumps(s, allow_nan=False)) == s


@pytest.mark.parametrize("name", [n for n, (_, fig, _) in CASES.items() if fig])
def test_result_plot_returns_a_figure(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = _built(name).plot()
    assert isinstance(fig, Figure)
    assert fig.axes
    plt.close(fig)


def test_results_without_a_figure_have_no_plot() -> None:
    """``plot()`` exists exactly where :data:`CASES` says a figure exists."""
    classes = {name: type(_built(name)) for name in CASES}
    for name, (_, fig, _) in CASES.items():
        assert hasattr(classes[name], "plot") == fig, name


def test_one_json_conversion() -> None:
    """jsonable: numpy/torch scalars and arrays, Paths, tuples, non-str keys, NaN/Inf."""
    from pathlib import Path

    from jacspec._util.json import dumps, jsonable

    value = {
        "f32": np.float32(1.5), "i64": np.int64(3), "b": np.bool_(True),
        "arr": np.array([[1.0, np.nan], [np.inf, -np.inf]]), "t": torch.tensor([2.0, math.nan]),
        "scalar_t": torch.tensor(4), "path": Path("a") / "b", "tuple": (1, (2, 3)), 7: "seven",
        "nan": math.nan, "dtype": torch.float64, "nested": {"x": [np.float64(0.25)]},
    }
    out = jsonable(value)
    assert out == {
        "f32": 1.5, "i64": 3, "b": True, "arr": [[1.0, None], [None, None]], "t": [2.0, None],
        "scalar_t": 4, "path": str(Path("a") / "b"), "tuple": [1, [2, 3]], "7": "seven",
        "nan": None, "dtype": "torch.float64", "nested": {"x": [0.25]},
    }
    assert type(out["i64"]) is int and type(out["f32"]) is float and type(out["b"]) is bool
    assert json.loads(dumps(value)) == out
    with pytest.raises(TypeError, match="complex"):
        jsonable(1 + 2j)


def test_cli_json_has_no_nan(tmp_path: Any) -> None:
    """The CLI's writer goes through the one conversion: NaN/Inf become null, not NaN."""
    from jacspec.cli._common import to_json, write_json

    payload = {"a": math.nan, "b": np.array([1.0, np.inf]), "c": np.int32(2)}
    assert json.loads(to_json(payload)) == {"a": None, "b": [1.0, None], "c": 2}
    path = write_json(payload, str(tmp_path / "out.json"))
    assert path is not None
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": 2}


def _strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_zoo_json_writer_writes_null_for_nan(tmp_path: Any) -> None:
    """``jacspec zoo ... --json`` used json.dumps(default=str): NaN scores came out as NaN."""
    from jacspec.cli.commands.zoo import _write_json

    path = tmp_path / "scores.json"
    _write_json(str(path), {"metrics": {"mu": {"psi": math.nan, "tau": np.float64(0.5)}}})
    assert _strict_loads(path.read_text()) == {"metrics": {"mu": {"psi": None, "tau": 0.5}}}


def test_profile_without_anchors_has_a_json_summary() -> None:
    """A trajectory through more than 16 points has no anchors: its anchor norm is NaN and
    the ratio Inf; summary() writes them as None (they were NaN/Inf floats, not JSON)."""
    from jacspec.sensitivity.trajectories import (
        points_trajectory,
        profiles_frame,
        trajectory_profile,
    )

    points = torch.randn(17, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tr = points_trajectory(points)
    assert tr.anchors == ()
    prof = trajectory_profile(_model(), tr, num_points=17, refine=2)
    s = prof.summary()
    assert s["anchor_jacobian_norm_mean"] is None and s["median_over_anchor"] is None
    assert _strict_loads(json.dumps(s)) == s
    assert _strict_loads(json.dumps(prof.to_dict())) == prof.to_dict()
    # tables keep the floats
    assert math.isnan(profiles_frame([prof])["anchor_jacobian_norm_mean"].iloc[0])
