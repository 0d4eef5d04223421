"""Regression tests of issue 22's engine defects: the batch-independence probe (2), models
that are not an nn.Module (6), torch.inference_mode (7), the memory of jacobians() (8) and
the JacobianOptions fields every Jacobian entry point takes (18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jacspec

# ------------------------------------------------------------------ defect 2: mixing probe


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


class Shift(_Base):
    """out[i] = f(x_i) + 0.1 f(x_{i+1}) (no wrap-around: example 0 moves nobody)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        out = z.clone()
        out[:-1] = z[:-1] + 0.1 * z[1:]
        return out


class Last(_Base):
    """Every output depends on the last example of the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        return z + z[-1:].expand_as(z)


class MeanRest(_Base):
    """A mean over examples 1..b-1 (example 0 excluded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        return z + z[1:].mean(0, keepdim=True)


class LaterOnly(_Base):
    """Mixing that appears only at batch positions 9 and beyond."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f(x)
        out = z.clone()
        out[9:] = z[9:] + z[:-9]
        return out


MIXERS = [Shift, Last, MeanRest, LaterOnly]
ENTRIES = {
    "jacobians": lambda m, x, y: jacspec.jacobians(m, x, dtype=torch.float64),
    "esd": lambda m, x, y: jacspec.esd(m, x, dtype=torch.float64),
    "analyze": lambda m, x, y: jacspec.analyze(m, (x, y), dtype=torch.float64),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("mixer", MIXERS, ids=lambda c: c.__name__)
def test_models_mixing_through_any_position_are_refused(mixer, entry):
    x, y = torch.randn(20, 6), torch.arange(20) % 3
    with pytest.raises(ValueError, match="mixes examples within a batch"):
        ENTRIES[entry](mixer().eval(), x, y)


class PerExample(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.f(x)))


@pytest.mark.parametrize("kind", ["eager", "scripted"])
def test_eval_batchnorm_and_dropout_still_accepted_and_exact(kind):
    model = PerExample().double().eval()
    run = torch.jit.script(model) if kind == "scripted" else model
    x = torch.randn(20, 6, dtype=torch.float64)
    got = jacspec.jacobians(run, x, output="logits")
    ref = torch.stack([torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)
                       for xi in x])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------- defects 6 and 7: the model and the mode


def _model_entry_points() -> dict[str, object]:
    """Every façade function whose first parameter is ``model``, and every method of a
    façade class taking ``model`` first (``Tracker.step``): derived from ``_FACADE``, so a
    new entry point is covered (and needs its sample arguments in ``_call`` below)."""
    import inspect

    found: dict[str, object] = {}
    for name in jacspec._FACADE:
        obj = getattr(jacspec, name)
        members = ([(f"{name}.{m}", f) for m, f in vars(obj).items()
                    if inspect.isfunction(f) and not m.startswith("_")]
                   if inspect.isclass(obj) else [(name, obj)])
        for label, f in members:
            params = [p for p in inspect.signature(f).parameters if p != "self"]
            if params[:1] == ["model"] and name != "load_model":  # load_model: a path
                found[label] = f
    return found


ENTRY_POINTS = _model_entry_points()


def _call(label: str, model: object) -> object:
    from jacspec.sensitivity.trajectories import random_ellipse

    x, y = torch.randn(6, 4), torch.arange(6) % 3
    args = {
        "activation_codes": (x,),
        "count_transitions": (random_ellipse((x, y)),),
        "trajectory_profile": (random_ellipse((x, y)),),
    }
    kwargs = {
        "count_transitions": {"num_points": 8},
        "trajectory_profile": {"num_points": 4, "refine": 2},
        "compare_trajectories": {"num_points": 4, "refine": 2, "kinds": ("random",)},
        "estimate_esd": {"method": "exact"},
    }
    if label == "Tracker.step":
        return jacspec.Tracker((x, y)).step(model, 0)
    fn = ENTRY_POINTS[label]
    out = fn(model, *args.get(label, ((x, y),)), **kwargs.get(label, {}))
    return list(out) if label == "iter_jacobians" else out


def test_entry_points_are_found_from_the_facade():
    assert {"jacobians", "iter_jacobians", "gram", "esd", "estimate_esd", "analyze",
            "jacobian_norms", "mean_jacobian_norm", "trajectory_profile", "count_transitions",
            "Tracker.step"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("bad", [lambda z: z[:, :3], None, "model.pt"],
                         ids=["lambda", "None", "str"])
@pytest.mark.parametrize("label", sorted(ENTRY_POINTS))
def test_not_a_module_gives_one_type_error_everywhere(label, bad):
    with pytest.raises(TypeError, match=r"^model must be a torch\.nn\.Module; got "):
        _call(label, bad)


GRADIENT_ENTRIES = [e for e in sorted(ENTRY_POINTS)
                    if e not in ("activation_codes", "count_transitions")]  # forward only


@pytest.mark.parametrize("label", GRADIENT_ENTRIES)
def test_inference_mode_gets_one_sentence(label):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.inference_mode(), pytest.raises(ValueError, match="outside the inference_mode"):
        _call(label, model)
    _call(label, model)  # and it works outside
    with torch.no_grad():
        _call(label, model)  # no_grad works too


def test_data_made_under_inference_mode_is_accepted_outside():
    model = nn.Sequential(nn.Linear(4, 3)).double().eval()
    with torch.inference_mode():
        x = torch.randn(5, 4, dtype=torch.float64)
    got = jacspec.jacobians(model, x, output="logits")
    torch.testing.assert_close(got, model[0].weight.detach().expand(5, 3, 4))


# ----------------------------------------------------------- defect 8: jacobians() memory


class Counting(nn.Module):
    """Records whether each forward pass was asked for input gradients (a Jacobian)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.calls: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(bool(x.requires_grad))
        return self.f(x)


@pytest.mark.parametrize("entry", ["jacobians", "data_jacobian"])
def test_jacobians_over_max_memory_refused_before_any_jacobian(entry):
    model = Counting().eval()
    x = torch.randn(50, 6)
    need = 50 * 3 * 6 * 4  # bytes of the float32 result
    with pytest.raises(ValueError, match=r"n=50 .*iter_jacobians.*gram/esd"):
        getattr(jacspec, entry)(model, x, max_memory=need - 1)
    assert not any(model.calls)  # at most a no-grad shape probe ran, no Jacobian
    assert getattr(jacspec, entry)(model, x, max_memory=need).shape[0] == 50


def test_jacobians_of_a_generator_checked_as_they_arrive():
    model = Counting().eval()
    gen = (torch.randn(10, 6) for _ in range(5))
    with pytest.raises(ValueError, match=r"n=30 .*iter_jacobians"):
        jacspec.jacobians(model, gen, max_memory=25 * 3 * 6 * 4, batch_size=10)


@pytest.mark.parametrize("data", ["tensor", "loader", "generator"])
def test_filled_jacobians_equal_autograd(data):
    model = Counting().double().eval()
    x = torch.randn(23, 6, dtype=torch.float64)
    source = {
        "tensor": x,
        "loader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=5),
        "generator": (x[i : i + 7] for i in range(0, 23, 7)),
    }[data]
    got = jacspec.jacobians(model, source, output="logits", batch_size=4)
    ref = torch.stack([torch.autograd.functional.jacobian(lambda v: model.f(v[None])[0], xi)
                       for xi in x])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
