"""The tracker in a plain PyTorch training loop: the tracked metrics are a fresh analyze of each
step's weights, and the run's weights, optimizer state and random states are bitwise those of
the same run without the tracker. The store survives a crash; the CLI runs over checkpoints."""

from __future__ import annotations

import copy
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
import jacspec.analysis
from jacspec.cli.main import main
from jacspec.track.checkpoints import checkpoint_step, find_checkpoints
from jacspec.track.lightning import TrackerCallbackMixin, lightning_callback_base

STEPS = 30
EVERY = 10
PROBE = 48


@pytest.fixture(scope="module")
def digits():
    ds = jacspec.load_dataset("digits")
    return ds.x.double(), ds.y


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(64, 24), nn.Tanh(), nn.Dropout(0.25), nn.Linear(24, 10)
    ).double()


def _train(digits, tracker=None, snapshots=None, check=None):
    """SGD with momentum, Dropout in training mode, batches drawn with torch's RNG, input
    noise from numpy's and a batch size from Python's: every global RNG feeds the run."""
    x, y = digits
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = _model()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, STEPS + 1):
        b = random.choice([16, 24, 32])
        idx = torch.randperm(x.shape[0])[:b]
        xb = x[idx] + 0.01 * torch.from_numpy(np.random.standard_normal((b, 64)))
        loss = nn.functional.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if tracker is not None:
            before = _model_state(model)
            if step % tracker.every == 0 and snapshots is not None:
                snapshots[step] = copy.deepcopy(model)
            row = tracker.step(model, step)
            assert (row is None) == (step % tracker.every != 0)
            after = _model_state(model)
            if check is not None:
                check(before, after)
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    return model, opt, rng


