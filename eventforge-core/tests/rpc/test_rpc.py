"""RPCServer / RPCClient: calls, errors, timeouts, competing servers, executors, retries."""

from __future__ import annotations

import asyncio
import threading

import pytest
from eventforge import (
    ExecutionMode,
    Executor,
    MessageQueue,
    RoundRobinRPCClient,
    RPCClient,
    RPCServer,
    with_retry,
)
from eventforge.errors import (
    MethodNotFound,
    NoRespondersError,
    RemoteError,
    RPCError,
    RPCTimeout,
    TransportError,
)
from eventforge.transport._loop import background_loop


@pytest.fixture
def queue():
    q = MessageQueue()
    yield q
    q.close()


@pytest.fixture
def server(queue):
    srv = RPCServer(queue, service_name="calc")

    @srv.register()
    def add(a, b):
        return a + b

    @srv.register("div")
    def divide(a, b):
        return a / b

    srv.serve(blocking=False)
    yield srv
    srv.stop()


def test_call_and_dynamic_access_return_the_result(server, queue):
    client = RPCClient(queue, service_name="calc")
    assert client.call("add", 2, 3) == 5
    assert client.add(a=4, b=5) == 9
    assert client.div(9, 3) == 3.0
    assert server.stats["calls"] == 3


def test_remote_exception_raises_remote_error_with_type_message_traceback(server, queue):
    client = RPCClient(queue, service_name="calc")
    with pytest.raises(RemoteError) as info:
        client.div(1, 0)
    assert info.value.type_name == "ZeroDivisionError"
    assert "division by zero" in info.value.remote_message
    assert "in divide" in info.value.traceback_text
    assert server.stats["failures"] == 1


def test_unknown_method_raises_method_not_found_listing_registered(server, queue):
    client = RPCClient(queue, service_name="calc")
    with pytest.raises(MethodNotFound) as info:
        client.call("sub", 1, 2)
    assert info.value.available == ("add", "div")
    assert "registered methods: add, div" in str(info.value)


def test_no_server_raises_no_responders_at_once_and_leaves_no_waiter(queue):
    client = RPCClient(queue, service_name="nobody", timeout=30)
    with pytest.raises(NoRespondersError, match=r"_rpc\.nobody"):
        client.call("anything")  # at once: the memory transport counts receivers
    assert queue.pending_requests == 0
    assert queue.stats["no_responders"] == 1
    assert queue.stats["requests_timed_out"] == 0


def test_silent_server_raises_rpc_timeout_and_leaves_no_waiter(queue):
    queue.subscribe("_rpc.silent", lambda m: None)  # receives calls, never answers
    client = RPCClient(queue, service_name="silent", timeout=0.05)
    with pytest.raises(RPCTimeout) as info:
        client.call("anything")
    assert info.value.method == "anything"
    assert info.value.timeout == 0.05
    assert isinstance(info.value, TimeoutError)
    assert queue.pending_requests == 0
    assert queue.stats["requests_timed_out"] == 1


def test_per_call_timeout_overrides_the_client_default(queue):
    queue.subscribe("_rpc.silent", lambda m: None)
    client = RPCClient(queue, service_name="silent", timeout=30.0)
    with pytest.raises(RPCTimeout) as info:
        client.call("x", timeout=0.01)
    assert info.value.timeout == 0.01


def test_malformed_request_gets_bad_request_error(server, queue):
    reply = queue.request("_rpc.calc", {"args": [1]}, timeout=5)
    assert reply is not None
    assert reply.payload["ok"] is False
    assert reply.payload["error"]["kind"] == "bad_request"
    assert server.stats["bad_requests"] == 1


def test_publish_without_reply_to_is_counted_not_run(server, queue):
    queue.publish("_rpc.calc", {"method": "add", "args": [1, 2], "kwargs": {}})
    assert server.stats == {
        "calls": 0,
        "failures": 0,
        "not_found": 0,
        "bad_requests": 1,
        "refused": 0,
    }


def test_stop_unsubscribes_and_blocking_serve_returns(queue):
    srv = RPCServer(queue, service_name="blocking")
    srv.add_method("ping", lambda: "pong")
    done = threading.Event()

    def run():
        srv.serve()  # blocks until stop()
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    client = RPCClient(queue, service_name="blocking", timeout=5)
    for _ in range(200):  # wait until serve() has subscribed
        if srv.serving:
            break
        threading.Event().wait(0.01)
    assert client.ping() == "pong"
    srv.stop()
    thread.join(10)
    assert done.is_set()
    with pytest.raises(NoRespondersError):
        client.call("ping", timeout=0.05)


def test_servers_with_the_same_service_name_compete(queue):
    ran: list[str] = []
    servers = []
    for name in ("one", "two"):
        srv = RPCServer(queue, service_name="pool")
        srv.add_method("who", lambda name=name: ran.append(name) or name)
        srv.serve(blocking=False)
        servers.append(srv)
    client = RPCClient(queue, service_name="pool")
    answers = [client.who() for _ in range(10)]
    assert len(ran) == 10  # each call ran exactly once
    assert sorted(answers) == sorted(ran)
    assert set(ran) == {"one", "two"}
    for srv in servers:
        srv.stop()


