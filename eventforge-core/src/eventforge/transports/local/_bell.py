"""Doorbells: how a publisher wakes a blocked consumer in another process without polling.

Each transport binds one Unix-domain datagram socket in ``<dir>/bells/``, named after its
process (pid and start time) so that the bell of a dead process can be recognised and removed.
The store records a bell by its file *name*; every process resolves the name against its own
view of the directory, so processes that mount the directory at different paths still reach
each other. A socket address holds at most ~100 bytes; when ``<dir>/bells/<name>`` is longer,
the directory is reached through ``/proc/self/fd/<fd>/`` of an ``O_PATH`` descriptor (Linux),
so a deep directory works as well as a shallow one.
After committing a message the publisher sends a one-byte datagram to the bell of each
consumer attached to a matching subscription. A full socket buffer means a wake-up is already
pending, so a ring never blocks; a missing or refused bell belongs to a process that died and
is swept. The datagram carries nothing: the store is the only truth, the bell only says
"look now".

Next to each socket lies its *panel* (a shared memory map, see ``_panel``): a one-byte *armed*
flag and the backlog counters of the transport's unnamed subscriptions. A consumer arms it,
then looks at the store once more, and only then sleeps; a publisher rings only an armed bell
(disarming it). A consumer that is busy is therefore not woken for every message (a wake-up
costs a context switch), and none is missed: a message committed before the consumer armed is
seen by the look that follows the arming.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from pathlib import Path
from typing import Any

from eventforge.transports.local._panel import Panel

__all__ = ["Doorbell", "Waiter"]

_RING = b"\x01"
_MAX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_NAME_MAX = 40  # "<pid>-<start>-<tag>.sock": at most 7 + 20 + 8 + 5 bytes


def _socket_prefix(bells: Path) -> tuple[str, int | None]:
    """How this process names sockets in ``bells``: ``(prefix, descriptor to close)``."""
    prefix = str(bells) + os.sep
    if len(prefix.encode()) + _NAME_MAX <= _MAX_PATH:
        return prefix, None
    o_path = getattr(os, "O_PATH", None)
    if o_path is None or not os.path.isdir("/proc/self/fd"):
        raise OSError(
            f"the local:// directory {str(bells.parent)!r} is too long a path for a Unix "
            f"socket ({len(prefix) + _NAME_MAX} bytes, at most {_MAX_PATH}) on this system; "
            "choose a shorter one"
        )
    fd = os.open(bells, o_path | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/", fd


def bell_name(pid: int, start: int, tag: str) -> str:
    return f"{pid}-{start}-{tag}.sock"


def parse_bell(name: str) -> tuple[int, int] | None:
    """``(pid, start)`` of a bell or flag file name, or ``None`` for any other file."""
    stem, _, suffix = name.rpartition(".")
    parts = stem.split("-")
    if suffix not in ("sock", "flag") or len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


class Doorbell:
    """The bound socket this transport is woken through."""

    def __init__(self, directory: Path, pid: int, start: int) -> None:
        self.bells = directory / "bells"
        self.bells.mkdir(exist_ok=True)
        self._prefix, self._dir_fd = _socket_prefix(self.bells)
        #: The name the store records; peers ring ``<their view of bells/>`` + this.
        self.address = bell_name(pid, start, os.urandom(4).hex())
        self.path = self.bells / self.address
        self.flag_path = str(self.path)[: -len(".sock")] + ".flag"
        self._panels: dict[str, Panel | None] = {}
        try:
            self.panel = Panel(self.flag_path, create=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self._prefix + self.address)
        except BaseException:
            self._close_dir()
            raise
        self.sock.setblocking(False)
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None

    def file_of(self, address: str) -> str:
        """The socket file of the bell ``address`` (a name; a full path from older stores)."""
        return address if os.sep in address else str(self.bells / address)

    def waiter(self) -> Waiter:
        """A wait on this bell for one thread (each worker thread has its own)."""
        return Waiter(self.sock, self._wake_r)

    def arm(self) -> None:
        """Ask to be rung for the next message (then look at the store once more)."""
        self.panel.flag[0] = 1

    def panel_of(self, address: str) -> Panel | None:
        """The panel of the bell at ``address`` (mapped once); ``None`` when it has none."""
        if address == self.address:
            return self.panel
        panel = self._panels.get(address, False)
        if panel is False:
            try:
                panel = Panel(self.file_of(address)[: -len(".sock")] + ".flag")
            except (OSError, ValueError):
                panel = None  # gone, or an older bell without a flag: always rung
            self._panels[address] = panel
        return panel  # type: ignore[return-value]

    def ring(self, address: str, *, force: bool = False) -> bool:
        """Ring the bell at ``address`` if it is armed (or ``force``); ``False`` when it is gone."""
        panel = self.panel_of(address)
        if panel is not None:
            flag = panel.flag
            if not flag[0] and not force:
                return True  # its owner is awake and will look at the store again
            flag[0] = 0
        try:
            self._out.sendto(_RING, address if os.sep in address else self._prefix + address)
        except BlockingIOError:
            return True  # its buffer is full: a wake-up is already pending
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True

    def interrupt(self) -> None:
        """Wake :meth:`wait` at once (used on close)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        self.interrupt()
        for sock in (self.sock, self._out):
            with contextlib.suppress(OSError):
                sock.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for panel in [self.panel, *self._panels.values()]:
            if panel is not None:
                panel.close()
        for path in (str(self.path), self.flag_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._close_dir()


class Waiter:
    """One thread's wait on a doorbell.

    Where epoll offers exclusive wake-ups (Linux), a ring wakes *one* of the threads waiting on
    the bell, so a transport's two worker threads can both wait without both waking for each
    message; elsewhere every waiting thread wakes (and the one that finds nothing sleeps again).
    """

    def __init__(self, sock: socket.socket, wake: int) -> None:
        self._sock = sock
        self._fds = [sock.fileno(), wake]
        self._poll: Any = None
        exclusive = getattr(select, "EPOLLEXCLUSIVE", None)
        if exclusive is not None and hasattr(select, "epoll"):
            with contextlib.suppress(OSError):
                poll = select.epoll()
                try:
                    poll.register(sock.fileno(), select.EPOLLIN | exclusive)
                    poll.register(wake, select.EPOLLIN)  # close: wakes every thread
                except OSError:
                    poll.close()
                    raise
                self._poll = poll

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or ``timeout``; drain every pending ring; tell whether rung."""
        try:
            if self._poll is not None:
                ready = self._poll.poll(-1 if timeout is None else timeout)
            else:
                ready, _, _ = select.select(self._fds, [], [], timeout)
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        with contextlib.suppress(OSError):
            while self._sock.recv(64):
                pass
        return True

    def close(self) -> None:
        if self._poll is not None:
            self._poll.close()
