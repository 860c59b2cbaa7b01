"""SpoolTransport: broker-less pub/sub between processes on one machine, through a directory.

Layout of a spool directory::

    <spool>/subs/<pid>-<token>/pattern      one directory per live subscription (or receive inbox)
    <spool>/subs/<pid>-<token>/<stamp>.msg  one envelope per message, until it is consumed

``send`` writes the message's JSON envelope into the inbox of every subscription whose pattern
matches its topic, atomically (write a hidden temporary file, then rename), so a reader never
sees half a message. Each transport's reader thread polls its own inboxes in file-name order
(names start with a per-publisher monotonic stamp, so one publisher's messages arrive in order)
and deletes each file once it has been handed over. Messages therefore wait on disk until they
are consumed, even while the subscriber is busy. Inboxes of processes that no longer exist are
removed by the next transport that opens the spool.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from eventforge import ConfigurationError, Message, TransportClosedError, TransportError
from eventforge.topics import topic_matches, validate_pattern, validate_topic
from eventforge.transport import Callback, Capability, Transport
from eventforge.wire import WireCodec

__all__ = ["SpoolTransport"]

log = logging.getLogger("eventforge_example_transport")

_SWEEP_EVERY = 1.0  # seconds between sweeps for inboxes of dead processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Inbox:
    """One subscription's directory; ``callback`` is None for a ``receive`` inbox."""

    __slots__ = ("callback", "lock", "path", "pattern")

    def __init__(self, path: Path, pattern: str, callback: Callback | None) -> None:
        self.path = path
        self.pattern = pattern
        self.callback = callback
        self.lock = threading.Lock()  # one consumer at a time per inbox


