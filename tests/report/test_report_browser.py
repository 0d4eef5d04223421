"""The HTML report in a real headless browser (Chromium from the system's packages, no
network): the page loads without console errors, every figure is decoded and displayed, and
the screenshot is not blank. Control pages with a script error, a broken image and an image
from the network show that each check can fail.

Skipped only when no Chromium is installed and ``CI`` is not set; under CI (``.ci/run``
installs Chromium) a missing browser is a failure."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import jacspec
from jacspec.models.builders import build_model

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Flags for a browser that reaches nothing outside the page: no network, no first-run,
#: background, sync or update traffic, every host name unresolvable.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND")


def find_browser() -> str | None:
    override = os.environ.get("JACSPEC_CHROMIUM")
    if override:
        return override
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium was found (looked for "
                        f"{', '.join(BROWSERS)}); .ci/run installs it with apt-get")
        pytest.skip("no Chromium installed (apt-get install chromium) and CI is not set")
    return path


def run_browser(browser: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=False)


def load(browser: str, page: Path, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """``(body attributes after the load event, console lines)`` of ``page``."""
    done = run_browser(browser, page, tmp, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body is not None, done.stdout[:2000]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    console = [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln]
    return attrs, console


def screenshot(browser: str, page: Path, tmp: Path, size: str = "1200,3000") -> np.ndarray:
    png = tmp / f"{page.stem}.png"
    done = run_browser(browser, page, tmp, f"--screenshot={png}", f"--window-size={size}")
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    return np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A page of three kinds: an analysis (three figures), a tracking frame, a theory
    spectrum."""
    from jacspec.data.datasets import load_dataset

    spec = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 2,
            "seed": 0}
    data = load_dataset("digits", "train", n=80, seed=0)
    analysis = jacspec.analyze(build_model(spec).double(), data, dtype=torch.float64)
    tracking = pd.DataFrame({"step": [0, 50, 100, 150], "alpha": [3.1, 2.7, 2.4, 2.2],
                             "stable_rank": [5.0, 4.1, 3.2, 2.9]})
    theory = jacspec.jacobian_spectrum("tanh", "gaussian", 4, 1.05, 2e-5, num_points=200)
    folder = tmp_path_factory.mktemp("browser")
    return jacspec.write_report({"analysis": analysis, "tracking": tracking, "theory": theory},
                                folder / "report.html")


def test_page_loads_without_console_errors_and_shows_every_figure(
        browser: str, report: Path, tmp_path: Path) -> None:
    num_imgs = report.read_text().count("<img ")
    assert num_imgs >= 5
    attrs, console = load(browser, report, tmp_path)
    assert console == []
    assert attrs.get("data-loaded") == "1"
    assert attrs.get("data-images") == str(num_imgs)
    assert attrs.get("data-images-ok") == str(num_imgs)  # every figure decoded (width > 0)


def test_screenshot_is_not_blank(browser: str, report: Path, tmp_path: Path) -> None:
    pixels = screenshot(browser, report, tmp_path)
    assert pixels.shape[1] == 1200
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 500  # text, tables and figures, not a blank page
    ink = (pixels.min(axis=2) < 200).mean()
    assert 0.02 < ink < 0.9


def test_the_checks_catch_errors_broken_and_network_images(browser: str, tmp_path: Path
                                                          ) -> None:
    """Controls: the page's own loader with a script error, an undecodable image and an image
    on the network (unreachable here) is reported as such."""
    page = tmp_path / "control.html"
    text = jacspec.write_report(pd.DataFrame({"step": [0, 1], "alpha": [2.0, 3.0]}),
                                tmp_path / "base.html").read_text()
    text = text.replace("</main>", '<img src="data:image/png;base64,AAAA" alt="broken">'
                        '<img src="http://example.com/figure.png" alt="remote">'
                        '<script>throw new Error("control failure");</script></main>')
    page.write_text(text)
    attrs, console = load(browser, page, tmp_path)
    assert any("control failure" in ln for ln in console), console
    assert attrs.get("data-loaded") == "1"
    assert attrs.get("data-images") == "3" and attrs.get("data-images-ok") == "1"
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    pixels = screenshot(browser, blank, tmp_path, "400,300")
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) <= 2
