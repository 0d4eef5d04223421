"""``jacspec zoo`` through the CLI as a user meets it: typos in a sweep file, runs that fail,
and the checkpoints a zoo writes read back by ``jacspec analyze``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jacspec.cli.main import main
from jacspec.data.datasets import load_dataset
from jacspec.zoo.run.store import Store

FAST = 'metrics = ["accuracy", "baselines"]\n'


def _sweep(folder: Path, fixed: str, grid: str = "") -> Path:
    path = folder / "sweep.toml"
    path.write_text(f"[sweep]\ngroup = 1\n[fixed]\n{fixed}" + (f"[grid]\n{grid}" if grid else ""))
    return path


@pytest.mark.parametrize(
    "fixed,grid,key,accepted",
    [
        ('dataset = "digits"\nwidht = 16\n', "", "widht", "did you mean 'width'"),
        ('dataset = "digits"\n', 'activation = ["relu", "rleu"]\n', "activation",
         "relu, relu6, tanh"),
        ('dataset = "digits"\noptimizer = "adamw"\n', "", "optimizer", "sgd, momentum, adam"),
        ('dataset = "digits"\nwidth = "32"\n', "", "width", "an integer >= 1"),
        ('dataset = "digits"\nlr = -0.1\n', "", "lr", "a number > 0"),
        ('dataset = "digits"\naugment = 1\n', "", "augment", "true or false"),
        ('dataset = "digitz"\n', "", "dataset", "digits, mnist1d"),
        ('dataset = "digits"\nmetrics = ["accuracy", "acuracy"]\n', "", "metrics", "acuracy"),
    ],
)
def test_a_typo_in_the_sweep_file_stops_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fixed: str, grid: str, key: str,
        accepted: str) -> None:
    cfg = _sweep(tmp_path, fixed + ("" if "metrics" in fixed else FAST), grid)
    store = tmp_path / "zoo.sqlite"
    rc = main(["zoo", "run", str(cfg), "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert key in err and accepted in err, err
    assert "nothing was run" in err
    assert not store.exists()  # nothing launched, not even the store


def test_unknown_key_in_the_sweep_table_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[sweep]\ngrup = 2\n[fixed]\ndataset = "digits"\n')
    assert main(["zoo", "run", str(cfg), "--store", str(tmp_path / "z.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "grup" in err and "group" in err


@pytest.fixture
def flat_npz(tmp_path: Path) -> Path:
    """A user's .npz of flat features: an MLP trains on it, a CNN cannot."""
    rng = np.random.default_rng(0)
    path = tmp_path / "flat.npz"
    np.savez(path, x_train=rng.normal(size=(60, 12)).astype(np.float32),
             y_train=rng.integers(0, 3, 60), x_test=rng.normal(size=(30, 12)).astype(np.float32),
             y_test=rng.integers(0, 3, 30))
    return path


