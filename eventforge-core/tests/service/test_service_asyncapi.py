"""AsyncAPI 3.0 documents of a service, validated against the official JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml
from eventforge import event
from eventforge.message import Message
from eventforge.service import Service, asyncapi_document, dump_document

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "data" / "asyncapi-3.0.0.schema.json").read_text(
        encoding="utf-8"
    )
)


def validate(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(document)


class Address(pydantic.BaseModel):
    street: str
    city: str


@event("orders.created")
class OrderCreated(pydantic.BaseModel):
    """An order was placed."""

    order_id: str
    amount: float
    ship_to: Address


def shop() -> Service:
    svc = Service("shop", "redis://:hunter2@127.0.0.1:6390/0?password=x")

    @svc.on(OrderCreated, publish_to="orders.billed")
    def bill(order: OrderCreated) -> dict[str, Any]:
        """Bill an order."""
        return {"order": order.order_id}

    @svc.on("audit.**", group="auditors")
    def audit(message: Message) -> None:
        pass

    @svc.rpc()
    def refund(order_id: str, amount: float = 0.0) -> bool:
        """Refund an order."""
        return True

    @svc.rpc()
    def ship_to(order_id: str) -> Address:
        """Where an order goes."""
        return Address(street="1 Main St", city="Springfield")

    @svc.consumer("emails")
    def send_email(message: Message) -> None:
        pass

    return svc


def test_a_service_document_validates_against_the_asyncapi_3_schema() -> None:
    validate(asyncapi_document(shop(), version="1.2.0"))


def test_the_document_names_channels_operations_and_typed_payloads() -> None:
    doc = asyncapi_document(shop())
    addresses = {c["address"] for c in doc["channels"].values()}
    # None: the RPC reply channel, whose address is the caller's reply_to
    assert addresses == {"orders.created", "orders.billed", "audit.**", "_rpc.shop", "emails", None}
    actions = {op_id: op["action"] for op_id, op in doc["operations"].items()}
    assert actions["bill.receive"] == "receive"
    assert actions["bill.send"] == "send"
    assert doc["operations"]["_rpc.shop.refund"]["reply"] == {
        "address": {"location": "$message.header#/reply_to"},
        "channel": {"$ref": "#/channels/_rpc.shop.reply"},
        "messages": [{"$ref": "#/channels/_rpc.shop.reply/messages/_rpc.shop.refund.reply"}],
    }
    assert "group auditors" in doc["operations"]["audit.receive"]["summary"]
    schemas = doc["components"]["schemas"]
    assert schemas["OrderCreated"]["properties"]["ship_to"] == {
        "$ref": "#/components/schemas/Address"
    }
    assert schemas["Address"]["required"] == ["street", "city"]
    kwargs = doc["components"]["messages"]["_rpc.shop.refund.request"]["payload"]["properties"][
        "kwargs"
    ]
    assert kwargs["required"] == ["order_id"]
    assert kwargs["properties"]["amount"] == {"type": "number"}


def test_rpc_replies_are_typed_from_the_return_annotation() -> None:
    doc = asyncapi_document(shop())
    messages = doc["components"]["messages"]

    def result_of(method: str) -> Any:
        ok, failed = messages[f"_rpc.shop.{method}.reply"]["payload"]["oneOf"]
        assert failed["properties"]["error"] == {"$ref": "#/components/schemas/RPCError"}
        return ok["properties"]["result"]

    assert result_of("refund") == {"type": "boolean"}
    assert result_of("ship_to") == {"$ref": "#/components/schemas/Address"}
    assert doc["components"]["schemas"]["RPCError"]["required"] == ["kind", "type", "message"]


def test_every_reference_in_the_document_resolves() -> None:
    doc = asyncapi_document(shop())

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert target


def test_the_server_comes_from_the_transport_url_with_secrets_masked() -> None:
    doc = asyncapi_document(shop())
    assert doc["servers"] == {
        "default": {"host": "127.0.0.1:6390", "protocol": "redis", "pathname": "/0"}
    }
    assert "hunter2" not in json.dumps(doc)
    assert "servers" not in asyncapi_document(Service("mem"))


def test_yaml_output_reads_back_as_the_same_document() -> None:
    doc = asyncapi_document(shop())
    assert yaml.safe_load(dump_document(doc, "yaml")) == doc
    assert json.loads(dump_document(doc, "json")) == doc
    with pytest.raises(ValueError, match="'json' or 'yaml'"):
        dump_document(doc, "xml")


def test_the_asyncapi_command_prints_a_valid_document(tmp_path: Path) -> None:
    (tmp_path / "shopmod.py").write_text(
        textwrap.dedent(
            """
            from eventforge.service import Service

            svc = Service("cli-shop", "nats://127.0.0.1:4333")

            @svc.on("orders.*")
            def handle(message):
                pass
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "asyncapi", "shopmod:svc", "--version", "2.0.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(out.stdout)
    validate(doc)
    assert doc["info"] == {"title": "cli-shop", "version": "2.0.0"}
    bad = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "asyncapi", "shopmod:nothing"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "is not a Service" in bad.stderr


def test_the_validator_refuses_a_document_that_breaks_the_schema() -> None:
    doc = asyncapi_document(shop())
    doc["operations"]["bill.receive"]["action"] = "consume"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    del doc["info"]
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
