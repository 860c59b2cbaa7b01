"""Every option of ``local://``, declared once and read the same way from a URL and keywords."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventforge.errors import ConfigurationError
from eventforge.transport import Option, OptionTable, to_bool, to_int, to_seconds
from eventforge.transport.urls import mask_url, split_url
from eventforge.wire import DEFAULT_MAX_SIZE

__all__ = ["OPTIONS", "OVERFLOW_POLICIES", "directory_from_url"]

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "refuse")


def _overflow(text: str) -> str:
    if text not in OVERFLOW_POLICIES:
        raise ValueError(f"expected one of {', '.join(OVERFLOW_POLICIES)}")
    return text


def _synchronous(text: str) -> str:
    value = str(text).lower()
    if value not in ("normal", "full"):
        raise ValueError("expected 'normal' (fast, survives a process crash) or 'full' (also "
                         "survives a power loss, slower)")  # fmt: skip
    return value


def _positive(text: Any) -> int:
    value = to_int(text)
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value


def _positive_seconds(text: Any) -> float:
    value = to_seconds(text)
    if value <= 0:
        raise ValueError("expected a duration in seconds > 0")
    return value


OPTIONS = OptionTable(
    "local",
    Option("serializer", str, "json", doc="payload serializer (json, msgpack, pickle)"),
    Option("trusted", to_bool, False, doc="decode payloads of trusted-only serializers"),
    Option("max_size", _positive, DEFAULT_MAX_SIZE, doc="largest message envelope, in bytes"),
    Option("synchronous", _synchronous, "normal", doc="'normal' or 'full' (fsync every commit)"),
    Option("max_store_bytes", _positive, None, doc="cap on the database file; beyond it publishing fails"),
    Option("max_messages", _positive, 100_000, doc="default backlog bound of a subscription, in messages"),
    Option("max_bytes", _positive, None, doc="default backlog bound of a subscription, in bytes"),
    Option("overflow", _overflow, "drop_oldest", doc="what a full backlog does: drop_oldest, drop_newest, refuse"),
    Option("ttl", _positive_seconds, 7 * 86400.0, doc="seconds a named subscription with no consumer is kept"),
    Option("lease", _positive_seconds, 30.0, doc="seconds a shared subscription's message is held by a consumer"),
    Option("check_interval", _positive_seconds, 2.0, doc="safety-net check when no doorbell rang"),
    Option("sweep_interval", _positive_seconds, 5.0, doc="how often dead listeners and stale data are swept"),
    Option("visibility_timeout", _positive_seconds, 30.0, doc="work-queue lease before redelivery"),
    Option("dedupe_window", to_seconds, 600.0, doc="seconds a settled work item's id is remembered"),
)  # fmt: skip


def directory_from_url(url: str) -> Path | None:
    """``local://`` -> ``None`` (the default directory); ``local:///path`` -> ``/path``."""
    parts = split_url(url, "local")
    if parts.netloc:
        raise ConfigurationError(
            f"{mask_url(url)!r}: local:// names no host; write local:///absolute/path for a "
            "directory (three slashes) or local:// for the default one",
            key="transport",
        )
    if parts.path in ("", "/"):
        return None
    return Path(parts.path)
