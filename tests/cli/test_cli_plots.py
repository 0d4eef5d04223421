"""CLI output convention and figures: --plot DIR writes every figure into DIR and prints each
path; --json PATH ('-': stdout); SLQ estimates are drawn; bugs are not dressed as user errors;
tables keep small values; figures carry the MP bulk, a theory x range around the mass, and
enough ticks."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import jacspec.cli.commands.analyze as analyze_cmd
from jacspec.cli._common import format_table, format_value
from jacspec.cli.main import main
from jacspec.models.builders import build_model, save_checkpoint

SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 24, "depth": 2,
        "seed": 0}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    save_checkpoint(path, build_model(SPEC), SPEC)
    return path


def wrote_lines(text: str) -> list[Path]:
    return [Path(ln[len("wrote "):]) for ln in text.splitlines() if ln.startswith("wrote ")]


def render(fig: Figure) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)


# --- 11: the SLQ estimate is drawn; bugs propagate -------------------------------------


def test_analyze_slq_plot_draws_the_estimate(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs = tmp_path / "figs"
    code = main(["analyze", str(ckpt), "--data", "digits", "--n", "200", "--method", "slq",
                 "--no-randomize", "--plot", str(figs)])
    assert code == 0  # used to fail with 'input->output' (KeyError) after the work
    out = capsys.readouterr().out
    assert wrote_lines(out) == [figs / "esd_slq.png"]
    assert sorted(p.name for p in figs.iterdir()) == ["esd_slq.png"]


def test_slq_figure_plots_the_estimate_cdf(ckpt: Path) -> None:
    from jacspec.analysis import analyze
    from jacspec.data.datasets import load_dataset
    from jacspec.models.loading import load_model
    from jacspec.report.analysis import analysis_figures

    data = load_dataset("digits", n=150, seed=0)
    result = analyze(load_model(str(ckpt)), data, method="slq", randomize=False)
    (name, fig), = analysis_figures(result).items()
    assert name == "esd_slq.png"
    render(fig)
    assert "SLQ" in fig.get_suptitle()
    ax_cdf = fig.axes[0]
    (line,) = [ln for ln in ax_cdf.lines if "CDF" in str(ln.get_label())]
    xs, ys = line.get_data()
    est = result.estimate
    # independent: the CDF of the discrete measure (nodes, weights) summed directly
    ref = np.array([est.weights[est.nodes <= x].sum() for x in xs])
    np.testing.assert_allclose(ys, ref, atol=1e-12)
    assert "SLQ" in str(line.get_label())


@pytest.mark.parametrize("exc", [KeyError("input->output"), AttributeError("no attribute x")])
def test_cli_lets_programming_errors_propagate(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    def broken(args: object) -> int:
        raise exc

    monkeypatch.setattr(analyze_cmd, "run", broken)
    with pytest.raises(type(exc)):
        main(["analyze", str(ckpt), "--data", "digits"])


def test_cli_user_errors_are_one_line(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bad(args: object) -> int:
        raise ValueError("--n=-1 must be a positive integer\nmore detail")

    monkeypatch.setattr(analyze_cmd, "run", bad)
    assert main(["analyze", str(ckpt), "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jacspec analyze: error: --n=-1 must be a positive integer"]


# --- 12: one convention: --plot DIR, every written path printed; --json PATH or - -------


def test_analyze_plot_dir_prints_every_file(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs, out = tmp_path / "figs", tmp_path / "a.json"
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "200", "--dtype", "float64",
                 "--json", str(out), "--plot", str(figs)]) == 0
    printed = wrote_lines(capsys.readouterr().out)
    assert printed[0] == out
    assert sorted(printed[1:]) == sorted(figs.iterdir())
    assert {p.name for p in figs.iterdir()} == {"esd_loglog.png", "esd_linear.png",
                                                "esd_randomized.png"}


def test_plot_file_name_refused_before_the_work(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import jacspec.cli._common as common

    def no_load(args: object) -> None:
        raise AssertionError("the model was loaded before --plot was checked")

    monkeypatch.setattr(analyze_cmd, "load_model_from_args", no_load)
    monkeypatch.setattr(common, "load_model_from_args", no_load)
    assert main(["analyze", str(ckpt), "--data", "digits", "--plot",
                 str(tmp_path / "esd.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "folder" in err
    assert not (tmp_path / "esd.png").exists()


def test_analyze_json_dash_is_stdout_only(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs = tmp_path / "figs"
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "120", "--no-randomize",
                 "--json", "-", "--plot", str(figs)]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # nothing but the JSON on stdout
    assert "metrics" in payload
    assert sorted(wrote_lines(captured.err)) == sorted(figs.iterdir())


def test_theory_plot_dir_prints_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs = tmp_path / "figs"
    assert main(["theory", "spectrum", "--activation", "tanh", "--weight-init", "gaussian",
                 "--depth", "2", "--sigma-w2", "1.05", "--sigma-b2", "2.01e-5",
                 "--points", "200", "--plot", str(figs)]) == 0
    assert wrote_lines(capsys.readouterr().out) == [figs / "theory_spectrum.png"]
    assert [p.name for p in figs.iterdir()] == ["theory_spectrum.png"]


def test_sensitivity_plot_dir_prints_every_file(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs, out = tmp_path / "figs", tmp_path / "s.json"
    assert main(["sensitivity", str(ckpt), "--data", "digits", "--n", "40", "--points", "16",
                 "--refine", "2", "--kinds", "random", "--json", str(out),
                 "--plot", str(figs)]) == 0
    printed = wrote_lines(capsys.readouterr().out)
    assert printed[0] == out and json.loads(out.read_text())["per_point"]
    assert sorted(printed[1:]) == sorted(figs.iterdir())
    assert {p.name for p in figs.iterdir()} == {"sensitivity_profiles.png",
                                                "sensitivity_per_point.png"}


def test_demo_plot_and_json_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """demo: --plot DIR and --json PATH like every command (defaults under --out); the two
    trainings are replaced by a cheap stand-in so the test checks the output plumbing."""
    import jacspec.models.train as train_mod

    class Result:
        train_accuracy, epochs, reached = 1.0, 1, "stub"

    monkeypatch.setattr(train_mod, "train", lambda model, data, **kw: Result())
    figs, out = tmp_path / "figs", tmp_path / "d.json"
    assert main(["demo", "--width", "16", "--depth", "1", "--out", str(tmp_path / "unused"),
                 "--plot", str(figs), "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    printed = wrote_lines(stdout)
    assert printed[0] == out and "metrics" in json.loads(out.read_text())
    assert sorted(printed[1:]) == sorted(figs.iterdir())
    assert "esd_true_vs_random.png" in {p.name for p in figs.iterdir()}
    assert not (tmp_path / "unused").exists()


# --- 13: significant digits, MP bulk, theory x range, ticks --------------------------------


def test_table_values_keep_significant_digits() -> None:
    frame = pd.DataFrame({"m": [1.234e-7, 0.5, 12345.678, 3, "failed"]},
                         index=["small", "half", "big", "int", "text"]).T
    text = format_table(frame)
    assert "1.234e-07" in text and "0.5" in text and "1.235e+04" in text
    assert "0.000000" not in text
    assert format_value(np.int64(3)) == "3" and format_value(float("nan")) == "nan"


def test_analyze_table_prints_small_values_non_zero(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a.json"
    assert main(["analyze", str(ckpt), "--data", "digits", "--n", "200", "--dtype", "float64",
                 "--no-randomize", "--json", str(out)]) == 0
    table_lines = capsys.readouterr().out.splitlines()[1:]
    printed = {ln.split()[0]: ln.split()[1] for ln in table_lines
               if len(ln.split()) == 2 and not ln.startswith("wrote")}
    metrics = json.loads(out.read_text())["metrics"]
    checked = 0
    for key, value in metrics.items():
        if isinstance(value, float) and math.isfinite(value) and value != 0 and key in printed:
            assert float(printed[key]) == pytest.approx(value, rel=1e-3), key
            checked += 1
    assert checked >= 10
    # the MP bulk of a softmax data Jacobian sits far below 1e-6 (printed 0.000000 before)
    assert 0 < metrics["lambda_plus"] < 1e-3 and float(printed["lambda_plus"]) > 0


def test_linear_esd_figure_draws_the_rows_mp_bulk(ckpt: Path) -> None:
    from jacspec.analysis import analyze
    from jacspec.data.datasets import load_dataset
    from jacspec.models.loading import load_model
    from jacspec.report.analysis import analysis_figures

    result = analyze(load_model(str(ckpt)), load_dataset("digits", n=200, seed=0),
                     dtype=__import__("torch").float64, randomize=False)
    row = result.table.loc["input->output"]
    fig = analysis_figures(result)["esd_linear.png"]
    render(fig)
    for ax in fig.axes:  # every panel draws the bulk
        (mp_line,) = [ln for ln in ax.lines if str(ln.get_label()).startswith("MP bulk")]
        xs, ys = mp_line.get_data()
        # the edge is the row's lambda_plus, the density the MP law of the row's sigma^2:
        # Q from lambda_+ = sigma^2 (1 + Q^{-1/2})^2, p(x) = sqrt((l+ - x)(x - l-)) /
        # (2 pi sigma^2 min(1/Q, 1) x), re-expressed here
        s2, lp, n = float(row["mp_sigma2"]), float(row["lambda_plus"]), int(row["n"])
        q = 1.0 / (math.sqrt(lp / s2) - 1.0) ** 2
        lm = s2 * (1 - 1 / math.sqrt(q)) ** 2
        assert xs.max() == pytest.approx(lp, rel=1e-9) and xs.min() == pytest.approx(lm)
        inside = (xs > lm) & (xs < lp)
        ref = np.sqrt((lp - xs[inside]) * (xs[inside] - lm)) / (
            2 * math.pi * s2 * min(1 / q, 1.0) * xs[inside])
        frac = min(1.0, min(n, n / q) / len(result.esds["input->output"].eigenvalues))
        np.testing.assert_allclose(ys[inside], frac * ref, rtol=1e-6)
        assert any(np.isclose(ln.get_xdata()[0], lp) for ln in ax.lines[1:]
                   if len(ln.get_xdata()) == 2)
    zoom = fig.axes[-1]
    assert zoom.get_xlim()[1] <= 3 * float(row["lambda_plus"]) * 1.001


@pytest.mark.parametrize("case", [("relu", "orthogonal", 2, 2.0, 0.0),
                                  ("tanh", "gaussian", 2, 1.05, 2.01e-5),
                                  ("relu", "gaussian", 8, 2.0, 0.0)])
def test_theory_plot_x_range_covers_the_mass(case: tuple) -> None:
    from jacspec.report.theory_plots import theory_vs_simulation
    from jacspec.theory import jacobian_spectrum

    spec = jacobian_spectrum(*case, num_points=600)
    fig = theory_vs_simulation([spec])
    render(fig)
    lo, hi = fig.axes[0].get_xlim()
    # independent: the continuous mass of log10(lambda) on the grid, by the trapezoid rule
    x = np.log10(spec.grid[spec.grid > 0])
    y = spec.density[spec.grid > 0] * spec.grid[spec.grid > 0] * np.log(10.0)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
    total = cum[-1]
    inside = np.interp(hi, x, cum) - np.interp(lo, x, cum)
    assert inside >= 0.99 * total
    q_lo, q_hi = np.interp([0.001 * total, 0.999 * total], cum, x)
    assert hi - lo <= 1.5 * (q_hi - q_lo)  # used to be [-12, lambda_max]: > 2x the mass range


def test_sensitivity_figures_have_ticks() -> None:
    from jacspec.data.datasets import load_dataset
    from jacspec.models.builders import mlp
    from jacspec.report.sensitivity_plots import plot_per_point, plot_profiles
    from jacspec.report.ticks import visible_ticks
    from jacspec.sensitivity.norms import per_point_generalization
    from jacspec.sensitivity.trajectories import TrajectoryProfile

    t = np.linspace(0, 1, 64, endpoint=False)
    norm = 0.42 + 0.1 * np.sin(2 * np.pi * t)  # less than a decade: one log tick or none
    prof = TrajectoryProfile(
        kind="random", t=t, jacobian_norm=norm, transitions=np.arange(64) % 3,
        segment_length=np.full(64, 1 / 64), curvature=np.zeros(64), anchors=(0.0, 0.5),
        anchor_jacobian_norm=norm[[0, 32]], approximate=False, settings={})
    data = load_dataset("digits", "test", n=60, seed=0)
    model = mlp(data.input_shape, 10, width=16, seed=0).eval()
    for fig in (plot_profiles([prof]), plot_per_point(per_point_generalization(model, data))):
        render(fig)
        for ax in fig.axes:
            for which in ("x", "y"):
                ticks = visible_ticks(ax, which)
                labels = [lab.get_text() for lab in
                          (ax.get_yticklabels() if which == "y" else ax.get_xticklabels())
                          if lab.get_text()]
                assert len(ticks) >= 3, (which, ax.get_ylabel(), ticks)
                # labelled, except an x axis whose labels sharex hides (upper profile panel)
                assert len(labels) >= 3 or (which == "x" and not labels), (which, labels)
