"""Private database servers for tests: PostgreSQL and MariaDB in temporary directories.

**PostgreSQL**: ``initdb`` in a temporary directory, a free port.

The binaries come from ``PATH`` or from Debian's ``/usr/lib/postgresql/<version>/bin``
(``apt-get install postgresql``). PostgreSQL refuses to run as root, so when the tests run as
root the server runs as the unprivileged ``postgres`` user (created by the Debian package) or
the user named by ``EVENTFORGE_PG_USER``. The server, its data and its unix socket live in the
temporary directory; :meth:`PostgresServer.kill` SIGKILLs the postmaster and every backend at
once (like a crash of the machine) and :meth:`~PostgresServer.restart` starts it again on the
same port and data, running crash recovery.

**MariaDB** (:class:`MariaDBServer`): ``mariadb-install-db`` (or ``mysql_install_db``) into a
temporary directory, then ``mariadbd`` (or ``mysqld``) on a free loopback port, from ``PATH`` or
``/usr/sbin`` / ``/usr/bin`` (Debian's ``mariadb-server`` package; its own service is never
used). It runs without grant tables (any user, no password), so it must stay on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa
from eventforge.testing.brokers import BrokerProcess, BrokerUnavailable, free_port

__all__ = ["EffectLog", "MariaDBServer", "PostgresServer", "find_mariadb_binary", "find_pg_binary"]


def find_pg_binary(name: str) -> str | None:
    """Find ``initdb`` / ``postgres``: PATH first, then the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root (else ``None``)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("EVENTFORGE_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise BrokerUnavailable(
            f"running as root, and PostgreSQL refuses root: no user {name!r} to run it as; "
            "install Debian's postgresql package (it creates 'postgres') or set "
            "EVENTFORGE_PG_USER to an unprivileged account"
        ) from None


class PostgresServer(BrokerProcess):
    """A private PostgreSQL on ``127.0.0.1:port``; the database ``postgres``, trust auth."""

    binary_name = "postgres"

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        postgres = find_pg_binary("postgres")
        initdb = find_pg_binary("initdb")
        if postgres is None or initdb is None:
            raise BrokerUnavailable(
                "PostgreSQL's initdb / postgres not found on PATH or in /usr/lib/postgresql/*/bin; "
                "install it (apt-get install postgresql)"
            )
        self.binary = postgres
        self.initdb = initdb
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="eventforge-postgres-")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.pgdata = os.path.join(self.data_dir, "pgdata")
        self.user = _run_as()
        if self.user is not None:
            os.chmod(self.data_dir, 0o755)
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of the ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """The libpq connection string of the ``postgres`` database."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _popen_kwargs(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        if os.path.exists(os.path.join(self.pgdata, "PG_VERSION")):
            return
        result = subprocess.run(
            [self.initdb, "-D", self.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            capture_output=True,
            cwd=self.data_dir,
            **self._popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerUnavailable(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )

    def command(self) -> list[str]:
        return [
            self.binary, "-D", self.pgdata, "-p", str(self.port), "-k", self.data_dir,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "max_connections=100", "-c", "shared_buffers=64MB",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Run initdb once, then start the server and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return self
        self._initdb()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # kill() takes the backends down with the postmaster
                **self._popen_kwargs(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"PostgreSQL on port {self.port} did not become ready; log:\n{self.log_tail()}"
        )

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends (no shutdown, no checkpoint)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._wait_backends_gone()

    def stop(self) -> None:
        """A fast shutdown (SIGINT), then SIGKILL if it takes too long."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def _wait_backends_gone(self, timeout: float = 10.0) -> None:
        # A restart must not find the old shared memory still attached by a dying backend.
        if self.process is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def find_mariadb_binary(*names: str) -> str | None:
    """The first of ``names`` found on PATH, then in ``/usr/sbin`` and ``/usr/bin``."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for name in names:
        for directory in ("/usr/sbin", "/usr/bin"):
            candidate = os.path.join(directory, name)
            if os.path.exists(candidate):
                return candidate
    return None


class MariaDBServer(BrokerProcess):
    """A private MariaDB on ``127.0.0.1:port`` with the database ``eventforge``.

    :meth:`kill` SIGKILLs the server (InnoDB recovers at the next start), :meth:`restart`
    starts it again on the same port and data.
    """

    binary_name = "mariadbd"
    database = "eventforge"

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        server = find_mariadb_binary("mariadbd", "mysqld")
        install = find_mariadb_binary("mariadb-install-db", "mysql_install_db")
        if server is None or install is None:
            raise BrokerUnavailable(
                "MariaDB's mariadbd / mariadb-install-db not found on PATH, /usr/sbin or "
                "/usr/bin; install it (apt-get install mariadb-server)"
            )
        self.binary = server
        self.install = install
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="eventforge-mariadb-")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.datadir = os.path.join(self.data_dir, "data")
        # mariadbd refuses root unless told to run as root; elsewhere it runs as its caller.
        self._user = ["--user=root"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (PyMySQL driver) of the ``eventforge`` database."""
        return f"mariadb+pymysql://root@127.0.0.1:{self.port}/{self.database}"

    def _install(self) -> None:
        if os.path.exists(os.path.join(self.datadir, "mysql")):
            return
        result = subprocess.run(
            [self.install, "--no-defaults", f"--datadir={self.datadir}", *self._user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True,
            cwd=self.data_dir,
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerUnavailable(
                f"{self.install} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )

    def command(self) -> list[str]:
        return [
            self.binary, "--no-defaults", f"--datadir={self.datadir}", *self._user,
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={os.path.join(self.data_dir, 'mariadb.sock')}",
            f"--pid-file={os.path.join(self.data_dir, 'mariadb.pid')}",
            "--skip-grant-tables", "--skip-log-bin", "--skip-performance-schema",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
            "--max-connections=200",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> MariaDBServer:
        """Install the data directory once, then start the server and wait until it answers."""
        self._install()
        super().start(timeout)
        return self

    def ready(self) -> bool:
        server = sa.create_engine(
            f"mariadb+pymysql://root@127.0.0.1:{self.port}/",
            poolclass=sa.pool.NullPool,
            connect_args={"connect_timeout": 2},
        )
        try:
            with server.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {self.database}"))
        except sa.exc.DBAPIError:
            return False
        finally:
            server.dispose()
        return True


class EffectLog:
    """A table of effects (one row per handler run that committed), for counting duplicates.

    ``record(conn, event)`` is an inbox handler (or part of one): it writes a row in the
    handler's transaction, so the row exists only if that transaction committed.
    """

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self.engine = engine
        self.table = sa.Table(
            name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(255), nullable=False),
            sa.Column("worker", sa.String(64)),
        )
        self.table.create(engine, checkfirst=True)

    def record(self, conn: sa.Connection, event: Any, worker: str = "") -> None:
        conn.execute(self.table.insert().values(event_id=event.event_id, worker=worker))

    def counts(self) -> dict[str, int]:
        """How many committed effects each event id has."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table.c.event_id)).scalars()
            return dict(Counter(rows))

    def by_worker(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table.c.worker)).scalars()
            return dict(Counter(rows))
