"""Pydantic Logfire emission: a span per observed call, a log per meter emission.

Needs the optional ``logfire`` package (``pip install 'eventforge-observers[logfire]'``);
importing this module without it raises an ``ImportError`` that says so. Configure Logfire as
usual (``logfire.configure()``) before the first call is observed.
"""

from __future__ import annotations

from typing import Any

from eventforge.observing import CallEvent, Eventful

try:
    import logfire
except ImportError as exc:
    raise ImportError(
        "eventforge_observers.logfire needs Pydantic Logfire, which is not installed. "
        "Install it with: pip install 'eventforge-observers[logfire]'",
        name=exc.name,
    ) from exc

__all__ = ["LogfireObserver"]


class LogfireObserver:
    """Opens a Logfire span ``task <name>`` around each observed call; logs meter emissions.

    Use it like any observer (``@task(on_execute=[LogfireObserver()])``); :meth:`watch` sends
    the ``observation`` / ``threshold`` events of meters to Logfire as well.
    """

    def __init__(self, span_name: str = "task {call}") -> None:
        self.span_name = span_name
        self._key = f"eventforge_observers.logfire.{id(self)}"

    def before(self, event: CallEvent) -> None:
        span = logfire.span(self.span_name, call=event.name)
        span.__enter__()
        event.context[self._key] = span

    def after(self, event: CallEvent) -> None:
        self._close(event)

    def on_error(self, event: CallEvent) -> None:
        self._close(event)

    def _close(self, event: CallEvent) -> None:
        span = event.context.pop(self._key, None)
        if span is None:
            return
        span.set_attribute("elapsed", event.elapsed)
        error = event.error
        if error is None:
            span.__exit__(None, None, None)
        else:
            span.__exit__(type(error), error, error.__traceback__)

    def __call__(self, event: str, payload: Any) -> None:
        """Listener entry point: one Logfire log per meter emission."""
        fields = payload if isinstance(payload, dict) else {"payload": payload}
        if event == "threshold":
            logfire.warn("meter {meter} threshold", **fields)
        else:
            logfire.info("meter {meter} " + event, **fields)

    def watch(self, *meters: Eventful) -> LogfireObserver:
        """Send ``meters``' emissions to Logfire; return self for chaining."""
        for meter in meters:
            meter.add_listener(self)
        return self
