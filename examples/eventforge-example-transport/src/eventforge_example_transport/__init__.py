"""An example third-party eventforge transport: pub/sub through a spool directory.

Use it by name, ``eventforge.connect("spool:///tmp/my-spool")``, or directly::

    from eventforge_example_transport import SpoolTransport
"""

from __future__ import annotations

from .transport import SpoolTransport

__version__ = "0.1.0"
__all__ = ["SpoolTransport", "__version__"]
