"""Results store: round trips, resumption, and crash safety under SIGKILL."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jacspec.zoo.run.store import Store, config_hash, load_results
from jacspec.zoo.run.sweep import expand, load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]

TOY_JOB = '''
import time

def job(config):
    time.sleep(config.get("sleep", 0.0))
    if config.get("fail"):
        raise RuntimeError("asked to fail")
    x = float(config["a"]) * 10 + float(config["b"])
    gap = (x % 7) / 10 + 0.01 * float(config["b"])
    return {"metrics": {"value": x, "square": x * x, "gap": gap, "noise": (x * 37) % 11},
            "curves": [{"step": s, "value": x * s} for s in range(3)],
            "arrays": {"esd": [x, x / 2, 0.0]}}
'''


def test_config_hash_is_canonical() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    with pytest.raises(TypeError):
        config_hash([1, 2])  # type: ignore[arg-type]


def test_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    configs = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    with Store(path) as store:
        hashes = store.add(configs)
        assert store.add(configs) == hashes  # idempotent
        assert store.counts() == {"total": 2, "done": 0, "failed": 0, "pending": 2, "running": 0}
        store.mark_running(hashes)
        store.finish(hashes[0], {"metrics": {"m": 1.5, "nan": float("nan")},
                                 "curves": [{"step": 0, "m": 0.1}, {"step": 5, "m": 0.2}],
                                 "arrays": {"esd_train": np.arange(4.0)}, "duration": 2.0})
        store.finish(hashes[1], {"error": "RuntimeError: boom"})
        assert store.counts()["done"] == 1 and store.counts()["failed"] == 1
        assert store.todo(hashes) == []
        assert store.todo(hashes, retry_failed=True) == [hashes[1]]
        np.testing.assert_array_equal(store.array(hashes[0], "esd_train"), np.arange(4.0))
        curves = store.curves()
        assert list(curves["step"]) == [0, 5] and list(curves["m"]) == [0.1, 0.2]
        assert store.integrity_ok()
    df = load_results(path)
    assert len(df) == 1 and df.loc[0, "m"] == 1.5 and np.isnan(df.loc[0, "nan"])
    assert df.loc[0, "a"] == 1 and df.loc[0, "b"] == "x"
    assert len(load_results(path, status=None)) == 2
    with pytest.raises(ValueError, match="status"):
        load_results(path, status="bogus")


def test_sweep_file_grid_and_random(tmp_path: Path) -> None:
    spec = {"fixed": {"c": 0}, "grid": {"a": [1, 2, 3], "b": ["x", "y"]}}
    sweep = expand(spec)
    assert len(sweep.configs) == 6 and sweep.factors == ("a", "b")
    assert {(c["a"], c["b"]) for c in sweep.configs} == {(a, b) for a in (1, 2, 3)
                                                        for b in ("x", "y")}
    sample = expand({**spec, "sweep": {"mode": "random", "samples": 4, "seed": 3}})
    again = expand({**spec, "sweep": {"mode": "random", "samples": 4, "seed": 3}})
    assert len(sample.configs) == 4 and sample.configs == again.configs
    path = tmp_path / "s.yaml"
    path.write_text("grid:\n  a: [1, 2]\nfixed:\n  b: 0\n")
    assert len(load_sweep(path).configs) == 2
    with pytest.raises(ValueError, match="grid.a"):
        expand({"grid": {"a": []}})
    with pytest.raises(ValueError, match="unknown tables"):
        expand({"grids": {}})


def _toy_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "zoo_toy_job.py").write_text(TOY_JOB)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_sweep_in_process_skips_done_and_records_failures(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _toy_env(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = [{"a": a, "b": b} for a in range(3) for b in range(2)] + [{"a": 9, "b": 9,
                                                                          "fail": True}]
    store = tmp_path / "r.sqlite"
    s1 = run_sweep(configs, store, job="zoo_toy_job:job", workers=1, group=10, progress=False)
    assert (s1.done, s1.failed, s1.ran) == (6, 1, 7)
    s2 = run_sweep(configs, store, job="zoo_toy_job:job", workers=1, group=10, progress=False)
    assert (s2.ran, s2.skipped) == (0, 7)
    df = load_results(store)
    assert sorted(df["value"]) == sorted(a * 10.0 + b for a in range(3) for b in range(2))
    with Store(store, readonly=True) as st:
        failed = st.runs(status="failed")
        assert "asked to fail" in failed.loc[0, "error"]


def test_sigkill_then_rerun_finds_every_run_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = _toy_env(tmp_path)
    sweep = tmp_path / "crash.toml"
    sweep.write_text('[sweep]\njob = "zoo_toy_job:job"\ngroup = 1\n[fixed]\nsleep = 0.5\n'
                     '[grid]\na = [0, 1, 2]\nb = [0, 1, 2, 3]\n')
    store = tmp_path / "crash.sqlite"
    cmd = [sys.executable, "-m", "jacspec.cli", "zoo", "run", str(sweep), "--store", str(store),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 4:
            time.sleep(0.2)
            if store.exists():
                try:
                    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
                    done = con.execute("SELECT COUNT(*) FROM runs WHERE status='done'"
                                       ).fetchone()[0]
                    con.close()
                except sqlite3.OperationalError:
                    done = 0
        assert done >= 4, "the sweep did not finish runs in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
        proc.wait()
    with Store(store, readonly=True) as st:
        before = st.runs(status=None).set_index("config_hash")
    finished = before[before.status == "done"]
    assert 4 <= len(finished) < 12
    assert (before.status == "running").any()

    from jacspec.cli.main import main

    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(cmd[3:]) == 0  # the same command, rerun (in this process)
    with Store(store, readonly=True) as st:
        after = st.runs(status=None).set_index("config_hash")
        assert st.integrity_ok()
        curves = st.curves()
    assert len(after) == 12 and after.index.is_unique
    assert set(zip(after.a, after.b, strict=True)) == {(a, b) for a in range(3) for b in range(4)}
    assert (after.status == "done").all()
    for h, row in finished.iterrows():  # finished runs untouched
        assert after.loc[h, "finished"] == row["finished"]
        assert after.loc[h, "attempts"] == 1
        assert after.loc[h, "value"] == row["value"]
    redone = before.index[before.status == "running"]
    assert (after.loc[redone, "attempts"] == 2).all()
    assert (after.value == after.a * 10.0 + after.b).all()
    assert len(curves) == 12 * 3 and not curves.duplicated(["config_hash", "step"]).any()
    assert main(["zoo", "status", str(store), "--json", str(tmp_path / "st.json")]) == 0

    counts = json.loads((tmp_path / "st.json").read_text())
    assert counts["total"] == 12 and counts["done"] == 12
    assert counts["failed"] == 0 and counts["pending"] == 0

    assert main(["zoo", "score", str(store), "--json", str(tmp_path / "sc.json"),
                 "--plot", str(tmp_path / "figs")]) == 0
    scores = json.loads((tmp_path / "sc.json").read_text())
    assert set(scores["metrics"]) == {"value", "square", "noise"}
    for entry in scores["metrics"].values():
        assert {"kendall_tau", "psi", "cmi", "robust_sign_error"} <= set(entry)
    assert scores["factors"] == ["a", "b"] and scores["num_models"] == 12
    assert any(p.suffix == ".png" for p in (tmp_path / "figs").iterdir())
    assert main(["zoo", "status", str(tmp_path / "missing.sqlite")]) == 2


def _finished_store(store: Path, configs: list[dict], metrics: Any) -> list[dict]:
    """A store whose runs are all done, with ``metrics(config)`` as each run's metrics;
    returns each config merged with its metrics."""
    rows = []
    with Store(store) as st:
        st.add(configs)
        for c in configs:
            h = config_hash(c)
            st.mark_running([h])
            m = metrics(c)
            rows.append({**c, **m})
            st.finish(h, {"metrics": m})
    return rows


def test_zoo_score_selects_runs_and_bootstraps(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`zoo score --where K=V --converged --bootstrap N` scores exactly the selected runs:
    the same numbers as scoring those rows, picked by hand, with the library."""
    from jacspec.cli.main import main
    from jacspec.zoo.rank.score import score_metrics

    rng = np.random.default_rng(3)
    store = tmp_path / "z.sqlite"
    configs = [{"width": w, "depth": d, "seed": s} for w in (8, 16) for d in (1, 2, 3)
               for s in (1, 2)]
    def metrics(c: dict) -> dict:
        gap = float(rng.integers(0, 5))
        return {"gap": gap, "mu": gap + float(rng.normal()),
                "converged": not (c["depth"] == 3 and c["seed"] == 2)}

    _finished_store(store, configs, metrics)
    out = tmp_path / "s.json"
    assert main(["zoo", "score", str(store), "--where", "width=16", "--converged",
                 "--bootstrap", "25", "--json", str(out)]) == 0
    assert "kendall_tau_lo" in capsys.readouterr().out
    got = json.loads(out.read_text())
    with Store(store, readonly=True) as st:
        df = st.runs(status="done")
    rows = df[(df["width"] == 16) & df["converged"].astype(bool)]
    assert got["num_models"] == len(rows) == 5
    ref = score_metrics(rows, ["mu"], ["depth"], bootstrap=25, seed=0).scores["mu"]
    for key in ("kendall_tau", "kendall_tau_lo", "kendall_tau_hi", "psi", "psi_hi"):
        assert got["metrics"]["mu"][key] == pytest.approx(ref[key], abs=1e-12)
    assert got["settings"]["where"] == {"width": 16} and got["settings"]["converged"] is True
    assert main(["zoo", "score", str(store), "--where", "widht=16"]) == 2
    assert "where: 'widht' is not a configuration key" in capsys.readouterr().err


