"""The analyze command end to end: JSON layout, figures, TorchScript and factory models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jacspec.cli.main import main
from jacspec.data.datasets import load_dataset
from jacspec.models.builders import build_model, save_checkpoint
from jacspec.spectra.exact import esd

SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 24, "depth": 2}


def make_factory() -> torch.nn.Module:
    return build_model(SPEC)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    save_checkpoint(path, build_model(SPEC), SPEC)
    return path


def test_analyze_json_and_plot(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    figs = tmp_path / "figs"
    code = main(
        [
            "analyze",
            str(ckpt),
            "--data",
            "digits",
            "--n",
            "300",
            "--layers",
            "all",
            "--dtype",
            "float64",
            "--json",
            str(out),
            "--plot",
            str(figs),
        ]
    )
    assert code == 0
    payload = json.loads(out.read_text())
    assert {"settings", "eigenvalues", "metrics"} <= set(payload)
    s = payload["settings"]
    assert s["scale"] == "n" and s["matrix"] == "M/n" and s["output"] == "softmax"
    assert s["dtype"] == "float64" and s["n"] == 300
    for key in (
        "alpha",
        "alpha_weighted",
        "log_norm",
        "log_spectral_norm",
        "log_alpha_norm",
        "stable_rank",
        "entropy",
        "xmin",
        "xmax",
        "D",
        "sigma",
        "num_pl_spikes",
        "mp_softrank",
        "num_spikes",
        "rand_distance",
        "lambda_max",
        "warning",
    ):
        assert key in payload["metrics"], key
    names = [row["name"] for row in payload["layers"]]
    assert names[0] == "input->output" and "input->2" in names and "4->output" in names
    # the same numbers as the library's exact ESD on the same subset
    model, _ = torch.load(ckpt, weights_only=True), None
    data = load_dataset("digits", n=300, seed=0)
    net = build_model(SPEC)
    net.load_state_dict(model["state_dict"])
    ref = esd(net.eval(), data, dtype=torch.float64)
    np.testing.assert_allclose(payload["eigenvalues"], ref.eigenvalues, rtol=1e-9, atol=1e-15)
    # --plot DIR: every figure in the folder under its fixed name
    assert sorted(p.name for p in figs.iterdir()) == [
        "esd_linear.png", "esd_loglog.png", "esd_randomized.png"]


def test_torchscript_and_factory_models(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = build_model(SPEC).eval()
    script = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), script)
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    exported = tmp_path / "net.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (torch.randn(4, 64),), dynamic_shapes=({0: batch},))
    torch.export.save(program, exported)
    results = []
    for args in (
        [str(script)],
        [str(exported)],
        [f"{__name__}:make_factory", "--weights", str(weights)],
    ):
        out = tmp_path / "r.json"
        assert (
            main(
                [
                    "analyze",
                    *args,
                    "--data",
                    "digits",
                    "--n",
                    "120",
                    "--no-randomize",
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
        results.append(json.loads(out.read_text())["eigenvalues"])
    for other in results[1:]:
        # float32 Jacobians: agreement to float32 round-off relative to lambda_max
        np.testing.assert_allclose(results[0], other, rtol=1e-5, atol=1e-6 * results[0][0])
    capsys.readouterr()
