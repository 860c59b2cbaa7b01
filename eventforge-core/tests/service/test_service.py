"""Service: declaring handlers, starting and stopping them in order, and their health."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pydantic
import pytest
from eventforge import MessageQueue, RPCClient, event
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.service import HealthState, Service
from eventforge.testing import wait_until
from eventforge.workqueue import DeadLetter, Delivery, RetryPolicy, WorkQueueBackend


@event("orders.created")
class OrderCreated(pydantic.BaseModel):
    order_id: str
    amount: float


def test_a_subscriber_runs_once_the_service_starts_and_not_after_it_stops() -> None:
    svc = Service("shop")
    seen: list[Any] = []

    @svc.on("orders.*")
    def record(message: Message) -> None:
        seen.append(message.payload)

    with svc:
        svc.queue.publish("orders.paid", 1)
        assert wait_until(lambda: seen == [1])
        queue = svc.queue
    assert queue.closed
    assert record(Message(topic="x", payload=2)) is None  # still a plain function
    assert seen == [1, 2]


def test_publish_to_publishes_what_the_handler_returns_and_skips_none() -> None:
    svc = Service("billing")
    billed: list[Any] = []

    @svc.on("orders.created", publish_to="orders.billed")
    def bill(message: Message) -> dict[str, Any] | None:
        if message.payload["amount"] == 0:
            return None
        return {"order": message.payload["id"], "total": message.payload["amount"] * 2}

    with svc:
        svc.queue.subscribe("orders.billed", lambda m: billed.append(m.payload))
        svc.queue.publish("orders.created", {"id": "a", "amount": 0})
        svc.queue.publish("orders.created", {"id": "b", "amount": 5})
        assert wait_until(lambda: billed == [{"order": "b", "total": 10}])


def test_an_async_handler_publishes_its_return_value_too() -> None:
    svc = Service("echo")
    out: list[Any] = []

    @svc.on("ping", publish_to="pong")
    async def echo(message: Message) -> str:
        return f"{message.payload}!"

    with svc:
        svc.queue.subscribe("pong", lambda m: out.append(m.payload))
        svc.queue.publish("ping", "hi")
        assert wait_until(lambda: out == ["hi!"])


def test_a_typed_event_handler_receives_the_validated_event() -> None:
    svc = Service("typed")
    got: list[OrderCreated] = []

    @svc.on(OrderCreated)
    def on_order(order: OrderCreated) -> None:
        got.append(order)

    with svc:
        svc.queue.publish(OrderCreated(order_id="o1", amount=3.5))
        assert wait_until(lambda: len(got) == 1)
    assert got[0] == OrderCreated(order_id="o1", amount=3.5)


def test_rpc_methods_are_served_under_the_service_name_by_default() -> None:
    svc = Service("calculator")

    @svc.rpc()
    def multiply(a: int, b: int) -> int:
        return a * b

    @svc.rpc("div", service="math")
    def divide(a: float, b: float) -> float:
        return a / b

    with svc:
        assert RPCClient(svc.queue, service_name="calculator").call("multiply", 5, 6) == 30
        assert RPCClient(svc.queue, service_name="math").call("div", 9, 3) == 3.0


def test_a_consumer_takes_work_items_and_a_failing_item_is_retried_then_dead_lettered() -> None:
    queue = MessageQueue()
    svc = Service("jobs", queue=queue)
    done: list[int] = []

    @svc.consumer(
        "resize", concurrency=2, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01, jitter=0)
    )
    def resize(message: Message) -> None:
        if message.payload < 0:
            raise ValueError("negative size")
        done.append(message.payload)

    with svc:
        # The memory backend lives in the WorkQueue object: put through the service's own.
        work = svc.work_queue("resize")
        for n in (1, 2, -1, 3):
            work.put(n)
        assert wait_until(lambda: sorted(done) == [1, 2, 3] and len(work.dead_letters()) == 1)
    assert not queue.closed  # a queue the service was given stays open
    queue.close()


def test_a_task_is_bound_to_the_service_queue_at_start() -> None:
    svc = Service("tasks")
    results: list[int] = []

    def square(n: int) -> int:
        results.append(n * n)
        return n * n

    svc.task(topic="math.square")(square)
    with pytest.raises(LookupError):
        svc.bound_task(square)
    with svc:
        svc.bound_task(square).publish(7)
        assert wait_until(lambda: results == [49])


def test_startup_hooks_run_before_subscribing_and_shutdown_hooks_after_draining() -> None:
    svc = Service("ordered")
    order: list[str] = []
    release = threading.Event()

    @svc.on_startup
    def started() -> None:
        order.append("startup")

    @svc.on_startup
    async def started_async() -> None:
        order.append("startup-async")

    @svc.consumer("slow")
    def slow(message: Message) -> None:
        order.append("handling")
        release.wait(5)
        order.append("handled")

    @svc.on_shutdown
    def stopped() -> None:
        order.append("shutdown")

    svc.start()
    svc.work_queue("slow").put("x")
    assert wait_until(lambda: "handling" in order)
    threading.Timer(0.2, release.set).start()
    svc.stop()
    assert order == ["startup", "startup-async", "handling", "handled", "shutdown"]


def test_declaring_on_a_running_service_is_refused() -> None:
    svc = Service("fixed")
    with svc, pytest.raises(RuntimeError, match="declare handlers before start"):
        svc.on("late")(lambda m: None)


def test_a_service_takes_either_a_transport_or_a_queue() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Service("x", "memory", queue=MessageQueue())
    with pytest.raises(ValueError):
        Service("bad name")
    svc = Service("given", queue=MessageQueue())
    with pytest.raises(ConfigurationError, match="cannot change"):
        svc.use_transport("memory")


def test_a_failed_start_stops_what_had_started_and_raises() -> None:
    svc = Service("broken")
    svc.on("fine")(lambda m: None)

    @svc.on_startup
    def boom() -> None:
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        svc.start()
    assert not svc.running


def test_health_moves_from_starting_to_idle_to_active_and_back() -> None:
    svc = Service("health", idle_after=0.3)
    svc.on("events.*")(lambda m: None)
    [tracker] = svc.trackers()
    assert tracker.state(idle_after=0.3, link_up=None) is HealthState.STARTING
    with svc:
        states = {s["name"]: s["state"] for s in svc.health()["subscriptions"]}
        assert list(states.values()) == ["idle"]
        svc.queue.publish("events.a", 1)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["state"] == "active")
        report = svc.health()
        assert report["status"] == "ready"
        assert report["subscriptions"][0]["delivered"] == 1
        assert wait_until(lambda: svc.health()["subscriptions"][0]["state"] == "idle", timeout=3)
    assert svc.health()["subscriptions"][0]["state"] == "failed"
    assert svc.ready() == (False, ["service 'health' is not running"])


def test_handler_errors_are_counted_with_the_last_error() -> None:
    svc = Service("errors")

    @svc.on("fail")
    def fail(message: Message) -> None:
        raise KeyError("missing")

    with svc:
        svc.queue.publish("fail", 1)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["errors"] == 1)
        sub = svc.health()["subscriptions"][0]
        assert sub["last_error"] == "KeyError: 'missing'"
        assert sub["state"] == "active"


def test_a_consumer_whose_threads_stopped_is_stalled_and_the_service_unready() -> None:
    svc = Service("stall")

    def work(message: Message) -> None:
        pass

    svc.consumer("work")(work)
    svc.consumer("optional", required=False)(lambda m: None)
    with svc:
        assert svc.ready() == (True, [])
        svc.consumer_of("work").stop()
        ready, reasons = svc.ready()
        assert not ready
        assert reasons == [
            "consumer test_a_consumer_whose_threads_stopped_is_stalled_and_the_service_unready"
            ".<locals>.work on 'work' is stalled"
        ]
        svc.consumer_of("optional").stop()
        assert len(svc.ready()[1]) == 1  # not required: reported, but not a reason


def test_a_consumer_reports_its_backlog() -> None:
    svc = Service("backlog")
    gate = threading.Event()
    svc.consumer("queue")(lambda m: gate.wait(5))
    with svc:
        work = svc.work_queue("queue")
        for n in range(5):
            work.put(n)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] == 4)
        gate.set()
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] == 0)


def test_the_link_state_of_a_network_transport_marks_subscriptions_recovering() -> None:
    svc = Service("link")
    svc.on("t")(lambda m: None)
    [tracker] = svc.trackers()
    tracker.set(HealthState.IDLE)
    assert tracker.state(idle_after=60, link_up=False) is HealthState.RECOVERING
    assert tracker.state(idle_after=60, link_up=True) is HealthState.IDLE
    tracker.delivered_now()
    assert tracker.state(idle_after=60, link_up=True, now=time.time()) is HealthState.ACTIVE


def test_endpoints_describe_every_declaration() -> None:
    svc = Service("described")
    svc.on("a.*", group="g", publish_to="b")(lambda m: None)
    svc.rpc()(lambda x: x)
    svc.consumer("jobs")(lambda m: None)
    kinds = [(e.kind, e.address, e.group, e.publish_to) for e in svc.endpoints()]
    assert kinds == [
        ("subscription", "a.*", "g", "b"),
        ("rpc", "_rpc.described", None, None),
        ("consumer", "jobs", None, None),
    ]


def test_a_named_local_subscription_reports_its_backlog(tmp_path: Any) -> None:
    svc = Service("backlogged", f"local://{tmp_path}", probe_interval=None)
    gate = threading.Event()
    svc.on("orders.*", durable="billing")(lambda m: gate.wait(10))
    with svc:
        for n in range(4):
            svc.queue.publish("orders.new", n)
        # The handler holds the first message; the rest wait in the store, kept for the name.
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] >= 3, timeout=10)
        gate.set()
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] == 0, timeout=10)


def test_a_consumer_whose_fetches_keep_failing_is_stalled_with_the_error() -> None:
    class Broken(WorkQueueBackend):
        name = "broken"

        def put(self, message: Message) -> None:
            pass

        def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
            time.sleep(0.01)
            raise ConnectionError("broker unreachable")

        def ack(self, delivery: Delivery) -> bool:
            return True

        def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
            return True

        def dead_letter(self, delivery: Delivery, reason: str) -> bool:
            return True

        def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
            return []

        def replay(self, tokens: list[Any] | None = None) -> int:
            return 0

        def stats(self) -> dict[str, Any]:
            return {"pending": 0}

        def close(self) -> None:
            pass

    svc = Service("failing-fetch", probe_interval=None)

    def work(message: Message) -> None:
        pass

    svc.consumer("broken", backend=Broken())(work)
    with svc:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["state"] == "stalled")
        sub = svc.health()["subscriptions"][0]
        assert "fetches failed in a row: ConnectionError: broker unreachable" in sub["last_error"]
        assert svc.ready()[0] is False


def test_stopping_lets_a_threaded_subscriber_handle_its_backlog_within_the_drain() -> None:
    svc = Service("drained", probe_interval=None, drain_timeout=10)
    release = threading.Event()
    handled: list[int] = []

    @svc.on("jobs", threaded=True)
    def slow(message: Message) -> None:
        release.wait(10)
        handled.append(message.payload)

    svc.start()
    for n in range(4):
        svc.queue.publish("jobs", n)
    release.set()
    svc.stop()
    assert handled == [0, 1, 2, 3]


def test_stopping_holds_an_rpc_call_running_past_a_second_until_it_is_answered() -> None:
    from eventforge.transports.roundtrip import RoundTripTransport

    transport = RoundTripTransport()
    svc = Service("held", queue=MessageQueue(transport), probe_interval=None, drain_timeout=10)
    running = threading.Event()
    release = threading.Event()

    @svc.rpc()
    def slow() -> str:
        running.set()
        release.wait(10)
        return "answered"

    svc.start()
    client = RPCClient(svc.queue, service_name="held")
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(client.call("slow", timeout=10)))
    caller.start()
    assert running.wait(10)
    stopper = threading.Thread(target=svc.stop)
    stopper.start()
    stopper.join(1.3)  # longer than a bare RPCServer.stop() waits for a running call
    assert stopper.is_alive()  # held by the drain
    release.set()
    caller.join(10)
    stopper.join(10)
    assert answers == ["answered"]
    transport.close()


def test_a_drain_past_its_deadline_returns_and_counts_what_it_left() -> None:
    from eventforge.transports.roundtrip import RoundTripTransport

    svc = Service(
        "late", queue=MessageQueue(RoundTripTransport()), probe_interval=None, drain_timeout=0.2
    )
    release = threading.Event()
    started = threading.Event()

    @svc.on("jobs", threaded=True)
    def stuck(message: Message) -> None:
        started.set()
        release.wait(10)

    calling = threading.Event()

    @svc.rpc()
    def hang() -> None:
        calling.set()
        release.wait(10)

    def call() -> None:
        with contextlib.suppress(Exception):  # its reply may never come: the drain ran out
            RPCClient(svc.queue, service_name="late").call("hang", timeout=2)

    svc.start()
    threading.Thread(target=call, daemon=True).start()
    for n in range(3):
        svc.queue.publish("jobs", n)
    assert started.wait(10)
    assert calling.wait(10)
    try:
        svc.stop()  # returns although a handler and a call are still stuck
        assert not svc.running
        assert svc.queue.stats["dropped"] == 2  # the two jobs waiting behind the stuck one
    finally:
        release.set()
