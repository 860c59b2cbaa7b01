"""Never send the connect unencrypted when TLS was asked for, and say what to fix when TLS fails.

nats-py upgrades a connection to TLS only when the server demands it; :func:`tls_enforcing_client`
is the client used whenever the settings ask for TLS, which upgrades or refuses instead.
:func:`tls_problem` tells a TLS failure that retrying cannot cure (it ends the first connect at
once) and says which option fixes it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import ssl
from typing import TYPE_CHECKING, Any

from ._errors import NatsConnectError

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "PlaintextRefusedError",
    "tls_enforcing_client",
    "tls_hooks_missing",
    "tls_problem",
    "transport_is_tls",
]


class PlaintextRefusedError(Exception):
    """TLS was asked for but the connection to a server would not be encrypted.

    Raised by the client from :func:`tls_enforcing_client` before the connect (which carries
    any user, password, token or JWT) is written; the class nats-py sees also derives from
    ``nats.errors.Error``, so its connect and reconnect loops treat it as a failed attempt.
    """


_CLIENT_CERT_REFUSED = (
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
)


def tls_problem(exc: BaseException) -> str | None:
    """Say what to fix when ``exc`` is a TLS failure that retrying cannot cure; else None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate did not verify ({exc.verify_message}); pass tls_ca= the "
            "CA file that signed it (or tls= an ssl.SSLContext that trusts it) and connect by a "
            "host name or IP address the certificate names (or set tls_hostname=)"
        )
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = str(exc.reason or "").upper()
    if "CERTIFICATE_REQUIRED" in reason:
        return (
            "the server requires a client certificate (mutual TLS); pass tls_cert= and tls_key= "
            "(or tls= an ssl.SSLContext with load_cert_chain)"
        )
    if any(alert in reason for alert in _CLIENT_CERT_REFUSED):
        return (
            f"the server refused the client certificate ({exc.reason}); use a tls_cert signed by "
            "a CA the server trusts (its ca_file), not expired"
        )
    return None


def transport_is_tls(transport: object) -> bool | None:
    """Tell whether nats-py's transport is encrypted; None when it cannot be told."""
    writer = getattr(transport, "_io_writer", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    if not callable(get_extra_info):
        return None
    return get_extra_info("ssl_object") is not None


# The nats-py methods the TLS guard overrides (nats-py 2.x): INFO is handed to _process_info
# before the client decides to upgrade; _connect_command builds the CONNECT just before it is
# written.
_TLS_HOOKS = ("_process_connect_init", "_process_info", "_connect_command")


def tls_hooks_missing(client: type[Any]) -> list[str]:
    """The parts of nats-py's ``Client`` the TLS guard relies on that ``client`` lacks.

    Besides the methods existing, the guard awaits ``_process_info(info, initial_connection)``
    from its own coroutine override: nats-py made that method a coroutine in 2.10, and before
    that an override awaiting it fails every TLS connect.
    """
    missing = [name for name in _TLS_HOOKS if not callable(getattr(client, name, None))]
    if missing:
        return missing
    process_info = client._process_info
    if "initial_connection" not in inspect.signature(process_info).parameters:
        missing.append("_process_info(initial_connection=)")
    if not inspect.iscoroutinefunction(process_info):
        missing.append("_process_info as a coroutine (nats-py >= 2.10)")
    if inspect.iscoroutinefunction(client._connect_command):
        missing.append("_connect_command as a plain method")
    return missing


@functools.cache
def tls_enforcing_client() -> type[Client]:
    """A nats-py ``Client`` that never sends its connect unencrypted (for TLS settings).

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``: against a
    server without TLS, a ``tls://`` URL would send the connect, credentials included, in
    plaintext. This client, on every connect and reconnect:

    * upgrades when the INFO says ``tls_available`` (TLS offered but not required), as the
      Go client does;
    * refuses (:class:`PlaintextRefusedError`, before writing anything) when the INFO offers
      no TLS at all;
    * checks, when building the connect, that the socket really is TLS, and refuses if it is
      not or cannot be told, so a nats-py that stops calling the INFO hook fails closed.

    Raises :class:`NatsConnectError` when the installed nats-py lacks the methods overridden
    here, instead of falling back to plaintext.
    """
    import nats.errors
    from nats.aio.client import Client

    missing = tls_hooks_missing(Client)
    if missing:
        try:
            version = importlib.metadata.version("nats-py")
        except importlib.metadata.PackageNotFoundError:
            version = "(unknown version)"
        raise NatsConnectError(
            f"nats-py {version} has no Client.{', Client.'.join(missing)}, which eventforge-nats "
            "uses to make sure the connect (and any credentials) is never sent unencrypted when "
            "TLS is requested; not connecting. Install nats-py>=2.10 (pip install -U nats-py)"
        )

    class Refused(nats.errors.Error, PlaintextRefusedError):
        pass

    def refuse(client: Client, what: str) -> Refused:
        server = client._current_server
        url = "the NATS server"
        if server is not None:
            scheme = server.uri.scheme or "nats"
            url = f"{scheme}://{server.uri.hostname}:{server.uri.port}"
        return Refused(
            f"{url} {what} but TLS was requested (a tls:// URL or the tls, tls_ca or tls_cert "
            "options); refusing to send the connect and any credentials in plaintext. Enable "
            "TLS on the server (tls { ... } in its configuration), or connect with a nats:// "
            "URL and no TLS options if plaintext is acceptable"
        )

    class TlsEnforcingClient(Client):
        async def _process_info(
            self, info: dict[str, Any], initial_connection: bool = False
        ) -> None:
            if initial_connection and not info.get("tls_required"):
                if not info.get("tls_available"):
                    raise refuse(self, "does not offer TLS")
                info["tls_required"] = True  # offered, not required: upgrade all the same
            await super()._process_info(info, initial_connection)

        def _connect_command(self) -> bytes:
            secure = transport_is_tls(self._transport)
            if secure is None:
                raise refuse(self, "is connected by a transport that cannot tell if it is TLS")
            if not secure:
                raise refuse(self, "was not upgraded to TLS")
            return super()._connect_command()

    return TlsEnforcingClient
