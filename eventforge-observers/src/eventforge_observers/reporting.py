"""Structured logging of observed calls and of meter emissions.

Every record carries its facts in ``record.eventforge`` (a dict), so a JSON log formatter or a
log shipper gets fields, not prose to parse.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from eventforge.observing import CallEvent, Eventful

__all__ = ["LoggingReporter"]


class LoggingReporter:
    """Logs observed calls (as an observer) and meter emissions (as a listener).

    As an observer (``@observe(LoggingReporter())``, ``@task(on_execute=[...])``) it logs one
    record per finished call at ``level`` and one per failure at ``error_level``. Attached to
    meters with :meth:`watch`, it logs each ``"observation"`` and ``"threshold"`` event they
    emit; :meth:`report` logs a snapshot of meters' ``stats`` on demand.
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        *,
        level: int = logging.INFO,
        error_level: int = logging.ERROR,
        log_calls: bool = True,
    ) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "eventforge.observers.report")
        self.logger = logger
        self.level = level
        self.error_level = error_level
        self.log_calls = log_calls

    def _log(self, level: int, message: str, fields: dict[str, Any], *args: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, message, *args, extra={"eventforge": fields})

    # -- observer protocol -----------------------------------------------------------------

    def before(self, event: CallEvent) -> None:
        """Nothing to log before a call."""

    def after(self, event: CallEvent) -> None:
        """Log a finished call with its elapsed time."""
        if self.log_calls:
            fields = {"kind": "call", "call": event.name, "elapsed": event.elapsed, "ok": True}
            self._log(self.level, "call %s ok in %.6fs", fields, event.name, event.elapsed)

    def on_error(self, event: CallEvent) -> None:
        """Log a failed call with the exception type and message."""
        error = event.error
        fields = {
            "kind": "call",
            "call": event.name,
            "elapsed": event.elapsed,
            "ok": False,
            "error": type(error).__name__,
            "message": str(error),
        }
        self._log(
            self.error_level,
            "call %s failed in %.6fs: %s: %s",
            fields,
            event.name,
            event.elapsed,
            type(error).__name__,
            error,
        )

    # -- meters ----------------------------------------------------------------------------

    def __call__(self, event: str, payload: Any) -> None:
        """Listener entry point: log one emission of a watched meter."""
        fields = (
            {"kind": event, **payload}
            if isinstance(payload, dict)
            else {"kind": event, "payload": payload}
        )
        level = logging.WARNING if event == "threshold" else self.level
        self._log(level, "meter %s: %s %s", fields, fields.get("meter", "?"), event, payload)

    def watch(self, *meters: Eventful) -> LoggingReporter:
        """Log every emission of ``meters`` from now on; return self for chaining."""
        for meter in meters:
            meter.add_listener(self)
        return self

    def unwatch(self, *meters: Eventful) -> None:
        """Stop logging ``meters``' emissions."""
        for meter in meters:
            meter.remove_listener(self)

    def report(self, meters: Iterable[Any]) -> None:
        """Log one record per meter with its current ``stats``."""
        for meter in meters:
            name = getattr(meter, "name", type(meter).__name__)
            stats = dict(meter.stats)
            self._log(
                self.level,
                "meter %s stats %s",
                {"kind": "stats", "meter": name, **stats},
                name,
                stats,
            )
