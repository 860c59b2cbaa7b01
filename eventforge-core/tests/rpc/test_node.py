"""Node: named handlers called through a dispatcher and observers."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from eventforge import CallEvent, Node


def test_call_runs_the_named_handler() -> None:
    node = Node("math")

    @node.handler()
    def add(a: int, b: int) -> int:
        return a + b

    @node.handler("times")
    def multiply(a: int, b: int) -> int:
        return a * b

    assert node.call("add", 2, 3) == 5
    assert node.call("times", 2, 3) == 6
    assert sorted(node.handlers) == ["add", "times"]


def test_bare_decorator_and_async_handlers() -> None:
    node = Node("n")

    @node.handler
    async def hello(name: str) -> str:
        return f"hi {name}"

    assert node.call("hello", "bob") == "hi bob"


def test_unknown_handler_names_the_registered_ones() -> None:
    node = Node("math")
    node.add_handler("add", lambda a, b: a + b)
    with pytest.raises(LookupError, match=r"no handler 'sub'.*Registered: add"):
        node.call("sub", 1, 2)


def test_replicas_share_work_round_robin() -> None:
    node = Node("pool", dispatcher="round_robin")
    hits: Counter[str] = Counter()
    node.add_handler("work", lambda: hits.update(["a"]) or "a")
    node.add_handler("work", lambda: hits.update(["b"]) or "b")
    results = [node.call("work") for _ in range(10)]
    assert hits == {"a": 5, "b": 5}
    assert sorted(results) == ["a"] * 5 + ["b"] * 5


def test_least_loaded_node_prefers_the_idle_replica() -> None:
    node = Node("pool", dispatcher="least_loaded")
    release = threading.Event()
    entered = threading.Event()

    def slow() -> str:
        entered.set()
        assert release.wait(10)
        return "slow"

    node.add_handler("work", slow)
    node.add_handler("work", lambda: "fast")
    blocked = threading.Thread(target=node.call, args=("work",))
    blocked.start()
    assert entered.wait(10)
    try:
        assert [node.call("work") for _ in range(5)] == ["fast"] * 5
    finally:
        release.set()
        blocked.join(10)


def test_fan_out_node_returns_every_result_in_order() -> None:
    node = Node("fan", dispatcher="broadcast")
    node.add_handler("ping", lambda x: x + 1)
    node.add_handler("ping", lambda x: x + 2)
    assert node.call("ping", 10) == [11, 12]


def test_observers_see_node_calls() -> None:
    events: list[CallEvent] = []

    class Spy:
        def after(self, event: CallEvent) -> None:
            events.append(event)

    node = Node("svc", observers=[Spy()])
    node.add_handler("echo", lambda x: x)
    assert node.call("echo", "x") == "x"
    assert [e.name for e in events] == ["svc.echo"]
    assert events[0].result == "x"


def test_remove_handler() -> None:
    node = Node("n")

    def a() -> int:
        return 1

    def b() -> int:
        return 2

    node.add_handler("f", a)
    node.add_handler("f", b)
    assert node.remove_handler("f", a) == 1
    assert node.call("f") == 2
    assert node.remove_handler("f") == 1
    assert "f" not in node.handlers


def test_bad_names_and_handlers_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        Node("")
    node = Node("n")
    with pytest.raises(TypeError, match="callable"):
        node.add_handler("x", 42)  # type: ignore[arg-type]


def test_handler_errors_propagate_to_the_caller() -> None:
    node = Node("n")

    def bad() -> Any:
        raise ZeroDivisionError("nope")

    node.add_handler("bad", bad)
    with pytest.raises(ZeroDivisionError):
        node.call("bad")


def test_serve_exposes_the_handlers_over_rpc_through_the_dispatcher() -> None:
    from eventforge import MessageQueue, RPCClient
    from eventforge.errors import MethodNotFound

    events: list[CallEvent] = []

    class Spy:
        def after(self, event: CallEvent) -> None:
            events.append(event)

    node = Node("math", dispatcher="round_robin", observers=[Spy()])
    node.add_handler("add", lambda a, b: a + b)
    replicas: Counter[str] = Counter()
    node.add_handler("who", lambda: replicas.update(["one"]) or "one")
    node.add_handler("who", lambda: replicas.update(["two"]) or "two")
    queue = MessageQueue()
    server = node.serve(queue)
    try:
        client = RPCClient(queue, service_name="math")
        assert client.call("add", 2, 3) == 5
        assert sorted(client.call("who") for _ in range(4)) == ["one", "one", "two", "two"]
        with pytest.raises(MethodNotFound):
            client.call("nope")
        assert server.serving
    finally:
        node.stop()
        queue.close()
    assert not server.serving
    assert [e.name for e in events].count("math.who") == 4
    assert replicas == {"one": 2, "two": 2}


def test_call_async_awaits_coroutine_handlers_on_the_running_loop() -> None:
    import asyncio

    node = Node("aio", dispatcher="broadcast")
    loops: list[asyncio.AbstractEventLoop] = []

    async def first(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return x + 1

    node.add_handler("inc", first)
    node.add_handler("inc", lambda x: x + 2)

    async def main() -> tuple[Any, asyncio.AbstractEventLoop]:
        return await node.call_async("inc", 1), asyncio.get_running_loop()

    result, loop = asyncio.run(main())
    assert result == [2, 3]
    assert loops == [loop]


def test_async_handlers_are_served_over_rpc_without_blocking() -> None:
    import asyncio

    from eventforge import MessageQueue, RPCClient

    node = Node("aio")

    @node.handler()
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    queue = MessageQueue()
    node.serve(queue)
    try:
        assert RPCClient(queue, service_name="aio").call("double", 21, timeout=10) == 42
    finally:
        node.stop()
        queue.close()


def test_a_handler_module_exposes_a_node_to_the_generic_worker(tmp_path: Any) -> None:
    from eventforge.worker import load_handlers

    module = tmp_path / "node_handlers.py"
    module.write_text(
        "from eventforge import Node\n"
        "node = Node('math', dispatcher='round_robin')\n"
        "node.add_handler('add', lambda a, b: a + b)\n"
        "HANDLERS = node.methods()\n"
        "SERVICE_NAME = node.name\n"
    )
    handlers, service = load_handlers(str(module))
    assert service == "math"
    assert sorted(handlers) == ["add"]
    assert handlers["add"](2, 3) == 5
