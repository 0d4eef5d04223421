"""Issue 22, defects 9 and 15, through the CLI as a user meets it.

9: a non-positive ``--max-memory-gib`` is refused (exit 2); when nothing requested can be
computed the command exits 2 naming what to change, in flags (``--method auto``,
``--max-memory-gib``), never in Python keywords; every warning is one line
``jacspec CMD: warning: ...`` naming its row, never a Python ``UserWarning`` with a source
line. 15: no ``--help`` text shows ``%%``, and every command's JSON has a top-level
``settings`` (the result contract).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import jacspec
from jacspec.cli.main import build_parser, main
from jacspec.models.builders import build_model, save_checkpoint

SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 2}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    save_checkpoint(path, build_model(SPEC), SPEC)
    return path


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...]
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser(), ("jacspec",)))


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=[" ".join(p) for p, _ in PARSERS])
def test_no_help_text_shows_a_doubled_percent(path: tuple[str, ...],
                                              parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "%%" not in text, f"{' '.join(path)} --help shows '%%'"


def test_demo_help_says_100_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "100% training accuracy" in " ".join(capsys.readouterr().out.split())


# --- 9: --max-memory-gib, nothing computable, warnings as one line -------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "lots"])
def test_a_non_positive_memory_budget_is_refused(ckpt: Path, value: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(ckpt), "--data", "digits", "--n", "20",
              f"--max-memory-gib={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max-memory-gib" in err and "positive number of GiB" in err


@pytest.mark.parametrize("value", [0, -5, 0.0, float("nan"), True, "1G"])
def test_the_api_refuses_a_non_positive_max_memory(value: object) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 3))
    x = torch.randn(8, 5, dtype=torch.float64)
    for call in (jacspec.analyze, jacspec.esd, jacspec.gram, jacspec.jacobians):
        with pytest.raises(ValueError, match="max_memory must be a positive number of bytes"):
            call(model.double(), x, max_memory=value)


def test_a_gram_too_large_for_exact_names_method_auto_as_a_flag(
        ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 200 digits: the primal Gram (n=200, kd=576) needs about 1 MiB > 0.0001 GiB
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "200", "--method", "exact",
                 "--max-memory-gib", "0.0001", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jacspec analyze: error:")
    assert "--method auto" in err[0] and "(--max-memory-gib)" in err[0]
    assert "method='auto'" not in err[0] and "jacspec.analyze(" not in err[0]


def test_nothing_computable_exits_2_instead_of_a_table_of_nan(
        ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one example's Jacobian (10 x 64 float32, x3 working copies) exceeds ~1 KiB
    for method in ("exact", "auto"):
        assert main(["analyze", str(ckpt), "--data", "digits", "--n", "50", "--method", method,
                     "--max-memory-gib", "0.000001", "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # no table of NaN printed
        err = captured.err.strip().splitlines()
        assert err[-1].startswith("jacspec analyze: error: nothing could be computed")
        assert "input->output" in err[-1] and "raise --max-memory-gib" in err[-1]


def test_warnings_are_one_line_naming_their_row(ckpt: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # the input->layer rows (n=200, cols=1024) do not fit 1 MiB (skipped, a UserWarning in
    # the API); the factored route (cols=144) fits and skips the randomized null (a
    # UserWarning); float32 leaves quantities unresolved (a log record)
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "200", "--layers", "all",
                 "--route", "factored", "--max-memory-gib", "0.001", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected warnings"
    for line in err:
        assert line.startswith("jacspec analyze: warning: "), line
        assert "UserWarning" not in line and ".py:" not in line
    text = "\n".join(err)
    assert "rows skipped" in text and "input->1" in text  # the skipped rows are named
    assert "randomized null skipped for input->output" in text
    assert "--route direct" in text and "route='direct'" not in text  # in flags
    assert "input->output: float32 could not resolve" in text and "--dtype float64" in text
    assert not any(line.lstrip().startswith(("result = ", "warnings.warn")) for line in err)


# --- 15: every command's JSON has a top-level settings ---------------------------------------


def _json_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


THEORY = [
    ["theory", "meanfield", "--activation", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05"],
    ["theory", "critical", "--activation", "tanh", "--sigma-b2", "0.05"],
    ["theory", "spectrum", "--activation", "relu", "--weight-init", "gaussian", "--depth", "2",
     "--sigma-w2", "2", "--sigma-b2", "0", "--points", "64"],
    ["theory", "spectrum", "--activation", "tanh", "--weight-init", "orthogonal", "--depth", "2",
     "--sigma-w2", "1.5", "--sigma-b2", "0.05", "--points", "64", "--simulate", "40",
     "--instances", "2"],
]


@pytest.mark.parametrize("argv", THEORY, ids=[" ".join(a[:2]) + str(i)
                                              for i, a in enumerate(THEORY)])
def test_theory_json_has_settings(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    payload = _json_of([*argv, "--json", "-"], capsys)
    assert isinstance(payload["settings"], dict) and payload["settings"]["activation"] in (
        "tanh", "relu")
    if "--sigma-w2" in argv:
        assert payload["settings"]["sigma_w2"] == float(argv[argv.index("--sigma-w2") + 1])


def test_analyze_and_sensitivity_json_have_settings(
        ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = _json_of(["analyze", str(ckpt), "--data", "digits", "--n", "30",
                        "--no-randomize", "--json", "-"], capsys)
    assert payload["settings"]["model"] == str(ckpt)
    payload = _json_of(["sensitivity", str(ckpt), "--data", "digits", "--n", "20",
                        "--points", "8", "--refine", "2", "--kinds", "translation",
                        "--json", "-"], capsys)
    s = payload["settings"]
    assert s["model"] == str(ckpt) and s["points"] == 8 and s["refine"] == 2
    assert s["kinds"] == ["translation"] and s["split"] == "test"
    assert isinstance(s["per_point"], dict) and s["per_point"]


def test_track_json_has_settings(ckpt: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for step in (0, 5):
        save_checkpoint(folder / f"step_{step:06d}.pt", build_model(SPEC), SPEC)
    payload = _json_of(["track", str(folder), "--data", "digits", "--n", "16", "--metrics",
                        "trace", "--json", "-"], capsys)
    assert payload["settings"]["checkpoint_dir"] == str(folder)


def test_zoo_json_has_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[sweep]\ngroup = 1\n[fixed]\ndataset = "digits"\nn_train = 60\n'
                   'n_test = 30\ndepth = 1\nmax_steps = 4\nbatch_size = 30\n'
                   'metrics = ["accuracy", "baselines"]\n[grid]\nwidth = [4, 6, 8]\n')
    store = tmp_path / "zoo.sqlite"
    run = _json_of(["zoo", "run", str(cfg), "--store", str(store), "--no-progress",
                    "--workers", "1"], capsys)
    assert run["settings"]["backend"] == "local" and run["total"] == 3
    status = _json_of(["zoo", "status", str(store), "--json", "-"], capsys)
    assert status["settings"]["store"] == str(store) and status["done"] == 3
    score = _json_of(["zoo", "score", str(store), "--json", "-"], capsys)
    assert isinstance(score["settings"], dict)


def test_demo_json_has_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import jacspec.models.train as train_mod

    class Result:  # training is not what is tested here: skip it
        train_accuracy, epochs, reached = 1.0, 1, "stub"

    monkeypatch.setattr(train_mod, "train", lambda model, data, **kw: Result())
    payload = _json_of(["demo", "--width", "16", "--depth", "1", "--out", str(tmp_path),
                        "--json", "-"], capsys)
    assert isinstance(payload["settings"], dict) and payload["settings"]
