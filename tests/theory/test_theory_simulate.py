"""Simulated random networks: Jacobian against autograd, Haar matrices, determinism and
a scaled-down theory-vs-simulation check (width 200 instead of 1000)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jacspec.theory import (
    compare,
    critical_point,
    get_activation,
    jacobian_spectrum,
    random_network,
    simulate_spectrum,
)
from jacspec.theory.simulate import haar_orthogonal


def test_jacobian_matches_autograd():
    gen = torch.Generator().manual_seed(3)
    net = random_network("tanh", "gaussian", 3, 1.7, 0.2, 7, gen)
    x0 = torch.randn(7, generator=gen, dtype=torch.float64)

    def forward(x):
        for w, b in zip(net.weights, net.biases, strict=True):
            x = torch.tanh(w @ x + b)
        return x

    ref = torch.autograd.functional.jacobian(forward, x0)
    torch.testing.assert_close(net.jacobian(x0), ref, rtol=1e-12, atol=1e-12)


def test_haar_orthogonal_is_orthogonal():
    q = haar_orthogonal(50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.T @ q, torch.eye(50, dtype=torch.float64), atol=1e-12, rtol=0)


def test_same_seed_same_numbers():
    a = simulate_spectrum("relu", "orthogonal", 2, 2.0, 0.0, width=40, seed=5)
    b = simulate_spectrum("relu", "orthogonal", 2, 2.0, 0.0, width=40, seed=5)
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    assert a.eigenvalues.dtype == np.float64


@pytest.mark.parametrize("name,weights,sb2", [
    ("relu", "gaussian", 0.0), ("tanh", "orthogonal", 2.01e-5), ("hard_tanh", "orthogonal", 0.01),
])
@pytest.mark.parametrize("depth", [2, 8])
def test_theory_matches_small_simulation(name, weights, sb2, depth):
    cp = critical_point(name, sb2)
    theory = jacobian_spectrum(name, weights, depth, cp.sigma_w2, sb2, num_points=300)
    sim = simulate_spectrum(name, weights, depth, cp.sigma_w2, sb2, width=200, num_inputs=2,
                            num_instances=2, seed=11)
    c = compare(theory, sim)
    # width 200: instance-to-instance scale fluctuations ~ sqrt(L/N); allow 4 standard errors
    assert c.m1_rel_err <= max(0.03, 4 * sim.m1_stderr / theory.m1)
    assert c.m2_rel_err <= max(0.03, 4 * sim.m2_stderr / theory.m2)
    assert c.ks <= 0.08


def test_ks_distance_detects_a_wrong_theory():
    sim = simulate_spectrum("relu", "gaussian", 2, 2.0, 0.0, width=200, seed=2)
    right = jacobian_spectrum("relu", "gaussian", 2, 2.0, 0.0, num_points=200)
    wrong = jacobian_spectrum("relu", "orthogonal", 2, 2.0, 0.0, num_points=200)
    assert compare(right, sim).ks < 0.06 < 0.1 < compare(wrong, sim).ks


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        simulate_spectrum("relu", "gaussian", 2, 2.0, 0.0, width=0)
    with pytest.raises(ValueError, match="weights"):
        simulate_spectrum("relu", "haar", 2, 2.0, 0.0, width=10)
    with pytest.raises(TypeError, match="seed"):
        simulate_spectrum("relu", "gaussian", 2, 2.0, 0.0, width=10, seed="x")
    assert get_activation("Shifted ReLU").name == "shifted_relu"
