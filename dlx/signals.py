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
    """SIGINT and SIGTERM are held back inside the block and delivered, once each, when it ends.

    The Python handlers are swapped for ones that only take note: a Python handler always runs in the main
    thread, whichever thread the kernel gave the signal to (a thread mask would miss torch's worker threads).
    """
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    held = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: h for s, h in held.items() if h is not None}  # None: a handler set outside Python, left alone
    for s in previous:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)  # to the previous handler: KeyboardInterrupt, Terminated, the default or nothing
