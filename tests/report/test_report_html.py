"""The HTML report (``jacspec.write_report``, ``jacspec report``) for every kind of input:
the page parses, every figure is an embedded PNG that is not blank, no resource is fetched
from the network, and the tables hold the numbers of the JSON files the commands write
(``data-value`` equals the JSON to 1e-12)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import jacspec
from jacspec.cli.main import main
from jacspec.models.builders import build_model, save_checkpoint
from jacspec.report.html import build_section, detect_kind, write_report
from jacspec.report.html_render import _cell

SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 2,
        "seed": 0}


# --- reading a page back ----------------------------------------------------------------


class Page(HTMLParser):
    """Tags, image sources, resource attributes and table cells of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.resources: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.sections: list[dict[str, str]] = []
        self.warnings: list[str] = []
        self._in_warn = 0
        self._li: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        for key in ("src", "href", "srcset", "poster", "data"):
            if key in a and tag != "td":
                self.resources.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "section":
            self.sections.append(a)
        if tag == "td" and "data-key" in a:
            self.cells.append({**a, "section": str(len(self.sections) - 1)})
        if tag == "div" and "warnings" in a.get("class", ""):
            self._in_warn = 1
        if tag == "li" and self._in_warn:
            self._li = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._li is not None:
            self.warnings.append("".join(self._li))
            self._li = None
        if tag == "div" and self._in_warn:
            self._in_warn = 0

    def handle_data(self, data: str) -> None:
        if self._li is not None:
            self._li.append(data)


