"""Jiang et al.'s flatness and norm baselines (jacspec.zoo.run.flatness and their zoo metrics)
against closed forms, explicit path enumeration and formulas re-expressed here (float64)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from jacspec.data.datasets import DataSet
from jacspec.models.builders import mlp, small_cnn
from jacspec.models.resnet import resnet
from jacspec.zoo.run.flatness import (
    bisect_scale,
    fold_batchnorm,
    magnitude_noise,
    pacbayes_mag_sigma,
    path_norm,
    sharpness_ascent,
    sharpness_mag_alpha,
    sharpness_mag_flatness,
)
from jacspec.zoo.run.metrics import REGISTRY, MetricData, measure

D, TOL = 0.1, 0.01


def _dataset(x: torch.Tensor, y: torch.Tensor, k: int) -> DataSet:
    return DataSet(x=x.float(), y=y, num_classes=k, name="toy")


def _randomize_bn(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen))
                m.running_mean.copy_(torch.randn(c, generator=gen))
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.3)


# ----------------------------------------------------------------------- perturbation scale


def test_magnitude_noise_has_std_sqrt_sigma2_w2_plus_eps2() -> None:
    w = torch.tensor([0.0, 0.5, -2.0, 1e-3, 3.0, -0.1], dtype=torch.float64)
    sigma, eps, draws = 0.3, 1e-3, 4000
    gen = torch.Generator().manual_seed(0)
    u = torch.stack([magnitude_noise([w], sigma, eps, gen)[0] for _ in range(draws)])
    want = np.sqrt(sigma ** 2 * w.numpy() ** 2 + eps ** 2)
    got = u.std(dim=0).numpy()
    # std of a sample std is about std / sqrt(2 M) = 1.1 %; 5 % is > 4 standard errors
    np.testing.assert_allclose(got, want, rtol=0.05)
    np.testing.assert_allclose(u.mean(dim=0).numpy(), 0.0, atol=5 * 4 * want.max() / draws ** .5)


def test_sharpness_ascent_stays_in_the_box() -> None:
    torch.manual_seed(0)
    model = mlp(5, 3, width=8, depth=2, sigma_b=0.3, seed=1).double()
    x, y = torch.randn(300, 5, dtype=torch.float64), torch.randint(0, 3, (300,))
    alpha, eps = 0.3, 1e-3
    u = sharpness_ascent(model, x, y, alpha, seed=4)
    at_bound = 0
    for p, du in zip(model.parameters(), u, strict=True):
        r = alpha * p.detach().abs() + eps
        assert du.shape == p.shape
        assert bool((du.abs() <= r).all())
        at_bound += int((du.abs() == r).sum())
    assert at_bound > 0  # the ascent moved onto the box's faces


# ----------------------------------------------------------------------- bisection


class OneWeight(nn.Module):
    """Logits ``(-w x, w x)``: class 1 iff ``w x > 0``."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.w * x[:, 0]
        return torch.stack([-z, z], dim=1)


def test_bisection_lands_within_tolerance_of_the_closed_form() -> None:
    # x symmetric Gaussian, y = 1[x > 0] with 10 % of the labels flipped: acc(w) = a = 0.9 for
    # w > 0, and acc(w + u) = a if w + u > 0, 1 - a otherwise, so
    # E_u[acc] = a - (2a - 1) Phi(-|w| / s), s = sqrt(sigma^2 w^2 + eps^2).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    y[:4] = 1 - y[:4]
    a, w, eps = 0.9, 0.2, 1e-3

    def closed(sigma: float) -> float:
        return (2 * a - 1) * norm.cdf(-w / math.sqrt(sigma ** 2 * w ** 2 + eps ** 2))

    # the search itself on the exact displacement: within tolerance, and Algorithm 1's steps
    s = bisect_scale(closed)
    assert abs(closed(s) - D) < TOL
    lo, hi = 0.0, 2.0
    for _ in range(15):
        t = (lo + hi) / 2
        if abs(closed(t) - D) < TOL:
            break
        lo, hi = (lo, t) if closed(t) > D else (t, hi)
    assert s == t
    # end to end with Monte Carlo draws: MC error of the displacement <= 0.8 sqrt(p(1-p)/M)
    draws = 3000
    sigma = pacbayes_mag_sigma(OneWeight(w), x, y, seed=0, draws=draws)
    mc = (2 * a - 1) * math.sqrt(0.15 * 0.85 / draws)
    assert abs(closed(sigma) - D) < TOL + 4 * mc
    # the variance read as a standard deviation would put sigma' near 1.95, far outside
    assert sigma < 1.2


