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
