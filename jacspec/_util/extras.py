"""The one way jacspec imports an optional package.

The core (Jacobians, spectra, heavy tails, sensitivity, theory) needs torch, numpy, scipy,
pandas, psutil and tqdm only. Everything else comes with an extra of ``pyproject.toml``
(``jacspec[data]``, ``[zoo]``, ``[report]``, ``[ray]``, ``[text]``) and is imported where a
feature needs it, through :func:`require`: a missing package raises
:class:`MissingExtraError` whose message is one line naming the extra that installs it,
``"<feature> needs <package>: pip install 'jacspec[<extra>]'"``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "missing_extra", "require"]


class MissingExtraError(ImportError):
    """An optional package that a feature needs is not installed. ``str(error)`` is one
    line naming the extra to install; ``package`` and ``extra`` hold the two names."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        super().__init__(f"{what} needs {package}: pip install 'jacspec[{extra}]'",
                         name=package)
        self.package, self.extra, self.what = package, extra, what


def missing_extra(package: str, extra: str, what: str) -> MissingExtraError:
    """The error for ``what`` missing ``package`` (installed by ``jacspec[extra]``), for a
    caller that looks a package up without importing it (``importlib.util.find_spec``)."""
    return MissingExtraError(package, extra, what)


def require(module: str, extra: str, what: str, *, package: str | None = None) -> ModuleType:
    """``import module`` (a dotted name), or raise :class:`MissingExtraError` naming
    ``jacspec[extra]`` when the module's package is not installed.

    ``what`` names the feature (``"jacspec.report"``); ``package`` is the name pip knows
    (default: the module's top-level name, e.g. ``package="scikit-learn"`` for ``sklearn``).
    Only a missing ``module`` (or a package above it) becomes a MissingExtraError: an
    installed package that fails to import for another reason raises its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or not (module == missing or module.startswith(missing + ".")):
            raise  # something the installed package itself imports is missing: a real bug
        raise MissingExtraError(package or module.split(".")[0], extra, what) from None
