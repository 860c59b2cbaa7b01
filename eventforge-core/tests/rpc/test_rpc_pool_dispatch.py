"""An RPC server pool picks the member of each call through a dispatcher chosen by name."""

from __future__ import annotations

import threading

from eventforge import MessageQueue, RPCClient, RPCServer


def test_least_loaded_pool_sends_calls_past_a_busy_server():
    queue = MessageQueue()
    release = threading.Event()
    busy_entered = threading.Event()
    served: list[str] = []

    def make_server(label: str) -> RPCServer:
        server = RPCServer(queue, service_name="pool", threaded=True, dispatcher="least_loaded")

        @server.register("work")
        def work(block: bool) -> str:
            served.append(label)
            if block:
                busy_entered.set()
                release.wait(10)
            return label

        return server

    first, second = make_server("first"), make_server("second")
    first.serve(blocking=False)
    second.serve(blocking=False)
    client = RPCClient(queue, service_name="pool", timeout=10)
    blocked_result: list[str] = []
    caller = threading.Thread(target=lambda: blocked_result.append(client.work(True)))
    caller.start()
    assert busy_entered.wait(10)
    busy = served[0]
    # While one member is busy, every further call goes to the idle one.
    others = [client.work(False) for _ in range(4)]
    assert set(others) == {"second" if busy == "first" else "first"}
    release.set()
    caller.join(10)
    assert blocked_result == [busy]
    first.stop()
    second.stop()
    queue.close()


def test_round_robin_is_the_default_pool_dispatcher():
    queue = MessageQueue()
    servers = []
    for label in ("a", "b", "c"):
        server = RPCServer(queue, service_name="rr")
        server.add_method("who", lambda label=label: label)
        server.serve(blocking=False)
        servers.append(server)
    client = RPCClient(queue, service_name="rr", timeout=5)
    answers = [client.who() for _ in range(9)]
    assert sorted(answers) == sorted(["a", "b", "c"] * 3)
    for server in servers:
        server.stop()
    queue.close()