# ----------------------------------------------------------------------- worst case


def _linear_case() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    # every point of class 0 with positive inputs: d CE / d W_1j = mean p_1 x_j > 0,
    # d CE / d W_0j = mean (p_0 - 1) x_j < 0 (and so for the biases) wherever u is, so the
    # worst case in the box is the corner u_0 = -r, u_1 = +r.
    gen = torch.Generator().manual_seed(2)
    lin = nn.Linear(4, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.5, 0.8, 0.3], [-0.2, 0.4, -0.6, 0.1]]))
        lin.bias.copy_(torch.tensor([0.2, -0.1]))
    x = torch.rand(300, 4, generator=gen, dtype=torch.float64) * 0.9 + 0.1
    return lin, x, torch.zeros(300, dtype=torch.long)


def test_ascent_reaches_the_closed_form_worst_case_of_a_linear_classifier() -> None:
    lin, x, y = _linear_case()
    alpha, eps = 0.7, 1e-3
    u_w, u_b = sharpness_ascent(lin, x, y, alpha, seed=5)
    r_w, r_b = alpha * lin.weight.detach().abs() + eps, alpha * lin.bias.detach().abs() + eps
    sign = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert torch.equal(u_w, sign.view(2, 1) * r_w)
    assert torch.equal(u_b, sign * r_b)


def test_sharpness_search_matches_the_closed_form_worst_accuracy() -> None:
    lin, x, y = _linear_case()
    W, b = lin.weight.detach(), lin.bias.detach()
    eps = 1e-3
    m0 = x @ (W[0] - W[1]) + (b[0] - b[1])
    assert bool((m0 > 0).all())  # acc(w) = 1

    def worst_displacement(alpha: float) -> float:
        rw, rb = alpha * W.abs() + eps, alpha * b.abs() + eps
        margin = m0 - x @ (rw[0] + rw[1]) - (rb[0] + rb[1])
        return 1.0 - float((margin > 0).double().mean())

    lo, hi = 0.0, 2.0
    for _ in range(15):
        t = (lo + hi) / 2
        disp = worst_displacement(t)
        if abs(disp - D) < TOL:
            break
        lo, hi = (lo, t) if disp > D else (t, hi)
    alpha = sharpness_mag_alpha(lin, x, y, seed=5)
    assert alpha == t
    assert sharpness_mag_flatness(lin, x, y, seed=5) == 1 / t ** 2


# ----------------------------------------------------------------------- path norm


def _enumerated_path_norm(model: nn.Sequential) -> float:
    """Sum over every path (an input unit or a bias unit of some layer, then one unit per
    later layer, to an output) of the product of the squared weights along it."""
    layers = [m for m in model if isinstance(m, nn.Linear)]
    Ws = [m.weight.detach().double() for m in layers]
    bs = [m.bias.detach().double() for m in layers]
    total = 0.0
    for start in range(len(layers)):  # paths entering at layer `start`
        sizes = [W.shape[0] for W in Ws[start:]]
        sources = [("x", i) for i in range(Ws[0].shape[1])] if start == 0 else []
        sources.append(("b", None))
        for kind, i in sources:
            for units in itertools.product(*[range(s) for s in sizes]):
                first = units[0]
                v = float(Ws[0][first, i]) ** 2 if kind == "x" else float(bs[start][first]) ** 2
                for li, (a, c) in enumerate(zip(units[:-1], units[1:], strict=True)):
                    v *= float(Ws[start + li + 1][c, a]) ** 2
                total += v
    return total


