"""An AsyncAPI 3.0 document of a service: its channels, operations, messages and server.

Channels are the service's topics (patterns kept as written: ``orders.*``), RPC service topics
and work-queue names; a subscription is a ``receive`` operation, ``publish_to=`` a ``send``
operation, an RPC method a ``receive`` operation with a reply to the request's ``reply_to``,
whose message is typed from the method's return annotation (on a reply channel of dynamic
address, one per RPC service). Typed events carry the JSON Schema pydantic makes of them,
hoisted into ``components.schemas``; other payloads are described as any JSON value. The server comes from
the transport URL, with secrets masked.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pydantic

from eventforge.service.app import Endpoint, Service
from eventforge.transport.urls import mask_url

__all__ = ["asyncapi_document", "dump_document"]

ASYNCAPI_VERSION = "3.0.0"
_ID = re.compile(r"[^\w.\-]")
_REF_TEMPLATE = "#/components/schemas/{model}"


def _ident(text: str) -> str:
    """A component/channel key AsyncAPI accepts (``^[\\w\\d.\\-_]+$``)."""
    cleaned = _ID.sub("_", text.replace("**", "_all_").replace("*", "_any_"))
    return cleaned or "_"


def _schema_of(annotation: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``annotation``, its definitions moved into ``schemas``."""
    try:
        schema = pydantic.TypeAdapter(annotation).json_schema(ref_template=_REF_TEMPLATE)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError):
        return {}
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = definition
    return dict(schema)


def _event_schema(event_type: type, schemas: dict[str, Any]) -> dict[str, Any]:
    schema = _schema_of(event_type, schemas)
    title = str(schema.get("title") or event_type.__name__)
    if schema.get("type") == "object":
        schemas[title] = schema
        return {"$ref": _REF_TEMPLATE.format(model=title)}
    return schema


