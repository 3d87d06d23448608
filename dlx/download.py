"""One guard for every download dlx starts (torchvision datasets, pretrained weights)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation inside the block by ``seconds``.

    urllib (which torchvision and torch.hub use) waits forever by default: without a bound an unreachable
    host hangs a run for minutes. A tighter timeout the caller already set is kept.
    """
    previous = socket.getdefaulttimeout()
    if previous is None or previous > seconds:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
