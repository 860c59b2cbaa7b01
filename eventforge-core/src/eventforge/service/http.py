"""The health endpoints, on the standard library's HTTP server (no web framework).

``/livez``   200 while the service's loops are alive, else 503.
``/readyz``  200 when every required subscription is ``active`` or ``idle``; else 503 and the
             reasons, one per line.
``/health``  JSON: every subscription with its state, backlog and counters.
``/metrics`` Prometheus text: the ``eventforge_subscription_*`` series of every subscription,
             then, when ``prometheus-client`` is installed (``pip install
             eventforge-observers[prometheus]``), everything in its default registry.
``/``        a small status page that refreshes itself.

Served on loopback by default: exposing it further is a deployment decision.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eventforge.service._metrics import metrics_text

__all__ = ["HealthServer", "render_page"]

log = logging.getLogger("eventforge.service.http")

Report = Callable[[], dict[str, Any]]


class HealthServer:
    """Serve ``report()`` (a :meth:`Service.health`-shaped dict) on ``host:port``.

    ``port=0`` picks a free port; :attr:`url` tells which. The server runs on a daemon thread
    of its own until :meth:`close`.
    """

    def __init__(self, report: Report, host: str = "127.0.0.1", port: int = 0) -> None:
        self.report = report
        handler = _handler_class(report)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve health endpoints on {host}:{port}: {exc.strerror}; choose "
                "another --health-port (0 picks a free one)",
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="eventforge-health", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host, port = self.address
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _metrics_text(data: dict[str, Any]) -> bytes:
    """The subscriptions' series, then prometheus-client's registry when it is installed."""
    text = metrics_text(data).encode()
    try:
        import prometheus_client  # optional dependency: eventforge-observers[prometheus]
    except ImportError:
        return text
    return text + bytes(prometheus_client.generate_latest())


def _handler_class(report: Report) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "eventforge-health"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                data = report()
            except Exception as exc:
                log.exception("health report failed")
                self._send(500, f"health report failed: {exc}\n".encode(), "text/plain")
                return
            if path == "/livez":
                live = bool(data.get("live"))
                self._send(200 if live else 503, b"ok\n" if live else b"not live\n", "text/plain")
            elif path == "/readyz":
                reasons = list(data.get("reasons", []))
                body = ("ready\n" if not reasons else "\n".join(reasons) + "\n").encode()
                self._send(200 if not reasons else 503, body, "text/plain; charset=utf-8")
            elif path == "/health":
                body = json.dumps(data, indent=2, default=str).encode()
                self._send(200 if not data.get("reasons") else 503, body, "application/json")
            elif path == "/metrics":
                text = _metrics_text(data)
                self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/", "/index.html"):
                self._send(200, render_page(data).encode(), "text/html; charset=utf-8")
            else:
                self._send(
                    404, b"not found: try /, /livez, /readyz, /health, /metrics\n", "text/plain"
                )

    return Handler


_STATE_COLOUR = {
    "active": "#1a7f37",
    "idle": "#57606a",
    "starting": "#9a6700",
    "recovering": "#9a6700",
    "stalled": "#cf222e",
    "failed": "#cf222e",
}


def render_page(data: dict[str, Any], refresh: int = 2) -> str:
    """The status page: one row per subscription, refreshed every ``refresh`` seconds."""
    rows = []
    for sub in data.get("subscriptions", []):
        last = sub.get("last_delivery")
        ago = f"{time.time() - last:.1f} s ago" if isinstance(last, (int, float)) else "never"
        colour = _STATE_COLOUR.get(str(sub.get("state")), "#000")
        backlog = sub.get("backlog")
        cells = [
            html.escape(str(sub.get("kind"))),
            html.escape(str(sub.get("name"))),
            html.escape(str(sub.get("target"))),
            f'<b style="color:{colour}" class="state">{html.escape(str(sub.get("state")))}</b>',
            str(sub.get("delivered")),
            f"{float(sub.get('rate') or 0.0):.1f}",
            str(sub.get("errors")),
            "-" if backlog is None else str(backlog),
            ago,
            html.escape(str(sub.get("last_error") or "")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    status = html.escape(str(data.get("status")))
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in data.get("reasons", []))
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "kind",
            "handler",
            "target",
            "state",
            "delivered",
            "per second",
            "errors",
            "backlog",
            "last delivery",
            "last error",
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{int(refresh)}'>"
        f"<title>{html.escape(str(data.get('service')))} - eventforge</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>{html.escape(str(data.get('service')))}</h1>"
        f"<p id='status'>status: <b>{status}</b></p>"
        + (f"<ul id='reasons'>{reasons}</ul>" if reasons else "")
        + f"<table id='subscriptions'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
        "</tbody></table></body></html>"
    )
