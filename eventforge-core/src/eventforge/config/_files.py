"""Reading settings files (TOML, JSON with comments, includes) and per-option variables.

* ``.toml``: the ``[tool.eventforge]`` or ``[eventforge]`` table, or the whole file.
* ``.json`` / ``.jsonp``: JSON that may carry ``//`` and ``/* */`` comments, unquoted
  ``${VAR}`` / ``${VAR:-default}`` values (``"port": ${PORT:-5672}`` stays a number) and
  ``${include: "./env/${ENVIRONMENT}.jsonp"}`` members, which insert the included file's
  settings at that place (a later member overrides an earlier one, tables merge key by key).
* In both, an ``include = "path"`` (or a list of paths) key is read first; the file's own
  settings override what it includes. Relative paths are relative to the including file.
* ``EVENTFORGE_OPTIONS__MAX_QUEUE_SIZE=50`` sets ``options.max_queue_size`` (likewise
  ``EVENTFORGE_LOGGING__LEVEL``); values are JSON when they parse (``50``, ``true``), else text.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eventforge.errors import ConfigurationError

__all__ = [
    "ENV_SECTIONS",
    "deep_merge",
    "env_sections",
    "env_value",
    "read_config_file",
]

CONFIG_ENV = "EVENTFORGE_CONFIG"
ENV_SECTIONS = ("options", "logging")
"""Settings tables that ``EVENTFORGE_<TABLE>__<KEY>`` variables fill, key by key."""
MAX_INCLUDE_DEPTH = 10

_INCLUDE = re.compile(r"\$\{include:\s*\"((?:[^\"\\]|\\.)*)\"\s*\}")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``top``; tables present in both are merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def env_sections(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The tables set by ``EVENTFORGE_<TABLE>__<KEY>`` variables (keys lower-cased)."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        for section in ENV_SECTIONS:
            prefix = f"EVENTFORGE_{section.upper()}__"
            if name.startswith(prefix) and name != prefix:
                found.setdefault(section, {})[name[len(prefix) :].lower()] = _env_value(raw)
    return found


def _env_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (int, float, bool, list, dict)) else raw


def read_config_file(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of the file at ``path``, its includes resolved."""
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigurationError(f"configuration files include each other: {cycle}", key="include")
    if len(_chain) >= MAX_INCLUDE_DEPTH:
        raise ConfigurationError(
            f"configuration includes nest deeper than {MAX_INCLUDE_DEPTH} files at {str(path)!r}",
            key="include",
        )
    chain = (*_chain, resolved)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        where = f" (included from {str(_chain[-1])!r})" if _chain else ""
        raise ConfigurationError(
            f"cannot read configuration file {str(path)!r}{where}: {exc}", key=CONFIG_ENV
        ) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _toml(text, path)
        elif suffix in (".json", ".jsonp"):
            data = _jsonp(text, path, lambda p: read_config_file(p, chain))
        else:
            raise ConfigurationError(
                f"configuration file {str(path)!r} must end in .toml, .json or .jsonp",
                key=CONFIG_ENV,
            )
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"configuration file {str(path)!r} is malformed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {str(path)!r} must hold a table/object")
    return _with_includes(data, path, chain)


def _with_includes(data: dict[str, Any], path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    include = data.pop("include", None)
    if include is None:
        return data
    paths = [include] if isinstance(include, str) else include
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigurationError(
            f"'include' in {str(path)!r} must be a path or a list of paths, got {include!r}",
            key="include",
        )
    merged: dict[str, Any] = {}
    for each in paths:
        merged = deep_merge(merged, read_config_file(_relative(path, _expand(each, path)), chain))
    return deep_merge(merged, data)


def _relative(including: Path, target: str) -> Path:
    candidate = Path(target)
    return candidate if candidate.is_absolute() else including.parent / candidate


def env_value(name: str, default: str | None, where: str, key: str) -> str:
    """The value of ``${name}`` (or ``${name:-default}``) used by ``where``; a variable that is
    not set and has no default is a :class:`ConfigurationError` saying how to fix it."""
    found = os.environ.get(name)
    if found is not None and (found != "" or default is None):
        return found
    if default is not None:
        return default
    raise ConfigurationError(
        f"{where} uses ${{{name}}}, but the environment variable {name} is not set; "
        f"set it, or give a default: ${{{name}:-default}}",
        key=key,
    )


def _expand(text: str, path: Path) -> str:
    """``${VAR}`` / ``${VAR:-default}`` in ``text`` (an include path or an unquoted value)."""
    where = repr(str(path))
    return _VAR.sub(lambda m: env_value(m.group(1), m.group(2), where, m.group(1)), text)


def _toml(text: str, path: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - depends on the interpreter
        try:
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ConfigurationError(
                f"reading {str(path)!r} needs a TOML parser on Python < 3.11: "
                "pip install 'eventforge-core[toml]' (or tomli), or use a JSON file"
            ) from None
    data: Any = tomllib.loads(text)
    tool = data.get("tool")
    if isinstance(tool, dict) and "eventforge" in tool:
        return tool["eventforge"]
    if isinstance(data.get("eventforge"), dict):
        return data["eventforge"]
    return data


def _jsonp(text: str, path: Path, read: Callable[[Path], dict[str, Any]]) -> Any:
    """Parse JSON with comments, unquoted variables and include members."""
    includes: list[str] = []
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigurationError(f"{str(path)!r}: a /* comment is never closed")
            i = end + 2
        elif text.startswith("${", i):
            match = _INCLUDE.match(text, i)
            if match is not None:
                includes.append(_expand(json.loads(f'"{match.group(1)}"'), path))
                out.append(f'"\\u0000include{len(includes) - 1}": null')
                i = match.end()
                continue
            match = _VAR.match(text, i)
            if match is None:
                raise ConfigurationError(f"{str(path)!r}: malformed ${{...}} at offset {i}")
            out.append(_expand(match.group(0), path))
            i = match.end()
        else:
            out.append(ch)
            i += 1
    data = json.loads("".join(out))
    return _place_includes(data, [_relative(path, p) for p in includes], read)


def _place_includes(data: Any, paths: list[Path], read: Callable[[Path], dict[str, Any]]) -> Any:
    if isinstance(data, list):
        return [_place_includes(v, paths, read) for v in data]
    if not isinstance(data, dict):
        return data
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("\x00include"):
            merged = deep_merge(merged, read(paths[int(key[len("\x00include") :])]))
        else:
            merged = deep_merge(merged, {key: _place_includes(value, paths, read)})
    return merged
