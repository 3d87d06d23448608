"""How a training process treats the signals that end it.

Ctrl-C (SIGINT) raises ``KeyboardInterrupt``; a scheduler's SIGTERM (preemption, ``kill``, ``docker stop``)
raises ``Terminated``, a ``KeyboardInterrupt`` too, so both leave the run ``interrupted`` and resumable.
While the final status is written, both signals wait (``signals_deferred``): a second Ctrl-C cannot leave
``summary.json`` at ``running``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

EXIT_SIGTERM = 143  # 128 + 15, what a shell reports for a process ended by SIGTERM
EXIT_SIGINT = 130  # 128 + 2


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled exactly like Ctrl-C (the run is saved as interrupted), exit code 143."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises ``Terminated`` (and SIGINT ``KeyboardInterrupt``, even if it was ignored)."""
    if not _main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are held back inside the block and delivered when it ends."""
    if not _main_thread():
        yield
        return
    blocked: Any = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
