"""A stopping RPC server answers the calls it received but never ran, instead of letting their
callers wait for the timeout; the answer is retry-safe."""

from __future__ import annotations

import threading

from eventforge import MessageQueue, RPCClient, RPCServer, ServiceUnavailable, with_retry
from eventforge.errors import RPCError, TransportError


def test_stop_answers_unstarted_calls_with_service_unavailable():
    queue = MessageQueue()
    entered = threading.Event()
    release = threading.Event()
    server = RPCServer(queue, service_name="busy", threaded=True)

    @server.register()
    def work(n: int) -> int:
        if n == 0:
            entered.set()
            release.wait(10)
        return n

    server.serve(blocking=False)
    # A long timeout: the test fails by timing out if the queued calls are never answered.
    client = RPCClient(queue, service_name="busy", timeout=60)
    outcomes: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            outcomes[n] = client.work(n)
        except Exception as exc:
            outcomes[n] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert entered.wait(10)
    waiting = [threading.Thread(target=call, args=(n,)) for n in (1, 2, 3)]
    for thread in waiting:
        thread.start()
    assert _wait(lambda: queue.pending_requests == 4)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    for thread in waiting:
        thread.join(30)
        assert not thread.is_alive()
    release.set()
    first.join(30)
    stopper.join(30)
    assert outcomes[0] == 0, "the call already running finishes and is answered"
    for n in (1, 2, 3):
        assert isinstance(outcomes[n], ServiceUnavailable), outcomes[n]
        assert outcomes[n].method == "work"
    assert server.stats["refused"] == 3
    queue.close()


def test_service_unavailable_is_an_rpc_and_transport_error_and_retried_by_default():
    assert issubclass(ServiceUnavailable, RPCError)
    assert issubclass(ServiceUnavailable, TransportError)

    class Refusing:
        calls = 0

        def call(self, method, *args, timeout=None, **kwargs):
            Refusing.calls += 1
            if Refusing.calls == 1:
                raise ServiceUnavailable("stopping", service="s", method=method)
            return "ran"

    assert with_retry(Refusing(), initial_backoff=0.001).call("m") == "ran"
    assert Refusing.calls == 2


def _wait(predicate, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
