"""Time ``import jacspec`` (the lazy façade) against ``import torch`` in fresh interpreters.

    .venv/bin/python benchmarks/import_time.py [--repeat 5]

Each import runs in a new process with ``-X importtime``; the cumulative time of the
top-level module is read from its report (best of ``--repeat``). Last line:
``jacspec_import_seconds=<t> torch_import_seconds=<t> matplotlib_loaded=<bool>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def import_seconds(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, from ``-X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True)
    for line in reversed(proc.stderr.splitlines()):
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1]) / 1e6
    raise RuntimeError(f"no importtime line for {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    jac = min(import_seconds("jacspec") for _ in range(args.repeat))
    torch = min(import_seconds("torch") for _ in range(args.repeat))
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, jacspec; print('matplotlib' in sys.modules)"],
        capture_output=True, text=True, check=True).stdout.strip()
    print(f"import jacspec: {jac:.3f} s (best of {args.repeat}); import torch: {torch:.3f} s; "
          f"jacspec / torch = {jac / torch:.3f}")
    print(f"jacspec_import_seconds={jac:.3f} torch_import_seconds={torch:.3f} "
          f"matplotlib_loaded={loaded}")


if __name__ == "__main__":
    main()
