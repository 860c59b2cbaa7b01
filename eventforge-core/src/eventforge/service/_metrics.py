"""The ``eventforge_subscription_*`` series of ``/metrics``: a health report in Prometheus text.

Rendered from the same report as ``/health`` (so behind ``eventforge run --workers N`` it covers
every worker, labelled ``worker``), without any client library: the text exposition format
is a few lines per series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventforge.service.health import HealthState

__all__ = ["metrics_text"]

_SERIES: tuple[tuple[str, str, str, str], ...] = (
    # (name, type, help, key in the subscription's record)
    ("eventforge_subscription_deliveries_total", "counter", "Messages handed to the handler.",
     "delivered"),
    ("eventforge_subscription_errors_total", "counter", "Handler calls that raised.", "errors"),
    ("eventforge_subscription_stalls_total", "counter",
     "Times the subscription was found stalled (a probe late, its path broken, its consumer "
     "failing).", "stalls"),
    ("eventforge_subscription_resubscribed_total", "counter",
     "Times the service re-established the subscription.", "resubscribed"),
    ("eventforge_subscription_backlog", "gauge",
     "Messages waiting for the subscription, where known.", "backlog"),
    ("eventforge_subscription_last_delivery_timestamp_seconds", "gauge",
     "Unix time of the last delivery.", "last_delivery"),
)  # fmt: skip


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, object]]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _number(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(value)


def metrics_text(report: dict[str, Any]) -> str:
    """Every subscription of ``report`` (a :meth:`Service.health`-shaped dict) as series with
    the labels ``service``, ``subscription`` (the handler), ``kind``, ``target`` and, behind a
    pool, ``worker``."""
    service = report.get("service", "")
    lines = [
        "# HELP eventforge_service_ready Whether every required subscription is active or idle.",
        "# TYPE eventforge_service_ready gauge",
        f"eventforge_service_ready{_labels([('service', service)])} "
        f"{_number(report.get('status') == 'ready')}",
    ]
    subscriptions = list(report.get("subscriptions", []))
    keyed = []
    for sub in subscriptions:
        pairs: list[tuple[str, object]] = [
            ("service", service),
            ("subscription", sub.get("name", "")),
            ("kind", sub.get("kind", "")),
            ("target", sub.get("target", "")),
        ]
        if "worker" in sub:
            pairs.append(("worker", sub["worker"]))
        keyed.append((pairs, sub))
    lines += [
        "# HELP eventforge_subscription_state The subscription's state: 1 for the current one.",
        "# TYPE eventforge_subscription_state gauge",
    ]
    for pairs, sub in keyed:
        for state in HealthState:
            current = sub.get("state") == state.value
            lines.append(
                f"eventforge_subscription_state{_labels([*pairs, ('state', state.value)])} "
                f"{_number(current)}"
            )
    for name, kind, text, key in _SERIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for pairs, sub in keyed:
            value = sub.get(key)
            if isinstance(value, (int, float)):
                lines.append(f"{name}{_labels(pairs)} {_number(value)}")
    return "\n".join(lines) + "\n"
