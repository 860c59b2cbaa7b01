"""The wire envelope and the serializers (layer 3)."""

from __future__ import annotations

from eventforge.wire._codec import (
    BYTES_CONTENT_TYPE as BYTES_CONTENT_TYPE,
)
from eventforge.wire._codec import (
    CONTENT_TYPE_HEADER as CONTENT_TYPE_HEADER,
)
from eventforge.wire._codec import (
    DEFAULT_MAX_SIZE as DEFAULT_MAX_SIZE,
)
from eventforge.wire._codec import (
    WIRE_VERSION as WIRE_VERSION,
)
from eventforge.wire._codec import (
    WireCodec as WireCodec,
)
from eventforge.wire._codec import (
    decode_envelope as decode_envelope,
)
from eventforge.wire._codec import (
    encode_envelope as encode_envelope,
)

__all__ = [
    "BYTES_CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "DEFAULT_MAX_SIZE",
    "WIRE_VERSION",
    "WireCodec",
    "decode_envelope",
    "encode_envelope",
]
