"""The zoo's two rooms and the moved training module, read from the source and imported.

- ``jacspec.zoo.run`` (train, metrics, sweep, store) never imports ``jacspec.zoo.rank``
  (grid, statistics, score, intervals, confirm): results flow one way; of ``run`` the ranking
  reads only the store.
- The old paths (``jacspec.train`` and ``jacspec.zoo.{train, metrics, sweep, store, score,
  pgdl, grid, intervals, confirm}``) are gone and nothing imports them; a sweep file naming
  the old job path still resolves to the trainer.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[2] / "jacspec" / "zoo"

#: old module path (removed) -> where it lives now
MOVED = {
    "jacspec.train": "jacspec.models.train",
    "jacspec.zoo.train": "jacspec.zoo.run.train",
    "jacspec.zoo.metrics": "jacspec.zoo.run.metrics",
    "jacspec.zoo.sweep": "jacspec.zoo.run.sweep",
    "jacspec.zoo.store": "jacspec.zoo.run.store",
    "jacspec.zoo.score": "jacspec.zoo.rank.score",
    "jacspec.zoo.pgdl": "jacspec.zoo.rank.pgdl",
    "jacspec.zoo.grid": "jacspec.zoo.rank.grid",
    "jacspec.zoo.intervals": "jacspec.zoo.rank.intervals",
    "jacspec.zoo.confirm": "jacspec.zoo.rank.confirm",
}


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute; function bodies included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _room(name: str) -> list[Path]:
    return sorted((ZOO / name).glob("*.py"))


def test_both_rooms_hold_their_modules():
    assert {p.stem for p in _room("run")} >= {"train", "metrics", "sweep", "store", "flatness"}
    assert {p.stem for p in _room("rank")} >= {
        "grid", "stats", "score", "pgdl", "intervals", "confirm", "confirm_stats",
        "confirm_grid"}


def test_running_never_imports_ranking_or_the_old_paths():
    old = {m for m in MOVED if m.startswith("jacspec.zoo.")}
    for path in _room("run"):
        bad = {m for m in _imported(path)
               if m.startswith("jacspec.zoo.rank") or m in old or m == "jacspec.zoo"}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_ranking_reads_only_the_store_of_the_running_room():
    for path in _room("rank"):
        run = {m for m in _imported(path) if m.startswith("jacspec.zoo.run")}
        assert run <= {"jacspec.zoo.run.store", "jacspec.zoo.run.store.Store",
                       "jacspec.zoo.run.store.NON_PREDICTORS"}, f"{path.name}: {run}"


def test_the_reader_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from jacspec.zoo.rank.score import x\n")
    assert "jacspec.zoo.rank.score" in _imported(src)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_paths_are_gone(old, new):
    """The re-exporting modules at the old paths are removed; the names live at the new one."""
    from jacspec.zoo.run import store

    rel = Path(*old.split(".")[1:]).with_suffix(".py")
    assert not (ZOO.parent / rel).exists(), f"{rel} is back"
    parent, _, leaf = old.rpartition(".")
    # searched in this checkout's package folders only (an editable install of another
    # checkout may add a finder of its own)
    assert importlib.machinery.PathFinder.find_spec(
        leaf, importlib.import_module(parent).__path__) is None, old
    assert importlib.import_module(new).__name__ == new
    assert "gap" in store.NON_PREDICTORS


def test_nothing_imports_an_old_path():
    root = ZOO.parents[1]
    for folder in ("jacspec", "tests", "experiments", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            bad = {m for m in _imported(path)
                   if any(m == old or m.startswith(old + ".") for old in MOVED)}
            assert not bad, f"{path.relative_to(root)} imports {sorted(bad)}"


def test_the_new_paths_keep_the_names_users_import():
    from jacspec.models.train import train
    from jacspec.zoo.rank.confirm import confirmatory_test, converged_cmi
    from jacspec.zoo.rank.score import NON_PREDICTORS, environment_errors, kendall_tau_a
    from jacspec.zoo.run import metrics
    from jacspec.zoo.run.metrics import REGISTRY
    from jacspec.zoo.run.train import fit, run_job, validate_config

    assert REGISTRY is metrics.REGISTRY and "jacobian_norm" in REGISTRY
    assert "gap" in NON_PREDICTORS and callable(environment_errors)
    assert kendall_tau_a([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(1 / 3)  # (1+1-1)/3
    assert callable(fit) and callable(validate_config) and callable(train)
    assert run_job.__module__ == "jacspec.zoo.run.train"
    assert callable(confirmatory_test) and callable(converged_cmi)  # docs/results name them


def test_a_sweep_file_naming_the_old_job_path_resolves_to_the_trainer():
    from jacspec.zoo.run.sweep import DEFAULT_JOB, resolve_job
    from jacspec.zoo.run.train import run_job

    assert resolve_job("jacspec.zoo.train:run_job") is run_job
    assert resolve_job(DEFAULT_JOB) is run_job
    assert DEFAULT_JOB == "jacspec.zoo.run.train:run_job"


def test_non_predictors_have_one_home():
    from jacspec.zoo.rank import score
    from jacspec.zoo.run import store

    assert score.NON_PREDICTORS is store.NON_PREDICTORS
    defined = [p.relative_to(ZOO) for p in ZOO.rglob("*.py")
               if "NON_PREDICTORS = (" in p.read_text()]
    assert defined == [Path("run/store.py")]