def _model_state(model):
    return {
        "training": [m.training for m in model.modules()],
        "grads": [(p.grad, p.grad.clone()) for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
    }


def _same_state(before, after):
    assert before["training"] == after["training"]
    assert all(m for m in before["training"])  # the model stays in training mode
    for (g0, v0), (g1, _) in zip(before["grads"], after["grads"], strict=True):
        assert g1 is g0 and torch.equal(g1, v0)
    assert before["requires_grad"] == after["requires_grad"]
    assert torch.equal(before["rng"][0], after["rng"][0])
    assert np.array_equal(before["rng"][1], after["rng"][1])
    assert before["rng"][2] == after["rng"][2]


@pytest.fixture(scope="module")
def tracked_run(digits, tmp_path_factory):
    store = tmp_path_factory.mktemp("track") / "run.jsonl"
    tracker = jacspec.Tracker(
        digits, ("rank", "trace", "lambda_max", "stable_rank", "entropy", "alpha",
                 "jacobian_norm"),
        every=EVERY, n=PROBE, seed=3, store=store,
    )
    snapshots: dict[int, nn.Module] = {}
    model, opt, rng = _train(digits, tracker, snapshots, check=_same_state)
    return tracker, snapshots, model, opt, rng, store


def test_tracked_metrics_equal_a_fresh_analyze_of_each_step(tracked_run, digits):
    tracker, snapshots, *_ = tracked_run
    assert tracker.steps == [10, 20, 30] == sorted(snapshots)
    # The probe is the seeded draw of load_dataset(..., n=, seed=), kept in the data's order.
    x, y = digits
    idx = np.sort(np.random.default_rng([3, 0x5B5E7]).choice(x.shape[0], PROBE, replace=False))
    assert torch.equal(tracker.probe[0], x[idx]) and torch.equal(tracker.probe[1], y[idx])
    frame = tracker.frame().set_index("step")
    for step, snap in snapshots.items():
        snap.eval()
        fresh = jacspec.analyze(snap, (x[idx], y[idx]), randomize=False).table.loc[
            "input->output"]
        norm = float(jacspec.jacobian_norms(snap, x[idx]).double().mean())
        # The reference norm, re-expressed: ||J||_F of the softmax Jacobian by autograd.
        by_hand = np.mean([
            torch.autograd.functional.jacobian(
                lambda v, f=snap: torch.softmax(f(v[None]), dim=1)[0], x[i]).norm().item()
            for i in idx
        ])
        row = frame.loc[step]
        for m in ("rank", "trace", "lambda_max", "stable_rank", "entropy", "alpha"):
            assert row[m] == pytest.approx(fresh[m], rel=1e-12, abs=0), m
        assert row["jacobian_norm"] == pytest.approx(norm, rel=1e-12)
        assert row["jacobian_norm"] == pytest.approx(by_hand, rel=1e-10)
    assert frame["lambda_max"].nunique() == 3  # the network moved between tracked steps


def test_run_with_tracker_is_bitwise_the_run_without(tracked_run, digits):
    _, _, model, opt, rng = tracked_run[:5]
    ref_model, ref_opt, ref_rng = _train(digits)
    for key, value in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    ref_state, state = ref_opt.state_dict(), opt.state_dict()
    assert ref_state["param_groups"] == state["param_groups"]
    for i, s in ref_state["state"].items():
        assert torch.equal(state["state"][i]["momentum_buffer"], s["momentum_buffer"])
    assert torch.equal(rng[0], ref_rng[0])
    assert np.array_equal(rng[1][1], ref_rng[1][1])
    assert rng[2] == ref_rng[2]


def test_store_holds_every_row_and_loads_back(tracked_run):
    tracker, *_, store = tracked_run
    lines = Path(store).read_text().splitlines()
    assert json.loads(lines[0])["format"] == "jacspec-track"
    assert [json.loads(line)["step"] for line in lines[1:]] == [10, 20, 30]
    loaded = jacspec.Tracker.load(store)
    assert loaded.steps == tracker.steps
    assert loaded.frame().drop(columns="warning").equals(tracker.frame().drop(columns="warning"))
    with pytest.raises(ValueError, match="no probe data"):
        loaded.step(nn.Linear(64, 10), 40)
    json.dumps(tracker.to_dict(), allow_nan=False)
    summary = tracker.summary()
    assert summary["tracked_steps"] == 3 and summary["last_step"] == 30
    assert summary["metrics"]["alpha"]["last"] == tracker.frame()["alpha"].iloc[-1]


def test_store_survives_a_crash_and_resumes(digits, tmp_path):
    x, y = digits
    model = _model().eval()
    path = tmp_path / "crash.jsonl"
    kwargs = dict(every=5, n=32, seed=1, store=path, metrics=("lambda_max", "alpha"))
    tracker = jacspec.Tracker((x, y), **kwargs)
    rows = [tracker.step(model, s) for s in (0, 5, 10)]
    full = path.read_bytes()
    path.write_bytes(full[:-20])  # the crash cut the last row's line
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert jacspec.Tracker.load(path).steps == [0, 5]
    assert path.read_bytes() == full[:-20]  # loading never writes
    with pytest.warns(UserWarning, match="incomplete last line"):
        resumed = jacspec.Tracker((x, y), **kwargs)
    assert resumed.steps == [0, 5]
    assert resumed.frame()["lambda_max"].tolist() == [r["lambda_max"] for r in rows[:2]]
    again = resumed.step(model, 10)
    assert again["lambda_max"] == rows[2]["lambda_max"]
    resumed.step(model, 15)
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no damaged line left behind
    assert jacspec.Tracker.load(path).steps == [0, 5, 10, 15]
    # A recomputed step supersedes the earlier row (a run resumed from a checkpoint).
    moved = _model().eval()
    with torch.no_grad():
        moved[0].weight.mul_(2)
    resumed.step(moved, 5)
    reloaded = jacspec.Tracker.load(path)
    assert reloaded.steps == [0, 5, 10, 15]
    assert reloaded.frame().set_index("step").loc[5, "lambda_max"] != rows[1]["lambda_max"]
    # Other probe data cannot continue the store.
    with pytest.raises(ValueError, match="probe"):
        jacspec.Tracker((x, y), **{**kwargs, "n": 16})


def test_cut_header_starts_afresh(digits, tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b'{"format": "jacspec-tr')
    with pytest.warns(UserWarning, match="incomplete"):
        tracker = jacspec.Tracker(digits[0], ("trace",), every=1, n=8, store=path)
    tracker.step(_model().eval(), 0)
    assert jacspec.Tracker.load(path).steps == [0]


def test_damaged_middle_line_is_refused(digits, tmp_path):
    path = tmp_path / "bad.jsonl"
    tracker = jacspec.Tracker(digits[0], ("trace",), every=1, n=8, store=path)
    tracker.step(_model().eval(), 0)
    tracker.step(_model().eval(), 1)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        jacspec.Tracker.load(path)


def test_batchnorm_buffers_and_copy_mode(digits):
    x, y = digits
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 10)).double()
    model.train()
    model(x[:50])  # running statistics away from their initial values
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    flip = jacspec.Tracker((x, y), ("lambda_max", "jacobian_norm"), every=1, n=24)
    copied = jacspec.Tracker((x, y), ("lambda_max", "jacobian_norm"), every=1, n=24, copy=True)
    a, b = flip.step(model, 0), copied.step(model, 0)
    assert model.training and model[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert a["lambda_max"] == b["lambda_max"] and a["jacobian_norm"] == b["jacobian_norm"]
    ref = jacspec.analyze(copy.deepcopy(model).eval(), flip.probe, randomize=False)
    assert a["lambda_max"] == pytest.approx(ref.table.loc["input->output", "lambda_max"],
                                            rel=1e-12)


def test_layer_rows_and_null_metrics(digits):
    x, y = digits
    model = _model().eval()
    tracker = jacspec.Tracker((x, y), ("lambda_max", "rand_distance"), every=2, n=24,
                              layers=["1"])
    row = tracker.step(model, 4)
    ref = jacspec.analyze(model, tracker.probe, layers=["1"], seed=0).table
    assert set(row["layers"]) == {"input->1", "1->output"}
    for label, values in row["layers"].items():
        assert values["lambda_max"] == pytest.approx(ref.loc[label, "lambda_max"], rel=1e-12)
    assert row["rand_distance"] == pytest.approx(ref.loc["input->output", "rand_distance"],
                                                 rel=1e-12)
    lf = tracker.layer_frame()
    assert list(lf["matrix"]) == ["input->1", "1->output"] and (lf["step"] == 4).all()
    assert tracker.step(model, 5) is None
    assert tracker.step(model, 5, force=True)["step"] == 5
    # One home for the tracking figures (jacspec.report.report_figures): the layer panel has
    # one line per matrix, lambda_max on a log axis; an untracked metric is one clear error.
    from jacspec.report.report_figures import tracking_figures

    figures = tracking_figures(tracker)
    assert sorted(figures) == ["track.png", "track_layers.png"]
    layer_ax = figures["track_layers.png"].axes[0]
    assert layer_ax.get_title() == "lambda_max" and len(layer_ax.lines) == 2
    assert layer_ax.get_yscale() == "log"
    with pytest.raises(ValueError, match=r"metrics \['alpha'\] were not tracked"):
        tracker.plot(["alpha"])


def test_any_data_form_gives_the_same_probe(digits):
    x, y = digits
    a = jacspec.Tracker((x, y), ("trace",), n=20, seed=5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100)
    b = jacspec.Tracker(loader, ("trace",), n=20, seed=5)
    c = jacspec.Tracker(iter([(x[:700], y[:700]), (x[700:], y[700:])]), ("trace",), n=20,
                        seed=5)
    for t in (b, c):
        assert torch.equal(t.probe[0], a.probe[0]) and torch.equal(t.probe[1], a.probe[1])
    assert a.settings["probe"]["sha256"] == b.settings["probe"]["sha256"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"metrics": ("lamda_max",)}, ValueError, "did you mean 'lambda_max'"),
        ({"metrics": ()}, ValueError, "metrics is empty"),
        ({"every": 0}, ValueError, "every must be a positive integer"),
        ({"n": 5000}, ValueError, "n=5000 exceeds"),
        ({"randomize": True}, TypeError, "Tracker sets 'randomize'"),
        ({"sied": "dual"}, TypeError, "did you mean 'side'"),
        ({"norm_output": "probs"}, ValueError, "norm_output"),
    ],
)
def test_bad_arguments_are_one_clear_error(digits, kwargs, error, match):
    with pytest.raises(error, match=match):
        jacspec.Tracker(digits, **kwargs)


