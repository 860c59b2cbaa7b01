"""The demander of deploy/: round-robins RPC calls over a pool of workers, skipping dead ones.

    python deploy/demander.py --servers server1:9090,server2:9090,server3:9090 --calls 30

Each worker gets its own TCP client in ``offline="raise"`` mode, so a call routed to a worker
that is down fails at once with ``TransportError`` (nothing was sent, so trying the next worker
is safe); :func:`~eventforge.with_retry` then moves the call to the next worker in turn. A
worker that comes back is used again once its client has reconnected. Set ``EVENTFORGE_TOKEN``
when the workers require a token.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

from eventforge import MessageQueue, RoundRobinRPCClient, RPCClient, with_retry
from eventforge.errors import TransportError
from eventforge.transports.tcp import TCPClientTransport


class Pool:
    """One RPC client per worker address, round-robin with failover."""

    def __init__(
        self, servers: list[str], service: str = "math", *, timeout: float = 5.0, retries: int = 0
    ) -> None:
        token = os.environ.get("EVENTFORGE_TOKEN") or None
        self.queues: list[MessageQueue] = []
        for address in servers:
            host, _, port = address.rpartition(":")
            transport = TCPClientTransport(
                host, int(port), token=token, offline="raise", reconnect_max_delay=1.0
            )
            self.queues.append(MessageQueue(transport=transport.connect()))
        clients = [RPCClient(q, service_name=service, timeout=timeout) for q in self.queues]
        self.client = with_retry(
            RoundRobinRPCClient(clients),
            max_retries=retries or len(clients),
            initial_backoff=0.0,
            max_backoff=0.05,
            retry_on=(TransportError,),
        )

    def call(self, method: str, *args: object) -> object:
        """Call ``method`` on the next live worker."""
        return self.client.call(method, *args)

    def close(self) -> None:
        for queue in self.queues:
            queue.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers",
        default=os.environ.get("EVENTFORGE_SERVERS", "127.0.0.1:9090"),
        help="comma-separated host:port list (default: $EVENTFORGE_SERVERS)",
    )
    parser.add_argument("--service", default="math")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for workers")
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    deadline = time.monotonic() + args.wait
    while True:
        try:
            pool = Pool(servers, args.service)
            break
        except TransportError as exc:
            if time.monotonic() > deadline:
                print(f"demander: workers not reachable: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    try:
        spread: collections.Counter[str] = collections.Counter()
        for n in range(args.calls):
            assert pool.call("compute", n) == n * n
            spread[str(pool.call("whoami"))] += 1
        for worker, count in sorted(spread.items()):
            print(f"{worker}: {count} calls")
    finally:
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
