"""Client-side RPC helpers: spread calls over several clients and retry what is safe to retry.

Kept apart from the plain :class:`~eventforge.rpc.RPCClient`, which they wrap.
:class:`RoundRobinRPCClient` balances calls over clients in turn; :func:`with_retry` wraps a
client in a :class:`RetryingRPCClient`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eventforge.errors import MethodNotFound, RemoteError, TransportError
from eventforge.transport import Counter

__all__ = ["RetryingRPCClient", "RoundRobinRPCClient", "dynamic_method", "with_retry"]

log = logging.getLogger("eventforge.rpc")


class _Caller(Protocol):
    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any: ...

    async def call_async(
        self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any: ...


def dynamic_method(client: _Caller, name: str) -> Callable[..., Any]:
    """``client.<name>``: a function that calls the remote method ``name`` (not ``_names``)."""
    if name.startswith("_"):
        raise AttributeError(name)

    def remote_method(*args: Any, **kwargs: Any) -> Any:
        return client.call(name, *args, **kwargs)

    remote_method.__name__ = remote_method.__qualname__ = name
    return remote_method


class RoundRobinRPCClient:
    """Spreads calls over several clients in turn (client-side load balancing)."""

    def __init__(self, clients: Sequence[_Caller]) -> None:
        self.clients = list(clients)
        if not self.clients:
            raise ValueError("RoundRobinRPCClient needs at least one client")
        for client in self.clients:
            if not callable(getattr(client, "call", None)):
                raise TypeError(f"{client!r} has no call() method; pass RPCClient instances")
        self._turn = itertools.count()

    def _next(self) -> _Caller:
        return self.clients[next(self._turn) % len(self.clients)]

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` on the next client in turn."""
        return self._next().call(method, *args, timeout=timeout, **kwargs)

    async def call_async(
        self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Like :meth:`call`, without blocking the running event loop."""
        return await self._next().call_async(method, *args, timeout=timeout, **kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return dynamic_method(self, name)

    def __repr__(self) -> str:
        return f"RoundRobinRPCClient({len(self.clients)} clients)"


_NEVER_RETRIED = (RemoteError, MethodNotFound)


class RetryingRPCClient:
    """Retries failed calls with capped exponential backoff and jitter. Built by :func:`with_retry`.

    Only the errors in ``retry_on`` are retried, and never a :class:`RemoteError` or a
    :class:`MethodNotFound`: the method ran (or cannot run), so trying again is not safe or
    not useful. Each attempt carries its own deadline and no server starts a request after
    its deadline, so the method runs at most once per attempt, and a timed-out attempt only
    if a server started it before its deadline (a method slower than the timeout, a lost
    reply); retry timeouts only for methods that are safe to run twice.
    """

    def __init__(
        self,
        client: _Caller,
        *,
        max_retries: int,
        initial_backoff: float,
        max_backoff: float,
        retry_on: tuple[type[BaseException], ...],
        jitter: bool,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.retry_on = retry_on
        self.jitter = jitter
        self._retries = Counter()
        self._gave_up = Counter()

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): capped, with jitter."""
        cap = min(self.max_backoff, self.initial_backoff * (2**retry))
        return random.uniform(cap / 2, cap) if self.jitter else cap

    def _should_retry(self, exc: BaseException, retry: int) -> bool:
        if isinstance(exc, _NEVER_RETRIED) or not isinstance(exc, self.retry_on):
            return False
        if retry >= self.max_retries:
            self._gave_up.bump()
            return False
        self._retries.bump()
        log.info("RPC call failed with %r; retry %d of %d", exc, retry + 1, self.max_retries)
        return True

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method``, retrying the errors in ``retry_on``."""
        retry = 0
        while True:
            try:
                return self.client.call(method, *args, timeout=timeout, **kwargs)
            except Exception as exc:
                if not self._should_retry(exc, retry):
                    raise
            time.sleep(self.backoff(retry))
            retry += 1

    async def call_async(
        self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Like :meth:`call`, without blocking the running event loop."""
        retry = 0
        while True:
            try:
                return await self.client.call_async(method, *args, timeout=timeout, **kwargs)
            except Exception as exc:
                if not self._should_retry(exc, retry):
                    raise
            await asyncio.sleep(self.backoff(retry))
            retry += 1

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``retries`` made, calls that ``gave_up`` after the last retry."""
        return {"retries": self._retries.value, "gave_up": self._gave_up.value}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return dynamic_method(self, name)

    def __repr__(self) -> str:
        return f"with_retry({self.client!r}, max_retries={self.max_retries})"


def with_retry(
    client: _Caller,
    max_retries: int = 3,
    *,
    initial_backoff: float = 0.1,
    max_backoff: float = 5.0,
    retry_on: tuple[type[BaseException], ...] = (TransportError,),
    jitter: bool = True,
) -> RetryingRPCClient:
    """Wrap ``client`` so failed calls are retried up to ``max_retries`` times.

    The wait before retry ``n`` is ``min(max_backoff, initial_backoff * 2**n)``, with jitter
    taking it at random between half and all of that. By default only transport errors are
    retried (the call never reached a server: link down, "no responders" while servers
    start), because only those are safe for any method. A call that timed out may have run
    on the server (started before its deadline, never after: see
    :mod:`eventforge.deadlines`): for methods that are safe to run twice, pass
    ``retry_on=(RPCTimeout, TransportError)``. A remote exception or an unknown method is
    never retried.
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if initial_backoff < 0 or max_backoff < 0:
        raise ValueError("backoff times must be >= 0 seconds")
    retry_on = tuple(retry_on)
    for kind in retry_on:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"retry_on must hold exception classes, got {kind!r}")
        if issubclass(kind, _NEVER_RETRIED):
            raise ValueError(
                f"{kind.__name__} is never retried: the remote method ran (or does not exist), "
                "so calling again is not safe; remove it from retry_on"
            )
    return RetryingRPCClient(
        client,
        max_retries=max_retries,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        retry_on=retry_on,
        jitter=jitter,
    )
