"""The package's layer order, read from the source: a lower layer never imports a higher one.

Every ``import`` and ``from ... import`` in every module of ``jacspec`` is checked, the ones
inside functions included. The one exception: a result's ``plot()`` method may import
``jacspec.report`` (figures live there and load matplotlib lazily).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jacspec"

#: Layer of each top-level part of the package, lowest first.
LAYERS: dict[str, int] = {
    "_util": 0,
    "data": 1,
    "models": 2,
    "jacobian": 3,
    "spectra": 4,
    "heavytail": 5,
    "analysis": 6,
    "sensitivity": 6,
    "theory": 6,
    "zoo": 7,
    "track": 7,
    "report": 8,
    "cli": 9,
}


def _part(module: str) -> str | None:
    """The top-level part of a dotted ``jacspec.X.Y`` name (None for the façade itself)."""
    parts = module.split(".")
    if parts[0] != "jacspec":
        return None
    return parts[1] if len(parts) > 1 else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool):
    """Yield (imported module, line, enclosing function name) for every import in ``tree``."""

    def visit(node: ast.AST, func: str | None):
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, func
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                yield target, child.lineno, func
            yield from visit(child, name)

    yield from visit(tree, None)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    parts.discard("__init__")
    parts.discard("__main__")
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"add these parts of jacspec to LAYERS: {missing}"


def test_no_lower_layer_imports_a_higher_one():
    violations = []
    for path in _modules():
        module = _module_name(path)
        own = _part(module)
        if own is None:  # the façade may name anything (lazily)
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, line, func in _imports(tree, module, path.name == "__init__.py"):
            other = _part(target)
            if other is None or other not in LAYERS:
                continue
            if LAYERS[other] <= LAYERS[own]:
                continue
            if other == "report" and func == "plot":
                continue
            rel = path.relative_to(PACKAGE.parent)
            violations.append(f"{rel}:{line} ({own}) imports {target} ({other})")
    assert not violations, "lower layer imports a higher one:\n" + "\n".join(violations)


def test_the_checker_sees_function_level_and_relative_imports():
    """The reader above would catch an upward import in a function body or a relative one."""
    source = "def f():\n    from jacspec.cli import main\nfrom ..report import x\n"
    found = list(_imports(ast.parse(source), "jacspec.data.batches", False))
    assert ("jacspec.cli", 2, "f") in found
    assert ("jacspec.report", 3, None) in found


@pytest.mark.parametrize("heavy", ["torch", "matplotlib", "pandas", "scipy"])
def test_import_jacspec_is_light(heavy):
    """``import jacspec`` loads the façade only: torch, matplotlib, pandas and scipy are
    imported on first use (``benchmarks/import_time.py`` times it)."""
    code = f"import sys, jacspec; assert {heavy!r} not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_facade_names_resolve_and_shadow_no_module():
    import importlib

    import jacspec

    for name in jacspec.__all__:
        assert getattr(jacspec, name) is not None
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"jacspec.{name}")
