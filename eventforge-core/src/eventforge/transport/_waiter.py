"""One waiter for every transport's ``receive``: a callback that keeps the first message.

``receive(topic, timeout)`` on a transport without a buffer of its own is "subscribe, wait for
the first message, unsubscribe". :class:`Waiter` is that subscription's callback: it is marked
:func:`~eventforge.transport.nonblocking` (it only stores the message and wakes the caller), the
first message wins even when an I/O thread and a publisher's thread deliver at the same time,
and it wakes a blocked thread and an awaiting coroutine alike. Public as
:class:`eventforge.transport.Waiter`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from eventforge.message import Message

__all__ = ["Waiter"]


class Waiter:
    """A subscription callback that keeps the first message it gets (for ``receive``).

    ``Waiter()`` wakes :meth:`wait`; ``Waiter(loop)`` also resolves :attr:`future` on ``loop``
    (for ``receive_async``). Later messages are ignored.
    """

    __slots__ = ("_first", "event", "future", "loop", "message")

    # The nonblocking mark (see eventforge.transport.nonblocking): the callback only stores the
    # message and wakes the caller, so transports may run it on their I/O thread.
    __eventforge_nonblocking__: ClassVar[bool] = True

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.message: Message | None = None
        self.event = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[Message] | None = loop.create_future() if loop else None
        self._first = threading.Lock()  # taken by the first message; later ones are ignored

    def __call__(self, message: Message) -> None:
        if not self._first.acquire(False):
            return
        self.message = message
        self.event.set()
        if self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future, message)

    def wait(self, timeout: float | None) -> Message | None:
        """Block until the first message or ``timeout``; the message or ``None``."""
        self.event.wait(timeout)
        return self.message

    async def wait_async(self, timeout: float | None) -> Message | None:
        """Await the first message or ``timeout`` (needs ``Waiter(loop)``)."""
        if self.future is None:
            raise RuntimeError("wait_async needs a Waiter made with the running loop")
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        except asyncio.TimeoutError:
            return self.message


def _resolve(future: asyncio.Future[Message], message: Message) -> None:
    if not future.done():
        future.set_result(message)
