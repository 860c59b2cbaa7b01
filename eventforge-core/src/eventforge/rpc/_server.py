"""The RPC server: answers calls for the functions registered on it under one service name.

:class:`RPCServer` registers functions and answers calls on the topic ``_rpc.<service_name>``.
Several servers with the same ``service_name`` form one group: each call runs once, on one of
them (on transports with competing-consumer groups this holds across processes and machines).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.dispatch import Dispatcher, LoopRunner
from eventforge.events import _is_model_class, adapter_for
from eventforge.execution import Executor
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.rpc._protocol import (
    error_reply,
    exception_reply,
    parse_call,
    service_topic,
)
from eventforge.transport import Capability, Counter, nonblocking

if TYPE_CHECKING:
    from typing_extensions import Self


__all__ = ["RPCServer"]

log = logging.getLogger("eventforge.rpc")

F = TypeVar("F", bound=Callable[..., Any])


def _model_params(func: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, type]] | None:
    """The parameters of ``func`` annotated with a pydantic model or dataclass, if any."""

    try:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func)
    except Exception:
        return None
    models = {
        name: hint
        for name, hint in hints.items()
        if name in signature.parameters and _is_model_class(hint)
    }
    return (signature, models) if models else None


def _validate_args(
    spec: tuple[inspect.Signature, dict[str, type]], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Validate the model-typed arguments of a call; ``ValueError`` saying which one failed."""

    signature, models = spec
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    for name, cls in models.items():
        if name in bound.arguments:
            try:
                bound.arguments[name] = adapter_for(cls).validate_python(bound.arguments[name])
            except Exception as exc:
                raise ValueError(
                    f"argument {name!r} is not a valid {cls.__name__}: {exc}"
                ) from None
    return list(bound.args), dict(bound.kwargs)


