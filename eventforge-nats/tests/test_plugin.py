"""The plugin record of the nats transport: import-light, and declaring what the class declares."""

from __future__ import annotations

import subprocess
import sys

from eventforge_nats import plugin
from eventforge_nats.transport import NatsTransport


def test_record_and_class_share_one_capability_set() -> None:
    (spec,) = plugin.eventforge_transports()
    assert spec.capabilities == plugin.CAPABILITIES
    assert NatsTransport.capabilities is plugin.CAPABILITIES


def test_importing_the_plugin_and_transport_modules_does_not_import_nats() -> None:
    code = (
        "import sys, eventforge_nats.plugin, eventforge_nats.transport, eventforge_nats\n"
        "from eventforge.plugins import registry\n"
        "entry = registry().transport('nats://127.0.0.1:1')\n"
        "assert entry.spec.name == 'nats', entry\n"
        "from eventforge.transports.nats import NatsTransport\n"
        "assert 'nats' not in sys.modules, sorted(m for m in sys.modules if m.startswith('nats'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
