"""Checks of a NATS credentials file, made before nats-py reads it on the event loop."""

from __future__ import annotations

import importlib.util

from eventforge.errors import ConfigurationError

__all__ = ["check_credentials_file", "require_nkeys"]


def require_nkeys() -> None:
    """Refuse a credentials file when the ``nkeys`` package that signs with it is missing."""
    if importlib.util.find_spec("nkeys") is None:
        raise ConfigurationError(
            "a NATS credentials file needs the 'nkeys' package to sign the server's challenge; "
            "install it with: pip install 'eventforge-nats[nkeys]'",
            key="credentials",
        )


_CREDS_BLOCKS = ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED")


def check_credentials_file(path: str) -> None:
    """Refuse a credentials file nats-py cannot use, before the handshake reads it.

    nats-py reads the file on the event loop while connecting: a file without the JWT block
    makes it loop forever (stalling every connection on the loop), one without the seed block
    fails with a bare ``TypeError``. The file's content is never put in the message.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the NATS credentials file {path!r} ({exc.strerror or exc}); "
            "pass the path of a readable .creds file",
            key="credentials",
        ) from None
    for block in _CREDS_BLOCKS:
        at = next((i for i, line in enumerate(lines) if block in line), None)
        if at is None or at + 1 >= len(lines) or not lines[at + 1].strip():
            raise ConfigurationError(
                f"the NATS credentials file {path!r} has no '-----{block}-----' block "
                "followed by its value; a .creds file holds the user JWT and the user's nkey "
                "seed (as written by 'nsc generate creds')",
                key="credentials",
            )
