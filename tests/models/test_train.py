"""Trainer: stopping rules, determinism, reported numbers against a hand-written evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from jacspec.data.datasets import DataSet, load_dataset
from jacspec.models.builders import mlp
from jacspec.models.train import TrainResult, evaluate, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models train faster on one thread, and do not stall when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> DataSet:
    return load_dataset("digits", n=300, seed=0)


def reference_metrics(model: nn.Module, data: DataSet) -> tuple[float, float]:
    """Accuracy and mean cross-entropy in float64, written out: -log(e^{z_y} / sum_c e^{z_c})."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        z = model(data.x.to(dtype)).double()
    m = z.max(dim=1, keepdim=True).values
    log_norm = (m + (z - m).exp().sum(dim=1, keepdim=True).log()).squeeze(1)
    nll = log_norm - z[torch.arange(len(data)), data.y]
    acc = sum(int(row.argmax()) == int(t) for row, t in zip(z, data.y, strict=True)) / len(data)
    return acc, float(nll.mean())


def test_reaches_full_train_accuracy_with_true_labels(digits: DataSet) -> None:
    model = mlp(64, 10, width=128, depth=2, seed=0)
    res = train(model, digits, seed=0, max_epochs=200)
    assert res.reached == "accuracy" and res.train_accuracy == 1.0
    assert not model.training
    acc, loss = reference_metrics(model, digits)
    assert acc == 1.0
    assert res.train_loss == pytest.approx(loss, rel=1e-4)
    assert res.steps == res.epochs * math.ceil(len(digits) / 128)
    assert res.history[0][0] == 0 and res.history[-1] == (res.epochs, 1.0, res.train_loss)
    assert all(a < 1.0 for _, a, _ in res.history[:-1])  # stops at the first epoch it holds


def test_memorises_random_labels(digits: DataSet) -> None:
    data = digits.subset(150, seed=1).with_random_labels(seed=2)
    model = mlp(64, 10, width=256, depth=2, seed=1)
    res = train(model, data, lr=3e-3, seed=0, max_epochs=400)
    assert res.reached == "accuracy"
    assert reference_metrics(model, data)[0] == 1.0


def test_loss_target_and_budget(digits: DataSet) -> None:
    model = mlp(64, 10, width=64, depth=1, seed=0)
    res = train(model, digits, target_loss=0.05, target_accuracy=None, lr=1e-2, seed=0,
                max_epochs=300)
    assert res.reached == "loss"
    acc, loss = reference_metrics(model, digits)
    assert loss <= 0.05 and res.train_loss == pytest.approx(loss, rel=1e-4)
    assert res.history[-2][2] > 0.05  # the previous epoch had not reached it

    model = mlp(64, 10, width=8, depth=1, seed=0)
    res = train(model, digits, target_loss=0.0, batch_size=64, max_epochs=3, seed=0)
    assert (res.reached, res.epochs, res.steps) == ("budget", 3, 3 * math.ceil(300 / 64))
    assert len(res.history) == 4

    res0 = train(mlp(64, 10, width=8, seed=0), digits, max_epochs=0)
    assert (res0.epochs, res0.steps, res0.reached) == (0, 0, "budget")


def test_both_targets_must_hold(digits: DataSet) -> None:
    model = mlp(64, 10, width=64, depth=1, seed=0)
    res = train(model, digits, target_accuracy=1.0, target_loss=0.02, lr=1e-2, seed=0,
                max_epochs=300)
    assert res.reached == "loss" and res.train_accuracy == 1.0 and res.train_loss <= 0.02


def test_same_seed_same_weights(digits: DataSet) -> None:
    def run(init_seed: int, seed: int) -> nn.Module:
        model = nn.Sequential(*mlp(64, 10, width=32, depth=1, seed=init_seed)[:-1],
                              nn.Dropout(0.2), mlp(64, 10, width=32, seed=init_seed)[-1])
        train(model, digits, seed=seed, max_epochs=3, target_accuracy=None)
        return model

    state = torch.random.get_rng_state()
    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert not a.training


def test_sgd_momentum_and_float64(digits: DataSet) -> None:
    model = mlp(64, 10, width=32, depth=1, seed=0).double()
    res = train(model, digits, optimizer="sgd", lr=0.1, momentum=0.9, max_epochs=5,
                target_accuracy=None, seed=0)
    assert res.history[-1][2] < res.history[0][2]
    assert next(model.parameters()).dtype == torch.float64
    assert res.train_loss == pytest.approx(reference_metrics(model, digits)[1], rel=1e-10)


