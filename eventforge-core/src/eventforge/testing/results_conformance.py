"""The result-store conformance suite: the contract of a :class:`~eventforge.transport.ResultStore`.

A backend proves itself by subclassing :class:`ResultStoreConformance` and providing one
fixture, ``make_store``: a factory whose every call returns a store on one shared space (an
in-process store may return the same instance; a broker's returns a new client of the same
server, so that what one writes, another reads)::

    import pytest
    from eventforge.testing.results_conformance import ResultStoreConformance

    class TestMyResultStore(ResultStoreConformance):
        @pytest.fixture
        def make_store(self, my_broker):
            clients = []
            def make():
                clients.append(MyTransport(my_broker.url))
                return clients[-1].result_store()
            yield make
            for client in clients:
                client.close()

Every test uses task ids of its own. Class attributes a subclass may tune: ``timeout`` (how
long a test waits for something that must happen), ``short_ttl`` (the ttl of the expiry test:
the backend's smallest honest ttl) and ``expiry_slack`` (how long past its ttl a record may
still read as present). Contract tests cannot be silently replaced: a subclass method with a
contract test's name fails at class creation unless it is marked
``@pytest.mark.xfail(reason=...)`` or ``@ResultStoreConformance.overrides(reason=...)``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pytest

from eventforge.errors import ResultNotFound, ResultTimeout, TaskFailedError
from eventforge.execution import (
    ResultHandle,
    ResultStatus,
    TaskRecord,
    record_outcome,
    record_status,
)
from eventforge.testing.waiting import wait_until
from eventforge.transport import ResultStore

__all__ = ["ResultStoreConformance", "StoreFactory"]

StoreFactory = Callable[[], ResultStore]
"""What ``make_store`` returns: ``() -> a store on the shared space``."""

F = TypeVar("F", bound=Callable[..., Any])
_OVERRIDE_ATTR = "__results_conformance_override__"
_ALL_BYTES = bytes(range(256))


def _later(delay: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class ResultStoreConformance:
    """Base class of a result store's conformance tests; provide ``make_store``."""

    timeout: ClassVar[float] = 10.0
    short_ttl: ClassVar[float] = 0.3
    expiry_slack: ClassVar[float] = 2.0

    _contract_tests: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if name in ResultStoreConformance._contract_tests and not _deliberate(value):
                raise TypeError(
                    f"{cls.__qualname__}.{name} overrides the result-store conformance test of "
                    "the same name, which would silently replace part of the contract. Mark a "
                    "deliberate override with @pytest.mark.xfail(reason='why') or "
                    "@ResultStoreConformance.overrides(reason='why'), or give your test another "
                    "name"
                )

    @staticmethod
    def overrides(*, reason: str) -> Callable[[F], F]:
        """Mark a method as a deliberate replacement of the contract test it is named after."""
        if not reason.strip():
            raise TypeError("ResultStoreConformance.overrides needs a non-empty reason='...'")

        def mark(func: F) -> F:
            setattr(func, _OVERRIDE_ATTR, reason)
            return func

        return mark

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Return ``() -> store``. Subclasses must provide it."""
        pytest.fail(
            f"{type(self).__name__} must define a 'make_store' fixture returning a factory "
            "() -> ResultStore (see eventforge.testing.results_conformance)"
        )

    @pytest.fixture
    def ids(self) -> Callable[[], str]:
        """Fresh task ids, unique to the test."""
        prefix = f"conf-{os.urandom(4).hex()}-"
        counter = iter(range(1_000_000))
        return lambda: f"{prefix}{next(counter)}"

    # -- the store contract -----------------------------------------------------------------

    def test_unknown_id_reads_as_absent(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """``get`` of an id never written is None, ``delete`` of it False, ``wait`` returns
        None when its time is up."""
        store = make_store()
        task_id = ids()
        assert store.get(task_id) is None
        assert store.delete(task_id) is False
        assert store.wait(task_id, 0.1) is None

    def test_record_is_read_back_by_another_client(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """Bytes written by one client (all 256 byte values) are read back unchanged by
        another, with their final flag."""
        writer, reader = make_store(), make_store()
        open_id, final_id = ids(), ids()
        assert writer.put(open_id, _ALL_BYTES, ttl=60, final=False) is True
        assert writer.put(final_id, _ALL_BYTES[::-1], ttl=60, final=True) is True
        assert reader.get(open_id) == (_ALL_BYTES, False)
        assert reader.get(final_id) == (_ALL_BYTES[::-1], True)

    def test_open_record_is_replaced(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """An open record is replaced by the next write, open or final."""
        store = make_store()
        task_id = ids()
        assert store.put(task_id, b"pending", ttl=60, final=False)
        assert store.put(task_id, b"running", ttl=60, final=False)
        assert store.get(task_id) == (b"running", False)
        assert store.put(task_id, b"done", ttl=60, final=True)
        assert store.get(task_id) == (b"done", True)

    def test_final_record_is_never_replaced(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """Once final, a record stays: a later write, final or open, from any client, returns
        False and changes nothing."""
        first, second = make_store(), make_store()
        task_id = ids()
        assert first.put(task_id, b"outcome", ttl=60, final=True) is True
        assert second.put(task_id, b"another outcome", ttl=60, final=True) is False
        assert second.put(task_id, b"running", ttl=60, final=False) is False
        assert first.get(task_id) == (b"outcome", True)

    def test_concurrent_final_writes_store_exactly_one(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """Of eight clients writing an outcome for one id at once, exactly one is stored, and
        it is the one whose ``put`` returned True."""
        stores = [make_store() for _ in range(8)]
        task_id = ids()
        won: list[bytes] = []
        gate = threading.Barrier(len(stores))

        def write(n: int) -> None:
            gate.wait(self.timeout)
            if stores[n].put(task_id, f"outcome {n}".encode(), ttl=60, final=True):
                won.append(f"outcome {n}".encode())

        threads = [threading.Thread(target=write, args=(n,)) for n in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.timeout)
        assert len(won) == 1
        assert stores[0].get(task_id) == (won[0], True)

    def test_record_expires_after_its_ttl(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """A record reads as absent once its ttl passed (within the backend's slack); an
        expired outcome no longer blocks a new write."""
        store, other = make_store(), make_store()
        task_id = ids()
        assert store.put(task_id, b"short-lived", ttl=self.short_ttl, final=True)
        assert other.get(task_id) == (b"short-lived", True)
        written = time.monotonic()
        assert wait_until(
            lambda: other.get(task_id) is None,
            self.short_ttl + self.expiry_slack + self.timeout,
            interval=0.05,
        )
        assert time.monotonic() - written >= self.short_ttl - 0.05  # not before its ttl
        assert store.put(task_id, b"again", ttl=60, final=True) is True
        assert other.get(task_id) == (b"again", True)

    def test_delete_removes_a_record(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """``delete`` removes a record (True), for every client; the id may be written again."""
        store, other = make_store(), make_store()
        task_id = ids()
        store.put(task_id, b"outcome", ttl=60, final=True)
        assert other.delete(task_id) is True
        assert store.get(task_id) is None
        assert store.delete(task_id) is False
        assert store.put(task_id, b"new", ttl=60, final=False) is True

    def test_wait_returns_the_outcome_written_by_another_client(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """``wait`` passes over open records and returns the final one another client writes."""
        waiter, writer = make_store(), make_store()
        task_id = ids()
        writer.put(task_id, b"pending", ttl=60, final=False)

        def finish() -> None:
            writer.put(task_id, b"running", ttl=60, final=False)
            time.sleep(0.05)
            writer.put(task_id, b"done", ttl=60, final=True)

        thread = _later(0.1, finish)
        assert waiter.wait(task_id, self.timeout) == (b"done", True)
        thread.join(self.timeout)

    def test_wait_times_out_with_the_open_record(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """When no outcome comes in time, ``wait`` returns the latest open record."""
        store = make_store()
        task_id = ids()
        store.put(task_id, b"running", ttl=60, final=False)
        assert store.wait(task_id, 0.2) == (b"running", False)

    def test_wait_async_returns_the_outcome(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """``wait_async`` awaits the outcome another client writes, without blocking the loop."""
        waiter, writer = make_store(), make_store()
        task_id = ids()
        writer.put(task_id, b"pending", ttl=60, final=False)
        ticks = 0

        async def main() -> Any:
            nonlocal ticks

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            try:
                return await waiter.wait_async(task_id, self.timeout)
            finally:
                ticker.cancel()

        thread = _later(0.2, lambda: writer.put(task_id, b"done", ttl=60, final=True))
        assert asyncio.run(main()) == (b"done", True)
        thread.join(self.timeout)
        assert ticks > 0  # the loop ran while it waited

    def test_invalid_ttl_and_task_id_are_refused(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """``put`` refuses a ttl that is not > 0 and a task id no store could key, storing
        nothing."""
        store = make_store()
        task_id = ids()
        for ttl in (0, -1.0):
            with pytest.raises(ValueError, match="ttl"):
                store.put(task_id, b"x", ttl=ttl, final=True)
        with pytest.raises(ValueError, match="task id"):
            store.put("not a key!", b"x", ttl=60, final=True)
        assert store.get(task_id) is None

    def test_large_record_round_trips(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """A 256 KiB record is stored and read back whole."""
        store, other = make_store(), make_store()
        task_id = ids()
        data = _ALL_BYTES * 1024
        assert store.put(task_id, data, ttl=60, final=True)
        assert other.get(task_id) == (data, True)

    # -- task records through a handle ------------------------------------------------------

    def test_handle_follows_a_task_from_pending_to_success(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """A handle on another client reads pending, running, then the value of the outcome."""
        sender, worker = make_store(), make_store()
        task_id = ids()
        record_status(sender, TaskRecord(task_id, "price", ResultStatus.PENDING), 60)
        handle: ResultHandle[Any] = ResultHandle(task_id, sender, task="price")
        assert handle.status == "pending"
        assert not handle.ready()
        record_status(worker, TaskRecord(task_id, "price", ResultStatus.RUNNING), 60)
        assert handle.status == "running"
        with pytest.raises(ResultTimeout, match="running"):
            handle.get(timeout=0.1)
        record_outcome(worker, task_id, "price", 60, value={"total": 20, "items": [1, 2]})
        assert handle.ready()
        assert handle.get(timeout=self.timeout) == {"total": 20, "items": [1, 2]}
        assert handle.status is ResultStatus.SUCCESS
        record = handle.record()
        assert record is not None
        assert record.worker  # host:pid of the writer

    def test_handle_raises_the_failure_with_its_traceback(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """A failure recorded by the worker raises ``TaskFailedError`` on ``get`` and on
        ``await``, with the remote type, message and traceback summary."""
        worker, caller = make_store(), make_store()
        task_id = ids()

        def failing_body() -> None:
            raise ValueError("quantity must be positive")

        try:
            failing_body()
        except ValueError as exc:
            record_outcome(worker, task_id, "price", 60, error=exc)
        handle: ResultHandle[Any] = ResultHandle(task_id, caller, task="price")
        with pytest.raises(TaskFailedError) as info:
            handle.get(timeout=self.timeout)
        error = info.value
        assert (error.type_name, error.remote_message) == (
            "ValueError",
            "quantity must be positive",
        )
        assert "failing_body" in error.traceback_text
        assert "failing_body" in error.where
        assert handle.status is ResultStatus.FAILURE

        async def awaited() -> None:
            await handle

        with pytest.raises(TaskFailedError, match="quantity must be positive"):
            asyncio.run(awaited())

    def test_handle_of_a_missing_record_raises_not_found(
        self, make_store: StoreFactory, ids: Callable[[], str]
    ) -> None:
        """A handle whose record does not exist (never written, forgotten) raises
        ``ResultNotFound``; ``forget`` removes a record."""
        store = make_store()
        task_id = ids()
        record_outcome(store, task_id, "price", 60, value=1)
        handle: ResultHandle[Any] = ResultHandle(task_id, store)
        assert handle.forget() is True
        with pytest.raises(ResultNotFound):
            handle.get(timeout=0.1)
        with pytest.raises(ResultNotFound):
            _ = handle.status


def _deliberate(value: object) -> bool:
    if getattr(value, _OVERRIDE_ATTR, None):
        return True
    marks = getattr(value, "pytestmark", [])
    return any(getattr(mark, "name", None) == "xfail" for mark in marks)


ResultStoreConformance._contract_tests = frozenset(
    name for name in dir(ResultStoreConformance) if name.startswith("test_")
)
