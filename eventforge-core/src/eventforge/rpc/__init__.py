"""RPC servers and clients, and Node (layer 8)."""

from __future__ import annotations

from eventforge.rpc._client import RPCClient as RPCClient
from eventforge.rpc._client_helpers import RetryingRPCClient as RetryingRPCClient
from eventforge.rpc._client_helpers import RoundRobinRPCClient as RoundRobinRPCClient
from eventforge.rpc._client_helpers import with_retry as with_retry
from eventforge.rpc._node import (
    Node as Node,
)
from eventforge.rpc._protocol import RPC_TOPIC_PREFIX as RPC_TOPIC_PREFIX
from eventforge.rpc._server import RPCServer as RPCServer

__all__ = [
    "RPC_TOPIC_PREFIX",
    "Node",
    "RPCClient",
    "RPCServer",
    "RetryingRPCClient",
    "RoundRobinRPCClient",
    "with_retry",
]
