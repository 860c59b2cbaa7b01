"""What the plugin registry loads: the transport, after the Python check.

On Python 3.10 this raises the ``ImportError`` of :func:`~eventforge_amqp._python.check_python`
before aiormq is imported, so selecting ``amqp://`` there says which Python it needs instead of
"No module named 'aiormq'".
"""

from __future__ import annotations

from ._python import check_python

check_python()

from .transport import AmqpTransport  # noqa: E402 (after the check, on purpose)

__all__ = ["AmqpTransport"]
