"""Fuzz target for the TCP frame decoder: any bytes, any chunking, only our protocol errors.

With atheris installed (``pip install atheris``)::

    python eventforge-tcp/fuzzing/fuzz_tcp_frame.py -max_total_time=300

Without it, the same target runs on random inputs for ``--iterations`` rounds. The allowed
exceptions are :class:`~eventforge.errors.ProtocolError` and its subclass
:class:`~eventforge.errors.FrameTooLarge`; anything else is a bug and crashes the run.
"""

from __future__ import annotations

import os
import random
import sys

from eventforge.errors import ProtocolError
from eventforge.wire import WireCodec
from eventforge_tcp.framing import decode_stream, parse_hello

CODECS = (WireCodec(),)


def target(data: bytes) -> None:
    """Decode ``data`` cut at points derived from its first byte; allow only ProtocolError."""
    step = (data[0] % 13 + 1) if data else 1
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    for codec in CODECS:
        try:
            decode_stream(chunks, codec, max_frame_size=4096)
        except ProtocolError:
            pass
    try:
        parse_hello(data)
    except ProtocolError:
        pass


def main() -> None:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        rounds = (
            int(sys.argv[sys.argv.index("--iterations") + 1])
            if "--iterations" in sys.argv
            else 20000
        )
        rng = random.Random(int(os.environ.get("SEED", "0")))
        for _ in range(rounds):
            size = rng.choice((0, 1, 4, 5, 16, 64, 300))
            data = bytes(rng.getrandbits(8) for _ in range(size))
            if rng.random() < 0.5 and size >= 4:
                body = data[4:]
                data = len(body).to_bytes(4, "big") + body
            target(data)
        print(f"{rounds} random inputs: no exception outside the allow-list")
        return
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
