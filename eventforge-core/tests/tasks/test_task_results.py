"""``@task(results=...)``: ``send`` stores pending, running and the outcome; ``get`` returns the
value or raises the failure; the rest of the task lifecycle is unchanged."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from eventforge import (
    MemoryTransport,
    MessageQueue,
    ResultHandle,
    ResultNotFound,
    ResultStatus,
    ResultTimeout,
    TaskFailedError,
    TransportClosedError,
    UnsupportedCapabilityError,
    send_task,
    task,
)
from eventforge.service import Service
from eventforge.tasks import RESULT_HEADER, TaskContext, TaskPoolTimeout
from eventforge.testing import wait_until
from eventforge.transport import Transport
from eventforge.transports import MemoryResultStore


def test_send_returns_a_handle_whose_get_is_the_value() -> None:
    with MessageQueue() as queue:

        @task(queue=queue, topic="orders.price", results=True, publish_result=False)
        def price(order: dict[str, int], discount: int = 0) -> int:
            return order["qty"] * 10 - discount

        handle = price.send({"qty": 3}, discount=5)
        assert isinstance(handle, ResultHandle)
        assert handle.get(timeout=5) == 25
        assert handle.status is ResultStatus.SUCCESS
        assert handle.ready()
        assert price.result(handle.id).get(timeout=0) == 25  # a handle made from the id
        assert price.results is queue.transport.result_store()


def test_the_outcome_is_stored_before_the_callbacks_and_the_task_id_is_the_handles() -> None:
    seen: list[tuple[str, Any]] = []
    with MessageQueue() as queue:
        store = queue.transport.result_store()

        def on_success(ctx: TaskContext) -> None:
            stored = store.get(ctx.task_id)
            seen.append((ctx.task_id, stored is not None and stored.final))

        @task(queue=queue, topic="jobs.one", results=True, on_success=on_success)
        def one() -> int:
            return 1

        handle = one.send()
        assert seen == [(handle.id, True)]


def test_a_failure_raises_task_failed_error_and_keeps_the_lifecycle() -> None:
    failures: list[str] = []
    published: list[Any] = []
    with MessageQueue() as queue:
        queue.subscribe("orders.check.failure", lambda m: published.append(m.payload["error"]))

        @task(queue=queue, topic="orders.check", results=True,
              on_failure=lambda ctx: failures.append(str(ctx.error)))  # fmt: skip
        def check(qty: int) -> None:
            raise ValueError(f"quantity {qty} must be positive")

        handle = check.send(0)
        with pytest.raises(TaskFailedError) as info:
            handle.get(timeout=5)
        error = info.value
        assert error.type_name == "ValueError"
        assert error.remote_message == "quantity 0 must be positive"
        assert "in check" in error.traceback_text
        assert (
            error.task
            == "test_a_failure_raises_task_failed_error_and_keeps_the_lifecycle.<locals>.check"
        )
        assert "quantity 0 must be positive" in str(error)
        assert "traceback_text" in str(error)
        assert handle.status is ResultStatus.FAILURE
        assert failures == ["quantity 0 must be positive"]
        assert published == ["quantity 0 must be positive"]  # {topic}.failure still published


def test_only_invocations_sent_for_a_result_are_stored() -> None:
    with MessageQueue() as queue:
        store = queue.transport.result_store()
        ids: list[str] = []

        @task(queue=queue, topic="jobs.count", results=True,
              on_complete=lambda ctx: ids.append(ctx.task_id))  # fmt: skip
        def count(n: int) -> int:
            return n

        count(1)  # a direct call
        count.publish(2)  # a trigger nobody holds a handle for
        queue.publish("jobs.count", 3)
        assert len(ids) == 3
        assert all(store.get(task_id) is None for task_id in ids)


def test_send_task_triggers_a_task_defined_elsewhere_on_the_transport() -> None:
    transport = MemoryTransport()
    worker = MessageQueue(transport, close_transport=False)
    client = MessageQueue(transport, close_transport=False)
    try:

        @task(queue=worker, topic="reports.build", results=True)
        def build(month: str) -> str:
            return f"report of {month}"

        handle = send_task(client, "reports.build", ("May",))
        assert handle.get(timeout=5) == "report of May"
        assert handle.task == "reports.build"
    finally:
        worker.close()
        client.close()
        transport.close()


def test_a_task_nobody_runs_stays_pending_and_get_says_so() -> None:
    with MessageQueue() as queue:
        handle = send_task(queue, "nobody.listens", (1,), result_ttl=60)
        assert handle.status is ResultStatus.PENDING
        with pytest.raises(ResultTimeout, match="pending, no worker has started it") as info:
            handle.get(timeout=0.05)
        assert info.value.status == "pending"
        assert isinstance(info.value, TimeoutError)


def test_a_running_task_reads_running_until_it_ends() -> None:
    release = threading.Event()
    with MessageQueue() as queue:
        sent: list[str] = []
        queue.subscribe("jobs.slow", lambda m: sent.append(m.headers[RESULT_HEADER]))

        @task(queue=queue, topic="jobs.slow", results=True)
        def slow() -> str:
            release.wait(5)
            return "done"

        sender = threading.Thread(target=slow.send)
        sender.start()  # the memory transport runs the task inside send, on this thread
        assert wait_until(lambda: bool(sent), 5)
        handle = slow.result(sent[0])
        assert wait_until(lambda: handle.status is ResultStatus.RUNNING, 5)
        record = handle.record()
        assert record is not None
        assert record.worker
        assert record.started_at is not None
        with pytest.raises(ResultTimeout, match="running on worker"):
            handle.get(timeout=0.05)
        release.set()
        sender.join(5)
        assert handle.get(timeout=5) == "done"


def test_async_tasks_send_async_and_await_the_handle() -> None:
    async def main() -> list[Any]:
        async with MessageQueue() as queue:

            @task(queue=queue, topic="jobs.double", results=True)
            async def double(x: int) -> int:
                await asyncio.sleep(0.01)
                return 2 * x

            handle = await double.send_async(21)
            value = await handle
            return [value, await handle.get_async(timeout=1), handle.status]

    assert asyncio.run(main()) == [42, 42, ResultStatus.SUCCESS]


def test_a_value_that_cannot_be_stored_is_stored_as_a_failure() -> None:
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.odd", results=True)
        def odd() -> object:
            return object()

        with pytest.raises(TaskFailedError, match="cannot be stored"):
            odd.send().get(timeout=5)


def test_a_call_refused_by_the_pool_is_stored_as_a_failure() -> None:
    gate, started = threading.Event(), threading.Event()
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.single", results=True, max_instances=1,
              instance_timeout=0.01)  # fmt: skip
        def single() -> None:
            started.set()
            gate.wait(5)

        holder = threading.Thread(target=single)
        holder.start()
        assert started.wait(5)
        with pytest.raises(TaskFailedError) as info:
            single.send().get(timeout=5)
        assert info.value.type_name == TaskPoolTimeout.__name__
        gate.set()
        holder.join(5)


def test_the_ttl_bounds_how_long_a_result_is_kept() -> None:
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.brief", results=True, result_ttl=0.05)
        def brief() -> int:
            return 1

        handle = brief.send()
        assert handle.get(timeout=0) == 1
        time.sleep(0.1)
        with pytest.raises(ResultNotFound, match="expired"):
            handle.get(timeout=0)


def test_results_may_live_on_another_transport_named_by_url() -> None:
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.elsewhere", results="memory://")
        def elsewhere() -> str:
            return "kept elsewhere"

        handle = elsewhere.send()
        assert handle.store is not queue.transport.result_store()
        assert handle.get(timeout=5) == "kept elsewhere"


def test_a_worker_writes_nothing_for_a_malformed_task_id(caplog: pytest.LogCaptureFixture) -> None:
    with MessageQueue() as queue:
        done: list[str] = []

        @task(queue=queue, topic="jobs.bad", results=True,
              on_complete=lambda ctx: done.append(ctx.task_id))  # fmt: skip
        def bad() -> int:
            return 1

        queue.publish("jobs.bad", None, **{RESULT_HEADER: "no spaces allowed"})
        assert len(done) == 1
        assert done[0] != "no spaces allowed"
        assert "not storing the result" in caplog.text


def test_misconfigurations_are_refused_with_what_to_do() -> None:
    class NoResults(MemoryTransport):
        capabilities = frozenset()

        def result_store(self) -> Any:
            return Transport.result_store(self)

    with pytest.raises(UnsupportedCapabilityError, match="results='redis://"):
        task(queue=MessageQueue(NoResults()), results=True)(lambda: None)
    with pytest.raises(ValueError, match="has no queue"):
        task(results=True)(lambda: None)
    with pytest.raises(ValueError, match="results="):
        task(results=42)(lambda: None)  # type: ignore[arg-type]
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.plain")
        def plain() -> None:
            return None

        with pytest.raises(ValueError, match="pass results= to @task"):
            plain.send()
        with pytest.raises(ValueError, match="pass results= to @task"):
            plain.result("some-id")


def test_a_service_task_keeps_results() -> None:
    svc = Service("shop", probe_interval=None)

    @svc.task(topic="shop.total", results=True)
    def total(items: list[int]) -> int:
        return sum(items)

    with svc:
        assert svc.bound_task(total).send([1, 2, 3]).get(timeout=5) == 6


def test_a_call_that_cannot_be_published_leaves_no_pending_record() -> None:
    class Watched(MemoryResultStore):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []

        def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
            self.ids.append(task_id)
            return super().put(task_id, data, ttl=ttl, final=final)

    store = Watched()
    queue = MessageQueue()

    @task(queue=queue, topic="jobs.closed", results=store)
    def closed() -> None:
        return None

    queue.close()
    with pytest.raises(TransportClosedError):
        closed.send()
    assert len(store.ids) == 1  # the pending record was written first ...
    assert store.get(store.ids[0]) is None  # ... and removed when publishing failed


def test_an_outcome_the_store_refuses_is_replaced_by_a_failure_saying_so() -> None:
    class Small(MemoryResultStore):
        def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
            if len(data) > 2000:
                raise ValueError(f"a record of {len(data)} bytes is over this store's limit")
            return super().put(task_id, data, ttl=ttl, final=final)

    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.big", results=Small())
        def big() -> str:
            return "x" * 5000

        with pytest.raises(TaskFailedError, match="storing the task's outcome failed") as info:
            big.send().get(timeout=5)
        assert "over this store's limit" in info.value.remote_message
