"""A fork server that runs pytest for scripts/mutation.sh without paying its start-up per mutant.

python scripts/mutation_runner.py serve SOCKET
    Import pytest, hypothesis and pydantic once, then for every request fork a child that
    runs pytest on freshly imported eventforge code (never imported by the server itself).
python -S scripts/mutation_runner.py run SOCKET SRC_DIR ROOT PYTEST_ARG...
    Ask the server to run ``pytest PYTEST_ARG...`` in ROOT with SRC_DIR first on sys.path;
    exit with pytest's exit code. Killing this client kills the test run (cosmic-ray's
    per-mutant timeout).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys


def serve(path: str) -> int:
    import hypothesis  # noqa: F401 - imported once here, inherited by every child
    import pydantic  # noqa: F401
    import pydantic_core  # noqa: F401
    import pytest

    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    child = 0

    def stop(*_: object) -> None:
        if child:
            _kill(child)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        conn, _ = listener.accept()
        with conn:
            request = json.loads(conn.makefile("r").readline())
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                os.setsid()
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                sys.dont_write_bytecode = True
                os.chdir(request["root"])
                sys.path.insert(0, request["src"])
                code = 1
                try:
                    code = int(pytest.main(request["args"]))
                finally:
                    os._exit(code)
            child = pid
            code = _wait(pid, conn)
            child = 0
            try:
                conn.sendall(f"{code}\n".encode())
            except OSError:
                pass


def _wait(pid: int, conn: socket.socket) -> int:
    """Wait for the child; kill its whole session if the client goes away first."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([conn], [], [], 0.01)
        if readable and not conn.recv(1, socket.MSG_PEEK):
            _kill(pid)
            os.waitpid(pid, 0)
            return -9


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(path: str, src: str, root: str, args: list[str]) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.sendall((json.dumps({"src": src, "root": root, "args": args}) + "\n").encode())
    answer = client.makefile("r").readline()
    return int(answer) if answer.strip() else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        return serve(argv[1])
    if argv[:1] == ["run"] and len(argv) >= 4:
        code = run(argv[1], argv[2], argv[3], argv[4:])
        return code if 0 <= code < 256 else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
