"""Middleware: order, header carrying, short-circuit, errors, selection by name."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from eventforge import MessageQueue, RPCClient, RPCServer
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.middleware import (
    ContextHeader,
    Dedupe,
    Middleware,
    register_middleware,
    resolve_middleware,
)
from eventforge.testing import wait_until

tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")


class Recorder(Middleware):
    """Appends its name to a shared log on each hook, and a header on send."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        self.log.append(f"send:{self.name}")
        message.headers = {**message.headers, f"via-{self.name}": True}
        send(message)

    def on_receive(self, message: Message, handle: Callable[[Message], Any]) -> Any:
        self.log.append(f"recv:{self.name}")
        return handle(message)


class Stamp(Middleware):
    """Counts handling time around both plain and coroutine handlers (wrapping)."""

    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def on_receive(self, message: Message, handle: Callable[[Message], Any]) -> Any:
        self.wrapped.append("before")
        try:
            return handle(message)
        finally:
            self.wrapped.append("after")

    async def on_receive_async(
        self, message: Message, handle: Callable[[Message], Awaitable[Any]]
    ) -> Any:
        self.wrapped.append("before-async")
        try:
            return await handle(message)
        finally:
            self.wrapped.append("after-async")


def test_send_side_in_list_order_receive_side_reversed() -> None:
    log: list[str] = []
    queue = MessageQueue(middleware=[Recorder("a", log), Recorder("b", log)])
    try:
        seen: list[Message] = []

        def handler(message: Message) -> None:
            log.append("handler")
            seen.append(message)

        queue.subscribe("t", handler)
        queue.publish("t", 1)
        assert log == ["send:a", "send:b", "recv:b", "recv:a", "handler"]
        assert seen[0].headers == {"via-a": True, "via-b": True}
    finally:
        queue.close()


@pytest.mark.parametrize("use_async", [False, True])
def test_context_header_carries_a_tenant_from_publisher_to_handler(use_async: bool) -> None:
    queue = MessageQueue(middleware=[ContextHeader("tenant", tenant)])
    seen: list[tuple[str | None, Any]] = []
    try:
        if use_async:

            async def handler(message: Message) -> None:
                seen.append((tenant.get(None), message.headers.get("tenant")))
        else:

            def handler(message: Message) -> None:  # type: ignore[misc]
                seen.append((tenant.get(None), message.headers.get("tenant")))

        queue.subscribe("t", handler)

        def publish_as(name: str) -> None:
            tenant.set(name)
            queue.publish("t", None)

        ctx = contextvars.copy_context()
        ctx.run(publish_as, "acme")
        queue.publish("t", None)  # no tenant set here: no header
        assert wait_until(lambda: len(seen) == 2, timeout=5.0)
        assert ("acme", "acme") in seen
        assert (None, None) in seen
        assert tenant.get(None) is None  # the handler's context did not leak out
    finally:
        queue.close()


def test_wrapping_covers_sync_and_async_handlers() -> None:
    stamp = Stamp()
    queue = MessageQueue(middleware=[stamp])
    done: list[str] = []
    try:
        queue.subscribe("s", lambda m: done.append("sync"))

        async def coro(message: Message) -> None:
            await asyncio.sleep(0)
            done.append("async")

        queue.subscribe("a", coro)
        queue.publish("s")
        assert stamp.wrapped == ["before", "after"]
        queue.publish("a")
        assert wait_until(lambda: stamp.wrapped[-1:] == ["after-async"], timeout=5.0)
        assert stamp.wrapped == ["before", "after", "before-async", "after-async"]
        assert done == ["sync", "async"]
    finally:
        queue.close()


class Auth(Middleware):
    def on_receive(self, message: Message, handle: Callable[[Message], Any]) -> Any:
        if message.headers.get("token") != "secret":
            raise PermissionError(f"message {message.id} has no valid token")
        return handle(message)


class DropOutgoing(Middleware):
    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        if not message.headers.get("drop"):
            send(message)


@pytest.mark.parametrize("use_async", [False, True])
def test_an_interceptor_that_raises_is_handled_like_a_handler(use_async: bool) -> None:
    errors: list[tuple[BaseException, Any]] = []
    queue = MessageQueue(
        middleware=[Auth()], error_hook=lambda exc, msg, handler: errors.append((exc, handler))
    )
    got: list[Any] = []
    try:
        if use_async:

            async def handler(message: Message) -> None:
                got.append(message.payload)
        else:

            def handler(message: Message) -> None:  # type: ignore[misc]
                got.append(message.payload)

        queue.subscribe("t", handler)
        queue.publish("t", 1)
        queue.publish("t", 2, token="secret")
        assert wait_until(lambda: got == [2] and len(errors) == 1, timeout=5.0)
        assert isinstance(errors[0][0], PermissionError)
        assert errors[0][1] is handler  # the hook names the user's handler, not a wrapper
        assert queue.stats["handler_errors"] == 1
    finally:
        queue.close()


