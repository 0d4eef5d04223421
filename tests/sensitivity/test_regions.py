"""Activation codes and transition counts against closed forms and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacspec.sensitivity.regions import activation_codes, count_transitions
from jacspec.sensitivity.trajectories import ellipse

DT = torch.float64


def _one_layer(hidden: int, seed: int, act: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, hidden), act or nn.ReLU(), nn.Linear(hidden, 3))
    return net.to(DT)


def _ellipse_crossings(w: np.ndarray, b: np.ndarray, c: np.ndarray, a: np.ndarray,
                       s: np.ndarray, levels: tuple[float, ...] = (0.0,)) -> int:
    """Crossings of w.z + b = level by z = c + a cos th + s sin th: 2 if |w.c + b - level| < R."""
    radius = np.hypot(w @ a, w @ s)
    total = 0
    for level in levels:
        offset = np.abs(w @ c + b - level)
        total += int(2 * np.sum(offset < radius))
    return total


def _ellipse_coefficients(p: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve x_i = c + a cos th_i + s sin th_i at th = pi/3, pi, 5pi/3 independently."""
    th = np.array([np.pi / 3, np.pi, 5 * np.pi / 3])
    m = np.stack([np.ones(3), np.cos(th), np.sin(th)], axis=1)
    coef = np.linalg.inv(m) @ p.numpy()
    return coef[0], coef[1], coef[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_transitions_equal_hyperplane_crossings(seed: int) -> None:
    net = _one_layer(40, seed)
    gen = torch.Generator().manual_seed(100 + seed)
    p = torch.randn(3, 2, generator=gen, dtype=DT)
    traj = ellipse(p[0], p[1], p[2])
    c, a, s = _ellipse_coefficients(p)
    w, b = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    expected = _ellipse_crossings(w, b, c, a, s)
    assert expected > 0
    # lazily evaluated trajectory, small batches: codes carried across batch borders
    got = count_transitions(net, traj, num_points=2**12, batch_size=1000)
    assert got.total == expected
    assert got.num_units == 40 and not got.approximate
    assert got.distances is not None and got.distances.shape == (2**12,)
    assert int(got.distances.sum()) == expected


def test_functional_and_three_piece_activations_are_coded() -> None:
    torch.manual_seed(3)
    lin1, lin2 = nn.Linear(2, 30).to(DT), nn.Linear(30, 3).to(DT)

    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return lin2(F.hardtanh(lin1(x), -0.5, 0.7))

    net = Functional()
    p = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(7)) * 2
    c, a, s = _ellipse_coefficients(p)
    w, b = lin1.weight.detach().numpy(), lin1.bias.detach().numpy()
    expected = _ellipse_crossings(w, b, c, a, s, levels=(-0.5, 0.7))
    got = count_transitions(net, ellipse(*p), num_points=2**13, batch_size=4096)
    assert got.total == expected
    codes = activation_codes(net, p)
    h = lin1(p).detach()
    brute = (h > -0.5).to(torch.uint8) + (h > 0.7).to(torch.uint8)
    assert torch.equal(codes.codes, brute)
    assert codes.layers[0].kind == "hardtanh" and codes.layers[0].num_pieces == 3


def test_module_and_functional_forms_give_same_codes() -> None:
    torch.manual_seed(4)
    seq = nn.Sequential(nn.Linear(5, 8), nn.ReLU6(), nn.Linear(8, 8), nn.Hardsigmoid(),
                        nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3)).to(DT)

    class Same(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu6(seq[0](x))
            x = F.hardsigmoid(seq[2](x))
            x = seq[4](x)
            x = x.relu() * (x > 0) + 0.1 * x * (x <= 0)  # leaky relu through Tensor.relu
            return seq[6](x)

    x = torch.randn(50, 5, dtype=DT) * 3
    a, b = activation_codes(seq, x), activation_codes(Same(), x)
    assert [lay.kind for lay in a.layers] == ["relu6", "hardsigmoid", "leaky_relu"]
    assert [lay.kind for lay in b.layers] == ["relu6", "hardsigmoid", "relu"]
    assert torch.equal(a.codes, b.codes)
    h1 = seq[0](x)
    assert torch.equal(a.codes[:, :8], ((h1 > 0).int() + (h1 > 6).int()).to(torch.uint8))


def test_batching_inputs_and_closed_vs_open() -> None:
    net = _one_layer(25, 5)
    pts = ellipse(*torch.randn(3, 2, dtype=DT)).points(1000)
    whole = count_transitions(net, pts, batch_size=1000)
    small = count_transitions(net, pts, batch_size=37)
    gen = count_transitions(net, (pts[i : i + 250] for i in range(0, 1000, 250)))
    opened = count_transitions(net, pts, closed=False, batch_size=111)
    assert whole.total == small.total == gen.total
    np.testing.assert_array_equal(whole.distances, small.distances)
    codes = activation_codes(net, pts).codes.int()
    brute = (codes - codes.roll(-1, dims=0)).abs().sum(dim=1)
    np.testing.assert_array_equal(whole.distances, brute.numpy())
    assert opened.total == whole.total - int(brute[-1])
    assert opened.distances is not None and opened.distances.shape == (999,)
    lean = count_transitions(net, pts, keep_distances=False)
    assert lean.distances is None and lean.total == whole.total


def test_smooth_activation_is_flagged_and_layers_select() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 7), nn.ReLU(),
                        nn.Linear(7, 2)).to(DT)
    x = torch.randn(9, 4, dtype=DT)
    codes = activation_codes(net, x)
    assert codes.approximate and codes.num_units == 13
    last = activation_codes(net, x, layers=[-1])
    assert not last.approximate and last.num_units == 7
    assert torch.equal(last.codes, (net[2](net[1](net[0](x))) > 0).to(torch.uint8))


def test_bad_inputs_raise() -> None:
    net = _one_layer(4, 0)
    with pytest.raises(TypeError):
        count_transitions(net, "not points")
    with pytest.raises(ValueError):
        count_transitions(net, lambda t: t, num_points=None)
    with pytest.raises(ValueError):
        count_transitions(net, torch.zeros(0, 2, dtype=DT))
    with pytest.raises(ValueError):
        activation_codes(nn.Linear(2, 3), torch.zeros(2, 2))
    with pytest.raises(TypeError):
        activation_codes(torch.jit.script(net), torch.zeros(2, 2, dtype=DT))


def test_transition_count_memory_does_not_depend_on_length() -> None:
    """A 2^16-point lazily generated trajectory runs without materialising it."""
    net = _one_layer(16, 8)
    p = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(9))
    got = count_transitions(net, ellipse(*p), num_points=2**16, batch_size=2**14,
                            keep_distances=False)
    c, a, s = _ellipse_coefficients(p)
    w, b = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    assert got.total == _ellipse_crossings(w, b, c, a, s)
    assert got.num_points == 2**16 and math.isfinite(got.total)


def test_exported_program_codes_equal_eager_codes():
    """torch.export programs call aten operators (aten.relu, aten.hardtanh, ...): their
    activation codes equal the eager model's, computed here from the pre-activations."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.Hardtanh(),
                          nn.Linear(7, 3)).eval()
    x = torch.randn(11, 6)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)).module()
    got = activation_codes(program, x)
    with torch.no_grad():
        h1 = model[0](x)
        h2 = model[2](model[1](h1))
    expected = torch.cat([(h1 > 0).to(torch.uint8),
                          (h2 > -1).to(torch.uint8) + (h2 > 1).to(torch.uint8)], dim=1)
    assert [layer.kind for layer in got.layers] == ["relu", "hardtanh"]
    assert torch.equal(got.codes, expected)
