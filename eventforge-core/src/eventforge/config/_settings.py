"""Configuration by name: settings from keyword arguments, the environment, or a file.

Precedence, lowest first: defaults, the file (``source``, else ``$EVENTFORGE_CONFIG``), the
environment (``EVENTFORGE_TRANSPORT``, ``EVENTFORGE_SERIALIZER``, ``EVENTFORGE_STARTUP``, and
``EVENTFORGE_OPTIONS__<NAME>`` / ``EVENTFORGE_LOGGING__<KEY>`` for one key of those tables),
keyword arguments. Files are TOML or JSON, with comments and includes
(:mod:`eventforge.config._files`); their strings may use ``${VAR}`` and ``${VAR:-default}``.
Everything is checked when the settings are loaded, not on the first message: unknown keys,
wrong types, transport and serializer names (through the plugin registry's errors), transport
options, the startup policy and the logging table. Every error names the offending key and
where its value came from. Secrets (URL passwords, ``password`` /
``token`` / ``secret`` keys) are masked whenever settings are shown.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pydantic

from eventforge.config._files import deep_merge, env_sections, env_value, read_config_file
from eventforge.config._logging import FORMATS, level_name, setup_logging
from eventforge.config._startup import StartupPolicy, startup_policy
from eventforge.errors import ConfigurationError, EventforgeError
from eventforge.plugins import registry
from eventforge.transport import Transport
from eventforge.transport.urls import _SECRET_QUERY, mask_url
from eventforge.transports.memory import MemoryTransport

__all__ = [
    "LoggingSettings",
    "Settings",
    "configure",
    "configured_transport",
    "connect",
    "current_settings",
    "default_transport",
    "load_settings",
    "mask_secrets",
]

log = logging.getLogger("eventforge.config")

CONFIG_ENV = "EVENTFORGE_CONFIG"
ENV_KEYS = {
    "transport": "EVENTFORGE_TRANSPORT",
    "serializer": "EVENTFORGE_SERIALIZER",
    "startup": "EVENTFORGE_STARTUP",
}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MASK = "***"


def mask_secrets(value: Any, key: str = "") -> Any:
    """Return ``value`` with secrets replaced by ``***``: URL passwords and secret-named keys."""
    if key and _SECRET_QUERY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_secrets(v) for v in value)
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


class LoggingSettings(pydantic.BaseModel):
    """The ``logging`` table: applied by :func:`configure` to the root logger.

    ``level`` is a level name (any case), ``format`` is ``"text"`` or ``"json"`` (one JSON
    object per line), ``file`` a path to append to (default: stderr).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    level: str = "WARNING"
    format: str = "text"
    file: str | None = None

    @pydantic.field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return level_name(value)

    @pydantic.field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown log format {value!r}; choose one of: {', '.join(FORMATS)}")
        return value


