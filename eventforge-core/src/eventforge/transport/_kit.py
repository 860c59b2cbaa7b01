"""Building blocks every transport needs: a retry curve, a lock-free counter, an option table.

They are public through :mod:`eventforge.transport` so that third-party transports use the same
pieces as the built-in ones (and read their options, back off and count the same way). This
module depends on nothing but the standard library and :mod:`eventforge.errors`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from eventforge.errors import ConfigurationError
from eventforge.transport.urls import mask_url

__all__ = [
    "Backoff",
    "Counter",
    "Option",
    "OptionTable",
    "to_bool",
    "to_float",
    "to_int",
    "to_seconds",
]


@dataclass(frozen=True)
class Backoff:
    """A capped exponential retry curve with jitter: the one reconnect and retry schedule.

    The delay before retry number ``n`` (1-based) is ``min(cap, initial * multiplier ** (n - 1))``,
    then lengthened by up to ``jitter`` (a fraction) at random and capped again, so that many
    clients that lost the same server do not come back in lock-step. Jitter only ever lengthens
    a delay.
    """

    initial: float = 0.1
    cap: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0:
            raise ValueError(
                f"backoff times must be >= 0, got initial={self.initial}, cap={self.cap}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based; 0 or less counts as 1)."""
        exponent = max(0, attempt - 1)
        try:
            base = min(self.cap, self.initial * self.multiplier**exponent)
        except OverflowError:
            base = self.cap
        if self.jitter:
            base = min(self.cap, base * (1 + random.random() * self.jitter))
        return base

    def delays(self) -> Iterator[float]:
        """The endless sequence of delays: retry 1, 2, 3, ..."""
        for attempt in itertools.count(1):
            yield self.delay(attempt)


class Counter:
    """A counter that many threads may bump without a lock.

    ``next()`` on an :class:`itertools.count` is atomic under the GIL, where ``n += 1`` on an
    attribute is not. ``bump()`` returns the value before the bump.
    """

    __slots__ = ("_count", "bump")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.bump: Callable[[], int] = self._count.__next__

    @property
    def value(self) -> int:
        """The number of bumps so far."""
        # ``count`` has no peek; its repr ("count(N)") carries the next value.
        return int(repr(self._count)[6:-1])

    def __repr__(self) -> str:
        return f"Counter({self.value})"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def to_bool(text: str | bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case) as a bool; a bool passes through."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of 1/true/yes/on or 0/false/no/off, got {text!r}")


def to_int(text: str | int) -> int:
    """A whole number (``"10"``); floats and bools are refused."""
    if isinstance(text, (bool, float)):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def to_float(text: str | float) -> float:
    """A number (``"2.5"``); bools are refused."""
    if isinstance(text, bool):
        raise ValueError(f"expected a number, got {text!r}")
    return float(text)


def to_seconds(text: str | float) -> float:
    """A non-negative duration in seconds (``"2.5"``)."""
    value = to_float(text)
    if not value >= 0:
        raise ValueError(f"expected a duration in seconds >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One transport option: its name, how a URL's text becomes its value, and its default.

    ``convert`` receives the URL's text or a keyword's value; it raises ``ValueError`` or
    ``TypeError`` for a bad value. A ``secret`` option is never echoed in an error.
    """

    name: str
    convert: Callable[[Any], Any] = str
    default: Any = None
    secret: bool = False
    doc: str = ""


@dataclass(frozen=True)
class OptionTable:
    """The options a transport accepts, read the same way from a URL's query and from keywords.

    ``OptionTable("redis", Option("db", to_int, 0), ...)``; :meth:`read` returns every option's
    value (defaults filled in), with an unknown, repeated or invalid option reported as a
    :class:`~eventforge.errors.ConfigurationError` naming it, the accepted names, and the URL
    with its secrets masked.
    """

    transport: str
    options: tuple[Option, ...] = field(default=())

    def __init__(self, transport: str, *options: Option) -> None:
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "options", tuple(options))
        names = [o.name for o in options]
        if len(set(names)) != len(names):
            raise ValueError(f"option names repeat in {names}")

    @property
    def names(self) -> tuple[str, ...]:
        """The accepted option names, in declaration order."""
        return tuple(o.name for o in self.options)

    def defaults(self) -> dict[str, Any]:
        """Every option's default value."""
        return {o.name: o.default for o in self.options}

    def _option(self, name: str, where: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise ConfigurationError(
            f"unknown {self.transport} option {name!r} {where}; "
            f"accepted: {', '.join(sorted(self.names)) or '(none)'}",
            key=f"transport.{name}",
        )

    def _convert(self, option: Option, value: Any, where: str) -> Any:
        try:
            return option.convert(value)
        except (TypeError, ValueError) as exc:
            shown = "***" if option.secret else repr(value)
            raise ConfigurationError(
                f"{self.transport} option {option.name}={shown} {where} is invalid: {exc}",
                key=f"transport.{option.name}",
            ) from None

    def from_query(self, url: str) -> dict[str, Any]:
        """The options given in ``url``'s query, converted (no defaults)."""
        where = f"in URL {mask_url(url)!r}"
        result: dict[str, Any] = {}
        for key, text in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            option = self._option(key, where)
            if key in result:
                raise ConfigurationError(
                    f"{self.transport} option {key!r} is given twice {where}",
                    key=f"transport.{key}",
                )
            result[key] = self._convert(option, text, where)
        return result

    def from_keywords(self, keywords: Mapping[str, Any]) -> dict[str, Any]:
        """The options given as keywords, converted (no defaults); ``None`` means "not given"."""
        result: dict[str, Any] = {}
        for key, value in keywords.items():
            option = self._option(key, "given as a keyword")
            if value is not None:
                result[key] = self._convert(option, value, "given as a keyword")
        return result

    def read(
        self, url: str | None = None, keywords: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every option's value: defaults, then the URL's query, then keywords on top."""
        values = self.defaults()
        if url:
            values.update(self.from_query(url))
        if keywords:
            values.update(self.from_keywords(keywords))
        return values
