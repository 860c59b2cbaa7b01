"""docs/plugins.md keeps its promises to plugin authors.

The minimal transport it offers to copy passes the transport and queue conformance suites as
printed, and its table of Transport methods matches the real signatures.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.testing.queue_conformance import QueueConformance
from eventforge.transport import Transport

PLUGINS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
MARKER = "<!-- plugin-template -->"
DOCUMENTED = [
    "send",
    "receive",
    "receive_async",
    "subscribe",
    "unsubscribe",
    "close",
    "request",
    "work_queue_backend",
    "stats",
    "send_counted",
    "send_async",
    "request_async",
    "close_async",
    "connect",
    "subscribe_durable",
    "subscribe_matching",
    "claim",
]


def _template() -> types.ModuleType:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    after = text[text.index(MARKER) + len(MARKER) :]
    code = after.split("```python\n", 1)[1].split("\n```", 1)[0]
    module = types.ModuleType("plugin_template")
    exec(compile(code, str(PLUGINS_MD), "exec"), module.__dict__)
    return module


TEMPLATE = _template()


class TestTemplateTransportConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = TEMPLATE.MinimalTransport()
        return lambda: transport


class TestTemplateQueueConformance(QueueConformance):
    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = TEMPLATE.MinimalTransport()
        return lambda: transport


def test_template_uses_only_public_modules() -> None:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    code = text[text.index(MARKER) :].split("```python\n", 1)[1].split("\n```", 1)[0]
    assert not re.search(r"eventforge\._", code)


def test_method_table_matches_the_transport_signatures() -> None:
    text = PLUGINS_MD.read_text(encoding="utf-8").replace("\\|", "|")
    documented = {
        m.group(2): m.group(0).strip("`").removeprefix("async ").replace('"', "")
        for m in re.finditer(r"`(async )?(\w+)\(self[^`]*`", text)
    }
    for name in DOCUMENTED:
        signature = str(inspect.signature(getattr(Transport, name))).replace("'", "")
        assert documented.get(name) == f"{name}{signature}", name
