"""RPC review: a call run on an executor always gets an answer, even when its result is gone."""

from __future__ import annotations

import threading

import pytest
from eventforge._loop import background_loop
from eventforge.errors import RemoteError, RPCTimeout
from eventforge.execution import ExecutionMode, Executor
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer


def test_call_whose_executor_result_was_evicted_gets_an_error_reply() -> None:
    executor = Executor(mode=ExecutionMode.THREAD, max_workers=2, max_retained=1)
    with MessageQueue() as queue, executor:
        server = RPCServer(queue, executor=executor, service_name="review-evict")
        server.add_method("double", lambda x: x * 2)
        server.serve(blocking=False)
        client = RPCClient(queue, service_name="review-evict", timeout=3)
        # Hold the loop that collects executor results, so both calls are submitted first and
        # the second evicts the first one's result (max_retained=1).
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            held.set()
            release.wait(10)

        background_loop().loop.call_soon_threadsafe(hold)
        assert held.wait(5)
        outcomes: dict[int, object] = {}

        def call(n: int) -> None:
            try:
                outcomes[n] = client.call("double", n)
            except Exception as exc:
                outcomes[n] = exc

        first = threading.Thread(target=call, args=(1,), daemon=True)
        first.start()
        for _ in range(500):
            if executor.stats["submitted"] >= 1:
                break
            threading.Event().wait(0.01)
        second = threading.Thread(target=call, args=(2,), daemon=True)
        second.start()
        for _ in range(500):
            if executor.stats["submitted"] >= 2:
                break
            threading.Event().wait(0.01)
        release.set()
        first.join(10)
        second.join(10)
        server.stop()
        assert executor.stats["evicted"] == 1
        assert outcomes[2] == 4
        assert not isinstance(outcomes[1], RPCTimeout), "the evicted call got no reply at all"
        with pytest.raises(RemoteError):
            raise outcomes[1]  # type: ignore[misc]
