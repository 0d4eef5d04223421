"""The README's Python examples run as written (one shared namespace, in order), and use no
name the façade only keeps for backward compatibility (DeprecationWarning is an error).

Two substitutions keep the run short and self-contained: the 2^20-point trajectory of the
sensitivity block is sampled at 2^12 points, and the report block is given the objects made
above instead of a ``sens.json`` file from the command line.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_examples():
    blocks = _blocks()
    assert len(blocks) >= 4
    assert any("jacspec.analyze" in b for b in blocks)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"(?!torch)")
        warnings.filterwarnings("error", message=r"jacspec\.\w+ moved to")
        for i, block in enumerate(_blocks()):
            code = block.replace("2**20", "2**12").replace(', "sens.json"', "")
            try:
                exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
            except Exception as exc:  # name the block that failed
                pytest.fail(f"README python block {i + 1} failed: {type(exc).__name__}: {exc}")
    assert (tmp_path / "track.png").is_file()
    assert (tmp_path / "report.html").is_file()