def _rpc_schema(method: str, func: Callable[..., Any], schemas: dict[str, Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(param.name)
        properties[param.name] = _schema_of(hint, schemas) if hint is not None else {}
        if param.default is param.empty:
            required.append(param.name)
    kwargs: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        kwargs["required"] = required
    return {
        "type": "object",
        "required": ["method"],
        "properties": {
            "method": {"type": "string", "const": method},
            "args": {"type": "array", "description": "positional arguments"},
            "kwargs": kwargs,
        },
    }


_RPC_ERROR = {
    "type": "object",
    "description": "Why a call failed: the remote exception, an unknown method, a bad request.",
    "required": ["kind", "type", "message"],
    "properties": {
        "kind": {"type": "string", "enum": ["exception", "method_not_found", "bad_request",
                                            "unavailable"]},
        "type": {"type": "string", "description": "the exception's class name"},
        "message": {"type": "string"},
        "traceback": {"type": "string"},
        "methods": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip


def _reply_schema(func: Callable[..., Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The reply to a call: ``{"ok": true, "result": R}`` with ``R`` the method's return
    annotation (any JSON value without one), or ``{"ok": false, "error": {...}}``."""
    try:
        hint = typing.get_type_hints(func).get("return", inspect.Signature.empty)
    except Exception:
        hint = inspect.Signature.empty
    result = {} if hint is inspect.Signature.empty else _schema_of(hint, schemas)
    title = result.get("title")
    if isinstance(title, str) and result.get("type") == "object" and "properties" in result:
        schemas.setdefault(title, result)  # a model: named in components, like event payloads
        result = {"$ref": _REF_TEMPLATE.format(model=title)}
    schemas.setdefault("RPCError", _RPC_ERROR)
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["ok", "result"],
                "properties": {"ok": {"const": True}, "result": result},
            },
            {
                "type": "object",
                "required": ["ok", "error"],
                "properties": {
                    "ok": {"const": False},
                    "error": {"$ref": _REF_TEMPLATE.format(model="RPCError")},
                },
            },
        ]
    }


def _server(url: str | None) -> dict[str, Any] | None:
    if not url or "://" not in url:
        return None
    masked = mask_url(url)
    parts = urlsplit(masked)
    host = parts.hostname or ""
    if not host:
        return None
    if parts.port:
        host = f"{host}:{parts.port}"
    server: dict[str, Any] = {"host": host, "protocol": parts.scheme}
    if parts.path and parts.path != "/":
        server["pathname"] = parts.path
    return server


def _summary(func: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(func)
    return doc.strip().splitlines()[0] if doc else None


def asyncapi_document(
    service: Service,
    *,
    version: str = "0.0.0",
    transport_url: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Build the AsyncAPI 3.0 document of ``service`` as a JSON-safe dict.

    ``transport_url`` names the server (default: the service's transport, when it is a URL);
    its password and secret query values are masked.
    """
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}

    def channel(
        address: str, message_id: str, payload: dict[str, Any], title: str, reply: bool = False
    ) -> str:
        # A reply channel's address is whatever the caller put in reply_to: null (dynamic).
        key = _ident(f"{address}.reply" if reply else address)
        entry = channels.setdefault(key, {"address": None if reply else address, "messages": {}})
        if message_id not in messages:
            messages[message_id] = {"name": message_id, "title": title, "payload": payload}
        entry["messages"][message_id] = {"$ref": f"#/components/messages/{message_id}"}
        return key

    def operation(op_id: str, action: str, key: str, message_id: str, **extra: Any) -> None:
        base, n = op_id, 2
        while op_id in operations:
            op_id, n = f"{base}_{n}", n + 1
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{message_id}"}],
            **{k: v for k, v in extra.items() if v is not None},
        }

    for endpoint in service.endpoints():
        _describe(endpoint, channel, operation, schemas)

    info: dict[str, Any] = {"title": service.name, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
    spec = service.transport_spec
    server = _server(transport_url or (spec if isinstance(spec, str) else None))
    if server is not None:
        document["servers"] = {"default": server}
    document["defaultContentType"] = "application/json"
    document["channels"] = channels
    document["operations"] = operations
    components: dict[str, Any] = {"messages": messages}
    if schemas:
        components["schemas"] = schemas
    document["components"] = components
    return document


def _describe(
    endpoint: Endpoint,
    channel: Callable[..., str],
    operation: Callable[..., None],
    schemas: dict[str, Any],
) -> None:
    name = getattr(endpoint.handler, "__name__", "handler")
    summary = _summary(endpoint.handler)
    if endpoint.kind == "rpc" and endpoint.method is not None:
        message_id = _ident(f"{endpoint.address}.{endpoint.method}.request")
        payload = _rpc_schema(endpoint.method, endpoint.handler, schemas)
        key = channel(endpoint.address, message_id, payload, f"call {endpoint.method}")
        reply_id = _ident(f"{endpoint.address}.{endpoint.method}.reply")
        reply_payload = _reply_schema(endpoint.handler, schemas)
        reply_key = channel(
            endpoint.address, reply_id, reply_payload, f"reply of {endpoint.method}", True
        )
        operation(
            _ident(f"{endpoint.address}.{endpoint.method}"),
            "receive",
            key,
            message_id,
            summary=summary,
            reply={
                "address": {"location": "$message.header#/reply_to"},
                "channel": {"$ref": f"#/channels/{reply_key}"},
                "messages": [{"$ref": f"#/channels/{reply_key}/messages/{reply_id}"}],
            },
        )
        return
    if endpoint.event_type is not None:
        payload = _event_schema(endpoint.event_type, schemas)
        message_id = _ident(endpoint.event_type.__name__)
    else:
        payload = {}
        message_id = _ident(f"{endpoint.address}.message")
    key = channel(endpoint.address, message_id, payload, endpoint.address)
    action_summary = summary
    if endpoint.group:
        action_summary = f"{summary or name} (competing consumers: group {endpoint.group})"
    operation(_ident(f"{name}.receive"), "receive", key, message_id, summary=action_summary)
    if endpoint.publish_to is not None:
        out_id = _ident(f"{endpoint.publish_to}.message")
        out_key = channel(endpoint.publish_to, out_id, {}, endpoint.publish_to)
        operation(_ident(f"{name}.send"), "send", out_key, out_id, summary=summary)


def dump_document(document: dict[str, Any], fmt: str = "json") -> str:
    """``document`` as JSON or YAML text (YAML needs PyYAML: ``pip install pyyaml``)."""
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    if fmt == "yaml":
        try:
            import yaml  # optional dependency, only for --format yaml
        except ImportError:
            raise RuntimeError(
                "YAML output needs PyYAML: pip install pyyaml (or use --format json)"
            ) from None
        return str(yaml.safe_dump(document, sort_keys=False))
    raise ValueError(f"unknown format {fmt!r}; use 'json' or 'yaml'")
