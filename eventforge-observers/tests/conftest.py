"""Fixtures shared by the observer tests."""

from __future__ import annotations

import threading
from typing import Any

import pytest


@pytest.fixture
def span_waiter() -> Any:
    """A span processor that lets a test wait until a span with a given name has ended."""
    trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")

    class SpanWaiter(trace_sdk.SpanProcessor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self._cond = threading.Condition()
            self._ended: list[str] = []

        def on_end(self, span: Any) -> None:
            with self._cond:
                self._ended.append(span.name)
                self._cond.notify_all()

        def wait_for(self, name: str, timeout: float = 10.0) -> bool:
            """Block until a span called ``name`` has ended; False after ``timeout``."""
            with self._cond:
                return self._cond.wait_for(lambda: name in self._ended, timeout)

    return SpanWaiter()
