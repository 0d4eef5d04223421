"""Every option of every jacspec command carries a help string; renamed options keep their old
spelling as a hidden, deprecated alias."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from jacspec.cli._common import DeprecatedAlias
from jacspec.cli.main import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]
          ) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))
        else:
            yield path, action


ACTIONS = list(_walk(build_parser(), ("jacspec",)))


def test_the_walk_reaches_every_command() -> None:
    commands = {path[1] for path, _ in ACTIONS if len(path) > 1}
    assert {"analyze", "demo", "sensitivity", "theory", "zoo"} <= commands
    assert ("jacspec", "theory", "spectrum") in {path for path, _ in ACTIONS}


@pytest.mark.parametrize(
    ("path", "action"), ACTIONS,
    ids=[" ".join(p[1:]) + " " + (a.option_strings[-1] if a.option_strings else a.dest)
         for p, a in ACTIONS])
def test_every_option_has_help(path: tuple[str, ...], action: argparse.Action) -> None:
    if isinstance(action, argparse._HelpAction):
        return
    if isinstance(action, DeprecatedAlias):  # hidden on purpose, named by its replacement
        assert action.help is argparse.SUPPRESS and action.new.startswith("--")
        return
    assert isinstance(action.help, str) and action.help.strip(), \
        f"{' '.join(path)} {action.option_strings or action.dest} has no help"
    assert action.help is not argparse.SUPPRESS


def test_theory_weight_init_is_shown_and_the_old_spelling_is_hidden(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["theory", "spectrum", "--help"])
    out = capsys.readouterr().out
    assert "--weight-init {gaussian,orthogonal}" in out and "--instances" in out
    assert "--weights" not in out and "--samples" not in out


def test_theory_choices_match_the_library() -> None:
    from jacspec.cli.commands.theory import WEIGHT_INITS
    from jacspec.theory.freeprob import WEIGHTS

    assert tuple(WEIGHT_INITS) == tuple(WEIGHTS)


def test_theory_deprecated_spellings_still_work_with_a_one_line_note(capsys) -> None:
    args = ["theory", "spectrum", "--activation", "relu", "--depth", "2", "--sigma-w2", "2",
            "--sigma-b2", "0", "--points", "40", "--json", "-"]
    assert main([*args, "--weight-init", "orthogonal"]) == 0
    new = capsys.readouterr()
    assert new.err == ""
    assert main([*args, "--weights", "orthogonal"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out
    assert old.err.strip().splitlines() == [
        "jacspec theory spectrum: --weights is deprecated; use --weight-init"]


def test_theory_deprecated_samples_reaches_instances() -> None:
    parser = build_parser()
    base = ["theory", "spectrum", "--activation", "relu", "--weight-init", "gaussian",
            "--depth", "2", "--sigma-w2", "2", "--sigma-b2", "0"]
    assert parser.parse_args(base).instances == 1
    assert parser.parse_args([*base, "--instances", "3"]).instances == 3
    assert parser.parse_args([*base, "--samples", "4"]).instances == 4


def test_theory_spectrum_needs_a_weight_distribution(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["theory", "spectrum", "--activation", "relu", "--depth", "2", "--sigma-w2", "2",
              "--sigma-b2", "0"])
    assert err.value.code == 2
    assert "--weight-init is required" in capsys.readouterr().err
