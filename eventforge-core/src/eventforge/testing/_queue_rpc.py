"""The queue conformance tests of RPC: results, remote errors, unknown methods, timeouts and
servers that share a service name."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from eventforge.errors import MethodNotFound, RemoteError, RPCTimeout
from eventforge.execution import ExecutionMode, Executor
from eventforge.rpc import RPCClient, RPCServer
from eventforge.testing._queue_harness import QueueHarness
from eventforge.transport import Capability

__all__ = ["RPCContract"]


class RPCContract(QueueHarness):
    """An RPC call returns the method's result or raises its error, and runs exactly once."""

    def test_rpc_call_returns_the_result(self) -> None:
        """An RPC call by name, positional or keyword, or by attribute, returns the result."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("calc")
        self.start_server(server_queue, service, add=lambda a, b: a + b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        assert client.call("add", 10, 20) == 30
        assert client.add(a=5, b=6) == 11
        assert client.call("add", [1], [2]) == [1, 2]

    def test_rpc_call_async_returns_the_result(self) -> None:
        """``call_async`` returns the result and never blocks the event loop."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("acalc")
        self.start_server(server_queue, service, mul=lambda a, b: a * b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)

        async def main() -> list[Any]:
            return list(await asyncio.gather(*(client.call_async("mul", n, 2) for n in range(4))))

        assert asyncio.run(main()) == [0, 2, 4, 6]

    def test_rpc_remote_exception_raises_remote_error(self) -> None:
        """A method that raises makes the call raise RemoteError with type, message, traceback."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("failing")

        def fail(reason: str) -> None:
            raise ValueError(reason)

        self.start_server(server_queue, service, fail=fail)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        with pytest.raises(RemoteError) as info:
            client.fail("bad input")
        assert info.value.type_name == "ValueError"
        assert info.value.remote_message == "bad input"
        assert "ValueError: bad input" in info.value.traceback_text

    def test_rpc_unknown_method_raises_method_not_found(self) -> None:
        """Calling an unregistered name raises MethodNotFound listing the registered names."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("known")
        self.start_server(server_queue, service, add=lambda a, b: a + b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        with pytest.raises(MethodNotFound) as info:
            client.call("subtract", 1, 2)
        assert info.value.available == ("add", "ping")

    def test_rpc_timeout_raises_and_late_reply_is_dropped(self) -> None:
        """A call slower than its timeout raises RPCTimeout; its late reply is dropped, no waiter left."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("slow")
        release = threading.Event()
        executor = Executor(mode=ExecutionMode.THREAD, max_workers=2)
        self._cleanups.append(lambda: executor.stop(wait=True))
        self._cleanups.append(release.set)
        server = RPCServer(server_queue, executor=executor, service_name=service)
        server.add_method("ping", lambda: "pong")
        server.add_method("wait", lambda: release.wait(self.delivery_timeout * 2))
        server.serve(blocking=False)
        self._cleanups.append(server.stop)
        client = RPCClient(client_queue, service_name=service)
        self.wait_until_served(client)
        late_before = client_queue.stats["late_replies"]
        with pytest.raises(RPCTimeout) as info:
            client.call("wait", timeout=self.absence_timeout)
        assert info.value.method == "wait"
        assert client_queue.pending_requests == 0
        release.set()
        if not client_queue.transport.has(Capability.REQUEST_REPLY):
            assert self.wait_for(lambda: client_queue.stats["late_replies"] > late_before)
        assert client.ping() == "pong"

    def test_rpc_servers_with_one_service_name_compete(self) -> None:
        """GROUPS: two servers with one service name on two queues run each call exactly once."""
        first, second, client_queue = self.new_queue(), self.new_queue(), self.new_queue()
        self.require(first, Capability.GROUPS)
        service = self.service("pool")
        ran: dict[str, list[int]] = {"first": [], "second": []}
        pinged: dict[str, int] = {"first": 0, "second": 0}
        lock = threading.Lock()
        for name, queue in (("first", first), ("second", second)):

            def work(n: int, name: str = name) -> str:
                with lock:
                    ran[name].append(n)
                return name

            def ping(name: str = name) -> str:
                with lock:
                    pinged[name] += 1
                return "pong"

            server = self.start_server(queue, service, work=work)
            server.add_method("ping", ping, replace=True)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client, until=lambda: all(pinged.values()))
        calls = 20
        answers = [client.work(n) for n in range(calls)]
        assert sorted(ran["first"] + ran["second"]) == list(range(calls)), ran
        assert answers.count("first") == len(ran["first"])
        assert answers.count("second") == len(ran["second"])