def test_discard_removes_runs_curves_and_files(tmp_path: Path) -> None:
    store = tmp_path / "d.sqlite"
    configs = [{"a": i} for i in range(3)]
    with Store(store) as st:
        hashes = st.add(configs)
        for h in hashes:
            st.mark_running([h])
            st.finish(h, {"metrics": {"v": 1.0}, "curves": [{"step": 0, "v": 0.0}],
                          "arrays": {"e": np.arange(3.0)}})
        assert (st.files / hashes[0]).is_dir()
        assert st.discard([hashes[0], "0" * 16]) == 1
        assert not (st.files / hashes[0]).exists()
        assert st.counts()["total"] == 2
        assert set(st.curves()["config_hash"]) == set(hashes[1:])
        assert st.integrity_ok()


def test_zoo_score_treats_a_learning_rate_set_per_optimizer_as_one_factor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zoo that sets lr by optimizer never varies lr alone: scored with lr as a second
    factor, optimizer would have no single-factor group (no Psi term, no sign-error
    environment) and the grid would look incomplete (no CMI). `zoo score` keeps optimizer,
    drops lr and says so; optimizer's psi is Jiang et al.'s mean over its groups (a loop)."""
    from jacspec.cli.main import main

    rng = np.random.default_rng(5)
    lr = {"sgd": 0.1, "adam": 0.001, "rmsprop": 0.0001}
    configs = [{"optimizer": o, "lr": lr[o], "depth": d, "width": w, "seed": s}
               for o in lr for d in (1, 2) for w in (8, 16) for s in (1, 2)]
    store = tmp_path / "z.sqlite"
    def metrics(c: dict) -> dict:
        gap = float(rng.integers(0, 4))
        return {"gap": gap, "mu": gap + float(rng.integers(-1, 2))}

    rows = _finished_store(store, configs, metrics)
    out = tmp_path / "s.json"
    assert main(["zoo", "score", str(store), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["factors"] == ["depth", "optimizer", "width"]
    assert got["settings"]["aliased"] == {"lr": "optimizer"}
    assert "factors: depth, optimizer, width (lr follows optimizer)" in capsys.readouterr().out

    def sign(v: float) -> int:
        return (v > 0) - (v < 0)

    taus = []
    for d, w, s in itertools.product((1, 2), (8, 16), (1, 2)):
        grp = [(r["mu"], r["gap"]) for r in rows
               if (r["depth"], r["width"], r["seed"]) == (d, w, s)]
        n = len(grp)
        taus.append(sum(sign(a[0] - b[0]) * sign(a[1] - b[1]) for a in grp for b in grp
                        if a is not b) / (n * (n - 1)))
    assert got["metrics"]["mu"]["psi_per_factor"]["optimizer"] == pytest.approx(
        sum(taus) / len(taus), abs=1e-12)
    assert "lr" not in got["metrics"]["mu"]["psi_per_factor"]
    assert got["complete_grid"] is True and got["metrics"]["mu"]["cmi"] is not None


def test_distinct_factors_drops_a_factor_fixed_by_another() -> None:
    from jacspec.zoo.rank.grid import distinct_factors

    df = pd.DataFrame({"optimizer": ["sgd", "momentum", "adam"] * 2,
                       "lr": [0.1, 0.1, 0.001] * 2, "depth": [1, 1, 1, 2, 2, 2],
                       "act": ["relu", "relu", "relu", "tanh", "tanh", "tanh"],
                       "name": ["r", "r", "r", "t", "t", "t"]})
    # lr is a function of optimizer (sgd and momentum share 0.1); act and depth fix each
    # other: the non-numeric one stays; act and name fix each other: the first listed stays
    assert distinct_factors(df, ["lr", "optimizer", "depth", "act"]) == (
        ["optimizer", "act"], {"lr": "optimizer", "depth": "act"})
    assert distinct_factors(df, ["depth", "act"]) == (["act"], {"depth": "act"})
    assert distinct_factors(df, ["name", "act"]) == (["name"], {"act": "name"})
    assert distinct_factors(df, ["optimizer", "depth"]) == (["optimizer", "depth"], {})
