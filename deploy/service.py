"""The service the deploy/ containers run: ``eventforge run service:svc``.

It serves the two RPC methods of ``handlers.py`` under the service name ``math``. The
transport comes from ``EVENTFORGE_TRANSPORT``; in the containers that is a TCP server with the
shared token, ``tcp://:${EVENTFORGE_TOKEN}@0.0.0.0:9090?listen=1``, so the demander's pool
reaches each worker directly.
"""

from __future__ import annotations

from eventforge.service import Service
from handlers import SERVICE_NAME, compute, whoami

svc = Service(SERVICE_NAME, drain_timeout=20.0)
svc.rpc("compute")(compute)
svc.rpc("whoami")(whoami)