def test_callback_and_result_dict(digits: DataSet) -> None:
    seen: list[tuple[int, float, float]] = []

    def cb(epoch: int, acc: float, loss: float) -> bool:
        seen.append((epoch, acc, loss))
        return epoch == 2

    res = train(mlp(64, 10, width=16, seed=0), digits, callback=cb, seed=0)
    assert res.reached == "callback" and res.epochs == 2 and seen == list(res.history)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["settings"]["optimizer"] == "adam" and d["epochs"] == 2
    assert list(res.to_frame().columns) == ["epoch", "train_accuracy", "train_loss"]
    with pytest.raises(AttributeError):
        res.epochs = 3  # type: ignore[misc]
    assert isinstance(res, TrainResult)


def test_threads_are_restored(digits: DataSet) -> None:
    before = torch.get_num_threads()
    res = train(mlp(64, 10, width=8, seed=0), digits, max_epochs=0, threads=2)
    assert torch.get_num_threads() == before and res.settings["threads"] == 2
    with pytest.raises(ValueError, match="threads"):
        train(mlp(64, 10, width=8, seed=0), digits, threads=0)


def test_evaluate_chunks_agree(digits: DataSet) -> None:
    model = mlp(64, 10, width=16, seed=3).eval()
    acc, loss = evaluate(model, digits.x, digits.y, batch_size=7)
    ref_acc, ref_loss = reference_metrics(model, digits)
    assert acc == ref_acc and loss == pytest.approx(ref_loss, rel=1e-5)


def test_bad_arguments(digits: DataSet) -> None:
    model = mlp(64, 10, width=8, seed=0)
    with pytest.raises(ValueError, match="optimizer="):
        train(model, digits, optimizer="adagrad")
    with pytest.raises(ValueError, match="lr"):
        train(model, digits, lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, digits, batch_size=0)
    with pytest.raises(ValueError, match="target_accuracy"):
        train(model, digits, target_accuracy=1.5)
    with pytest.raises(ValueError, match="momentum"):
        train(model, digits, momentum=0.9)  # Adam
    with pytest.raises(TypeError, match="DataSet"):
        train(model, (digits.x, digits.y))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="diverged"):
        train(model, digits, optimizer="sgd", lr=1e30, max_epochs=5, target_accuracy=None)


@pytest.mark.parametrize("optimizer,lr,batch_size", [("rmsprop", 1e-3, 64), ("lbfgs", 0.5, None),
                                                     ("lbfgs", 0.5, 100)])
def test_rmsprop_and_lbfgs_reduce_the_loss(digits: DataSet, optimizer: str, lr: float,
                                           batch_size: int | None) -> None:
    model = mlp(64, 10, width=32, depth=1, seed=0).double()
    res = train(model, digits, optimizer=optimizer, lr=lr, batch_size=batch_size, max_epochs=6,
                target_accuracy=None, seed=0)
    per_epoch = 1 if batch_size is None else math.ceil(len(digits) / batch_size)
    assert (res.epochs, res.steps, res.reached) == (6, 6 * per_epoch, "budget")
    acc, loss = reference_metrics(model, digits)
    assert res.train_loss == pytest.approx(loss, rel=1e-10) and res.train_accuracy == acc
    assert loss < 0.8 * res.history[0][2]
    assert res.settings["optimizer"] == optimizer


def test_rmsprop_matches_its_update_rule(digits: DataSet) -> None:
    """One full-batch RMSProp step written out: v = (1 - a) g^2, p -= lr g / (sqrt(v) + eps)."""
    model = mlp(64, 10, width=8, depth=1, seed=0).double()
    ref = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    train(model, digits, optimizer="rmsprop", lr=1e-3, batch_size=None, max_epochs=1,
          target_accuracy=None, seed=0)
    w1, b1, w2, b2 = ref
    z = torch.relu(digits.x.double() @ w1.T + b1) @ w2.T + b2
    logp = z - torch.logsumexp(z, dim=1, keepdim=True)
    grads = torch.autograd.grad(-logp[torch.arange(len(digits)), digits.y].mean(), ref)
    for p, r, g in zip(model.parameters(), ref, grads, strict=True):
        expected = r - 1e-3 * g / ((0.01 * g * g).sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), expected.detach(), rtol=1e-9, atol=1e-12)


