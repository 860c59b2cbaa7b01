"""The spec's pub-sub and RPC snippets run exactly as written and print what the spec says."""

from __future__ import annotations

import textwrap

import pytest

PUBSUB_SNIPPET = textwrap.dedent(
    """
    from eventforge import MessageQueue

    queue = MessageQueue()

    @queue.on("events.user")
    def handle_event(message):
        print(f"Received: {message.topic} -> {message.payload}")

    queue.publish("events.user", {"action": "login", "user": "alice"})
    # Received: events.user -> {'action': 'login', 'user': 'alice'}

    # Request-reply over the same queue
    @queue.on("math.add")
    def add_handler(message):
        a, b = message.payload["a"], message.payload["b"]
        queue.reply(message, a + b)

    response = queue.request("math.add", {"a": 10, "b": 20}, timeout=5.0)
    print(response.payload)  # 30
    """
)

RPC_SNIPPET = textwrap.dedent(
    """
    from eventforge import MessageQueue, RPCServer, RPCClient

    queue = MessageQueue()

    # Server
    server = RPCServer(queue, service_name="calculator")

    @server.register()
    def add(a: int, b: int) -> int:
        return a + b

    @server.register()
    def multiply(a: int, b: int) -> int:
        return a * b

    server.serve(blocking=False)  # subscribe + return; True blocks the thread

    # Client
    client = RPCClient(queue, service_name="calculator")
    print(client.call("add", 10, 20))  # 30
    print(client.multiply(5, 6))       # 30 (dynamic method access)

    server.stop()
    """
)

TASK_RPC_SNIPPET = textwrap.dedent(
    """
    from eventforge import task, MessageQueue, RPCServer, RPCClient, TimingMeter

    # SERVER: define once, where it runs; @task adds observers around each call.
    @task(on_execute=[TimingMeter()])
    def predict(x):
        return x * 2

    queue = MessageQueue()
    server = RPCServer(queue, service_name="ml")
    server.add_method("predict", predict)  # or @server.register("predict")
    server.serve(blocking=False)

    # CLIENT: plain, no @task, no stub.
    client = RPCClient(queue, service_name="ml")
    result = client.call("predict", 2)  # 4 -- runs predict ON the server, observers and all
    """
)


def _run(snippet: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "seed_snippet"}
    exec(compile(snippet, "<seed snippet>", "exec"), namespace)
    return namespace


def test_pubsub_snippet_prints_what_the_spec_says(capsys):
    namespace = _run(PUBSUB_SNIPPET)
    assert capsys.readouterr().out.splitlines() == [
        "Received: events.user -> {'action': 'login', 'user': 'alice'}",
        "30",
    ]
    queue = namespace["queue"]
    assert queue.pending_requests == 0  # type: ignore[attr-defined]
    queue.close()  # type: ignore[attr-defined]


def test_rpc_snippet_prints_what_the_spec_says(capsys):
    namespace = _run(RPC_SNIPPET)
    assert capsys.readouterr().out.splitlines() == ["30", "30"]
    assert not namespace["server"].serving  # type: ignore[attr-defined]
    namespace["queue"].close()  # type: ignore[attr-defined]


def test_task_registered_on_rpc_server_snippet_runs_with_its_observers():
    pytest.importorskip("eventforge.tasks", reason="@task is provided by eventforge.tasks")
    namespace = _run(TASK_RPC_SNIPPET)
    assert namespace["result"] == 4
    server = namespace["server"]
    assert server.stats["calls"] == 1  # type: ignore[attr-defined]
    server.stop()  # type: ignore[attr-defined]
    namespace["queue"].close()  # type: ignore[attr-defined]
