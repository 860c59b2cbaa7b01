"""Throwaway virtual environments for install tests: does a distribution work on its own?

The shared development environment has every package installed, which hides a missing
dependency. These helpers build a fresh environment with ``uv`` (fast, offline once its cache
is warm) holding only the distributions a test names.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["find_uv", "make_venv", "python_of", "run_in"]


def find_uv() -> list[str] | None:
    """The command that runs uv (``uv`` on PATH, else ``python -m uv``), or None."""
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    return None


def make_venv(path: Path, requirements: Sequence[str], *, timeout: float = 300) -> Path:
    """Create a venv at ``path`` (same Python as this one) with ``requirements``; return its python.

    ``requirements`` are anything ``uv pip install`` accepts: local paths, names, extras.
    Raises ``RuntimeError`` with uv's output when the installation fails.
    """
    uv = find_uv()
    if uv is None:
        raise RuntimeError("uv is not installed: pip install uv")
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    steps = [
        [*uv, "venv", "--quiet", "--python", sys.executable, str(path)],
        [*uv, "pip", "install", "--quiet", "--python", str(python_of(path)), *requirements],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")
    return python_of(path)


def python_of(venv: Path) -> Path:
    """The interpreter of the venv at ``venv``."""
    if os.name == "nt":  # pragma: no cover - the suite runs on POSIX
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def run_in(
    python: Path, args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` with a clean environment (no PYTHONPATH, strict plugins)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["EVENTFORGE_STRICT_PLUGINS"] = "1"
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
