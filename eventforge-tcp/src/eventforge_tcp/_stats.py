"""The counters behind ``stats()``: one kit :class:`~eventforge.transport.Counter` per name."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice

from eventforge.transport import Counter

__all__ = ["Counts"]


class Counts:
    """Named counters that any thread may bump without a lock.

    Every name is declared up front, so a misspelt one fails at once instead of adding a key
    to ``stats()`` that nothing reads.
    """

    __slots__ = ("_counters",)

    def __init__(self, names: Iterable[str]) -> None:
        self._counters = {name: Counter() for name in names}

    def __getitem__(self, name: str) -> Counter:
        return self._counters[name]

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (the bumps run in C: cheap for a read's worth)."""
        bump = self._counters[name].bump
        if n == 1:
            bump()
        elif n > 1:
            deque(islice(iter(bump, None), n), maxlen=0)

    def snapshot(self) -> dict[str, int]:
        """Every counter's value now."""
        return {name: counter.value for name, counter in self._counters.items()}
