"""The package's structure, read from the source, and the spectrum options' one home.

- The import graph of ``jacspec`` (every ``import``/``from ... import`` of every module,
  parsed with ast; nothing is imported): no cycle among the imports that run at import time,
  and among all imports (function bodies included) only the cycles listed in
  ``KNOWN_CYCLES``, except the documented one-way exception of a result's ``plot()``
  importing ``jacspec.report``. No module inside the package imports the façade itself.
- No function is over 80 lines (docstring included) outside ``LONG_FUNCTIONS``.
- No module imports an underscored name from another ``jacspec`` module (outside
  ``KNOWN_PRIVATE_IMPORTS``): a name used across modules is public in its home.
- :class:`~jacspec.spectra.options.SLQOptions` / :class:`DensityOptions`: validated once,
  passed whole, and the keywords give the same estimate; one ``zero_tol`` default.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jacspec"

#: Cycles (strongly connected components) of the full import graph, function-level imports
#: included and ``plot()``'s lazy import of ``jacspec.report`` left out. Each is broken at
#: import time by a function-level import; a new cycle, or a module joining one, fails.
KNOWN_CYCLES: set[frozenset[str]] = set()

#: Functions over 80 lines that are being split elsewhere (module, function).
LONG_FUNCTIONS: set[tuple[str, str]] = set()
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _imports(path: Path, module: str, modules: dict[str, Path]):
    """Yield (target module, line, at import time?, inside a ``plot`` function?) for every
    import in ``path``; ``from X import y`` targets ``X.y`` when that is a module."""
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, func: str | None, guarded: bool):
        for child in ast.iter_child_nodes(node):
            name, guard = func, guarded
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                guard = True
            now = func is None and not guarded
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, now, func == "plot"
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    yield (sub if sub in modules else target), child.lineno, now, func == "plot"
            yield from visit(child, name, guard)

    yield from visit(ast.parse(path.read_text(), filename=str(path)), None, False)


def _graph(*, import_time_only: bool) -> dict[str, set[str]]:
    """Module -> the jacspec modules it imports (the façade's own lazy names left out: it
    imports nothing at import time and no module imports it)."""
    modules = _sources()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _, now, in_plot in _imports(path, module, modules):
            if target not in modules or target == module or module == "jacspec":
                continue
            if import_time_only and not now:
                continue
            if in_plot and target.startswith("jacspec.report"):
                continue  # a result's plot() may import its figure (figures live in report/)
            graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.add(frozenset(comp))
    return found


def test_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_no_import_cycle_at_import_time():
    assert _cycles(_graph(import_time_only=True)) == set()


def test_import_cycles_are_only_the_known_ones():
    """Function-level imports included: exactly the cycles of ``KNOWN_CYCLES``."""
    cycles = _cycles(_graph(import_time_only=False))
    new = sorted(sorted(c) for c in cycles - KNOWN_CYCLES)
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - cycles)
    assert not new, f"new import cycles: {new}"
    assert not gone, f"these cycles are gone, remove them from KNOWN_CYCLES: {gone}"


def test_the_graph_sees_function_level_and_plot_imports(tmp_path):
    """The reader would see an import inside a function, a relative one and plot()'s."""
    modules = {"jacspec.a": Path("a.py"), "jacspec.b": Path("b.py")}
    src = tmp_path / "a.py"
    src.write_text("from . import b\ndef f():\n    import jacspec.b\n"
                   "def plot():\n    from jacspec.report import x\n")
    found = list(_imports(src, "jacspec.a", modules))
    assert ("jacspec.b", 1, True, False) in found
    assert ("jacspec.b", 3, False, False) in found
    assert ("jacspec.report", 5, False, True) in found


#: Modules that still import the façade (``import jacspec``) for its entry points (none:
#: track.checkpoints and track.tracker import analyze, load_model, ... from their homes).
KNOWN_FACADE_IMPORTS: set[str] = set()


