"""Regression tests of loading models and checkpoints (issue 22, defects 10, 12, 13, 16).

10: weights that do not fit their architecture are refused with the missing and unexpected
    keys and the shape mismatches, shortened to the first few and a count.
12: every hint names something the user can do in that command; ``jacspec track`` takes
    ``package.module:factory --weights DIR`` (state_dicts or PyTorch Lightning ``.ckpt``).
13: a folder mixing ``step_000010.pt``, ``best.pt``, ``last.pt`` and
    ``epoch=3-step=120.ckpt`` keeps the parsed steps, names the files without one in one
    warning line, and the track table shows each row's file.
16: a factory without weights is seeded (the same numbers on every run, the caller's random
    state untouched) and says so in one warning line.

Every expected number comes from autograd on the eager float64 model (``cases``), never from
jacspec. The factory lives in a module the test writes into ``tmp_path``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import warnings
from pathlib import Path

import cases
import pytest
import torch
from torch import nn

import jacspec
from jacspec.cli.main import build_parser, main
from jacspec.models.loading import RandomWeightsWarning
from jacspec.track.checkpoints import (
    UnnumberedCheckpointsWarning,
    find_checkpoints,
    scan_checkpoints,
)

MODULE = "issue22_user_models"
FACTORY_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=12):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, width), nn.Tanh())
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x))


def make(width=12):
    return Net(width)


def deep(depth=30):
    return nn.Sequential(*[nn.Linear(4, 4) for _ in range(depth)])
'''
N = 12
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """The user's working folder, holding the factory module (importable from there)."""
    (tmp_path / f"{MODULE}.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _net(width: int = 12, seed: int = 0) -> nn.Module:
    """The factory's architecture, built here (not through jacspec), with seeded weights."""
    import importlib

    torch.manual_seed(seed)
    return importlib.import_module(MODULE).Net(width)


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    ds = jacspec.load_dataset("digits", n=N, seed=0)
    return ds.x.double(), ds.y


def _ref_trace_and_norm(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """tr(M)/n = mean_i ||J_i||_F^2 and mean_i ||J_i||_F of the softmax Jacobians, by
    autograd one example at a time."""
    ref = cases.reference_jacobians(model.double().eval(), x, "softmax")
    fro2 = ref.reshape(ref.shape[0], -1).pow(2).sum(1)
    return float(fro2.mean()), float(fro2.sqrt().mean())


# ------------------------------------------------------------------ defect 10: mismatch error


def test_mismatch_error_names_missing_unexpected_and_shapes_api(user_dir):
    state = _net(width=8).state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["head.bias"]
    torch.save(state, user_dir / "w.pt")
    with pytest.raises(ValueError) as info:
        jacspec.load_model(f"{MODULE}:make", weights=user_dir / "w.pt")
    msg = str(info.value)
    assert "\n" not in msg
    assert "1 missing key (head.bias)" in msg
    assert "1 unexpected key (extra.weight)" in msg
    assert "3 shape mismatches" in msg
    assert "body.0.weight: model (12, 64) vs weights (8, 64)" in msg
    assert "head.weight: model (10, 12) vs weights (10, 8)" in msg


def test_mismatch_error_shortens_many_keys(user_dir):
    """30 layers' weights missing: the first four names and the count of the rest."""
    torch.save({"other.weight": torch.zeros(2)}, user_dir / "w.pt")
    with pytest.raises(ValueError) as info:
        jacspec.load_model(f"{MODULE}:deep", weights=user_dir / "w.pt")
    msg = str(info.value)
    assert "60 missing keys (0.weight, 0.bias, 1.weight, 1.bias (+56 more))" in msg
    assert "1 unexpected key (other.weight)" in msg
    assert len(msg) < 400 and "\n" not in msg


def test_mismatch_error_cli_is_one_line(user_dir, capsys):
    torch.save(_net(width=8).state_dict(), user_dir / "w.pt")
    code = main(["analyze", f"{MODULE}:make", "--weights", "w.pt", "--data", "digits",
                 "--n", "8"])
    assert code == 2
    line = _one_error_line(capsys)
    assert line.startswith("jacspec analyze: error: weights 'w.pt' do not fit model")
    assert "3 shape mismatches (body.0.weight: model (12, 64) vs weights (8, 64)" in line


def test_spec_mismatch_of_a_jacspec_checkpoint_names_shapes(tmp_path):
    spec = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 8, "depth": 1}
    good = jacspec.save_checkpoint(tmp_path / "m.pt", jacspec.build_model(spec), spec)
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "spec": {**spec, "width": 9}}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"spec does not match the checkpoint's weights: "
                       r"\d+ shape mismatch(es)? \([\w.]+: spec \(9, 64\) vs checkpoint "
                       r"\(8, 64\)"):
        jacspec.load_checkpoint(tmp_path / "wrong.pt")


# ------------------------------------------------------------------ defect 12: hints, factory


def _lightning_file(path: Path, model: nn.Module, step: int, epoch: int) -> None:
    """What a LightningModule holding ``self.model`` saves (written without Lightning)."""
    torch.save({
        "epoch": epoch, "global_step": step, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
    }, path)


