"""The panel next to each doorbell: its *armed* flag and the backlog counters of the unnamed
subscriptions of its transport, in one memory-mapped file (``bells/<name>.flag``).

An unnamed subscription keeps no backlog of its own: it reads the shared message log from its
cursor. What waits for it is counted here, in a *slot* of its owner's panel, by two counters
that each have a single writer, so no lock is needed between processes:

* ``PUT_N`` / ``PUT_B`` -- messages (and envelope bytes) stored for it, written by publishers
  under the store's write lock (one publisher at a time), before their commit;
* ``TAKEN_N`` / ``TAKEN_B`` -- messages it took from the log (delivered or dropped), written by
  its own reader.

Its backlog is the difference, exact and readable in O(1) by any publisher. ``SKIPS`` counts
the messages a publisher skipped for it (``drop_newest``), so that its reader knows when to
look them up; ``CURSOR`` is its reader's live position (read by the sweeper); ``SWEPT`` counts
the times a sweeper moved it on while its process was stopped (written under the write lock),
so that its reader never takes a read made across such a move for its own.

Each field is an aligned 8-byte word read and written whole (a ``memoryview`` cast to ``Q``).
"""

from __future__ import annotations

import contextlib
import mmap
import os

__all__ = [
    "CURSOR",
    "PUT_B",
    "PUT_N",
    "SKIPS",
    "SWEPT",
    "TAKEN_B",
    "TAKEN_N",
    "Panel",
    "Slots",
    "over_bound",
]

PAGE = 4096
_HEAD = 64  # the armed byte, padded: slots start at byte 64
_SLOT = 64  # bytes per slot: 8 words
PUT_N, PUT_B, TAKEN_N, TAKEN_B, SKIPS, CURSOR, SWEPT = range(7)


def base_of(slot: int) -> int:
    """Index of the first word of ``slot`` in a panel's words."""
    return (_HEAD + slot * _SLOT) // 8


def over_bound(
    words: memoryview | None, base: int, max_n: int | None, max_b: int | None, extra: int = 0
) -> bool:
    """Whether the backlog counted at ``words[base:]`` is over its bounds (after ``extra``
    more bytes and, when ``extra``, one more message)."""
    if words is None:
        return False
    more = 1 if extra else 0
    if max_n is not None and words[base + PUT_N] - words[base + TAKEN_N] + more > max_n:
        return True
    return max_b is not None and words[base + PUT_B] - words[base + TAKEN_B] + extra > max_b


class Panel:
    """One mapped panel file: ``flag[0]`` is the armed byte, ``words`` the counters."""

    __slots__ = ("_maps", "flag", "path", "words")

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        self._maps: list[tuple[mmap.mmap, memoryview]] = []
        if create:
            with open(path, "w+b") as file:
                file.truncate(PAGE)
        self._map()

    def _map(self) -> None:
        with open(self.path, "r+b") as file:
            size = os.fstat(file.fileno()).st_size
            if size < PAGE:
                # A panel of an older store: the armed byte only, no slots.
                self.flag = mmap.mmap(file.fileno(), 1)
                self.words = memoryview(b"")
                return
            mapped = mmap.mmap(file.fileno(), size)
        self.flag = mapped
        self.words = memoryview(mapped).cast("Q")
        self._maps.append((mapped, self.words))

    def reach(self, slot: int) -> bool:
        """Make ``slot`` addressable (remap if its owner grew the file); tell whether it is."""
        if base_of(slot) + 8 <= len(self.words):
            return True
        with contextlib.suppress(OSError, ValueError):
            self._map()
        return base_of(slot) + 8 <= len(self.words)

    def grow(self, slot: int) -> None:
        """(Owner) Make the file large enough for ``slot``, then map it."""
        need = _HEAD + (slot + 1) * _SLOT
        if need <= len(self.words) * 8:
            return
        with open(self.path, "r+b") as file:
            file.truncate(-(-need // PAGE) * PAGE)
        self._map()

    def close(self) -> None:
        for mapped, view in self._maps:
            view.release()
            with contextlib.suppress(OSError, ValueError, BufferError):
                mapped.close()
        self._maps = []
        with contextlib.suppress(OSError, ValueError, BufferError):
            self.flag.close()


class Slots:
    """(Owner) The slots of this transport's panel: which are in use."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self._free: list[int] = []
        self._next = 0

    def take(self) -> int:
        """A free slot, its file grown to hold it (zero it under the write lock before use)."""
        if self._free:
            return self._free.pop()
        slot = self._next
        self._next += 1
        self.panel.grow(slot)
        return slot

    def zero(self, slot: int) -> None:
        """Reset ``slot``'s counters (inside the write transaction that assigns it)."""
        base = base_of(slot)
        words = self.panel.words
        for field in range(8):
            words[base + field] = 0

    def give_back(self, slot: int) -> None:
        self._free.append(slot)