def test_path_norm_is_the_sum_over_paths_of_squared_weights() -> None:
    model = mlp(3, 2, width=4, depth=2, sigma_b=0.5, seed=0).double()
    want = _enumerated_path_norm(model)
    assert path_norm(model, (3,)) == pytest.approx(want, rel=1e-12)
    assert path_norm(model.float(), (3,)) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------- BatchNorm folding


def test_fold_batchnorm_keeps_the_outputs_of_a_resnet() -> None:
    model = resnet((3, 8, 8), 4, depth=8, width=4, shortcut="B", seed=0).double()
    _randomize_bn(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    folded = fold_batchnorm(model, example=x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


# ----------------------------------------------------------------------- over-margin columns


def _gamma(model: nn.Module, ds: DataSet) -> float:
    with torch.no_grad():
        z = model(ds.x.to(next(model.parameters()).dtype)).double().numpy()
    y = ds.y.numpy()
    true = z[np.arange(len(y)), y]
    z[np.arange(len(y)), y] = -np.inf
    return float(np.percentile(true - z.max(axis=1), 10))


def _log_norms(mats: list[np.ndarray]) -> tuple[float, float]:
    fro = sum(math.log(float((m ** 2).sum())) for m in mats)
    spec = sum(math.log(float(np.linalg.svd(m, compute_uv=False)[0]) ** 2) for m in mats)
    return fro, spec


def test_over_margin_columns_match_the_formulas() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    model = mlp(3, 2, width=4, depth=2, sigma_b=0.5, seed=0).double()
    with torch.no_grad():  # the network's own labels: every margin is positive
        y = model(x).argmax(dim=1)
    ds = _dataset(x, y, 2)
    data = MetricData(train=ds, test=ds, config={"seed": 0})
    g = _gamma(model, ds)
    vals, _ = measure(model, data, ["path_norm", "over_margin"])
    fro, spec = _log_norms([m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)])
    assert g > 0
    assert vals["path_norm_over_margin"] == pytest.approx(
        _enumerated_path_norm(model) / g ** 2, rel=1e-10)
    assert vals["log_prod_fro_over_margin"] == pytest.approx(fro - 2 * math.log(g), rel=1e-10)
    assert vals["log_prod_spec_over_margin"] == pytest.approx(spec - 2 * math.log(g), rel=1e-10)
    # random labels: the 10th percentile of the margin is negative and every column is NaN
    ds_bad = _dataset(x, torch.randint(0, 2, (200,), generator=gen), 2)
    assert _gamma(model, ds_bad) <= 0
    bad, _ = measure(model, MetricData(train=ds_bad, test=ds_bad), ["path_norm", "over_margin"])
    assert math.isfinite(bad["path_norm"])
    for k in ("path_norm_over_margin", "log_prod_fro_over_margin", "log_prod_spec_over_margin"):
        assert math.isnan(bad[k])


def _conv_bn_net(k: int, seed: int) -> nn.Sequential:
    """Conv(1 -> 3, 3x3) -> BatchNorm (random statistics) -> ReLU -> Linear on 4x4 inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 16, k)).double()
    _randomize_bn(model, seed + 2)
    return model


def test_over_margin_folds_batchnorm_into_the_conv() -> None:
    model = _conv_bn_net(2, 0).eval()
    x = torch.randn(100, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[:3] = 1 - y[:3]
    ds = _dataset(x, y, 2)
    g = _gamma(model, ds)
    conv, bn, lin = model[0], model[1], model[4]
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    w_conv = (conv.weight.detach() * s.view(-1, 1, 1, 1)).reshape(3, -1).numpy()
    fro, spec = _log_norms([w_conv, lin.weight.detach().numpy()])
    vals, _ = measure(model, MetricData(train=ds, test=ds), ["over_margin"])
    assert g > 0
    assert vals["log_prod_fro_over_margin"] == pytest.approx(fro - 2 * math.log(g), rel=1e-10)
    assert vals["log_prod_spec_over_margin"] == pytest.approx(spec - 2 * math.log(g), rel=1e-10)


# ----------------------------------------------------------------------- the model is unchanged


def test_the_users_model_is_unchanged() -> None:
    model = _conv_bn_net(3, 1).train()
    model[4].bias.requires_grad_(False)
    x = torch.randn(60, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (60,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    pacbayes_mag_sigma(model, x, y, seed=0)
    sharpness_mag_alpha(model, x, y, seed=0)
    sharpness_ascent(model, x, y, 0.5, seed=0)
    path_norm(model, (1, 4, 4))
    REGISTRY["over_margin"](model, MetricData(train=_dataset(x, y, 3), test=_dataset(x, y, 3)))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert model[4].bias.requires_grad is False and model[4].weight.requires_grad is True
    assert torch.equal(torch.get_rng_state(), rng)


class _BnBeforeConv(nn.Module):
    """Registers conv then bn but runs bn first: a fold by registration order is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.bn(x)))