class RPCServer:
    """Answers calls for the methods registered on it, under one ``service_name``.

    Where methods run: on the in-process transport, inline in the caller's thread (the fastest
    path); on network transports, on a thread of the server's own (``threaded``, the default
    there), so that a method may itself make blocking calls, such as another RPC, without
    holding up the transport's reader. Coroutine functions run on the event loop that was
    running at :meth:`serve` (else on the shared background loop). With a thread or process
    pool ``executor`` every call goes through it and calls run concurrently. A ``@task``
    function keeps its observers: calling it runs them around the body.

    ``inline=True`` runs methods on the transport's own I/O thread or event loop where it
    declares :attr:`~eventforge.transport.Capability.NONBLOCKING_INLINE` (TCP, NATS), with no
    thread hand-off on the way in: the lowest latency, the way a ``zmq`` REP loop answers.
    Use it only for methods that return quickly and never wait (no blocking I/O, no RPC of
    their own): while one runs, the transport reads nothing else. Elsewhere it is the same as
    ``threaded=False``.

    Servers sharing a ``service_name`` form a pool and each call runs on one of them: across
    processes the transport picks (where it declares groups); among the servers of one queue,
    ``dispatcher`` does (a name such as ``"least_loaded"``, default ``"round_robin"``).
    """

    def __init__(
        self,
        queue: MessageQueue,
        executor: Executor | None = None,
        service_name: str = "rpc",
        *,
        threaded: bool | None = None,
        dispatcher: str | Dispatcher | None = None,
        inline: bool = False,
    ) -> None:
        if inline and (threaded or executor is not None):
            raise ValueError(
                "inline=True runs methods on the transport's I/O thread; it cannot be combined "
                "with threaded=True or an executor (pick one place for methods to run)"
            )
        self.inline = inline
        self.queue = queue
        self.dispatcher = dispatcher
        self.executor = executor
        self.service_name = service_name
        if inline:
            threaded = False
        if threaded is None:
            blocking_executor = executor is None or executor.mode.value == "sequential"
            threaded = blocking_executor and not queue.transport.has(Capability.ZERO_COPY)
        self.threaded = threaded
        self.topic = service_topic(service_name)
        self._methods: dict[str, Callable[..., Any]] = {}
        self._arg_models: dict[str, tuple[inspect.Signature, dict[str, type]]] = {}
        self._handler_id: str | None = None
        self._runner: LoopRunner | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._calls = Counter()
        self._failures = Counter()
        self._not_found = Counter()
        self._bad_requests = Counter()
        self._refused = Counter()

    # -- registration ----------------------------------------------------------------------

    def register(self, name: str | Callable[..., Any] | None = None) -> Callable[[F], F]:
        """Decorator: register the function under ``name`` (default: its ``__name__``)."""
        if callable(name):
            raise TypeError("use @server.register() or @server.register('name') (with parentheses)")

        def decorate(func: F) -> F:
            self.add_method(name or _name_of(func), func)
            return func

        return decorate

    def add_method(self, name: str, func: Callable[..., Any], *, replace: bool = False) -> None:
        """Register ``func`` under ``name``. A name is registered once unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"an RPC method name must be a non-empty str, got {name!r}")
        if not callable(func):
            raise TypeError(f"RPC method {name!r} must be callable, got {type(func).__name__}")
        with self._lock:
            if name in self._methods and not replace:
                raise ValueError(
                    f"RPC method {name!r} is already registered on service "
                    f"{self.service_name!r}; pass replace=True to swap it"
                )
            self._methods[name] = func
            models = _model_params(func)
            if models is not None:
                self._arg_models[name] = models
            else:
                self._arg_models.pop(name, None)

    def remove_method(self, name: str) -> bool:
        """Unregister ``name``; return whether it was registered."""
        with self._lock:
            self._arg_models.pop(name, None)
            return self._methods.pop(name, None) is not None

    @property
    def methods(self) -> list[str]:
        """The registered method names, sorted."""
        return sorted(self._methods)

    # -- lifecycle ---------------------------------------------------------------------------

    def serve(self, blocking: bool = True) -> None:
        """Start answering calls. ``blocking=True`` then waits until :meth:`stop` is called.

        Calling it again while serving changes nothing. Ctrl-C during a blocking ``serve``
        stops the server and propagates ``KeyboardInterrupt``.
        """
        with self._lock:
            if self._handler_id is None:
                self._stopped.clear()
                self._runner = LoopRunner.for_caller()
                self._handler_id = self.queue.subscribe(
                    self.topic,
                    self._on_call_inline if self.inline else self._on_call,
                    group=self.topic,
                    dispatcher=self.dispatcher,
                    threaded=self.threaded,
                    on_discard=self._refuse,
                )
        if blocking:
            try:
                while not self._stopped.wait(0.5):
                    pass
            except KeyboardInterrupt:
                self.stop()
                raise

    def _refuse(self, message: Message) -> None:
        """Answer a call that was received but will never run (stopping, or backlog full)."""
        if message.reply_to is None:
            return
        self._refused.bump()
        self._send(
            message,
            error_reply(
                "unavailable",
                "ServiceUnavailable",
                "the server stopped, or its backlog was full, before running the call; it did "
                "not run, so it is safe to retry",
            ),
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop answering calls (a blocking :meth:`serve` returns). Idempotent.

        Calls already running finish and are answered; calls received but not yet started are
        answered with :class:`~eventforge.errors.ServiceUnavailable` (they did not run), so
        their callers can retry elsewhere at once instead of waiting for their timeout.
        With ``timeout`` (seconds), waits that long at most for the running calls and their
        replies (also those of coroutine methods still running on their event loop); without
        it, a second for a call running on the server's thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            handler_id, self._handler_id = self._handler_id, None
        if handler_id is not None and not self.queue.closed:
            if timeout is None:
                self.queue.unsubscribe(handler_id)
            else:
                self.queue.unsubscribe(handler_id, drain=timeout, discard_waiting=True)
        if deadline is not None:
            self._wait_replies(max(0.0, deadline - time.monotonic()))
        self._stopped.set()

    def _wait_replies(self, timeout: float = 30.0) -> bool:
        """Wait until the replies of calls finishing on the event loop were sent.

        Calls run on a pool ``executor`` or as coroutines send their reply from the event loop
        after the method returned. Call this after :meth:`stop` (and after stopping the
        executor) before closing the queue, so those replies are not lost; ``False`` when
        ``timeout`` seconds passed first.
        """
        runner = self._runner
        return True if runner is None else runner.wait_idle(timeout)

    @property
    def handler_id(self) -> str | None:
        """The id of the queue subscription that serves calls (``None`` while stopped): what
        :meth:`MessageQueue.subscription_status <eventforge.queue.MessageQueue.subscription_status>`
        takes to check that path."""
        return self._handler_id

    @property
    def serving(self) -> bool:
        """Whether the server is answering calls."""
        return self._handler_id is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``calls`` answered, ``failures`` (method raised), ``not_found``,
        ``bad_requests``, ``refused`` (received but never run: answered ServiceUnavailable)."""
        return {
            "calls": self._calls.value,
            "failures": self._failures.value,
            "not_found": self._not_found.value,
            "bad_requests": self._bad_requests.value,
            "refused": self._refused.value,
        }

    def __enter__(self) -> Self:
        self.serve(blocking=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self.serving else "stopped"
        return f"RPCServer(service_name={self.service_name!r}, methods={self.methods}, {state})"

    # -- handling a call -----------------------------------------------------------------------

    @nonblocking
    def _on_call_inline(self, message: Message) -> None:
        """``_on_call``, marked to run on the transport's I/O thread (``inline=True``)."""
        self._on_call(message)

    def _on_call(self, message: Message) -> None:
        if not message.reply_to:
            self._bad_requests.bump()
            log.warning(
                "ignored a message on %r without reply_to: RPC calls are requests; use "
                "RPCClient.call or MessageQueue.request",
                message.topic,
            )
            return
        self._calls.bump()
        try:
            name, args, kwargs = parse_call(message.payload)
        except ValueError as exc:
            self._bad_requests.bump()
            self._send(message, error_reply("bad_request", "ValueError", str(exc)))
            return
        func = self._methods.get(name)
        if func is None:
            self._not_found.bump()
            self._send(
                message,
                error_reply(
                    "method_not_found",
                    "MethodNotFound",
                    f"no RPC method {name!r} on service {self.service_name!r}",
                    methods=self.methods,
                ),
            )
            return
        models = self._arg_models.get(name)
        if models is not None:
            try:
                args, kwargs = _validate_args(models, args, kwargs)
            except ValueError as exc:
                self._bad_requests.bump()
                self._send(message, error_reply("bad_request", "ValidationError", str(exc)))
                return
        if self.executor is not None:
            self._run_on_executor(message, func, args, kwargs)
            return
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            self._failures.bump()
            self._send(message, exception_reply(exc))
            return
        if inspect.isawaitable(result):
            self._schedule(self._finish_awaitable(message, result))
            return
        self._send(message, {"ok": True, "result": result})

    def _run_on_executor(
        self, message: Message, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        executor = self.executor
        assert executor is not None
        try:
            task_id = executor.submit(func, *args, **kwargs)
        except Exception as exc:
            self._failures.bump()
            self._send(message, exception_reply(exc))
            return
        if executor.mode.value == "sequential":
            self._send(message, self._outcome(executor.result(task_id)))
            return
        self._schedule(self._finish_task(message, executor, task_id))

    async def _finish_task(self, message: Message, executor: Executor, task_id: str) -> None:
        try:
            reply = self._outcome(await executor.result_async(task_id))
        except Exception as exc:  # the result is gone (evicted, the executor failed)
            self._failures.bump()
            log.error(
                "RPC server %r lost the result of a call run on its executor: %s",
                self.service_name,
                exc,
            )
            reply = exception_reply(exc)
        await self._send_async(message, reply)

    async def _finish_awaitable(self, message: Message, awaitable: Awaitable[Any]) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            self._failures.bump()
            reply = exception_reply(exc)
        else:
            reply = {"ok": True, "result": result}
        await self._send_async(message, reply)

    def _outcome(self, task_result: Any) -> dict[str, Any]:
        if task_result.error is not None:
            self._failures.bump()
            return exception_reply(task_result.error)
        if task_result.status.value != "success":
            self._failures.bump()
            return error_reply(
                "exception",
                "TaskNotCompleted",
                f"the executor reported {task_result.status.value} for this call",
            )
        return {"ok": True, "result": task_result.value}

    def _schedule(self, coro: Any) -> None:
        runner = self._runner or LoopRunner.for_caller()
        try:
            runner.schedule(coro)
        except RuntimeError:
            coro.close()
            log.error(
                "RPC server %r cannot finish a call: the event loop it was serving on has "
                "closed; serve() again from a live loop or outside one",
                self.service_name,
            )

    def _send(self, request: Message, reply: dict[str, Any]) -> None:
        try:
            self.queue.reply(request, reply)
        except Exception as exc:
            self._reply_failed(request, reply, exc)
            self.queue.reply(request, exception_reply(exc))

    async def _send_async(self, request: Message, reply: dict[str, Any]) -> None:
        try:
            await self.queue.reply_async(request, reply)
        except Exception as exc:
            self._reply_failed(request, reply, exc)
            await self.queue.reply_async(request, exception_reply(exc))

    def _reply_failed(self, request: Message, reply: dict[str, Any], exc: Exception) -> None:
        if reply.get("ok"):
            self._failures.bump()
        log.warning(
            "could not send the reply to %r on service %r (%s); sending the error instead",
            request.id,
            self.service_name,
            exc,
        )


def _name_of(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ValueError(
            "this callable has no usable __name__; register it with an explicit name: "
            "server.register('name') or server.add_method('name', func)"
        )
    return name
