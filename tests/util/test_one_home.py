"""A concept has one home: names and tables defined once in the package, imported elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jacspec"

#: (what, a regular expression matching a definition of it, its home)
DEFINITIONS = [
    ("the main row's name", r'^\s*MAIN\s*=\s*"input->output"', "_util/names.py"),
    ("the dtypes by name", r'=\s*\{\s*"float32":\s*torch\.float32', "jacobian/options.py"),
    ("the class-sum-zero basis", r"^def class_sum_complement\(", "jacobian/sketch_rows.py"),
]


@pytest.mark.parametrize(("what", "pattern", "home"), DEFINITIONS,
                         ids=[d[0] for d in DEFINITIONS])
def test_defined_once(what: str, pattern: str, home: str) -> None:
    found = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if re.search(pattern, p.read_text(), re.M)]
    assert found == [home], f"{what} is defined in {found}; its one home is {home}"


def test_one_progress_bar() -> None:
    """Every progress bar comes from jacspec._util.progress (tqdm imported there only)."""
    users = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert users == ["_util/progress.py"], users
