"""A private RabbitMQ node for tests: its own node name, ports, data directory and cookie.

The node is started from ``rabbitmq-server`` on ``PATH`` (Debian's ``rabbitmq-server`` package;
its ``/usr/sbin`` wrapper switches to the ``rabbitmq`` user, so the script it wraps is run
directly). It listens on 127.0.0.1 only, enables no plugin (no management UI), lets ``guest``
log in over loopback, and keeps its Mnesia database, logs and Erlang cookie in a temporary
directory, so it never touches the machine's own RabbitMQ. It runs in a process group of its
own: :meth:`RabbitServer.kill` SIGKILLs the whole node (the shell script, the Erlang VM and its
helpers), and :meth:`~BrokerProcess.restart` brings it back on the same port and data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from eventforge.testing.brokers import BrokerProcess, BrokerUnavailable, _roundtrip, free_port

__all__ = ["RabbitServer"]

_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _rabbitmq_script() -> str | None:
    found = shutil.which("rabbitmq-server")
    if found is None:
        return None
    # Debian's /usr/sbin wrapper re-runs the real script as the rabbitmq user in /var/lib/rabbitmq.
    with contextlib.suppress(OSError):
        if "su rabbitmq" in Path(found).read_text(errors="replace") and _SCRIPT.exists():
            return str(_SCRIPT)
    return found


class RabbitServer(BrokerProcess):
    """A private RabbitMQ node (``guest``/``guest`` on loopback, plus ``user``/``password``)."""

    binary_name = "rabbitmq-server"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        *,
        config: str = "",
    ) -> None:
        script = _rabbitmq_script()
        if script is None:
            raise BrokerUnavailable(
                "rabbitmq-server not found on PATH; install it (apt-get install rabbitmq-server)"
            )
        self.script = script
        self.config = config
        self.dist_port = free_port()
        super().__init__(port, data_dir)
        self.node = f"eventforge{self.port}@localhost"
        self._ctl = str(Path(script).with_name("rabbitmqctl"))

    def command(self) -> list[str]:
        return [self.script]

    def environment(self) -> dict[str, str]:
        base = self.data_dir
        conf = os.path.join(base, "rabbitmq.conf")
        plugins = os.path.join(base, "enabled_plugins")
        if not os.path.exists(conf):
            with open(conf, "w") as f:
                f.write(
                    f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                    "loopback_users = none\n"
                    "log.console = false\n"
                    "log.file.level = warning\n"
                    "vm_memory_high_watermark.relative = 0.9\n"
                    "disk_free_limit.absolute = 1MB\n" + self.config
                )
            with open(plugins, "w") as f:
                f.write("[].\n")
        env = dict(os.environ)
        env.update(
            {
                "HOME": base,
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
                "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
                "RABBITMQ_CONFIG_FILE": conf,
                "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
                "RABBITMQ_PID_FILE": os.path.join(base, "rabbitmq.pid"),
                # Two shared cores: no busy-waiting schedulers.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 2:2 +sbwt none +sbwtdcpu none "
                "+sbwtdio none",
            }
        )
        return env

    def start(self, timeout: float = 60.0) -> BrokerProcess:
        """Start the node and wait until it answers AMQP; idempotent."""
        if self.process is not None and self.process.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self.environment(),
                start_new_session=True,
            )
        return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> BrokerProcess:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.ready():
                    return self
            time.sleep(0.2)
        self.stop()
        raise BrokerUnavailable(
            f"RabbitMQ node {self.node} on port {self.port} did not become ready; log:\n"
            f"{self.log_tail()}"
        )

    def ready(self) -> bool:
        return _roundtrip(self.port, b"AMQP\x00\x00\x09\x01", b"RabbitMQ")

    def _signal_group(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole node (no shutdown, no flush) and reap it."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def restart(self, timeout: float = 60.0) -> BrokerProcess:
        return super().restart(timeout)

    def stop(self) -> None:
        """Stop the node (SIGTERM to the group, SIGKILL if it lingers)."""
        if self.process is None:
            return
        self._signal_group(signal.SIGCONT)
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)  # helpers left in the group

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``rabbitmqctl`` against this node; return its output (raise on failure)."""
        result = subprocess.run(
            [self._ctl, "-n", self.node, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}"
            )
        return result.stdout

    def amqp_url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        return self.amqp_url()
