"""``eventforge worker`` from the command line: its usage name, log level and log format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from eventforge.cli import main
from eventforge.config._logging import JsonFormatter, setup_logging


def test_worker_help_shows_the_eventforge_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: eventforge worker ")
    assert "--log-format {text,json}" in out


def test_unknown_log_level_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--import", "handlers.py", "--log-level", "LOUD"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown log level 'LOUD'; choose one of: DEBUG, INFO, WARNING, ERROR, CRITICAL" in err
    assert "Traceback" not in err


def test_log_level_is_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    # accepted, so the worker goes on to fail on the missing module, not on the level
    assert main(["worker", "--import", "no_such_module_xyz", "--log-level", "debug"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_json_log_lines_carry_level_logger_message_extras_and_exception() -> None:
    logger = logging.getLogger("eventforge.test.json")
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.warning("slow call %s", "resize", extra={"elapsed": 1.5})
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in records)
    assert first["level"] == "WARNING"
    assert first["logger"] == "eventforge.test.json"
    assert first["message"] == "slow call resize"
    assert first["elapsed"] == 1.5
    assert "T" in first["time"]
    assert "ZeroDivisionError" in second["exception"]


def test_setup_logging_writes_json_to_a_file(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    path = tmp_path / "worker.log"
    try:
        setup_logging("info", "json", str(path))
        logging.getLogger("eventforge.test.file").info("started")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = json.loads(path.read_text().splitlines()[-1])
    assert (line["level"], line["message"]) == ("INFO", "started")
    with pytest.raises(ValueError, match="choose one of: text, json"):
        setup_logging("INFO", "yaml")