def _facade_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import the façade: ``import jacspec`` or ``from jacspec import
    name`` (``__version__`` excepted: the package's version, not an entry point)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name == "jacspec" for a in node.names):
            lines.append(node.lineno)
        elif (isinstance(node, ast.ImportFrom) and node.level == 0
              and node.module == "jacspec"
              and any(a.name != "__version__" for a in node.names)):
            lines.append(node.lineno)
    return lines


def test_no_module_imports_the_facade():
    bad = []
    for module, path in _sources().items():
        if module == "jacspec" or module in KNOWN_FACADE_IMPORTS:
            continue
        bad += [f"{path.relative_to(PACKAGE.parent)}:{line}" for line in _facade_imports(path)]
    assert not bad, "import the defining module, not the façade: " + ", ".join(bad)


def test_the_facade_reader_sees_both_spellings(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import jacspec\nfrom jacspec import esd\nfrom jacspec import __version__\n"
                   "import jacspec.spectra\n")
    assert _facade_imports(src) == [1, 2]


def test_no_function_over_80_lines():
    long = {}
    for module, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[(module, node.name)] = lines
    new = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: {new}"


def test_figures_live_in_report_and_theory_loads_no_matplotlib():
    assert not (PACKAGE / "theory" / "plots.py").exists()
    code = ("import sys, jacspec.theory; "
            "assert 'matplotlib' not in sys.modules, 'jacspec.theory imported matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_old_theory_figure_names_resolve_with_a_warning():
    import jacspec.theory
    from jacspec.report import theory_plots

    with pytest.warns(DeprecationWarning, match="jacspec.report.theory_plots"):
        assert jacspec.theory.phase_diagram is theory_plots.phase_diagram
    with pytest.raises(AttributeError):
        jacspec.theory.no_such_figure  # noqa: B018


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("field, value", [
    ("num_steps", 0), ("num_vectors", -1), ("seed", 1.5), ("distribution", "uniform"),
    ("block_size", 0), ("top_k", 0), ("top_steps", -1), ("num_steps", True),
])
def test_slq_options_refuse_bad_fields(field, value):
    from jacspec.spectra.options import SLQOptions

    with pytest.raises(ValueError, match=field):
        SLQOptions(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("num_points", 0), ("sigma", -1.0), ("sigma", float("nan")), ("rel_sigma", 0.0),
    ("log_scale", "yes"), ("zero_tol", -1e-6), ("zero_tol", float("inf")),
])
def test_density_options_refuse_bad_fields(field, value):
    from jacspec.spectra.options import DensityOptions

    with pytest.raises(ValueError, match=field):
        DensityOptions(**{field: value})


def test_options_are_frozen_and_replace_validates():
    import dataclasses

    from jacspec.spectra.options import DensityOptions, SLQOptions

    o = SLQOptions(num_steps=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.num_steps = 6  # type: ignore[misc]
    assert o.replace(num_vectors=3).to_dict() == {**SLQOptions().to_dict(), "num_steps": 5,
                                                   "num_vectors": 3}
    with pytest.raises(TypeError, match="no field 'steps'"):
        o.replace(steps=3)
    with pytest.raises(ValueError, match="num_points"):
        DensityOptions().replace(num_points=0)
    assert DensityOptions(sigma=0.1, rel_sigma=0.0).rel_sigma == 0.0  # unused with sigma


def test_one_zero_tol_default():
    """Nodes <= 1e-6 λ_max are zeros in every density (spectral_density, slq_density and
    estimate_from_esd used to disagree: 1e-8 against 1e-6)."""
    import inspect

    from jacspec.spectra import esd_estimate, estimate, slq
    from jacspec.spectra.options import ZERO_TOL, DensityOptions

    assert ZERO_TOL == 1e-6 and DensityOptions().zero_tol == ZERO_TOL
    for module in (slq, estimate, esd_estimate):
        assert "zero_tol: float = 1e-" not in inspect.getsource(module)
    nodes = np.array([1.0, 0.5, 5e-7, 1e-7, 2e-6])
    d = slq.spectral_density(nodes)
    assert d.zero_mass == pytest.approx(2 / 5)  # 5e-7 and 1e-7, by hand
    assert slq.spectral_density(nodes, zero_tol=1e-8).zero_mass == 0.0


def test_options_and_keywords_give_the_same_estimate():
    from jacspec.spectra.estimate import estimate_from_operator
    from jacspec.spectra.operators import gram_operator
    from jacspec.spectra.options import DensityOptions, SLQOptions

    J = np.random.default_rng(3).standard_normal((30, 12))
    kw = dict(num_steps=6, num_vectors=3, seed=4, top_k=2, num_points=64, log_scale=True)
    a = estimate_from_operator(gram_operator(J, side="dual"), **kw)
    b = estimate_from_operator(
        gram_operator(J, side="dual"),
        slq_options=SLQOptions(num_steps=6, num_vectors=3, seed=4, top_k=2),
        density_options=DensityOptions(num_points=64, log_scale=True),
    )
    np.testing.assert_array_equal(a.nodes, b.nodes)
    np.testing.assert_array_equal(a.grid_density, b.grid_density)
    assert a.params["num_steps"] == 6 and a.params["log_scale"] is True
    # a keyword overrides the options' field
    c = estimate_from_operator(gram_operator(J, side="dual"),
                               slq_options=SLQOptions(num_steps=6), num_steps=4)
    assert c.params["num_steps"] == 4
    # the top eigenvalue against a dense eigensolver
    ref = np.linalg.eigvalsh(J.T @ J / 30)[::-1]
    np.testing.assert_allclose(a.top_eigenvalues[0], ref[0], rtol=1e-8)


def test_unknown_spectrum_keywords_are_refused():
    from jacspec.spectra.estimate import estimate_from_operator
    from jacspec.spectra.operators import gram_operator
    from jacspec.spectra.slq import slq_density, spectral_density

    J = np.eye(4)
    with pytest.raises(TypeError, match="num_step"):
        estimate_from_operator(gram_operator(J, side="dual"), num_step=3)
    with pytest.raises(TypeError, match="slq_options"):
        estimate_from_operator(gram_operator(J, side="dual"), slq_options={"num_steps": 3})
    with pytest.raises(TypeError, match="bins"):
        slq_density(J, 3, 2, bins=4)
    with pytest.raises(TypeError, match="no field 'bins'"):
        spectral_density(np.ones(3), bins=4)


# --------------------------------------------------------------------------- privates

#: (module, name) pairs of underscored names still imported from another module of the
#: package. Empty: a name used outside its home module is public there.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()


def _private_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from jacspec... import _name`` in ``path`` (module-
    and function-level; dunders such as ``__version__`` are not privates)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] == "jacspec"):
            found += [(node.module, a.name, node.lineno) for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_the_private_import_reader_sees_both_levels(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from jacspec.a import (\n    _x,\n    y,\n)\nfrom jacspec import __version__\n"
                   "def f():\n    from jacspec.b import _z as z\nfrom other import _w\n")
    assert _private_imports(src) == [("jacspec.a", "_x", 1), ("jacspec.b", "_z", 7)]


def test_no_private_name_is_imported_across_modules():
    """A name used outside its home module is public there (no ``_`` prefix)."""
    found = {}
    for module, path in _sources().items():
        for home, name, line in _private_imports(path):
            found.setdefault((home, name), []).append(f"{module}:{line}")
    new = {k: v for k, v in sorted(found.items()) if k not in KNOWN_PRIVATE_IMPORTS}
    gone = sorted(KNOWN_PRIVATE_IMPORTS - found.keys())
    assert not new, f"{len(new)} private names imported across modules: {new}"
    assert not gone, f"no longer imported, remove them from KNOWN_PRIVATE_IMPORTS: {gone}"
