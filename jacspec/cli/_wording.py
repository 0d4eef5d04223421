"""Messages of the library in the CLI's words: the Python keywords a message suggests
(``method='auto'``, ``max_memory``, ...) replaced by the flags that do the same, so that a
hint printed by ``jacspec`` names something the user can type."""

from __future__ import annotations

#: Python spellings in library messages and the CLI flags that do the same.
FLAGS = {
    "jacspec.analyze(..., method='auto')": "--method auto",
    "jacspec.estimate_esd(..., method='slq')": "--method slq",
    "method='auto'": "--method auto",
    "method='slq'": "--method slq",
    "side='dual'": "--side dual",
    "side='primal'": "--side primal",
    "route='direct'": "--route direct",
    "route='factored'": "--route factored",
    "(max_memory)": "(--max-memory-gib)",
    "dtype=torch.float64": "--dtype float64",
}


def cli_wording(message: str) -> str:
    """``message`` with the library's Python keywords replaced by the CLI flags (:data:`FLAGS`)."""
    for python, flag in FLAGS.items():
        message = message.replace(python, flag)
    return message