def test_failed_runs_exit_1_with_the_first_error_and_status_lists_them(
        tmp_path: Path, flat_npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _sweep(tmp_path, f'dataset = "{flat_npz}"\nwidth = 8\ndepth = 1\nmax_steps = 3\n'
                 + FAST, 'model = ["mlp", "cnn"]\n')
    store = tmp_path / "zoo.sqlite"
    argv = ["zoo", "run", str(cfg), "--store", str(store), "--no-progress", "--workers", "1"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 1
    summary = json.loads(out)
    assert (summary["done"], summary["failed"]) == (1, 1)
    (h, reason), = summary["errors"].items()
    assert "image inputs" in reason
    assert "1 of 2 runs failed" in err and "image inputs" in err and h in err

    # the failed run stays failed: rerunning without --retry-failed still exits 1
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["previously_failed"] == 1
    assert "image inputs" in err and "--retry-failed" in err

    assert main(["zoo", "status", str(store)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["failed"] == 1 and status["done"] == 1
    (failure,) = status["failures"]
    assert failure["config_hash"] == h and "image inputs" in failure["error"]
    assert failure["config"]["model"] == "cnn"
    assert main(["zoo", "status", str(store), "--json", str(tmp_path / "st.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("total=2 done=1 failed=1")
    assert lines[1].startswith(f"failed {h}") and "image inputs" in lines[1]


def _mlp_reference(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Softmax Jacobians (n, k, d) of Flatten -> [Linear -> ReLU]* -> Linear written out with
    plain tensor ops from the raw state_dict, differentiated by autograd, in float64."""
    weights = [(state[k].double(), state[k[:-len("weight")] + "bias"].double())
               for k in sorted((k for k in state if k.endswith("weight")),
                               key=lambda k: int(k.split(".")[0]))]

    def f(v: torch.Tensor) -> torch.Tensor:
        h = v.reshape(-1)
        for i, (w, b) in enumerate(weights):
            h = w @ h + b
            if i < len(weights) - 1:
                h = torch.clamp(h, min=0.0)
        return torch.softmax(h, dim=0)

    return torch.stack([torch.autograd.functional.jacobian(f, xi.double()) for xi in x])


def test_a_zoo_checkpoint_is_read_by_jacspec_analyze(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _sweep(tmp_path, 'dataset = "digits"\nn_train = 120\nn_test = 60\ndepth = 1\n'
                 'max_steps = 8\nbatch_size = 32\nsave_checkpoint = true\n' + FAST,
                 "width = [8, 12]\n")
    store = tmp_path / "zoo.sqlite"
    assert main(["zoo", "run", str(cfg), "--store", str(store), "--no-progress",
                 "--workers", "1"]) == 0
    capsys.readouterr()
    with Store(store, readonly=True) as st:
        runs = st.runs()
        h = runs.loc[runs["width"] == 12, "config_hash"].item()
        ckpt = st.checkpoint_path(h)
        zoo_model = st.model(h)
    payload = torch.load(ckpt, weights_only=True)  # weights only: no code is unpickled
    assert payload["format"] == "jacspec-checkpoint" and payload["spec"]["width"] == 12

    out = tmp_path / "a.json"
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "50", "--dtype", "float64",
                 "--no-randomize", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    x = load_dataset("digits", "train", n=50, seed=0).x
    rows = _mlp_reference(payload["state_dict"], x).reshape(len(x), -1)  # J_i as rows (n, kd)
    m_over_n = rows @ rows.T / len(x)  # M = JJ^T (n x n), M_ij = sum_c <grad p_c(x_i), ...>
    assert result["metrics"]["trace"] == pytest.approx(float(torch.trace(m_over_n)), rel=1e-9)
    assert result["metrics"]["lambda_max"] == pytest.approx(
        float(torch.linalg.eigvalsh(m_over_n)[-1]), rel=1e-9)
    ref_ev = torch.linalg.eigvalsh(m_over_n).flip(0).numpy()
    ev = np.asarray(result["eigenvalues"], dtype=np.float64)
    np.testing.assert_allclose(ev[:10], ref_ev[:10], rtol=0, atol=1e-9 * ref_ev[0])
    with torch.no_grad():  # the zoo's own reader gives the same network
        ref = torch.softmax(zoo_model(x.reshape(-1, 1, 8, 8)).double(), 1)
        assert torch.allclose(ref, torch.softmax(zoo_model(x).double(), 1))


def test_older_zoo_checkpoints_are_read_and_migrated(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from jacspec.zoo.run.train import load_data, make_model, resolve_config

    config = {"dataset": "digits", "n_train": 60, "n_test": 30, "width": 6, "depth": 1}
    cfg = resolve_config(config)
    model = make_model(cfg, load_data(cfg)[0])
    with torch.no_grad():
        model[1].weight.mul_(3.0)  # "trained": not the initial weights
    store = tmp_path / "old.sqlite"
    with Store(store) as st:
        (h,) = st.add([config])
        st.mark_running([h])
        import io

        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "config": cfg}, buf)  # the old format
        st.finish(h, {"metrics": {"gap": 0.1}, "checkpoint": buf.getvalue()})
        x = torch.randn(5, 1, 8, 8)
        assert torch.equal(st.model(h)(x), model.eval()(x))
        ckpt = st.checkpoint_path(h)
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "20"]) == 2
    capsys.readouterr()
    assert main(["zoo", "migrate", str(store)]) == 0
    assert "1 checkpoints migrated" in capsys.readouterr().out
    from jacspec.models.builders import load_checkpoint

    loaded, spec = load_checkpoint(ckpt)
    assert spec["width"] == 6 and torch.equal(loaded(x), model(x))
    assert main(["zoo", "migrate", str(store)]) == 0  # idempotent
    assert "0 checkpoints migrated" in capsys.readouterr().out
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "20", "--no-randomize"]) == 0