class Settings(pydantic.BaseModel):
    """Validated eventforge settings. ``repr``/``str`` never show secrets.

    ``transport`` is a name (``"memory"``), an alias, or a URL (``"redis://:pw@host:6379/0"``);
    ``options`` are keyword arguments for the transport; ``plugins`` holds per-plugin sections
    handed to every plugin's ``eventforge_configure`` hook; ``startup`` is what a process does
    before it starts working, in the forms :func:`eventforge.queue.rendezvous.startup_policy` reads
    (``"none"``, ``"delay:2"``, ``{"policy": "barrier", "requires": {"worker": 3}}``, or a list
    of these run in order), built by :meth:`startup_policy`.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    transport: str = "memory"
    serializer: str = "json"
    options: dict[str, Any] = pydantic.Field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = pydantic.Field(default_factory=dict)
    # A name, a mapping or a list: checked by building the policy (``_check_startup``), whose
    # errors say which form was expected, rather than by a union type's per-member errors.
    startup: Any = "none"
    logging: LoggingSettings | None = None

    def startup_policy(self) -> StartupPolicy:
        """The startup policy that ``startup`` describes (a fresh object on each call).

        Run it with ``policy.run(queue)`` before starting work: it returns ``False`` when a
        barrier timed out.
        """

        return startup_policy(self.startup)

    def masked(self) -> dict[str, Any]:
        """The settings as a dict, secrets replaced by ``***`` (for logs and displays)."""
        return {k: mask_secrets(v, k) for k, v in self.model_dump().items()}

    def __repr_args__(self) -> Any:
        return list(self.masked().items())


_current: Settings | None = None


def _substitute(value: Any, key: str, origin: str) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _substitute(v, f"{key}.{k}" if key else str(k), origin) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env_value(match.group(1), match.group(2), f"setting {key!r} in {origin}", key)

    return _VAR.sub(replace, value)


def load_settings(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Load, substitute, validate and return the settings.

    ``source`` is a TOML/JSON file path or a mapping; without it ``$EVENTFORGE_CONFIG`` names
    the file, if set. ``overrides`` (``transport=``, ``serializer=``, ``options=``, ...) win
    over everything; a ``None`` override is ignored.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if source is None and os.environ.get(CONFIG_ENV):
        source = os.environ[CONFIG_ENV]
    if isinstance(source, Mapping):
        origin = "the settings mapping"
        layer = _substitute(dict(source), "", origin)
    elif source is not None:
        path = Path(source)
        origin = f"{str(path)!r}"
        layer = _substitute(read_config_file(path), "", origin)
    else:
        layer, origin = {}, ""
    for key, value in layer.items():
        values[key], origins[key] = value, origin
    for section, table in env_sections(os.environ).items():
        below = values.get(section)
        values[section] = deep_merge(below, table) if isinstance(below, dict) else table
        origins[section] = f"environment variables EVENTFORGE_{section.upper()}__*"
    for key, env in ENV_KEYS.items():
        if os.environ.get(env):
            values[key], origins[key] = _from_env(key, env), f"environment variable {env}"
    for key, value in overrides.items():
        if value is not None:
            values[key], origins[key] = value, "keyword arguments"
    settings = _validate(values, origins)
    _check_names(settings, origins)
    _check_startup(settings, origins)
    return settings


def _from_env(key: str, env: str) -> Any:
    """The value of ``env``; for ``startup``, a JSON list or object is parsed (barriers, chains)."""
    raw = os.environ[env]
    if key != "startup" or raw.lstrip()[:1] not in ("[", "{"):
        return raw
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid setting 'startup' (from environment variable {env}): not valid JSON "
            f"({exc}); use a name such as 'none' or 'delay:2', or a JSON object/list such as "
            '{"policy": "barrier", "requires": {"worker": 3}}',
            key="startup",
        ) from None


def _check_startup(settings: Settings, origins: dict[str, str]) -> None:
    """Build the startup policy once now, so a bad spec fails at configuration time."""
    try:
        settings.startup_policy()
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"invalid setting 'startup' (from {origins.get('startup', 'defaults')}): {exc}",
            key="startup",
        ) from exc


def _validate(values: dict[str, Any], origins: dict[str, str]) -> Settings:
    known = list(Settings.model_fields)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown setting {key!r} (from {origins[key]}).{hint} Known settings: "
                f"{', '.join(known)}",
                key=key,
            )
    try:
        return Settings.model_validate(values)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0]) if err["loc"] else ""
        shown = mask_secrets(err.get("input"), key)
        raise ConfigurationError(
            f"invalid setting {key!r} (from {origins.get(top, 'defaults')}): {err['msg']}; "
            f"got {shown!r}",
            key=key,
        ) from None


def _check_names(settings: Settings, origins: dict[str, str]) -> None:

    reg = registry()
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("transport", lambda: reg.transport(settings.transport)),
        ("serializer", lambda: reg.get("serializer", settings.serializer)),
    ]
    for key, check in checks:
        try:
            check()
        except EventforgeError as exc:
            raise ConfigurationError(
                f"invalid setting {key!r} (from {origins.get(key, 'defaults')}): {exc}", key=key
            ) from exc
    if settings.options:
        _check_options(settings.transport, settings.options)


def _factory(target: Any, url: str | None) -> Callable[..., Any]:
    if url is not None and hasattr(target, "from_url"):
        return target.from_url  # type: ignore[no-any-return]
    return target  # type: ignore[no-any-return]


def _accepted_options(target: Any, url: str | None) -> list[str] | None:
    """Keyword names the factory accepts; ``None`` when it takes any (``**options``).

    A ``from_url(url, **options)`` that takes any keyword forwards them to the class by
    convention, so the class's own signature decides.
    """
    candidates = [_factory(target, url)] if url is not None else []
    candidates.append(target)
    for factory in candidates:
        try:
            params = list(inspect.signature(factory).parameters.values())
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p.name for p in params if p.kind in kinds and p.name not in ("self", "url")]
    return None


def _check_options(name_or_url: str, options: Mapping[str, Any]) -> None:
    """Refuse option names the transport does not accept, naming the offending key."""

    reg = registry()
    entry = reg.transport(name_or_url)
    url = name_or_url if "://" in name_or_url else None
    accepted = _accepted_options(reg.load(entry), url)
    if accepted is None:
        return
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"invalid setting 'options.{key}': transport {entry.spec.name!r} does not accept "
                f"an option {key!r}.{hint} Accepted: {', '.join(accepted) or '(none)'}",
                key=f"options.{key}",
            )


def configure(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Load and validate settings, make them the default for :func:`connect`, tell the plugins.

    Every plugin's ``eventforge_configure`` hook receives the settings as a dict (plugins
    registered later receive it too).
    """
    global _current
    settings = load_settings(source, **overrides)
    if settings.logging is not None:
        setup_logging(settings.logging.level, settings.logging.format, settings.logging.file)

    registry().configure(settings.model_dump())
    _current = settings
    log.info("eventforge configured: %r", settings)
    return settings


