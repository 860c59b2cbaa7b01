"""Worker review: a graceful stop sends the replies of the calls that finished while stopping."""

from __future__ import annotations

import threading

from eventforge._loop import background_loop
from eventforge.execution import ExecutionMode, Executor
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient
from eventforge.transports.memory import MemoryTransport
from eventforge.worker import Worker


def test_stop_waits_for_the_reply_of_a_call_run_on_the_executor() -> None:
    transport = MemoryTransport()
    executor = Executor(mode=ExecutionMode.THREAD, max_workers=2)
    worker = Worker(
        {"double": lambda x: x * 2}, transport, service_name="review", executor=executor
    )
    worker.start()
    client_queue = MessageQueue(transport, close_transport=False)
    client = RPCClient(client_queue, service_name="review", timeout=5)
    # Hold the loop that sends executor replies, so the call's body is done but its reply is not.
    loop_held = threading.Event()
    release_loop = threading.Event()

    def hold() -> None:
        loop_held.set()
        release_loop.wait(10)

    background_loop().loop.call_soon_threadsafe(hold)
    assert loop_held.wait(5)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.call("double", 21))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (worker.stop(10), stopped.set()), daemon=True)
    try:
        # The body ran (nothing in flight any more) while its reply waits for the loop.
        for _ in range(500):
            if executor.stats["submitted"] and not worker.in_flight:
                break
            threading.Event().wait(0.01)
        stopper.start()
        threading.Event().wait(0.2)  # give a premature close the chance to happen
    finally:
        release_loop.set()
    caller.join(10)
    stopper.join(10)
    client_queue.close()
    assert stopped.is_set()
    assert outcome == [42], outcome


def test_stop_waits_for_the_reply_of_an_inline_call() -> None:
    transport = MemoryTransport()
    worker = Worker({"double": lambda x: x * 2}, transport, service_name="review-inline")
    worker.start()
    client_queue = MessageQueue(transport, close_transport=False)
    client = RPCClient(client_queue, service_name="review-inline", timeout=5)
    body_done = threading.Event()
    stopping = threading.Event()
    reply = worker.queue.reply

    def reply_after_stop_began(*args: object, **kwargs: object) -> str:
        # The method returned; its reply is about to go out when the worker is told to stop.
        body_done.set()
        stopping.wait(5)
        # A premature stop closes the queue now; a graceful one waits for this reply.
        for _ in range(100):
            if worker.queue.closed:
                break
            threading.Event().wait(0.01)
        return reply(*args, **kwargs)  # type: ignore[arg-type]

    worker.queue.reply = reply_after_stop_began  # type: ignore[method-assign]
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.call("double", 21))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert body_done.wait(5)
    stopper = threading.Thread(target=lambda: (stopping.set(), worker.stop(10)), daemon=True)
    stopper.start()
    caller.join(10)
    stopper.join(10)
    client_queue.close()
    assert outcome == [42], outcome