def test_bad_inputs_give_one_clear_value_error() -> None:
    x, y = torch.randn(20, 2, 4, 4), torch.randint(0, 2, (20,))
    no_stats = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1),
                             nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                             nn.Linear(32, 2))
    with pytest.raises(ValueError, match="running statistics"):
        pacbayes_mag_sigma(no_stats, x, y, seed=0)
    first = nn.Sequential(nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2))
    with pytest.raises(ValueError, match="does not follow"):
        path_norm(first, (2, 4, 4))
    odd = _BnBeforeConv()
    _randomize_bn(odd, 4)
    with pytest.raises(ValueError, match="changes its outputs"):
        sharpness_mag_alpha(odd, x, y, seed=0)
    cnn = small_cnn((2, 4, 4), 2, channels=(3,), seed=0)
    with pytest.raises(ValueError, match="d "):
        pacbayes_mag_sigma(cnn, x, y, seed=0, d=1.5)
    with pytest.raises(ValueError, match="same n"):
        sharpness_mag_alpha(cnn, x, y[:5], seed=0)
    with pytest.raises(TypeError, match="seed"):
        pacbayes_mag_sigma(cnn, x, y, seed=0.5)
    with pytest.raises(ValueError, match="input_shape"):
        path_norm(cnn, (2, 0, 4))
    with pytest.raises(ValueError, match="no parameters"):
        path_norm(nn.Flatten(), (2, 4, 4))


# ----------------------------------------------------------------------- through the zoo


def test_metrics_run_through_a_tiny_zoo(tmp_path) -> None:
    from jacspec.zoo.run.store import load_results
    from jacspec.zoo.run.sweep import run_sweep

    base = {"dataset": "digits", "n_train": 120, "n_test": 60, "width": 4, "max_steps": 30,
            "batch_size": 32, "seed": 1,
            "metrics": ["accuracy", "margin", "flatness", "path_norm", "over_margin"]}
    configs = [{**base, "model": "mlp", "depth": 1, "width": 16},
               {**base, "model": "resnet", "depth": 8}]
    store = tmp_path / "zoo.sqlite"
    summary = run_sweep(configs, store, workers=1, group=2, threads=1, progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    df = load_results(store)
    cols = ["pacbayes_mag_flatness", "sharpness_mag_flatness", "path_norm",
            "path_norm_over_margin", "log_prod_fro_over_margin", "log_prod_spec_over_margin"]
    for col in cols:
        assert col in df.columns
    for _, row in df.iterrows():
        assert all(math.isfinite(float(row[c])) for c in cols[:3])
        if row["train_margin_p10"] > 0:
            assert all(math.isfinite(float(row[c])) for c in cols[3:])