def read_page(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def check_self_contained(text: str, page: Page, *, min_images: int = 1) -> None:
    """Every <img> is a PNG data URI decoding to a non-blank image; nothing else is
    referenced but in-page anchors; no http(s) address and no CSS url() anywhere."""
    assert page.tags[:2] == ["html", "head"]
    assert len(page.imgs) >= min_images
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 20  # drawn, not a blank canvas
        assert (pixels.min(axis=1) < 200).mean() > 0.005  # some ink on the white
    for ref in page.resources:
        assert ref.startswith(("data:", "#")), ref[:80]
    assert re.search(r"https?://", text) is None
    assert "url(" not in text and "@import" not in text


def cells(page: Page, section: int | None = None) -> dict[tuple[str, str], dict[str, str]]:
    """Table cells by (row, key), of one section (by position) or of the whole page."""
    return {(c["data-row"], c["data-key"]): c for c in page.cells
            if "data-row" in c and (section is None or c["section"] == str(section))}


def assert_same_number(cell: dict[str, str], expected: Any, what: str) -> None:
    """The cell's exact value equals the JSON's number (None/NaN: ``nan``) to 1e-12; its
    text shows 4 significant digits."""
    assert "data-value" in cell, (what, cell)
    got = float(cell["data-value"])
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert math.isnan(got), (what, got)
        return
    assert math.isclose(got, float(expected), rel_tol=1e-12, abs_tol=0.0), (what, got, expected)


def compare_row(page: Page, row: str, payload: dict[str, Any], *, min_numbers: int,
                section: int | None = None) -> int:
    """Every number of ``payload`` (a JSON object's scalars) is in the page's row ``row``."""
    found = cells(page, section)
    n = 0
    for key, value in payload.items():
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            continue
        assert (row, key) in found, (row, key)
        assert_same_number(found[(row, key)], value, f"{row}.{key}")
        n += 1
    assert n >= min_numbers
    return n


# --- fixtures: the JSON files the commands write ----------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report")
    ckpt = folder / "mlp.pt"
    save_checkpoint(ckpt, build_model(SPEC), SPEC)
    out = {"ckpt": ckpt, "folder": folder}
    commands = {
        "analysis": ["analyze", str(ckpt), "--data", "digits", "--n", "120", "--dtype",
                     "float64"],
        "layers": ["analyze", str(ckpt), "--data", "digits", "--n", "80", "--layers", "all",
                   "--no-randomize"],
        "sensitivity": ["sensitivity", str(ckpt), "--data", "digits", "--n", "24",
                        "--points", "16", "--refine", "2", "--kinds", "random,translation"],
        "spectrum": ["theory", "spectrum", "--activation", "tanh", "--weight-init", "gaussian",
                     "--depth", "4", "--sigma-w2", "1.05", "--sigma-b2", "2e-5", "--points",
                     "200"],
        "meanfield": ["theory", "meanfield", "--activation", "tanh", "--sigma-w2", "1.05",
                      "--sigma-b2", "2e-5"],
        "critical": ["theory", "critical", "--activation", "erf", "--sigma-b2", "0.01"],
    }
    for name, argv in commands.items():
        path = folder / f"{name}.json"
        assert main([*argv, "--json", str(path)]) == 0, name
        out[name] = path
    return out


@pytest.fixture(scope="module")
def zoo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results store of 8 finished runs on a complete width x random_labels x seed grid,
    with curves, written through the store's own API."""
    from jacspec.zoo.run.store import Store

    path = tmp_path_factory.mktemp("zoo") / "zoo.sqlite"
    rng = np.random.default_rng(3)
    configs = [{"dataset": "digits", "width": w, "random_labels": r, "seed": s}
               for w in (8, 16) for r in (False, True) for s in (0, 1)]
    with Store(path) as store:
        hashes = store.add(configs)
        for h, cfg in zip(hashes, configs, strict=True):
            gap = 0.05 + 0.6 * cfg["random_labels"] + 0.01 * rng.normal()
            store.finish(h, {"metrics": {
                "gap": gap, "test_jacobian_norm": 2.0 * gap + 0.1 * rng.normal(),
                "ww_alpha": 3.0 - gap + 0.2 * rng.normal(),
                "train_accuracy": 1.0 - 0.001 * rng.random()},
                "curves": [{"step": s, "test_jacobian_norm": s * gap + rng.random(),
                            "gap": gap * s / 100} for s in (1, 10, 100)]})
    return path


# --- every input kind -------------------------------------------------------------------


def test_analysis_json_page_holds_the_json_numbers(work: dict[str, Path], tmp_path: Path
                                                   ) -> None:
    payload = json.loads(work["analysis"].read_text())
    path = write_report(work["analysis"], tmp_path / "a.html")
    text, page = read_page(path)
    check_self_contained(text, page, min_images=2)
    compare_row(page, "input->output", payload["metrics"], min_numbers=20)
    settings = {c["data-key"]: c for c in page.cells if "data-row" not in c}
    assert_same_number(settings["n"], payload["settings"]["n"], "settings.n")
    assert [s["data-kind"] for s in page.sections] == ["analysis"]
    assert "versions" in text and f">{torch.__version__}<" in text
    assert f">{np.__version__}<" in text and f">{jacspec.__version__}<" in text


def test_analysis_object_page_has_the_figures_and_table(tmp_path: Path) -> None:
    from jacspec.data.datasets import load_dataset

    model = build_model(SPEC).double()
    data = load_dataset("digits", "train", n=100, seed=0)
    result = jacspec.analyze(model, data, dtype=torch.float64)
    before = result.table.copy()
    path = jacspec.write_report(result, tmp_path / "obj.html", title="one analysis")
    text, page = read_page(path)
    check_self_contained(text, page, min_images=3)  # log-log, linear, randomized null
    assert "<title>one analysis</title>" in text
    row = result.table.loc["input->output"]
    numbers = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in row.items() if isinstance(v, (int, float, np.number))}
    compare_row(page, "input->output", numbers, min_numbers=20)
    pd.testing.assert_frame_equal(result.table, before)  # the result is left as it was


def test_layer_rows_and_their_warnings(work: dict[str, Path], tmp_path: Path) -> None:
    payload = json.loads(work["layers"].read_text())
    path = write_report([work["layers"]], tmp_path / "layers.html")
    text, page = read_page(path)
    check_self_contained(text, page)
    assert len(payload["layers"]) > 2
    for layer in payload["layers"]:
        compare_row(page, layer["name"], {k: v for k, v in layer.items() if k != "name"},
                    min_numbers=10)
    expected = [layer for layer in payload["layers"] if layer.get("warning")]
    for layer in expected:  # each row warning is listed under its row's name
        assert any(w.startswith(f"{layer['name']}: {layer['warning']}") for w in page.warnings)
    unresolved = [layer for layer in payload["layers"] if layer.get("unresolved")]
    for layer in unresolved:
        assert any(w.startswith(f"{layer['name']}:") and "float64" in w for w in page.warnings)


