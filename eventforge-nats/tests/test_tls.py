"""The TLS guard's compatibility probe: which nats-py ``Client`` shapes it accepts.

nats-py 2.6 to 2.9 had a plain ``_process_info``; the guard awaits it from a coroutine
override, so on those versions every TLS connect failed. The probe must refuse that shape
up front (with the version to install), and accept the installed nats-py.
"""

from __future__ import annotations

from typing import Any

from eventforge_nats._tls import tls_hooks_missing
from nats.aio.client import Client


def test_installed_nats_py_has_everything_the_tls_guard_overrides() -> None:
    assert tls_hooks_missing(Client) == []


def test_a_plain_process_info_as_before_nats_py_2_10_is_refused() -> None:
    class Before210(Client):  # type: ignore[misc]
        def _process_info(  # type: ignore[override]
            self, info: dict[str, Any], initial_connection: bool = False
        ) -> None:
            return None

    assert tls_hooks_missing(Before210) == ["_process_info as a coroutine (nats-py >= 2.10)"]


def test_a_process_info_without_initial_connection_is_refused() -> None:
    class NoInitialFlag(Client):  # type: ignore[misc]
        async def _process_info(self, info: dict[str, Any]) -> None:  # type: ignore[override]
            return None

    assert tls_hooks_missing(NoInitialFlag) == ["_process_info(initial_connection=)"]


def test_a_client_without_a_hook_names_the_missing_method() -> None:
    class NoHooks:
        pass

    assert tls_hooks_missing(NoHooks) == [
        "_process_connect_init",
        "_process_info",
        "_connect_command",
    ]
