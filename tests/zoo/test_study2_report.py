"""experiments/mnist_study2_report.py on a small synthetic store with study 2's columns: the
page's tables are what ``jacspec zoo score --confirm`` prints and writes for the same
command, and the page marks an incomplete zoo as not the study's result."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from jacspec.cli.main import main
from jacspec.zoo.run.store import Store

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "mnist_study2_report.py"


def _report():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("mnist_study2_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rep = _report()
    rng = np.random.default_rng(0)
    names = set()
    for a in rep.analyses().values():
        names |= {*a["shape"], *a["comparators"], a["given"]}
    names |= {"train_jacobian_norm", "test_jacobian_norm", "ww_alpha",
              "jac_train_mp_softrank", "jac_test_mp_softrank"}
    path = tmp_path_factory.mktemp("s2") / "mnist_study2.sqlite"
    configs, rows = [], []
    for fam in ("mlp", "cnn"):
        for lv in itertools.product([0, 1], repeat=3):
            for seed in (201, 202, 203):
                configs.append({"model": fam, "depth": lv[0], "width": lv[1], "lr": lv[2],
                                "batch_size": 48, "weight_decay": 0.0, "dropout": 0.0,
                                "seed": seed, "max_steps": None})
                m = {c: float(rng.normal()) for c in names}
                m["num_params"] = float(100 * (lv[0] + 2 * lv[1]) + 1)
                m.update(gap=float(rng.uniform(0, 0.1)), train_loss=float(rng.uniform(0, 0.01)),
                         converged=bool(rng.uniform() > 0.05), epochs=10)
                rows.append(m)
    with Store(path) as st:
        hashes = st.add(configs)
        st.mark_running(hashes)
        for h, m in zip(hashes, rows, strict=True):
            st.finish(h, {"metrics": m})
    return path


def test_page_tables_are_the_cli_output(store: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rep = _report()
    out = tmp_path / "page.md"
    assert rep.main(["--store", str(store), "--out", str(out), "--draws", "20"]) == 0
    page = out.read_text()
    assert "the zoo is not complete" in page and "with 20 bootstrap draws" in page
    capsys.readouterr()
    a = rep.analyses()["primary"]
    js = tmp_path / "p.json"
    assert main(rep.command(store, a, 20, str(js))) == 0
    stdout = capsys.readouterr().out.replace(f"wrote {js}\n", "")
    assert stdout.rstrip() in page  # the CLI's table, verbatim, beside its command
    result = json.loads(js.read_text())
    # a Markdown row of the primary table carries the CLI JSON's numbers
    m = a["shape"][0]
    r = result["rows"][m]
    row = next(line for line in page.splitlines() if line.startswith(f"| `{m}` |"))
    assert f"{r['tau']:.3f} [{r['tau_lo']:.3f}, {r['tau_hi']:.3f}]" in row
    assert f"{r['partial_tau']:.3f}" in row
    assert re.search(r"\*\*Verdict: (yes|no)\.\*\*", page)
    assert f"Verdict: {result['verdict']['answer']}." in page
