"""Zoo training from configurations and the metric registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacspec.models.train import train
from jacspec.zoo.run.metrics import REGISTRY, MetricData, measure, register
from jacspec.zoo.run.train import (
    augment_batch,
    fit,
    load_data,
    make_model,
    resolve_config,
    run_job,
)

BASE = {"dataset": "digits", "n_train": 120, "n_test": 90, "width": 32, "depth": 1,
        "max_steps": 60, "batch_size": 32, "seed": 0}


def test_augment_is_a_zero_filled_shift_or_flip() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 6, 6, dtype=torch.float64)
    out = augment_batch(x, shift=1, flip=True, generator=gen)
    for i in range(16):
        candidates = []
        for img in (x[i, 0], x[i, 0].flip(-1)):
            padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
            candidates += [padded[dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i, 0], c) for c in candidates)
    seq = torch.randn(8, 1, 10)
    out1 = augment_batch(seq, shift=2, flip=False, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        padded = torch.nn.functional.pad(seq[i, 0], (2, 2))
        assert any(torch.equal(out1[i, 0], padded[o:o + 10]) for o in range(5))
    with pytest.raises(ValueError):
        augment_batch(torch.randn(4, 10), shift=1, flip=False, generator=gen)


def test_fit_reuses_jacspec_train_for_adam() -> None:
    cfg = resolve_config({**BASE, "target_loss": None})
    data, _ = load_data(cfg)
    m1, m2 = make_model(cfg, data), make_model(cfg, data)
    r1 = fit(m1, data, cfg)
    r2 = train(m2, data, optimizer="adam", lr=cfg["lr"], batch_size=32, max_epochs=r1.epochs,
               target_accuracy=1.0, seed=0)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert r1.reached in ("accuracy", "budget") and r1.steps == r2.steps


def test_fit_augmented_rmsprop_is_jacspec_train_with_augment_batch() -> None:
    cfg = resolve_config({**BASE, "optimizer": "rmsprop", "augment": True, "flip": True,
                          "shift": 2, "target_loss": None, "max_steps": 20})
    data, _ = load_data(cfg)
    m1, m2 = make_model(cfg, data), make_model(cfg, data)
    r1 = fit(m1, data, cfg)

    def aug(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment_batch(x, shift=2, flip=True, generator=gen)

    r2 = train(m2, data, optimizer="rmsprop", lr=cfg["lr"], batch_size=32, max_steps=20,
               target_accuracy=1.0, augment=aug, seed=0)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (r1.epochs, r1.steps) == (r2.epochs, r2.steps) == (5, 20)
    assert r1.settings["augment"] is True and r1.settings["shift"] == 2


@pytest.mark.parametrize("optimizer,lr,batch", [("rmsprop", 1e-3, 32), ("lbfgs", 0.5, "full"),
                                                ("momentum", 0.05, "full")])
def test_other_optimizers_train(optimizer: str, lr: float, batch) -> None:
    cfg = resolve_config({**BASE, "optimizer": optimizer, "lr": lr, "batch_size": batch,
                          "augment": optimizer == "rmsprop", "max_steps": 40})
    data, _ = load_data(cfg)
    model = make_model(cfg, data)
    res = fit(model, data, cfg)
    assert res.reached in ("accuracy", "loss", "budget")
    assert res.history[-1][2] < res.history[0][2]  # the loss went down
    if batch == "full":
        assert res.steps == res.epochs


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown configuration keys"):
        resolve_config({"widht": 3})
    with pytest.raises(ValueError, match="optimizer"):
        resolve_config({"optimizer": "adagrad"})
    with pytest.raises(ValueError, match="batch_size"):
        resolve_config({"batch_size": 0})
    cfg = resolve_config({"dataset": "mnist1d", "model": "cnn", "n_train": 50, "n_test": 50})
    data, _ = load_data(cfg)
    with pytest.raises(ValueError, match="image inputs"):
        make_model(cfg, data)


def test_margin_by_hand() -> None:
    """Output margin f_y - max_{j != y} f_j of the logits, one example at a time."""
    cfg = resolve_config(BASE)
    tr, te = load_data(cfg)
    model = make_model(cfg, tr).double()
    values, _ = measure(model, MetricData(train=tr, test=te, config=cfg), ["margin"])
    with torch.no_grad():
        logits = model(tr.x.double()).numpy()
    gammas = []
    for row, label in zip(logits, tr.y.tolist(), strict=True):
        others = [v for j, v in enumerate(row) if j != label]
        gammas.append(row[label] - max(others))
    p10 = float(np.percentile(gammas, 10))
    assert values["train_margin_p10"] == pytest.approx(p10, rel=1e-12)
    assert values["train_margin_median"] == pytest.approx(float(np.median(gammas)), rel=1e-12)
    expected = 1 / p10 if p10 > 0 else None
    if expected is None:
        assert math.isnan(values["inverse_margin"])
    else:
        assert values["inverse_margin"] == pytest.approx(expected)


def test_metrics_by_hand_and_registry() -> None:
    cfg = resolve_config(BASE)
    tr, te = load_data(cfg)
    model = make_model(cfg, tr).double()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[1].weight.add_(0.5)
    data = MetricData(train=tr, test=te, init_state=init, config=cfg)
    values, arrays = measure(model, data, ["accuracy", "baselines"])
    with torch.no_grad():
        pred = model(te.x.double()).argmax(1)
        ptr = model(tr.x.double()).argmax(1)
    test_acc = float((pred == te.y).double().mean())
    assert values["test_accuracy"] == pytest.approx(test_acc)
    assert values["gap"] == pytest.approx(float((ptr == tr.y).double().mean()) - test_acc)
    assert values["dist_init"] == pytest.approx(0.5 * math.sqrt(model[1].weight.numel()))
    assert values["num_params"] == sum(p.numel() for p in model.parameters())
    wsum = sum(float(torch.linalg.norm(p.detach())) for p in model.parameters() if p.ndim == 2)
    assert values["weight_norm_sum"] == pytest.approx(wsum)
    mats = [p.detach().numpy() for p in model.parameters() if p.ndim == 2]
    assert values["log_prod_fro"] == pytest.approx(sum(np.log(np.linalg.norm(w)) for w in mats))
    assert values["log_prod_spec"] == pytest.approx(
        sum(np.log(np.linalg.svd(w, compute_uv=False)[0]) for w in mats))
    assert arrays == {}

    @register("_needs_missing")
    def _missing(model, data):
        import jacspec_package_that_does_not_exist  # noqa: F401

        return {}

    try:
        out, _ = measure(model, data, ["_needs_missing", "baselines"])
        assert "num_params" in out
    finally:
        REGISTRY.pop("_needs_missing")
    with pytest.raises(ValueError, match="unknown metrics"):
        measure(model, data, ["nope"])


def test_run_job_curves_and_arrays() -> None:
    pytest.importorskip("jacspec.spectra.exact")
    out = run_job({**BASE, "checkpoints": 3, "metrics": ["accuracy", "jacobian_esd"],
                   "curve_metrics": ["accuracy"], "n_esd": 40})
    m = out["metrics"]
    assert m["reached"] in ("accuracy", "loss", "budget")
    assert m["converged"] == (m["reached"] != "budget")
    steps = [c["step"] for c in out["curves"]]
    assert steps[:2] == [0, 1] and steps[-1] == m["epochs"] and steps == sorted(set(steps))
    esd = out["arrays"]["esd_test"]
    assert esd.ndim == 1 and np.all(np.diff(esd) <= 1e-12)
    assert m["jac_test_trace"] == pytest.approx(float(esd.sum()), rel=1e-6)


def test_weightwatcher_metrics_when_installed() -> None:
    pytest.importorskip("weightwatcher")
    cfg = resolve_config({**BASE, "width": 64, "depth": 2})
    tr, te = load_data(cfg)
    model = make_model(cfg, tr)
    values, _ = measure(model, MetricData(train=tr, test=te, config=cfg), ["weightwatcher"])
    assert set(values) == {"ww_alpha", "ww_alpha_weighted", "ww_log_norm"}
    assert all(math.isfinite(v) for v in values.values())


BAD_VALUES = {
    "dataset": "digitz", "n_train": -1, "n_test": 2.5, "data_seed": "0", "random_labels": 1,
    "model": "vit", "width": 0, "depth": -1, "activation": "gelu", "init_scale": 0.0,
    "optimizer": "adamw", "lr": "1e-3", "batch_size": 0, "augment": "yes", "flip": None,
    "shift": -2, "max_epochs": 0, "max_steps": 0, "target_accuracy": 1.5, "target_loss": -1.0,
    "seed": 1.0, "metrics": ["acuracy"], "curve_metrics": "accuracy", "checkpoints": -1,
    "save_checkpoint": "true", "n_jacobian": 0, "n_esd": True, "weight_decay": -1e-4,
    "dropout": 1.0,
}


def test_validate_config_checks_every_key_and_value() -> None:
    from jacspec.zoo.run.train import CHECKS, DEFAULTS, validate_config

    assert set(CHECKS) == set(DEFAULTS) == set(BAD_VALUES)
    assert validate_config({}) == DEFAULTS  # the defaults pass their own checks
    for key, bad in BAD_VALUES.items():
        with pytest.raises(ValueError, match=f"configuration key {key}=") as info:
            validate_config({key: bad})
        assert "expected" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="did you mean 'activation'"):
        validate_config({"activaton": "relu"})
    with pytest.raises(ValueError, match="depth"):
        validate_config({"model": "cnn", "depth": 0})
    with pytest.raises(TypeError, match="table"):
        validate_config([("width", 3)])  # type: ignore[arg-type]
    assert validate_config({"batch_size": "full", "max_steps": None, "lr": 1})["lr"] == 1


def test_run_sweep_validates_before_opening_the_store(tmp_path) -> None:
    from jacspec.zoo.run.sweep import run_sweep

    store = tmp_path / "z.sqlite"
    with pytest.raises(ValueError, match=r"configuration 2 of 2: .*activation='rleu'"):
        run_sweep([{**BASE}, {**BASE, "activation": "rleu"}], store, progress=False)
    assert not store.exists()


def test_jacobian_esd_metric_against_autograd_reference() -> None:
    """The zoo's ESD is eigvalsh(J J^T / n) of float64 softmax Jacobians (autograd, one example
    at a time), and its columns include the MP fit and the randomized null."""
    cfg = resolve_config({**BASE, "width": 24, "depth": 1, "n_esd": 12})
    tr, te = load_data(cfg)
    model = make_model(cfg, tr)
    values, arrays = measure(model, MetricData(train=tr, test=te, config=cfg), ["jacobian_esd"])
    x = tr.subset(12, seed=0).x.double()
    m64 = make_model(cfg, tr).double()
    rows = [torch.autograd.functional.jacobian(
        lambda z: torch.softmax(m64(z[None]), dim=1)[0], xi).reshape(tr.num_classes, -1)
        for xi in x]
    jmat = torch.stack(rows).reshape(len(rows), -1)
    ref = np.sort(np.linalg.eigvalsh((jmat @ jmat.T).numpy() / len(rows)))[::-1]
    got = np.sort(arrays["esd_train"])[::-1]
    np.testing.assert_allclose(got[: ref.size], ref, rtol=1e-8, atol=1e-14 * ref[0])
    assert values["jac_train_lambda_max"] == pytest.approx(ref[0], rel=1e-8)
    for col in ("num_spikes", "mp_softrank", "rand_distance", "num_traps", "alpha"):
        assert f"jac_train_{col}" in values and f"jac_test_{col}" in values
