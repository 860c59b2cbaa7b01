"""The shared background event loop: blocking on it from a thread, with and without a timeout."""

from __future__ import annotations

import asyncio

import pytest
from eventforge.transport import background_loop


def test_a_blocking_run_past_its_timeout_raises_the_builtin_timeout_error_and_cancels() -> None:
    """On every Python (3.10's concurrent.futures.TimeoutError is a class of its own)."""
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = background_loop()
    with pytest.raises(TimeoutError) as raised:
        loop.run(slow(), timeout=0.05)
    assert type(raised.value) is TimeoutError

    async def was_cancelled() -> bool:
        await asyncio.wait_for(cancelled.wait(), 5)
        return True

    assert loop.run(was_cancelled(), timeout=10)


class _ClientTimeout(asyncio.TimeoutError):
    """A client library's own timeout (nats-py's is an ``asyncio.TimeoutError`` like this)."""


def test_a_timeout_the_coroutine_raises_reaches_the_caller_unchanged() -> None:
    async def gives_up() -> None:
        raise _ClientTimeout("the server did not answer")

    with pytest.raises(_ClientTimeout, match="did not answer"):
        background_loop().run(gives_up(), timeout=10)


def test_a_blocking_run_returns_the_coroutine_result() -> None:
    async def answer() -> int:
        return 42

    assert background_loop().run(answer(), timeout=5) == 42
