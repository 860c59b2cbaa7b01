"""Build tiny installed-looking distributions on disk, to test plugin discovery for real.

A directory holding ``<name>-<version>.dist-info/`` (``METADATA`` + ``entry_points.txt``) and
some modules is, once on ``sys.path``, indistinguishable from an installed distribution: this
is how the registry's tests (and a plugin author's) create broken, conflicting or disabled
plugins without building wheels.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

from eventforge.plugins import Registry, registry, reset_registry

__all__ = ["plugins_from", "write_distribution"]


def write_distribution(
    root: Path,
    name: str,
    *,
    version: str = "1.0",
    entry_points: Mapping[str, str] | None = None,
    modules: Mapping[str, str] | None = None,
    group: str = "eventforge",
) -> Path:
    """Write distribution ``name`` under ``root`` and return ``root`` (put it on ``sys.path``).

    ``entry_points`` maps entry-point names to ``"module"`` or ``"module:attr"`` values in
    ``group``; ``modules`` maps dotted module names to their source (dedented), and each
    package on the way gets an empty ``__init__.py`` unless given.
    """
    root.mkdir(parents=True, exist_ok=True)
    folder = re.sub(r"[-_.]+", "_", name)
    info = root / f"{folder}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"[{group}]", *(f"{k} = {v}" for k, v in (entry_points or {}).items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for dotted, source in (modules or {}).items():
        parts = dotted.split(".")
        for depth in range(1, len(parts)):
            package = root.joinpath(*parts[:depth])
            package.mkdir(exist_ok=True)
            init = package / "__init__.py"
            if not init.exists() and ".".join(parts[:depth]) not in (modules or {}):
                init.write_text("", encoding="utf-8")
        target = root.joinpath(*parts)
        if target.is_dir():
            target = target / "__init__.py"
        elif any(m.startswith(dotted + ".") for m in modules or {}):
            target.mkdir(exist_ok=True)
            target = target / "__init__.py"
        else:
            target = target.with_suffix(".py")
        target.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


@contextlib.contextmanager
def plugins_from(root: Path, *, only: bool = False) -> Iterator[Registry]:
    """Make the distributions under ``root`` installed for the duration of the block.

    Puts ``root`` first on ``sys.path`` and rediscovers plugins; yields the registry. With
    ``only=True`` the distributions under ``root`` (and the core's built-ins) are the only
    plugins found. On exit the path, the modules imported from ``root`` and the registry are
    restored.
    """
    path = str(Path(root).resolve())
    before = set(sys.modules)
    sys.path.insert(0, path)
    importlib.invalidate_caches()
    reset_registry(search_path=[path] if only else None)
    try:
        yield registry()
    finally:
        sys.path.remove(path)
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(path):
                del sys.modules[name]
        reset_registry()
