"""Errors of the TCP transport that callers may want to catch by type."""

from __future__ import annotations

from eventforge.errors import TransportError

__all__ = ["AuthenticationError"]


class AuthenticationError(TransportError):
    """The server refused the hello: the token is missing or wrong (or TLS identity rejected).

    It is final: the client does not retry with the same credentials. The message never
    contains the token.
    """

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"{url} refused the connection: {detail}. Check the token configured on both ends "
            "(the client does not retry with the same credentials)"
        )
        self.url = url