def test_lightning_ckpt_loads_into_its_factory_api(user_dir):
    ref = _net(seed=5).eval()
    _lightning_file(user_dir / "epoch=1-step=40.ckpt", ref, 40, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)  # weights given: no warning
        model = jacspec.load_model(f"{MODULE}:make", weights=user_dir / "epoch=1-step=40.ckpt")
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(3, 64)
    assert torch.equal(model(x), ref(x))


def _parser_options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


def _assert_flags_exist(command: str, line: str) -> None:
    flags = set(FLAG.findall(line))
    missing = flags - _parser_options(command)
    assert not missing, f"jacspec {command} has no {sorted(missing)}: {line}"


def test_every_hint_names_an_option_of_its_command(user_dir, tmp_path, capsys):
    """The hints of the loading errors, met through each command: the flags they name are
    options of that command, and doing what they say works."""
    (user_dir / "sd").mkdir()
    for step in (0, 5):
        torch.save(_net(seed=step).state_dict(), user_dir / "sd" / f"step_{step:06d}.pt")
    script = user_dir / "ts"
    script.mkdir()
    torch.jit.save(torch.jit.script(_net(seed=1).eval()), script / "step_000001.pt")
    lightning = user_dir / "pl"
    lightning.mkdir()
    _lightning_file(lightning / "epoch=0-step=3.ckpt", _net(seed=3), 3, 0)
    data = ["--data", "digits", "--n", "8"]
    cases_ = [
        # A bare state_dict given as a whole model.
        ("analyze", ["analyze", "sd/step_000000.pt", *data], "--weights"),
        ("track", ["track", "sd", *data, "--metrics", "trace"], "--weights"),
        # A Lightning checkpoint given as a whole model.
        ("track", ["track", "pl", *data, "--metrics", "trace"], "--weights"),
        # Layer rows of a TorchScript model: load it from its class.
        ("track", ["track", "ts", *data, "--metrics", "trace", "--layers", "all"],
         "--weights"),
        # A factory with no folder of weights, a folder given --weights.
        ("track", ["track", f"{MODULE}:make", *data], "--weights"),
        ("track", ["track", "sd", "--weights", "sd", *data], "--weights"),
        ("track", ["track", f"{MODULE}:make", "--weights", "sd/step_000000.pt", *data],
         "--weights"),
    ]
    for command, argv, flag in cases_:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys)
        assert flag in line, line
        assert "save_checkpoint" not in line, line  # it stores jacspec's own models only
        _assert_flags_exist(command, line)
    # The hints' fixes work: the factory with --weights, layer rows included.
    for folder in ("sd", "pl"):
        assert main(["track", f"{MODULE}:make", "--weights", folder, *data, "--metrics",
                     "trace", "--layers", "all", "--json", str(tmp_path / "t.json")]) == 0
        assert "Traceback" not in capsys.readouterr().err
    assert main(["analyze", f"{MODULE}:make", "--weights", "sd/step_000000.pt", *data]) == 0
    capsys.readouterr()


def _string_flags(path: Path) -> set[str]:
    """The ``--flags`` named in the string literals of a module (its messages and hints)."""
    tree = ast.parse(path.read_text())
    flags: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            flags.update(FLAG.findall(node.value))
    return flags


@pytest.mark.parametrize(("module", "commands"), [
    ("models/loading.py", ("analyze", "sensitivity", "track")),
    ("models/builders.py", ("analyze", "sensitivity", "track")),
    ("track/checkpoints.py", ("track",)),
    ("cli/commands/track.py", ("track",)),
    ("jacobian/layers.py", ("analyze", "track")),
])
def test_flags_named_in_loading_messages_exist(module, commands):
    """Messages of the model-loading code reach every command that loads a model: each
    flag they name is an option of each of those commands."""
    root = Path(jacspec.__file__).parent
    flags = _string_flags(root / module)
    for command in commands:
        missing = flags - _parser_options(command)
        assert not missing, f"{module} names {sorted(missing)}, which jacspec {command} lacks"