def test_registering_twice_needs_replace(queue):
    srv = RPCServer(queue)
    srv.add_method("f", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        srv.add_method("f", lambda: 2)
    srv.add_method("f", lambda: 2, replace=True)
    assert srv.remove_method("f") is True
    assert srv.remove_method("f") is False


def test_register_needs_parentheses_and_a_name_for_lambdas(queue):
    srv = RPCServer(queue)
    with pytest.raises(TypeError, match="parentheses"):
        srv.register(lambda: 1)
    with pytest.raises(ValueError, match="explicit name"):
        srv.register()(lambda: 1)


def test_bad_service_name_is_rejected():
    queue = MessageQueue()
    with pytest.raises(ValueError, match="service_name"):
        RPCServer(queue, service_name="has space")
    with pytest.raises(ValueError, match="service_name"):
        RPCClient(queue, service_name="")
    queue.close()


def test_async_methods_run_on_a_loop_and_reply(queue):
    srv = RPCServer(queue, service_name="aio")

    @srv.register()
    async def slow_double(x):
        await asyncio.sleep(0.001)
        return x * 2

    @srv.register()
    async def fails():
        raise ValueError("async boom")

    srv.serve(blocking=False)
    client = RPCClient(queue, service_name="aio", timeout=10)
    assert client.slow_double(21) == 42
    with pytest.raises(RemoteError, match="async boom"):
        client.fails()
    srv.stop()


def test_call_async_from_a_running_loop(server, queue):
    client = RPCClient(queue, service_name="calc", timeout=10)

    async def main():
        return await asyncio.gather(client.call_async("add", 1, 2), client.call_async("add", 3, 4))

    assert asyncio.run(main()) == [3, 7]


def test_call_async_errors_and_timeout(server, queue):
    async def main():
        client = RPCClient(queue, service_name="calc", timeout=10)
        with pytest.raises(RemoteError):
            await client.call_async("div", 1, 0)
        with pytest.raises(MethodNotFound):
            await client.call_async("nope")
        queue.subscribe("_rpc.silent", lambda m: None)
        silent = RPCClient(queue, service_name="silent", timeout=0.05)
        with pytest.raises(RPCTimeout):
            await silent.call_async("x")
        with pytest.raises(NoRespondersError):
            await RPCClient(queue, service_name="nobody", timeout=30).call_async("x")

    asyncio.run(main())
    assert queue.pending_requests == 0


@pytest.mark.parametrize("mode", [ExecutionMode.SEQUENTIAL, ExecutionMode.THREAD])
def test_methods_run_through_the_executor(queue, mode):
    ran_on: list[str] = []

    def where(x):
        ran_on.append(threading.current_thread().name)
        if x < 0:
            raise ValueError("negative")
        return x + 1

    with Executor(mode=mode, max_workers=2) as executor:
        srv = RPCServer(queue, executor=executor, service_name="exec")
        srv.add_method("where", where)
        srv.serve(blocking=False)
        client = RPCClient(queue, service_name="exec", timeout=10)
        assert client.where(1) == 2
        with pytest.raises(RemoteError, match="negative"):
            client.where(-1)
        srv.stop()
    if mode is ExecutionMode.THREAD:
        assert all(name.startswith("eventforge-executor") for name in ran_on)
    else:
        assert ran_on == [threading.current_thread().name] * 2


def test_call_whose_executor_result_was_evicted_gets_an_error_reply() -> None:
    executor = Executor(mode=ExecutionMode.THREAD, max_workers=2, max_retained=1)
    with MessageQueue() as queue, executor:
        server = RPCServer(queue, executor=executor, service_name="evicting")
        server.add_method("double", lambda x: x * 2)
        server.serve(blocking=False)
        client = RPCClient(queue, service_name="evicting", timeout=3)
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


def test_round_robin_client_spreads_calls_over_clients():
    queues = [MessageQueue(), MessageQueue()]
    hits = [0, 0]
    servers = []
    for i, q in enumerate(queues):
        srv = RPCServer(q, service_name="svc")

        def hit(i=i):
            hits[i] += 1
            return i

        srv.add_method("hit", hit)
        srv.serve(blocking=False)
        servers.append(srv)
    pool = RoundRobinRPCClient([RPCClient(q, service_name="svc") for q in queues])
    assert [pool.hit() for _ in range(4)] == [0, 1, 0, 1]
    assert asyncio.run(pool.call_async("hit")) == 0
    assert hits == [3, 2]
    for srv, q in zip(servers, queues):
        srv.stop()
        q.close()


def test_round_robin_client_needs_clients():
    with pytest.raises(ValueError, match="at least one"):
        RoundRobinRPCClient([])
    with pytest.raises(TypeError, match="call"):
        RoundRobinRPCClient([object()])  # type: ignore[list-item]


class _Flaky:
    """A client that fails ``failures`` times with ``error`` before answering."""

    def __init__(self, failures, error):
        self.failures = failures
        self.error = error
        self.calls = 0

    def call(self, method, *args, timeout=None, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return (method, args)

    async def call_async(self, method, *args, timeout=None, **kwargs):
        return self.call(method, *args, timeout=timeout, **kwargs)


def test_with_retry_does_not_retry_timeouts_unless_asked():
    # A timed-out call may have run on the server: retrying it is only safe for idempotent
    # methods, so the default leaves it to the caller.
    flaky = _Flaky(1, RPCTimeout("slow"))
    with pytest.raises(RPCTimeout):
        with_retry(flaky, initial_backoff=0.001).call("m")
    assert flaky.calls == 1


def test_with_retry_retries_timeouts_and_transport_errors_then_succeeds():
    flaky = _Flaky(2, RPCTimeout("slow"))
    client = with_retry(
        flaky,
        max_retries=3,
        initial_backoff=0.001,
        max_backoff=0.002,
        retry_on=(RPCTimeout, TransportError),
    )
    assert client.call("m", 1) == ("m", (1,))
    assert flaky.calls == 3
    assert client.stats == {"retries": 2, "gave_up": 0}
    no_responders = _Flaky(1, NoRespondersError("_rpc.x"))
    assert with_retry(no_responders, initial_backoff=0.001).m() == ("m", ())
    assert no_responders.calls == 2


def test_with_retry_gives_up_after_max_retries():
    flaky = _Flaky(10, TransportError("down"))
    client = with_retry(flaky, max_retries=2, initial_backoff=0.001)
    with pytest.raises(TransportError):
        client.call("m")
    assert flaky.calls == 3
    assert client.stats == {"retries": 2, "gave_up": 1}


@pytest.mark.parametrize(
    "error", [RemoteError("ValueError", "bad"), MethodNotFound("m", ["a"]), ValueError("x")]
)
def test_with_retry_never_retries_remote_errors_or_unlisted_errors(error):
    flaky = _Flaky(1, error)
    client = with_retry(flaky, max_retries=5, initial_backoff=0.001, retry_on=(RPCError, KeyError))
    with pytest.raises(type(error)):
        client.call("m")
    assert flaky.calls == 1


def test_with_retry_refuses_to_be_told_to_retry_remote_errors():
    with pytest.raises(ValueError, match="never retried"):
        with_retry(_Flaky(0, None), retry_on=(RemoteError,))
    with pytest.raises(ValueError, match="max_retries"):
        with_retry(_Flaky(0, None), max_retries=-1)


def test_with_retry_backoff_is_capped_and_jittered():
    client = with_retry(_Flaky(0, None), initial_backoff=0.1, max_backoff=1.0, jitter=False)
    assert [client.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = with_retry(_Flaky(0, None), initial_backoff=0.1, max_backoff=1.0)
    for n in range(6):
        assert client.backoff(n) / 2 <= jittered.backoff(n) <= client.backoff(n)


def test_with_retry_async_and_over_a_real_client(server, queue):
    flaky = _Flaky(1, NoRespondersError("_rpc.calc"))
    retrying = with_retry(flaky, initial_backoff=0.001)
    assert asyncio.run(retrying.call_async("m")) == ("m", ())
    assert flaky.calls == 2
    real = with_retry(RPCClient(queue, service_name="calc"), initial_backoff=0.001)
    assert real.add(1, 1) == 2
    with pytest.raises(RemoteError):
        real.div(1, 0)


def test_task_decorated_function_keeps_its_observers(queue):
    task = pytest.importorskip("eventforge.tasks").task

    seen: list[str] = []

    class Recorder:
        def before(self, event):
            seen.append("before")

        def after(self, event):
            seen.append("after")

        def on_error(self, event):
            seen.append("error")

    @task(on_execute=[Recorder()])
    def predict(x):
        return x * 2

    srv = RPCServer(queue, service_name="ml")
    srv.add_method("predict", predict)
    srv.serve(blocking=False)
    assert RPCClient(queue, service_name="ml").call("predict", 2) == 4
    assert seen == ["before", "after"]
    srv.stop()


def test_observed_function_keeps_its_observers(queue):
    from eventforge.observing import observe

    seen: list[tuple[str, object]] = []

    class Recorder:
        def before(self, event):
            seen.append(("before", event.args))

        def after(self, event):
            seen.append(("after", event.result))

        def on_error(self, event):
            seen.append(("error", event.error))

    @observe(Recorder())
    def triple(x):
        return x * 3

    srv = RPCServer(queue, service_name="obs")
    srv.add_method("triple", triple)
    srv.serve(blocking=False)
    assert RPCClient(queue, service_name="obs").triple(2) == 6
    assert seen == [("before", (2,)), ("after", 6)]
    srv.stop()


def test_server_as_context_manager(queue):
    with RPCServer(queue, service_name="ctx") as srv:
        srv.add_method("one", lambda: 1)
        assert RPCClient(queue, service_name="ctx").one() == 1
    assert not srv.serving
