"""The CLI's error line: the text of a FedriskError reaches the user as written.

Error lines name spec tables (``[task] categories``, ``[privacy]``, ``[parties.bank1]``); the console
that prints them read ``[word]`` as a style tag and dropped it ("list their categories in
categories = ..."), so the line told the user to edit a table it no longer named.
"""
from __future__ import annotations

import pytest
import typer

from fedrisk import cli
from fedrisk.errors import DataError


def test_an_error_line_keeps_the_spec_tables_it_names(capsys):
    text = ("bank 'bank1': text columns ['country'] have no vocabulary; list their categories in [task] categories = "
            "{ country = [...] } or set [privacy] noise_multiplier in [parties.bank1]")
    with pytest.raises(typer.Exit):
        cli._fail(DataError(text))
    err = " ".join(capsys.readouterr().err.split())
    assert "error: " + text in err, err


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


def test_every_help_text_keeps_the_spec_tables_it_names():
    """`fedrisk psi key --help` said "job spec (TOML) with  protocol = 'unbalanced'" and "the key holder
    ( key_holder)": rich read ``[psi]`` in the help strings as a style tag, so the help no longer named the
    table to set. Every ``[table]`` a command's or option's help names must reach the rendered --help."""
    import re

    from typer.main import get_command
    from typer.testing import CliRunner

    root = get_command(cli.app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        tables = {m for t in texts for m in re.findall(r"\[[a-z_.]+\]", t)}
        if not tables:
            continue
        out = " ".join(runner.invoke(cli.app, [*path, "--help"], terminal_width=200).output.split())
        for table in tables:
            checked += 1
            assert table in out, f"`fedrisk {' '.join(path)} --help` lost {table}: {out}"
    assert checked, "no help text names a spec table: the check ran on nothing"
