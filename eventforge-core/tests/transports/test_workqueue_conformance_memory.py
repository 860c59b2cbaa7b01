"""The in-process work-queue backend passes the WorkQueue conformance suite."""

from __future__ import annotations

import pytest
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge.transports._memory_workqueue import MemoryWorkQueueBackend


class TestMemoryWorkQueueBackend(WorkQueueConformance):
    visibility_timeout = 0.3

    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        return lambda name, retry: MemoryWorkQueueBackend(name, visibility_timeout=0.3)


def test_override_guard_refuses_a_silent_replacement() -> None:
    with pytest.raises(TypeError, match="overrides the work-queue conformance test"):

        class Sneaky(WorkQueueConformance):
            def test_put_get_ack(self) -> None:  # type: ignore[override]
                pass


def test_override_guard_accepts_a_marked_override() -> None:
    class Honest(WorkQueueConformance):
        @WorkQueueConformance.overrides(reason="this backend keeps no headers")
        def test_put_get_ack(self) -> None:  # type: ignore[override]
            pass

    assert Honest.test_put_get_ack is not WorkQueueConformance.test_put_get_ack
