"""RPC servers and clients, and Node (layer 8)."""

from __future__ import annotations

from eventforge.rpc._node import (
    Node as Node,
)
from eventforge.rpc._protocol import RPC_TOPIC_PREFIX as RPC_TOPIC_PREFIX
from eventforge.rpc._rpc import (
    RetryingRPCClient as RetryingRPCClient,
)
from eventforge.rpc._rpc import (
    RoundRobinRPCClient as RoundRobinRPCClient,
)
from eventforge.rpc._rpc import (
    RPCClient as RPCClient,
)
from eventforge.rpc._rpc import (
    RPCServer as RPCServer,
)
from eventforge.rpc._rpc import (
    with_retry as with_retry,
)

__all__ = [
    "RPC_TOPIC_PREFIX",
    "Node",
    "RPCClient",
    "RPCServer",
    "RetryingRPCClient",
    "RoundRobinRPCClient",
    "with_retry",
]