class SpoolTransport(Transport):
    """Publish/subscribe through a spool directory shared by processes on one machine.

    ``poll_interval`` is how often the reader thread looks for new files (seconds). Delivery is
    at-most-once per subscription. ``stats()`` counts messages sent, envelope files written,
    messages that matched no subscription (``unrouted``), malformed files removed
    (``rejected``), files left unread by an unsubscribe (``discarded``) and callback errors.
    """

    name: ClassVar[str] = "spool"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.CROSS_PROCESS, Capability.WILDCARDS, Capability.HEADERS, Capability.ORDERED}
    )

    def __init__(self, directory: str | os.PathLike[str], *, poll_interval: float = 0.01) -> None:
        if not poll_interval > 0:
            raise ConfigurationError(
                f"poll_interval must be > 0 seconds, got {poll_interval!r}", key="poll_interval"
            )
        self.directory = Path(directory).absolute()
        self.poll_interval = float(poll_interval)
        self._subs = self.directory / "subs"
        try:
            self._subs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use {str(self.directory)!r} as a spool directory: {exc}", key="directory"
            ) from exc
        self._codec = WireCodec()
        self._patterns: dict[str, str] = {}  # inbox name -> pattern, for every process's inboxes
        self._inboxes: dict[str, _Inbox] = {}  # this transport's own inboxes
        self._pulls: dict[str, _Inbox] = {}  # topic pattern -> receive inbox
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._last_stamp = 0
        self._last_sweep = 0.0
        self._counts = dict.fromkeys(
            (
                "sent",
                "written",
                "unrouted",
                "delivered",
                "rejected",
                "callback_errors",
                "discarded",
            ),
            0,
        )
        self._closed = False
        self._sweep()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SpoolTransport:
        """``spool:///absolute/dir?poll_interval=0.05`` (keyword options override the query)."""
        parts = urlsplit(url)
        if parts.scheme != "spool" or parts.netloc not in ("", "localhost") or not parts.path:
            raise ConfigurationError(
                f"{url!r} is not a spool URL; write spool:///absolute/path/to/directory",
                key="transport",
            )
        query: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query):
            if key != "poll_interval":
                raise ConfigurationError(
                    f"unknown option {key!r} in {url!r}; accepted: poll_interval", key=key
                )
            try:
                query[key] = float(value)
            except ValueError:
                raise ConfigurationError(f"{key}={value!r} in {url!r} is not a number", key=key)
        return cls(parts.path, **{**query, **options})

    # -- the contract ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self._check_open()
        validate_topic(message.topic)
        data = self._codec.encode(message)
        with self._lock:
            stamp = self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            self._counts["sent"] += 1
        name = f"{stamp:020d}-{os.getpid()}-{message.id}.msg"
        written = 0
        for inbox_name in self._live_inboxes():
            pattern = self._pattern_of(inbox_name)
            if pattern is None or not topic_matches(pattern, message.topic):
                continue
            inbox = self._subs / inbox_name
            tmp = inbox / f".{name}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, inbox / name)
            except FileNotFoundError:
                continue  # the subscriber left while we were writing
            written += 1
        with self._lock:
            self._counts["written"] += written
            if not written:
                self._counts["unrouted"] += 1  # nobody subscribed: counted, like any drop

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        self._check_open()
        validate_pattern(topic)
        with self._lock:
            inbox = self._pulls.get(topic)
            if inbox is None:
                inbox = self._pulls[topic] = self._open_inbox(topic, None)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._take(inbox)
            if message is not None:
                return message
            self._check_open()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            wait = self.poll_interval
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            self._stop.wait(wait)

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        self._check_open()
        self.refuse_group(group)
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            inbox = self._open_inbox(topic, callback)
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read_loop, name=f"spool-reader-{self.directory.name}", daemon=True
                )
                self._reader.start()
        return inbox.path.name

    def unsubscribe(self, subscription_id: str) -> bool:
        with self._lock:
            inbox = self._inboxes.pop(subscription_id, None)
        if inbox is None:
            return False
        self._remove_inbox(inbox)
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            inboxes = [*self._inboxes.values(), *self._pulls.values()]
            self._inboxes.clear()
            self._pulls.clear()
            reader = self._reader
        self._stop.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join()
        for inbox in inboxes:
            self._remove_inbox(inbox)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._counts, "subscriptions": len(self._inboxes)}

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"SpoolTransport({str(self.directory)!r}) is closed")

    def _open_inbox(self, pattern: str, callback: Callback | None) -> _Inbox:
        name = f"{os.getpid()}-{os.urandom(4).hex()}{next(self._ids)}"
        tmp = self._subs / f".{name}.tmp"
        tmp.mkdir()
        (tmp / "pattern").write_text(pattern, encoding="utf-8")
        os.replace(tmp, self._subs / name)  # publishers see the inbox complete, or not at all
        inbox = _Inbox(self._subs / name, pattern, callback)
        if callback is not None:
            self._inboxes[name] = inbox
        return inbox

    def _remove_inbox(self, inbox: _Inbox) -> None:
        gone = inbox.path.with_name(f".gone-{inbox.path.name}")
        with inbox.lock:
            try:
                os.replace(inbox.path, gone)  # publishers stop writing here at once
            except FileNotFoundError:
                return
        left = sum(1 for p in gone.glob("*.msg"))
        with self._lock:
            self._counts["discarded"] += left
        shutil.rmtree(gone, ignore_errors=True)

    def _live_inboxes(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self._subs) if not n.startswith(".")]
        except FileNotFoundError:
            raise TransportError(f"spool directory {str(self.directory)!r} was removed") from None
        if len(self._patterns) > len(names) + 64:  # forget inboxes that went away
            live = set(names)
            self._patterns = {k: v for k, v in self._patterns.items() if k in live}
        if time.monotonic() - self._last_sweep > _SWEEP_EVERY:
            self._sweep()
        return names

    def _pattern_of(self, inbox_name: str) -> str | None:
        pattern = self._patterns.get(inbox_name)
        if pattern is None:
            try:
                pattern = (self._subs / inbox_name / "pattern").read_text(encoding="utf-8")
            except (FileNotFoundError, NotADirectoryError):
                return None
            self._patterns[inbox_name] = pattern
        return pattern

    def _sweep(self) -> None:
        """Remove the inboxes of processes that died without closing their transport."""
        self._last_sweep = time.monotonic()
        try:
            paths = list(self._subs.iterdir())
        except FileNotFoundError:
            return
        for path in paths:
            pid_text = path.name.lstrip(".").removeprefix("gone-").split("-", 1)[0]
            if pid_text.isdigit() and not _alive(int(pid_text)):
                log.info("removing stale spool inbox %s (process %s is gone)", path, pid_text)
                shutil.rmtree(path, ignore_errors=True)
                self._patterns.pop(path.name, None)

    def _take(self, inbox: _Inbox) -> Message | None:
        """Consume the oldest message of ``inbox``, or return None when it is empty."""
        with inbox.lock:
            try:
                names = sorted(n for n in os.listdir(inbox.path) if n.endswith(".msg"))
            except FileNotFoundError:
                return None
            for name in names:
                path = inbox.path / name
                data = path.read_bytes()
                path.unlink()
                try:
                    message = self._codec.decode(data)
                except ValueError as exc:
                    with self._lock:
                        self._counts["rejected"] += 1
                    log.warning("rejected malformed spool file %s: %s", path, exc)
                    continue
                with self._lock:
                    self._counts["delivered"] += 1
                return message
        return None

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                inboxes = list(self._inboxes.values())
            for inbox in inboxes:
                while (message := self._take(inbox)) is not None:
                    self._call(inbox, message)
            if time.monotonic() - self._last_sweep > _SWEEP_EVERY:
                self._sweep()
            self._stop.wait(self.poll_interval)

    def _call(self, inbox: _Inbox, message: Message) -> None:
        assert inbox.callback is not None
        if inbox.path.name not in self._inboxes:
            return  # unsubscribed meanwhile
        try:
            inbox.callback(message)
        except Exception:
            with self._lock:
                self._counts["callback_errors"] += 1
            log.exception("spool subscriber callback raised for topic %r", message.topic)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._inboxes)} subscriptions"
        return f"SpoolTransport({str(self.directory)!r}, {state})"