def test_track_factory_over_state_dicts_and_lightning_cli(user_dir, capsys):
    """track MODULE:factory --weights DIR: each row's numbers are autograd's on the weights
    of its file (state_dicts and Lightning .ckpt files with their 'model.' prefix)."""
    folder = user_dir / "run"
    folder.mkdir()
    models = {0: _net(seed=10), 10: _net(seed=11), 20: _net(seed=12)}
    torch.save(models[0].state_dict(), folder / "step_000000.pt")
    torch.save(models[10].state_dict(), folder / "step_000010.pth")
    _lightning_file(folder / "epoch=1-step=20.ckpt", models[20], 20, 1)
    out = user_dir / "t.json"
    assert main(["track", f"{MODULE}:make", "--weights", "run", "--data", "digits", "--n",
                 str(N), "--metrics", "trace,jacobian_norm", "--dtype", "float64",
                 "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    payload = json.loads(out.read_text())
    assert payload["settings"]["model_factory"] == f"{MODULE}:make"
    assert [r["step"] for r in payload["rows"]] == [0, 10, 20]
    x, _ = _probe()
    for row in payload["rows"]:
        trace, norm = _ref_trace_and_norm(models[row["step"]], x)
        assert row["trace"] == pytest.approx(trace, rel=1e-10)
        assert row["jacobian_norm"] == pytest.approx(norm, rel=1e-10)


# ------------------------------------------------------------------ defect 13: mixed names


def _mixed_folder(folder: Path) -> dict[str, nn.Module]:
    folder.mkdir()
    models = {"step_000010.pt": _net(seed=1), "best.pt": _net(seed=2),
              "last.pt": _net(seed=3), "epoch=3-step=120.ckpt": _net(seed=4)}
    for name, model in models.items():
        if name.endswith(".ckpt"):
            _lightning_file(folder / name, model, 120, 3)
        else:
            torch.save(model.state_dict(), folder / name)
    return models


def test_mixed_names_keep_their_steps_api(tmp_path):
    _mixed_folder(tmp_path / "run")
    found, how, unnumbered = scan_checkpoints(tmp_path / "run")
    assert how == "name"
    assert [(s, p.name) for s, p in found] == [(10, "step_000010.pt"),
                                               (120, "epoch=3-step=120.ckpt")]
    assert sorted(p.name for p in unnumbered) == ["best.pt", "last.pt"]
    with pytest.warns(UnnumberedCheckpointsWarning, match=r"best\.pt, last\.pt") as record:
        steps, _ = find_checkpoints(tmp_path / "run")
    assert len(record) == 1 and [s for s, _ in steps] == [10, 120]


def test_mixed_names_cli_table_shows_files(user_dir, capsys):
    models = _mixed_folder(user_dir / "run")
    out = user_dir / "t.json"
    assert main(["track", f"{MODULE}:make", "--weights", "run", "--data", "digits", "--n",
                 str(N), "--metrics", "trace", "--dtype", "float64", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and "Traceback" not in captured.err
    assert warning[0].startswith("jacspec track: warning: 2 checkpoints without a step")
    assert "best.pt, last.pt" in warning[0]
    table = captured.out.splitlines()
    header = next(line for line in table if "file" in line.split())
    assert header.split()[0] == "file"
    row10 = next(line for line in table if line.split()[:1] == ["10"])
    row120 = next(line for line in table if line.split()[:1] == ["120"])
    assert "step_000010.pt" in row10 and "epoch=3-step=120.ckpt" in row120
    payload = json.loads(out.read_text())
    assert [r["step"] for r in payload["rows"]] == [10, 120]
    assert sorted(Path(p).name for p in payload["settings"]["unnumbered"]) == ["best.pt",
                                                                               "last.pt"]
    x, _ = _probe()
    for row, name in zip(payload["rows"], ["step_000010.pt", "epoch=3-step=120.ckpt"],
                         strict=True):
        assert Path(row["checkpoint"]).name == name
        assert row["trace"] == pytest.approx(_ref_trace_and_norm(models[name], x)[0],
                                             rel=1e-10)


# ------------------------------------------------------------------ defect 16: random weights


def test_factory_without_weights_is_seeded_and_warns_api(user_dir):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    with pytest.warns(RandomWeightsWarning, match=r"random initialisation.*weights=FILE"):
        first = jacspec.load_model(f"{MODULE}:make")
    with pytest.warns(RandomWeightsWarning):
        second = jacspec.load_model(f"{MODULE}:make")
    # The caller's random state is as it was: the next draw is the one it would have been.
    assert torch.equal(torch.get_rng_state(), before)
    expected = torch.rand(4)
    torch.set_rng_state(before)
    # The weights: the same both times, and those of the architecture under manual_seed(0).
    ref = _net(seed=0)
    torch.set_rng_state(before)
    assert torch.equal(torch.rand(4), expected)
    for k, v in ref.state_dict().items():
        assert torch.equal(first.state_dict()[k], v), k
        assert torch.equal(second.state_dict()[k], v), k


def test_factory_without_weights_cli_same_numbers_one_warning(user_dir, capsys):
    rows = []
    for run in range(2):
        out = user_dir / f"a{run}.json"
        torch.manual_seed(100 + run)  # whatever the process's state, the weights are seeded
        assert main(["analyze", f"{MODULE}:make", "--data", "digits", "--n", str(N),
                     "--dtype", "float64", "--json", str(out)]) == 0
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert lines[0].startswith("jacspec analyze: warning: model")
        assert "random" in lines[0] and "--weights FILE" in lines[0]
        _assert_flags_exist("analyze", lines[0])
        rows.append(json.loads(out.read_text()))
    assert rows[0]["eigenvalues"] == rows[1]["eigenvalues"]
    assert json.dumps(rows[0]["metrics"], sort_keys=True) == \
        json.dumps(rows[1]["metrics"], sort_keys=True)
    # ... and they are the numbers of the architecture under manual_seed(0), by autograd.
    trace, _ = _ref_trace_and_norm(_net(seed=0), _probe()[0])
    assert rows[0]["metrics"]["trace"] == pytest.approx(trace, rel=1e-10)
