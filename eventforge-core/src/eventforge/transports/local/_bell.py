"""Doorbells: how a publisher wakes a blocked consumer in another process without polling.

Each transport binds one Unix-domain datagram socket in ``<dir>/bells/``, named after its
process (pid and start time) so that the bell of a dead process can be recognised and removed.
After committing a message the publisher sends a one-byte datagram to the bell of each
consumer attached to a matching subscription. A full socket buffer means a wake-up is already
pending, so a ring never blocks; a missing or refused bell belongs to a process that died and
is swept. The datagram carries nothing: the store is the only truth, the bell only says
"look now".

Next to each socket lies a one-byte *armed* flag (a shared memory map). A consumer arms it,
then looks at the store once more, and only then sleeps; a publisher rings only an armed bell
(disarming it). A consumer that is busy is therefore not woken for every message (a wake-up
costs a context switch), and none is missed: a message committed before the consumer armed is
seen by the look that follows the arming.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
from pathlib import Path

__all__ = ["Doorbell", "ring"]

_RING = b"\x01"
_MAX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


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
        bells = directory / "bells"
        bells.mkdir(exist_ok=True)
        tag = os.urandom(4).hex()
        path = bells / bell_name(pid, start, tag)
        self.address = str(path)
        if len(self.address.encode()) > _MAX_PATH:
            # Too long for sun_path: bind by a relative name from inside the directory.
            raise OSError(
                f"the local:// directory {str(directory)!r} is too long a path for a Unix "
                f"socket ({len(self.address)} bytes, at most {_MAX_PATH}); choose a shorter one"
            )
        self.flag_path = self.address[: -len(".sock")] + ".flag"
        with open(self.flag_path, "w+b") as flag:
            flag.write(b"\x00")
            flag.flush()
            self.flag = mmap.mmap(flag.fileno(), 1)
        self._flags: dict[str, mmap.mmap | None] = {}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.setblocking(False)
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or ``timeout``; drain every pending ring; tell whether rung."""
        try:
            readable, _, _ = select.select([self.sock.fileno(), self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            return False
        if not readable:
            return False
        with contextlib.suppress(OSError):
            while self.sock.recv(64):
                pass
        return True

    def arm(self) -> None:
        """Ask to be rung for the next message (then look at the store once more)."""
        self.flag[0] = 1

    def _flag_of(self, address: str) -> mmap.mmap | None:
        flag = self._flags.get(address, False)
        if flag is False:
            try:
                with open(address[: -len(".sock")] + ".flag", "r+b") as file:
                    flag = mmap.mmap(file.fileno(), 1)
            except (OSError, ValueError):
                flag = None  # an older bell without a flag: always rung
            self._flags[address] = flag
        return flag  # type: ignore[return-value]

    def ring(self, address: str) -> bool:
        """Ring the bell at ``address`` if it is armed; ``False`` when it is gone."""
        flag = self._flag_of(address)
        if flag is not None:
            if not flag[0]:
                return True  # its owner is awake and will look at the store again
            flag[0] = 0
        try:
            self._out.sendto(_RING, address)
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
        for flag in [self.flag, *self._flags.values()]:
            if flag is not None:
                with contextlib.suppress(OSError, ValueError):
                    flag.close()
        for path in (self.address, self.flag_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def ring(bell: Doorbell, addresses: list[str]) -> list[str]:
    """Ring every address; return those that are gone."""
    return [a for a in addresses if not bell.ring(a)]