def test_sensitivity_json(work: dict[str, Path], tmp_path: Path) -> None:
    payload = json.loads(work["sensitivity"].read_text())
    text, page = read_page(write_report(work["sensitivity"], tmp_path / "s.html"))
    check_self_contained(text, page)
    assert page.sections[0]["data-kind"] == "sensitivity"
    per_point = {k: v for k, v in payload["per_point"].items() if k != "settings"}
    compare_row(page, "per_point", per_point, min_numbers=8)
    for tr in payload["trajectories"]:
        compare_row(page, tr["kind"], tr, min_numbers=6)


def test_theory_json_and_objects(work: dict[str, Path], tmp_path: Path) -> None:
    spec = json.loads(work["spectrum"].read_text())
    mf = json.loads(work["meanfield"].read_text())
    cr = json.loads(work["critical"].read_text())
    text, page = read_page(write_report(
        [work["spectrum"], work["meanfield"], work["critical"]], tmp_path / "t.html"))
    check_self_contained(text, page)
    assert [s["data-kind"] for s in page.sections] == ["theory"] * 3
    for i, (payload, min_numbers) in enumerate(((spec, 12), (mf, 8), (cr, 3))):
        numbers = {k: v for k, v in payload.items()
                   if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
        compare_row(page, "theory", numbers, min_numbers=min_numbers, section=i)
    theory = jacspec.jacobian_spectrum("relu", "orthogonal", 3, 2.0, 0.0, num_points=200)
    sim = jacspec.simulate_spectrum("relu", "orthogonal", 3, 2.0, 0.0, width=40, seed=0)
    mean_field = jacspec.mean_field("tanh", 1.5, 0.05)
    text, page = read_page(write_report({"theory": theory, "simulation": sim,
                                         "mean field": mean_field}, tmp_path / "t2.html"))
    check_self_contained(text, page, min_images=2)
    assert [s["data-kind"] for s in page.sections] == ["theory"] * 3
    assert_same_number(cells(page, 0)[("theory", "m2")], theory.m2, "m2")
    assert_same_number(cells(page, 1)[("simulation", "lambda_max")], sim.lambda_max, "sim")
    assert_same_number(cells(page, 2)[("theory", "xi_q")], mean_field.xi_q, "xi_q")


def test_zoo_store_scores_and_scatter_plots(zoo_store: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    scores = tmp_path / "scores.json"
    assert main(["zoo", "score", str(zoo_store), "--json", str(scores)]) == 0
    payload = json.loads(scores.read_text())
    out = tmp_path / "zoo.html"
    capsys.readouterr()
    assert main(["report", str(zoo_store), str(scores), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out}"]
    text, page = read_page(out)
    check_self_contained(text, page, min_images=3)
    assert [s["data-kind"] for s in page.sections] == ["zoo", "zoo"]
    assert payload["metrics"] and "test_jacobian_norm" in payload["metrics"]
    for metric, s in payload["metrics"].items():
        scalars = {k: v for k, v in s.items() if not isinstance(v, dict)}
        compare_row(page, metric, scalars, min_numbers=5)
    # scatter plots of metric vs gap come from the store, not from the scores' JSON
    assert sum("against the gap" in f for f in text.split("<figcaption>")[1:]) >= 2
    assert "Scatter plots of each metric against the gap need the runs" in text


def test_tracking_frame_tracker_store_and_json(work: dict[str, Path], tmp_path: Path) -> None:
    from jacspec.data.datasets import load_dataset
    from jacspec.track import Tracker

    frame = pd.DataFrame({"step": [0, 100, 200, 300], "alpha": [2.5, 2.25, 2.125, 2.0625],
                          "lambda_max": [1e-3, 2e-3, 4.5e-3, 1.0000000001e-2],
                          "warning": ["", "", "", "no MP bulk above the rank tolerance "
                                      "(3 of 40 eigenvalues above tol)"]})
    text, page = read_page(write_report(frame, tmp_path / "f.html"))
    check_self_contained(text, page)
    assert page.sections[0]["data-kind"] == "tracking"
    for rec in frame.to_dict(orient="records"):
        compare_row(page, f"step {rec['step']}", rec, min_numbers=3)
    assert any(w.startswith("step 300: no MP bulk above") for w in page.warnings)

    data = load_dataset("digits", "train", n=40, seed=0)
    model = build_model(SPEC)
    store = tmp_path / "track.jsonl"
    tracker = Tracker(data, metrics=("alpha", "stable_rank", "jacobian_norm"), every=1,
                      store=store, layers="all")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = data.x, data.y
    for step in range(3):
        tracker.step(model, step)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    as_json = tmp_path / "track.json"
    as_json.write_text(json.dumps(tracker.to_dict()))
    for source in (tracker, store, as_json):
        text, page = read_page(write_report(source, tmp_path / "tr.html"))
        check_self_contained(text, page, min_images=2)  # main metrics and layer rows
        for row in tracker.rows:
            compare_row(page, f"step {row['step']}",
                        {m: row[m] for m in ("alpha", "stable_rank", "jacobian_norm")},
                        min_numbers=3)
            for matrix, values in row["layers"].items():
                compare_row(page, f"step {row['step']} {matrix}", values, min_numbers=1)


def test_cli_report_of_every_json_and_the_demo_json(work: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({
        "settings": {"data": "digits", "width": 16},
        "metrics": {"true labels": {"train_accuracy": 1.0, "alpha": 2.123456789,
                                    "warning": ""},
                    "random labels": {"train_accuracy": 0.99, "alpha": None,
                                      "warning": "no power-law fit: too few"}}}))
    inputs = [work[k] for k in ("analysis", "sensitivity", "spectrum", "meanfield")] + [demo]
    out = tmp_path / "sub" / "all.html"
    assert main(["report", *map(str, inputs), "--out", str(out), "--title", "All"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    text, page = read_page(out)
    check_self_contained(text, page, min_images=4)
    assert [s["data-kind"] for s in page.sections] == [
        "analysis", "sensitivity", "theory", "theory", "comparison"]
    compare_row(page, "true labels", {"train_accuracy": 1.0, "alpha": 2.123456789},
                min_numbers=2)
    compare_row(page, "random labels", {"alpha": None}, min_numbers=1)
    assert "random labels: no power-law fit: too few" in page.warnings
    assert "<h1>All</h1>" in text


# --- details and bad input ---------------------------------------------------------------


def test_cells_show_four_significant_digits_and_keep_the_exact_value() -> None:
    assert _cell(1.234567891234e-7) == ("1.235e-07", "1.234567891234e-07")
    assert _cell(12345.678) == ("1.235e+04", "12345.678")
    assert _cell(np.float32(0.1)) == ("0.1", repr(float(np.float32(0.1))))
    assert _cell(np.int64(7)) == ("7", "7")
    assert _cell(None) == ("nan", "nan") and _cell(float("inf")) == ("inf", "inf")
    assert _cell(True) == ("True", None) and _cell("failed") == ("failed", None)


def test_kinds_detected_from_the_json_keys(work: dict[str, Path]) -> None:
    kinds = {name: detect_kind(json.loads(work[name].read_text()))
             for name in ("analysis", "layers", "sensitivity", "spectrum", "meanfield",
                          "critical")}
    assert kinds == {"analysis": "analysis", "layers": "analysis",
                     "sensitivity": "sensitivity", "spectrum": "theory",
                     "meanfield": "theory", "critical": "theory"}
    assert detect_kind([{"step": 0, "alpha": 2.0}]) == "tracking"
    assert detect_kind({"metrics": {"m": {"kendall_tau": 0.1}}, "factors": [],
                        "gap": "gap"}) == "zoo"


@pytest.mark.parametrize("bad,match", [
    ({"hello": 1}, "cannot tell which jacspec result"),
    (pd.DataFrame({"alpha": [1.0]}), "needs a 'step' column"),
    ([], "is empty"),
])
def test_bad_inputs_are_one_clear_error(bad: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        write_report(bad, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_bad_inputs_through_the_cli(work: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    weird = tmp_path / "weird.json"
    weird.write_text('{"a": 1}')
    for argv, words in (
        ([str(tmp_path / "missing.json")], "does not exist"),
        ([str(weird)], "weird.json: cannot tell"),
        ([str(work["ckpt"])], "is not a text file"),
        ([str(work["analysis"]), "--out", str(tmp_path)], "is a folder"),
    ):
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
    with pytest.raises(TypeError, match="cannot report a object"):
        build_section(object())
