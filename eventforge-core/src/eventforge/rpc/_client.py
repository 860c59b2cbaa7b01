"""The RPC client: calls the methods of an RPC service by name and returns their results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from eventforge.errors import RPCError, RPCTimeout
from eventforge.events import adapter_for
from eventforge.queue import MessageQueue
from eventforge.rpc._client_helpers import dynamic_method
from eventforge.rpc._protocol import make_call, service_topic, unwrap_reply

__all__ = ["RPCClient"]

T = TypeVar("T")


class RPCClient:
    """Calls methods of the RPC service ``service_name`` by name.

    ``client.call("add", 1, 2)`` is ``client.add(1, 2)``. A method that raised on the server
    raises :class:`~eventforge.errors.RemoteError`; an unknown name :class:`MethodNotFound`;
    no server subscribed :class:`NoRespondersError` at once (where the transport can tell);
    no reply within ``timeout`` seconds :class:`~eventforge.errors.RPCTimeout`.
    """

    def __init__(
        self, queue: MessageQueue, service_name: str = "rpc", timeout: float = 30.0
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.queue = queue
        self.service_name = service_name
        self.timeout = timeout
        self.topic = service_topic(service_name)

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` with the arguments; return its result or raise its error."""
        wait = self.timeout if timeout is None else timeout
        reply = self.queue.request(self.topic, make_call(method, args, kwargs), timeout=wait)
        if reply is None:
            raise self._timeout(method, wait)
        return unwrap_reply(reply.payload, method, self.service_name)

    async def call_async(
        self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Like :meth:`call`, awaiting the reply without blocking the running event loop."""
        wait = self.timeout if timeout is None else timeout
        payload = make_call(method, args, kwargs)
        reply = await self.queue.request_async(self.topic, payload, timeout=wait)
        if reply is None:
            raise self._timeout(method, wait)
        return unwrap_reply(reply.payload, method, self.service_name)

    def call_typed(
        self,
        result_type: type[T],
        method: str,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Like :meth:`call`, validating the result as ``result_type`` (a model, dataclass...).

        Type checkers see the return type: ``client.call_typed(Total, "total", order)`` is a
        ``Total``. A result that does not validate raises :class:`~eventforge.errors.RPCError`.
        """
        return self._typed(result_type, method, self.call(method, *args, timeout=timeout, **kwargs))

    async def call_typed_async(
        self,
        result_type: type[T],
        method: str,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Like :meth:`call_typed`, awaiting the reply without blocking the running event loop."""
        result = await self.call_async(method, *args, timeout=timeout, **kwargs)
        return self._typed(result_type, method, result)

    def _typed(self, result_type: type[T], method: str, result: Any) -> T:

        try:
            value: T = adapter_for(result_type).validate_python(result)
        except Exception as exc:
            raise RPCError(
                f"the result of {method!r} from service {self.service_name!r} is not a valid "
                f"{getattr(result_type, '__name__', result_type)}: {exc}"
            ) from exc
        return value

    def _timeout(self, method: str, wait: float) -> RPCTimeout:
        return RPCTimeout(
            f"no reply for {method!r} from service {self.service_name!r} within {wait}s; is an "
            f"RPCServer(service_name={self.service_name!r}) serving on this transport?",
            method=method,
            timeout=wait,
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return dynamic_method(self, name)

    def __repr__(self) -> str:
        return f"RPCClient(service_name={self.service_name!r}, timeout={self.timeout})"
