"""CLI: jacspec theory meanfield | critical | spectrum."""

from __future__ import annotations

import json

import pytest

from jacspec.cli import main


def test_meanfield_json(tmp_path):
    out = tmp_path / "mf.json"
    rc = main(["theory", "meanfield", "--activation", "tanh", "--sigma-w2", "1.05",
               "--sigma-b2", "2.01e-5", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    for k in ("q_star", "chi", "c_star", "xi_q", "xi_c"):
        assert k in d
    assert abs(d["q_star"] - 0.0259) < 1e-3 and abs(d["chi"] - 1) < 1e-4


def test_critical_stdout(capsys):
    assert main(["theory", "critical", "--activation", "relu", "--sigma-b2", "0"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sigma_w2"] == pytest.approx(2.0) and "q_star" in d


def test_spectrum_with_simulation_and_plot(tmp_path):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["theory", "spectrum", "--activation", "relu", "--weights", "orthogonal",
               "--depth", "2", "--sigma-w2", "2", "--sigma-b2", "0", "--points", "64",
               "--simulate", "60", "--json", str(out), "--plot", str(png)])
    assert rc == 0 and png.stat().st_size > 0
    d = json.loads(out.read_text())
    for k in ("m1", "m2", "variance", "lambda_max", "grid", "density", "atoms",
              "sim_m1", "sim_m2", "ks"):
        assert k in d
    assert d["atoms"][0] == {"at": 0.0, "mass": pytest.approx(0.5)}
    assert len(d["grid"]) == len(d["density"])


@pytest.mark.parametrize("argv,word", [
    (["meanfield", "--activation", "foo", "--sigma-w2", "1", "--sigma-b2", "0"], "activation"),
    (["spectrum", "--activation", "relu", "--weights", "unitary", "--depth", "2",
      "--sigma-w2", "2", "--sigma-b2", "0"], "weights"),
    (["spectrum", "--activation", "relu", "--weights", "gaussian", "--depth", "0",
      "--sigma-w2", "2", "--sigma-b2", "0"], "depth"),
    (["meanfield", "--activation", "tanh", "--sigma-w2", "-1", "--sigma-b2", "0"], "sigma_w2"),
])
def test_bad_values_exit_2(argv, word, capsys):
    assert main(["theory", *argv]) == 2
    assert word in capsys.readouterr().err
