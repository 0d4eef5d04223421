"""Test-wide settings: one intra-op thread (the tests' tensors are small, and several
pytest processes may share the machine's cores), float64 references throughout."""

from __future__ import annotations

import os

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(int(os.environ.get("JACSPEC_TEST_THREADS", "1")))
