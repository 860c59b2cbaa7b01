"""eventforge-amqp needs Python 3.11+ (aiormq 7): on 3.10 selecting it fails with the reason."""

from __future__ import annotations

import sys

import pytest
from eventforge import connect
from eventforge.errors import PluginImportError
from eventforge_amqp._python import PYTHON_SUPPORTED


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="the refusal is Python 3.10's")
def test_selecting_amqp_on_python_310_fails_naming_the_python_it_needs() -> None:
    assert not PYTHON_SUPPORTED
    with pytest.raises(
        PluginImportError, match=r"needs Python 3\.11 or newer.*this is Python 3\.10"
    ):
        connect("amqp://guest:guest@127.0.0.1:1/")


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="the refusal is Python 3.10's")
def test_the_work_queue_module_refuses_python_310_even_with_an_aiormq_6_installed() -> None:
    pytest.importorskip("aiormq")  # another package's dependency (aio-pika 9 brings aiormq 6)
    with pytest.raises(ImportError, match=r"needs Python 3\.11 or newer"):
        import eventforge_amqp.workqueue  # noqa: F401


@pytest.mark.skipif(sys.version_info < (3, 11), reason="eventforge-amqp needs Python 3.11+")
def test_the_transport_loads_on_python_311_and_newer() -> None:
    import eventforge_amqp

    assert PYTHON_SUPPORTED
    assert eventforge_amqp.AmqpTransport.__name__ == "AmqpTransport"
