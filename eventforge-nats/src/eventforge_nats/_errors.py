"""The errors of the NATS transport, and how a nats-py error is told to be a refusal."""

from __future__ import annotations

from eventforge.errors import TransportError

__all__ = ["NatsAuthError", "NatsConnectError", "is_auth_error"]


class NatsConnectError(TransportError, ConnectionError):
    """The first connection to NATS failed (unreachable, refused, TLS, timeout)."""


class NatsAuthError(NatsConnectError, PermissionError):
    """The NATS server refused the credentials ("Authorization Violation")."""


def is_auth_error(exc: BaseException) -> bool:
    """Tell whether a nats-py error means the credentials were refused."""
    import nats.errors

    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text