def test_bad_step_calls(digits):
    tracker = jacspec.Tracker(digits, ("trace",), n=8)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        tracker.step(_model(), -1)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        tracker.step(lambda v: v, 0)


def test_plot_draws_the_four_panels(tracked_run):
    import matplotlib.pyplot as plt

    fig = tracked_run[0].plot()
    assert [ax.get_title() for ax in fig.axes] == ["alpha", "lambda_max", "stable_rank",
                                                  "entropy"]
    assert len(fig.axes[0].lines[0].get_xdata()) == 3
    plt.close(fig)


class _FakeTrainer:
    def __init__(self, step: int, zero: bool = True) -> None:
        self.global_step, self.is_global_zero = step, zero


def test_lightning_callback_logic_without_lightning(digits):
    model = _model().eval()
    tracker = jacspec.Tracker(digits, ("trace",), every=2, n=8)
    cb = TrackerCallbackMixin(tracker)
    for step in (1, 2, 2, 2, 3, 4):  # gradient accumulation repeats global_step 2
        cb.on_train_batch_end(_FakeTrainer(step), model, None, None, 0)
    cb.on_train_batch_end(_FakeTrainer(6, zero=False), model, None, None, 0)
    assert tracker.steps == [2, 4] and cb.last_row["step"] == 4
    with pytest.raises(TypeError, match="jacspec.Tracker"):
        TrackerCallbackMixin(object())


