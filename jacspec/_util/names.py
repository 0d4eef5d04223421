"""Names shared by every layer of jacspec (no torch, no numpy): the one home of each."""

from __future__ import annotations

#: The row of the whole network, ``d g(f(x)) / d x``: the target every entry point
#: computes by default, and the first row of every table.
MAIN = "input->output"
