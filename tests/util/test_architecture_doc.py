"""``docs/architecture.md`` cannot go stale silently: it names every module, and only real paths.

- Every module file under ``jacspec/`` (``__init__.py`` files excepted) is named in the doc by
  its path relative to ``jacspec/`` (``spectra/slq.py``) or by its dotted name
  (``jacspec.spectra.slq``).
- Every ``*.py``/``*.md``/``*.toml`` path the doc names exists, under ``jacspec/`` or under
  the repository root, and every dotted ``jacspec.…`` name leads to a module, or to a module
  whose source names the attribute that follows.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jacspec"
DOC = ROOT / "docs" / "architecture.md"

PATH = re.compile(r"(?<![\w/.-])([\w][\w/.-]*\.(?:py|md|toml))\b")
DOTTED = re.compile(r"(?<![\w.])(jacspec(?:\.\w+)+)")


def _modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if "__pycache__" not in p.parts and p.name != "__init__.py")


def _dotted(rel: str) -> str:
    return "jacspec." + rel.removesuffix(".py").replace("/", ".")


def _resolves(dotted: str) -> bool:
    """A dotted name is a module or package, or a name its module's source defines, imports
    or lists as a quoted string (the lazy tables of ``__getattr__``)."""
    here = ROOT
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if (here / part).is_dir():
            here = here / part
            continue
        if (here / f"{part}.py").is_file():
            here = here / f"{part}.py"
            rest = parts[i + 1:]
            break
        if here.is_dir() and (here / "__init__.py").is_file():
            here, rest = here / "__init__.py", parts[i:]
            break
        return False
    else:
        return True
    if not rest:
        return True
    name = re.escape(rest[0])
    defined = (rf"\b(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|^[^#\n]*\bimport\b[^\n]*\b{name}\b"
               rf"|^\s+{name},?\s*(?:#.*)?$|[\"']{name}[\"']")
    return re.search(defined, here.read_text(), re.M) is not None


def test_every_module_is_named_in_the_doc():
    text = DOC.read_text()
    named = set(PATH.findall(text)) | set(DOTTED.findall(text))
    missing = [rel for rel in _modules() if rel not in named and _dotted(rel) not in named]
    assert not missing, (f"docs/architecture.md names no line for these modules (add one, by "
                         f"path relative to jacspec/): {missing}")


def test_every_path_named_in_the_doc_exists():
    text = DOC.read_text()
    gone = sorted({p for p in PATH.findall(text)
                   if not (PACKAGE / p).is_file() and not (ROOT / p).is_file()})
    assert not gone, f"docs/architecture.md names paths that do not exist: {gone}"


def test_every_dotted_name_in_the_doc_resolves():
    gone = sorted({d for d in DOTTED.findall(DOC.read_text()) if not _resolves(d)})
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_readers_see_paths_and_dotted_names():
    text = "see `spectra/slq.py`, tests/util/x.py and jacspec.zoo.rank.grid, not foo.pyc"
    assert PATH.findall(text) == ["spectra/slq.py", "tests/util/x.py"]
    assert DOTTED.findall(text) == ["jacspec.zoo.rank.grid"]
    assert _resolves("jacspec.spectra.slq")
    assert _resolves("jacspec.zoo.rank")
    assert _resolves("jacspec._util.extras.require")
    assert not _resolves("jacspec.zoo.train")
    assert not _resolves("jacspec.spectra.no_such_name_anywhere")
