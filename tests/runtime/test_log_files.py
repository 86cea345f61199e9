"""A participant's logger writes to its file only, once per line, even when set up twice."""
from __future__ import annotations

import logging

from fedrisk.runtime.log_files import log_to_file
from fedrisk.transport.safe_text import EscapingFormatter


def test_a_second_set_up_does_not_double_lines_and_nothing_reaches_the_root_logger(tmp_path, capsys):
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root_catch = Catch()
    logging.getLogger().addHandler(root_catch)
    try:
        log = logging.getLogger("fedrisk.test.log_files")
        fmt = EscapingFormatter("%(levelname)s %(message)s")
        log_to_file(log, tmp_path / "a.log", fmt, console=False)
        log_to_file(log, tmp_path / "a.log", fmt, console=True)
        log.info("from a partner:\nsecond line")
        log.debug("not kept")
    finally:
        logging.getLogger().removeHandler(root_catch)
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("INFO from a partner:")  # one line, escaped
    assert seen == []
    assert capsys.readouterr().err.splitlines() == lines
