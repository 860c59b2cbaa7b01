"""Logging for eventforge's own commands: a level, a text or JSON format, stderr or a file."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "setup_logging"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

# LogRecord attributes that are not extra fields passed with ``logger.info(..., extra={})``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=repr)


def level_name(text: str) -> str:
    """``text`` as a logging level name, or ``ValueError`` naming the accepted ones."""
    name = text.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {text!r}; choose one of: {', '.join(LEVELS)}")
    return name


def setup_logging(level: str = "WARNING", fmt: str = "text", file: str | None = None) -> None:
    """Configure the root logger once: ``level``, ``fmt`` (text or json), stderr or ``file``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    handler: logging.Handler = (
        logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level_name(level), handlers=[handler], force=True)
