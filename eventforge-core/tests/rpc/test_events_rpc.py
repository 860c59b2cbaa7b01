"""RPC with models: the server validates model arguments, the client gets the model back typed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from eventforge import MessageQueue, RPCClient, RPCServer
from eventforge.errors import RPCError
from pydantic import BaseModel


class Order(BaseModel):
    items: list[float]


@dataclass
class OrderTotal:
    total: float
    count: int


@pytest.fixture
def client() -> RPCClient:
    queue = MessageQueue()
    server = RPCServer(queue, service_name="shop")

    @server.register()
    def total(order: Order) -> OrderTotal:
        assert isinstance(order, Order)
        return OrderTotal(total=sum(order.items), count=len(order.items))

    @server.register()
    async def total_async(order: Order, *, scale: int = 1) -> OrderTotal:
        assert isinstance(order, Order)
        return OrderTotal(total=sum(order.items) * scale, count=len(order.items))

    @server.register()
    def not_a_total() -> dict[str, str]:
        return {"unexpected": "shape"}

    server.serve(blocking=False)
    yield RPCClient(queue, service_name="shop", timeout=5)
    server.stop()
    queue.close()


def test_model_argument_and_typed_result(client: RPCClient) -> None:
    result = client.call_typed(OrderTotal, "total", Order(items=[1.0, 2.5]))
    assert result == OrderTotal(total=3.5, count=2)


def test_dict_argument_is_validated_into_the_model(client: RPCClient) -> None:
    result = client.call_typed(OrderTotal, "total", {"items": ["1", 2]})
    assert result == OrderTotal(total=3.0, count=2)


def test_async_method_and_call_typed_async(client: RPCClient) -> None:
    async def main() -> OrderTotal:
        return await client.call_typed_async(
            OrderTotal, "total_async", order={"items": [1, 1]}, scale=3
        )

    assert asyncio.run(main()) == OrderTotal(total=6.0, count=2)


def test_invalid_argument_is_rejected_before_the_method_runs(client: RPCClient) -> None:
    with pytest.raises(RPCError, match="argument 'order' is not a valid Order"):
        client.call("total", {"items": "nope"})


def test_result_that_does_not_validate_raises(client: RPCClient) -> None:
    with pytest.raises(RPCError, match="is not a valid OrderTotal"):
        client.call_typed(OrderTotal, "not_a_total")


def test_mypy_sees_the_return_type_of_call_typed(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from eventforge import MessageQueue, RPCClient

            @dataclass
            class OrderTotal:
                total: float

            client = RPCClient(MessageQueue(), service_name="shop")
            reveal_type(client.call_typed(OrderTotal, "total", 1))
            reveal_type(client.call("total", 1))

            async def main() -> None:
                reveal_type(await client.call_typed_async(OrderTotal, "total"))
            """
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "c"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    revealed = [line for line in run.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 3, run.stdout + run.stderr
    # The typed helper carries the model type; the untyped call is Any (the control).
    assert '"snippet.OrderTotal"' in revealed[0], revealed
    assert '"Any"' in revealed[1], revealed
    assert '"snippet.OrderTotal"' in revealed[2], revealed