def current_settings() -> Settings | None:
    """The settings of the last :func:`configure` call, or ``None``."""
    return _current


def connect(url_or_name: str | Settings | None = None, **options: Any) -> Transport:
    """Create the transport that a name or URL selects: ``connect("memory://?max_queue_size=10")``.

    Without an argument the transport comes from the last :func:`configure`, else from the
    environment / ``$EVENTFORGE_CONFIG`` (default: ``memory``). ``options`` go to the
    transport: ``target.from_url(url, **options)`` for a URL when the class has ``from_url``,
    else ``target(**options)``.
    """
    if isinstance(url_or_name, Settings):
        settings = url_or_name
    elif url_or_name is None and _current is not None:
        settings = _current
    else:
        settings = load_settings(transport=url_or_name)
    merged = {**settings.options, **options}
    if options:
        _check_options(settings.transport, merged)

    reg = registry()
    entry = reg.transport(settings.transport)
    target = reg.load(entry)
    url = settings.transport if "://" in settings.transport else None
    if url is not None and not hasattr(target, "from_url"):
        rest = url.split("://", 1)[1]
        if rest.strip("/"):
            raise ConfigurationError(
                f"transport {entry.spec.name!r} ({entry.provider}) does not read URLs; pass "
                f"its options as keyword arguments instead of {mask_url(url)!r}",
                key="transport",
            )
        url = None
    transport = _factory(target, url)(url, **merged) if url is not None else target(**merged)
    if not isinstance(transport, Transport):
        raise ConfigurationError(
            f"transport {entry.spec.name!r} ({entry.spec.target}) produced "
            f"{type(transport).__name__}, not an eventforge Transport",
            key="transport",
        )
    return transport


def configured_transport() -> Transport | None:
    r"""The transport the configuration selects, or ``None`` when nothing is configured.

    Something is configured when :func:`configure` was called or ``EVENTFORGE_TRANSPORT`` or
    ``EVENTFORGE_CONFIG`` is set; the transport is then :func:`connect`\ ``()``'s (the caller
    owns it and closes it). Objects that pick a transport themselves (``MessageQueue()``,
    ``WorkQueue()``) ask this first, so a configured broker is never silently replaced by
    in-process delivery.
    """
    if _current is None and not (
        os.environ.get(ENV_KEYS["transport"]) or os.environ.get(CONFIG_ENV)
    ):
        return None
    transport = connect()
    global _announced
    if not _announced:
        _announced = True
        log.info("objects created without a transport use the configured one: %r", transport)
    return transport


def default_transport() -> Transport:
    """The transport of an object given none: the configured one, else a new in-process
    :class:`~eventforge.transports.memory.MemoryTransport` (no settings are loaded then)."""
    configured = configured_transport()
    return configured if configured is not None else MemoryTransport()


_announced = False
