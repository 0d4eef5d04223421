"""CLI: jacspec theory meanfield | critical | spectrum."""

from __future__ import annotations

import json

import pytest

from jacspec.cli.main import main


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
    # --json - : the JSON on stdout and nothing else; without --json: a table
    assert main(["theory", "critical", "--activation", "relu", "--sigma-b2", "0",
                 "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sigma_w2"] == pytest.approx(2.0) and "q_star" in d
    assert main(["theory", "critical", "--activation", "relu", "--sigma-b2", "0"]) == 0
    table = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert float(table["sigma_w2"]) == pytest.approx(2.0) and "q_star" in table


def test_spectrum_with_simulation_and_plot(tmp_path, capsys):
    out, figs = tmp_path / "s.json", tmp_path / "figs"
    rc = main(["theory", "spectrum", "--activation", "relu", "--weight-init", "orthogonal",
               "--depth", "2", "--sigma-w2", "2", "--sigma-b2", "0", "--points", "64",
               "--simulate", "60", "--json", str(out), "--plot", str(figs)])
    png = figs / "theory_spectrum.png"
    assert rc == 0 and png.stat().st_size > 0
    wrote = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("wrote ")]
    assert wrote == [f"wrote {out}", f"wrote {png}"]
    d = json.loads(out.read_text())
    for k in ("m1", "m2", "variance", "lambda_max", "grid", "density", "atoms",
              "sim_m1", "sim_m2", "ks"):
        assert k in d
    assert d["atoms"][0] == {"at": 0.0, "mass": pytest.approx(0.5)}
    assert len(d["grid"]) == len(d["density"])


@pytest.mark.parametrize("argv,word", [
    (["meanfield", "--activation", "foo", "--sigma-w2", "1", "--sigma-b2", "0"], "activation"),
    (["spectrum", "--activation", "relu", "--weight-init", "unitary", "--depth", "2",
      "--sigma-w2", "2", "--sigma-b2", "0"], "--weight-init"),
    (["spectrum", "--activation", "relu", "--weight-init", "gaussian", "--depth", "0",
      "--sigma-w2", "2", "--sigma-b2", "0"], "depth"),
    (["meanfield", "--activation", "tanh", "--sigma-w2", "-1", "--sigma-b2", "0"], "sigma_w2"),
])
def test_bad_values_exit_2(argv, word, capsys):
    assert main(["theory", *argv]) == 2
    assert word in capsys.readouterr().err


def test_meanfield_json_to_file_named_dash_is_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["theory", "meanfield", "--activation", "tanh", "--sigma-w2", "1.05",
                 "--sigma-b2", "2.01e-5", "--json", "-"]) == 0
    assert "q_star" in json.loads(capsys.readouterr().out)
    assert not (tmp_path / "-").exists()


def test_meanfield_table_keeps_small_values(capsys):
    # sigma_b2 = 2.01e-5 used to print as 0.000020 at best (6 fixed decimals) -> 4 significant
    assert main(["theory", "meanfield", "--activation", "tanh", "--sigma-w2", "1.05",
                 "--sigma-b2", "2.01e-5"]) == 0
    table = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert float(table["sigma_b2"]) == pytest.approx(2.01e-5, rel=1e-3)
    assert float(table["q_star"]) == pytest.approx(0.02592, rel=1e-3)