def test_short_circuit_on_send_and_on_receive() -> None:
    dedupe = Dedupe()
    queue = MessageQueue(middleware=[DropOutgoing(), dedupe])
    got: list[Any] = []
    try:
        queue.subscribe("t", lambda m: got.append(m.payload))
        queue.publish("t", "dropped", drop=True)
        queue.publish("t", "kept")
        assert got == ["kept"]
        duplicate = Message("t", "again", id="fixed-id")
        queue.transport.send(duplicate)
        queue.transport.send(duplicate)
        assert got == ["kept", "again"]
        assert dedupe.skipped == 1
    finally:
        queue.close()


def test_requests_and_rpc_go_through_the_middleware() -> None:
    queue = MessageQueue(middleware=[ContextHeader("tenant", tenant)])
    server = RPCServer(queue, service_name="who")
    server.add_method("whoami", lambda: tenant.get("nobody"))
    server.serve(blocking=False)
    try:

        def call() -> Any:
            tenant.set("globex")
            return RPCClient(queue, service_name="who", timeout=5).call("whoami")

        assert contextvars.copy_context().run(call) == "globex"
    finally:
        server.stop()
        queue.close()


def test_use_appends_middleware_for_later_subscriptions() -> None:
    log: list[str] = []
    queue = MessageQueue()
    try:
        queue.subscribe("early", lambda m: None)
        queue.use(Recorder("late", log))
        queue.subscribe("later", lambda m: None)
        queue.publish("early")
        assert log == ["send:late"]
        queue.publish("later")
        assert log == ["send:late", "send:late", "recv:late"]
        assert len(queue.middleware) == 1
    finally:
        queue.close()


def make_recorder() -> Recorder:
    return Recorder("named", [])


def test_middleware_by_name_and_by_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventforge.dispatch import middleware

    monkeypatch.setattr(middleware, "_REGISTRY", {})  # the registration ends with the test
    register_middleware("recorder-for-test", make_recorder)
    resolved = resolve_middleware(
        ["dedupe", "recorder-for-test", f"{__name__}:make_recorder", Dedupe()]
    )
    assert [type(m).__name__ for m in resolved] == ["Dedupe", "Recorder", "Recorder", "Dedupe"]
    queue = MessageQueue(middleware=["dedupe"])
    try:
        assert isinstance(queue.middleware[0], Dedupe)
    finally:
        queue.close()


def test_bad_middleware_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown middleware 'nope'\.") as info:
        MessageQueue(middleware=["nope"])
    assert info.value.key == "middleware"
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        resolve_middleware(["no_such_module_xyz:thing"])
    with pytest.raises(TypeError, match="is not a middleware"):
        resolve_middleware([object()])


MIDDLEWARE_PLUGIN = """
from eventforge import hookimpl
from eventforge.middleware import Middleware
from eventforge.plugins import MiddlewareSpec


class Stamp(Middleware):
    def on_send(self, message, send):
        message.headers = {**message.headers, "stamped-by": "acme"}
        send(message)


@hookimpl
def eventforge_middleware():
    return [MiddlewareSpec(name="acme-stamp", target="acme_mw.plugin:Stamp", aliases=("stamp",))]
"""


def test_a_plugin_registers_middleware_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventforge.plugins._registry import reset_registry
    from eventforge.testing.distributions import write_distribution

    root = tmp_path / "site"
    write_distribution(
        root,
        "acme-mw",
        entry_points={"acme-mw": "acme_mw.plugin"},
        modules={"acme_mw.plugin": MIDDLEWARE_PLUGIN},
    )
    monkeypatch.syspath_prepend(str(root))
    reset_registry(search_path=[str(root)])
    try:
        queue = MessageQueue(middleware=["stamp", "dedupe"])
        try:
            seen: list[Message] = []
            queue.subscribe("t", seen.append)
            queue.publish("t")
            assert seen[0].headers == {"stamped-by": "acme"}
            assert [type(m).__name__ for m in queue.middleware] == ["Stamp", "Dedupe"]
        finally:
            queue.close()
        with pytest.raises(
            ConfigurationError, match=r"Did you mean 'stamp'\? Installed: acme-stamp, dedupe\."
        ):
            resolve_middleware(["stmp"])
    finally:
        reset_registry()