def test_lightning_callback_class():
    if lightning_callback_base() is None:
        import jacspec.track.lightning as mod

        with pytest.raises(ImportError, match="needs PyTorch Lightning"):
            mod.JacspecCallback  # noqa: B018
        pytest.skip("neither lightning nor pytorch_lightning is installed: the Callback "
                    "subclass is not defined (its logic is tested with a fake trainer)")
    from jacspec.track.lightning import JacspecCallback

    assert issubclass(JacspecCallback, lightning_callback_base())


def test_checkpoint_names():
    assert checkpoint_step("step_000100.pt") == 100
    assert checkpoint_step("epoch=2-step=300.pt") == 300
    assert checkpoint_step("ckpt-12.pth") == 12
    assert checkpoint_step("final.pt") is None


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("ckpts")
    spec = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 1,
            "seed": 0}
    model = jacspec.build_model(spec)
    x, y = digits[0].float(), digits[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(13):
        if step in (0, 6, 12, 9):
            jacspec.save_checkpoint(folder / f"step_{step:06d}.pt", model, spec)
        loss = nn.functional.cross_entropy(model(x[:128]), y[:128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return folder


def test_cli_over_checkpoints(checkpoint_dir, tmp_path, capsys):
    out, figs, store = tmp_path / "t.json", tmp_path / "figs", tmp_path / "s.jsonl"
    args = ["track", str(checkpoint_dir), "--data", "digits", "--n", "40", "--every", "3",
            "--metrics", "lambda_max,alpha,jacobian_norm", "--dtype", "float64",
            "--json", str(out), "--plot", str(figs), "--store", str(store)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and f"wrote {figs / 'track.png'}" in text
    assert f"wrote {store}" in text
    payload = json.loads(out.read_text())
    assert [r["step"] for r in payload["rows"]] == [0, 6, 9, 12]
    probe = jacspec.load_dataset("digits", n=40, seed=0)
    for row in payload["rows"]:
        model, _ = jacspec.load_checkpoint(row["checkpoint"])
        model = model.double()
        ref = jacspec.analyze(model, (probe.x.double(), probe.y), randomize=False)
        assert row["lambda_max"] == pytest.approx(ref.table.loc["input->output",
                                                                "lambda_max"], rel=1e-10)
        norm = float(jacspec.jacobian_norms(model, probe.x.double()).mean())
        assert row["jacobian_norm"] == pytest.approx(norm, rel=1e-10)
    assert (figs / "track.png").stat().st_size > 0
    # Continuing the store skips what it holds; --every 6 keeps steps 0, 6, 12.
    before = store.read_text()
    assert main(args[:7] + ["6"] + args[8:]) == 0
    assert f"continued {store}: 4 steps already there" in capsys.readouterr().out
    assert store.read_text() == before


def test_cli_orders_by_mtime_without_step_numbers(tmp_path, checkpoint_dir, capsys):
    folder = tmp_path / "named"
    folder.mkdir()
    for i, name in enumerate(["late", "early"]):
        src = checkpoint_dir / ("step_000012.pt" if name == "late" else "step_000000.pt")
        (folder / f"{name}.pt").write_bytes(src.read_bytes())
        os.utime(folder / f"{name}.pt", ns=(10**18 - i * 10**9, 10**18 - i * 10**9))
    found, how = find_checkpoints(folder)
    assert how == "mtime" and [p.name for _, p in found] == ["early.pt", "late.pt"]
    assert main(["track", str(folder), "--data", "digits", "--n", "16", "--metrics",
                 "trace", "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["settings"]["steps_from"] == "mtime"
    assert [r["checkpoint"].endswith(n) for r, n in
            zip(payload["rows"], ["early.pt", "late.pt"], strict=True)] == [True, True]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--metrics", "alpah"], "did you mean 'alpha'"),
        (["--every", "0"], "--every must be a positive integer"),
        (["--plot", "fig.png"], "looks like a file name"),
    ],
)
def test_cli_bad_input_is_one_line(checkpoint_dir, capsys, extra, match):
    assert main(["track", str(checkpoint_dir), "--data", "digits", "--n", "8", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and err[0].startswith("jacspec track: error:")


def test_cli_no_step_to_track(tmp_path, checkpoint_dir, capsys):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "step_000009.pt").write_bytes((checkpoint_dir / "step_000009.pt")
                                                       .read_bytes())
    assert main(["track", str(tmp_path / "odd"), "--data", "digits", "--every", "2"]) == 2
    assert "no checkpoint step" in capsys.readouterr().err


def test_cli_missing_folder(tmp_path, capsys):
    assert main(["track", str(tmp_path / "nope"), "--data", "digits"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["track", str(tmp_path / "empty"), "--data", "digits"]) == 2
    assert "holds no .pt/.pth/.ckpt files" in capsys.readouterr().err


def test_nan_metric_round_trips_as_null(digits, tmp_path):
    path = tmp_path / "nan.jsonl"
    zero = nn.Linear(64, 10).double()
    with torch.no_grad():
        zero.weight.zero_()
    tracker = jacspec.Tracker(digits, ("alpha", "trace"), every=1, n=8, store=path)
    row = tracker.step(zero, 0)
    assert math.isnan(row["alpha"])
    assert '"alpha":null' in path.read_text()
    assert math.isnan(jacspec.Tracker.load(path).frame()["alpha"].iloc[0])


def test_states_a_measurement_changes_are_put_back(digits, monkeypatch):
    """Whatever the measurement does to the global RNGs, the grads and the flags (here: a
    wrapped analyze that draws from every RNG and drops every grad), the step undoes it."""
    model = _model().train()
    model(digits[0][:8]).sum().backward()
    before = _model_state(model)
    real = jacspec.analyze

    def meddling(m, data, **kwargs):
        torch.rand(3), np.random.rand(), random.random()
        for p in m.parameters():
            p.grad = None
            p.requires_grad_(False)
        assert not any(mod.training for mod in m.modules())  # measured in eval mode
        return real(m, data, **kwargs)

    monkeypatch.setattr(jacspec.analysis, "analyze", meddling)  # the tracker's import
    tracker = jacspec.Tracker(digits, ("trace",), every=1, n=8)
    tracker.step(model, 0)
    _same_state(before, _model_state(model))
