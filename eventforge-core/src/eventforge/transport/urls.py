"""Reading transport URLs: ``scheme://[user:password@]host[:port][/path][?option=value&...]``.

Transports use these helpers in their ``from_url`` classmethod so that every URL reports bad
input the same way, naming the option and the URL (with its password masked).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from eventforge.errors import ConfigurationError

__all__ = ["mask_url", "parse_bool", "query_options", "split_url"]

_SECRET_QUERY = re.compile(r"pass(word)?|passwd|secret|token|api[_-]?key|credential", re.I)


def mask_url(url: str) -> str:
    """Return ``url`` with its password and secret-looking query values replaced by ``***``.

    A URL too malformed to split (an unclosed ``[`` of an IPv6 host) is masked all the same.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_unsplittable(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.partition(":")[0]
        netloc = f"{name}:***@{host}"
    query = _mask_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    masked = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if "://" in url and not netloc and not masked.startswith(f"{parts.scheme}://"):
        masked = masked.replace(":", "://", 1)
    return masked


def _mask_query(query: str) -> str:
    if not query:
        return query
    return "&".join(
        f"{k}=***" if _SECRET_QUERY.search(k) else (f"{k}={v}" if v or "=" in pair else k)
        for pair in query.split("&")
        for k, _, v in [pair.partition("=")]
    )


_PASSWORD = re.compile(r"(?<=://)([^/?#@:]*):[^/?#@]*@")


def _mask_unsplittable(url: str) -> str:
    base, mark, query = url.partition("?")
    return _PASSWORD.sub(r"\1:***@", base) + mark + _mask_query(query)


def split_url(url: str, *schemes: str) -> SplitResult:
    """Split ``url``, checking that its scheme is one of ``schemes``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigurationError(f"malformed URL {mask_url(url)!r}: {exc}", key="transport")
    if parts.scheme.lower() not in schemes:
        raise ConfigurationError(
            f"URL {mask_url(url)!r} has scheme {parts.scheme!r}; expected "
            + " or ".join(f"'{s}://'" for s in schemes),
            key="transport",
        )
    return parts


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case) as a bool."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def query_options(
    url: str, converters: Mapping[str, Callable[[str], Any]], **options: Any
) -> dict[str, Any]:
    """Return the URL's query options converted by ``converters``, then ``options`` on top.

    Unknown, repeated or unconvertible query options raise :class:`ConfigurationError` naming
    the option, the accepted ones, and the URL (masked).
    """
    result: dict[str, Any] = {}
    try:
        query = urlsplit(url).query
    except ValueError as exc:
        raise ConfigurationError(f"malformed URL {mask_url(url)!r}: {exc}", key="transport")
    for key, text in parse_qsl(query, keep_blank_values=True):
        where = f"in URL {mask_url(url)!r}"
        if key not in converters:
            raise ConfigurationError(
                f"unknown option {key!r} {where}; accepted: {', '.join(sorted(converters))}",
                key=f"transport.{key}",
            )
        if key in result:
            raise ConfigurationError(
                f"option {key!r} is given twice {where}", key=f"transport.{key}"
            )
        try:
            result[key] = converters[key](text)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"option {key}={text!r} {where} is invalid: {exc}", key=f"transport.{key}"
            ) from None
    result.update(options)
    return result
