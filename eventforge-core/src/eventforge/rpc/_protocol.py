"""The RPC payloads: what a call and its reply look like on any transport.

A call is ``{"method": str, "args": [...], "kwargs": {...}}``. A reply is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}`` where the error has a
``kind`` (``"exception"``, ``"method_not_found"`` or ``"bad_request"``), the remote exception's
``type``, ``message`` and ``traceback`` text, and for ``method_not_found`` the registered
``methods``. Everything is JSON-safe, so the same payloads cross TCP, Redis and NATS.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

from eventforge.errors import MethodNotFound, RemoteError, RPCError, ServiceUnavailable
from eventforge.topics import validate_topic

__all__ = [
    "RPC_TOPIC_PREFIX",
    "error_reply",
    "exception_reply",
    "make_call",
    "parse_call",
    "service_topic",
    "unwrap_reply",
]

RPC_TOPIC_PREFIX = "_rpc"


def service_topic(service_name: str) -> str:
    """The topic the servers of ``service_name`` answer on; ``ValueError`` for an unusable name."""
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty str, got {service_name!r}")
    topic = f"{RPC_TOPIC_PREFIX}.{service_name}"
    try:
        return validate_topic(topic)
    except ValueError as exc:
        raise ValueError(
            f"service_name {service_name!r} cannot be used: {exc}; use letters, digits, '-' "
            "and '_' (dots separate topic segments)"
        ) from None


def make_call(method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Build the payload of a call to ``method``."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"the RPC method must be a non-empty name (str), got {method!r}")
    return {"method": method, "args": list(args), "kwargs": kwargs}


def parse_call(payload: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """Read a call payload; raise ``ValueError`` saying what is wrong with a malformed one."""
    if not isinstance(payload, dict):
        raise ValueError(
            f"an RPC request must be a dict with 'method', 'args' and 'kwargs', got "
            f"{type(payload).__name__}"
        )
    method = payload.get("method")
    if not isinstance(method, str) or not method:
        raise ValueError(f"the RPC request has no method name (got {method!r})")
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"'args' must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError("'kwargs' must be a dict with str keys")
    return method, list(args), kwargs


def error_reply(kind: str, type_name: str, message: str, **extra: Any) -> dict[str, Any]:
    """Build a failed reply."""
    error: dict[str, Any] = {"kind": kind, "type": type_name, "message": message, "traceback": ""}
    error.update(extra)
    return {"ok": False, "error": error}


def exception_reply(exc: BaseException) -> dict[str, Any]:
    """Build the reply for a method that raised ``exc``, with its traceback text."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return error_reply("exception", type(exc).__name__, str(exc), traceback=text)


def unwrap_reply(payload: Any, method: str, service: str) -> Any:
    """Return the result carried by a reply, or raise the error it reports."""
    if not isinstance(payload, dict) or "ok" not in payload:
        raise RPCError(
            f"malformed reply from service {service!r} for {method!r}: {payload!r}; is something "
            f"other than an RPCServer answering on {RPC_TOPIC_PREFIX}.{service}?"
        )
    if payload["ok"]:
        return payload.get("result")
    error = payload.get("error")
    if not isinstance(error, dict):
        error = {}
    kind = error.get("kind")
    if kind == "method_not_found":
        methods = error.get("methods")
        available = [m for m in methods if isinstance(m, str)] if isinstance(methods, list) else []
        raise MethodNotFound(method, available, service)
    if kind == "unavailable":
        raise ServiceUnavailable(
            f"service {service!r} did not run {method!r}: {error.get('message', '')}",
            service=service,
            method=method,
        )
    if kind == "bad_request":
        raise RPCError(
            f"service {service!r} rejected the call to {method!r}: {error.get('message', '')}"
        )
    raise RemoteError(
        str(error.get("type", "Exception")),
        str(error.get("message", "")),
        str(error.get("traceback", "")),
    )