def test_max_steps_is_a_budget_in_whole_epochs(digits: DataSet) -> None:
    model = mlp(64, 10, width=8, depth=1, seed=0)
    res = train(model, digits, batch_size=64, max_steps=7, seed=0)  # 5 steps per epoch
    assert (res.reached, res.epochs, res.steps) == ("budget", 2, 10)
    assert len(res.history) == 3 and res.settings["max_steps"] == 7
    res = train(mlp(64, 10, width=8, seed=0), digits, batch_size=64, max_steps=10, max_epochs=1)
    assert (res.reached, res.epochs, res.steps) == ("budget", 1, 5)  # the epoch budget binds
    res = train(mlp(64, 10, width=8, seed=0), digits, batch_size=None, max_steps=3)
    assert (res.reached, res.epochs, res.steps) == ("budget", 3, 3)
    res = train(mlp(64, 10, width=8, seed=0), digits, max_steps=0)
    assert (res.reached, res.epochs, res.steps) == ("budget", 0, 0)


def test_full_batch_is_gradient_descent(digits: DataSet) -> None:
    """batch_size=None: one step per epoch on the whole set, p <- p - lr grad L(p)."""
    model = mlp(64, 10, width=16, depth=1, seed=0).double()
    ref = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    res = train(model, digits, optimizer="sgd", lr=0.5, batch_size=None, max_epochs=3,
                target_accuracy=None, seed=0)
    assert (res.epochs, res.steps) == (3, 3) and res.settings["batch_size"] is None
    for _ in range(3):
        w1, b1, w2, b2 = ref
        z = torch.relu(digits.x.double() @ w1.T + b1) @ w2.T + b2
        logp = z - torch.logsumexp(z, dim=1, keepdim=True)
        grads = torch.autograd.grad(-logp[torch.arange(len(digits)), digits.y].mean(), ref)
        ref = [(r - 0.5 * g).detach().requires_grad_(True) for r, g in zip(ref, grads,
                                                                              strict=True)]
    for p, r in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-10, atol=1e-12)
    same = mlp(64, 10, width=16, depth=1, seed=0).double()
    train(same, digits, optimizer="sgd", lr=0.5, batch_size=len(digits), max_epochs=3,
          target_accuracy=None, seed=0)
    for p, q in zip(model.parameters(), same.parameters(), strict=True):
        assert torch.equal(p, q)


def test_augment_is_applied_to_each_minibatch(digits: DataSet) -> None:
    """Reference loop written out: permutation and augmentation noise from one generator
    seeded with ``seed``, then plain SGD steps on the augmented batches."""
    def noise(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return xb + 0.5 * torch.randn(xb.shape, generator=gen, dtype=xb.dtype)

    model = mlp(64, 10, width=16, depth=1, seed=0).double()
    ref = [p.detach().clone() for p in model.parameters()]
    res = train(model, digits, optimizer="sgd", lr=0.1, batch_size=64, max_epochs=2,
                target_accuracy=None, augment=noise, seed=5)
    assert res.settings["augment"] == "noise" and res.steps == 10
    gen = torch.Generator().manual_seed(5)
    x, y = digits.x.double(), digits.y
    for _ in range(2):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            xb = x[idx] + 0.5 * torch.randn(x[idx].shape, generator=gen, dtype=torch.float64)
            params = [r.requires_grad_(True) for r in ref]
            w1, b1, w2, b2 = params
            z = torch.relu(xb @ w1.T + b1) @ w2.T + b2
            logp = z - torch.logsumexp(z, dim=1, keepdim=True)
            grads = torch.autograd.grad(-logp[torch.arange(len(idx)), y[idx]].mean(), params)
            ref = [(r - 0.1 * g).detach() for r, g in zip(params, grads, strict=True)]
    for p, r in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-10, atol=1e-12)

    # Zero inputs: the first layer's weights get no gradient, so Adam leaves them exactly as
    # they were (without augmentation they move), while the read-out bias moves.
    model = mlp(64, 10, width=16, depth=1, seed=0)
    w_before, b_before = model[1].weight.detach().clone(), model[-1].bias.detach().clone()
    train(model, digits, max_epochs=2, target_accuracy=None,
          augment=lambda xb, gen: torch.zeros_like(xb))
    assert torch.equal(model[1].weight, w_before) and not torch.equal(model[-1].bias, b_before)
    train(model, digits, max_epochs=1, target_accuracy=None)
    assert not torch.equal(model[1].weight, w_before)


def test_bad_new_arguments(digits: DataSet) -> None:
    model = mlp(64, 10, width=8, seed=0)
    with pytest.raises(ValueError, match="max_steps"):
        train(model, digits, max_steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, digits, batch_size="full")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="augment"):
        train(model, digits, augment=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="momentum"):
        train(model, digits, optimizer="lbfgs", momentum=0.9)
    with pytest.raises(ValueError, match="weight_decay"):
        train(model, digits, optimizer="lbfgs", weight_decay=1e-4)
