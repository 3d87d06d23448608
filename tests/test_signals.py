"""dlx.signals: SIGTERM ends a run like Ctrl-C, and both wait while a block that must finish runs."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from dlx.signals import Terminated, signals_deferred, sigterm_as_interrupt


def signal_from_another_thread(signum: int) -> tuple[threading.Thread, threading.Event]:
    """A thread started now (so it does not inherit any mask set later) that sends ``signum`` to the process
    when told: the kernel may hand a process-directed signal to any thread, as it does to torch's workers."""
    go = threading.Event()

    def send() -> None:
        go.wait(10)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, go


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_inside_the_block_is_delivered_when_it_ends(signum: int, raised: type[BaseException]) -> None:
    finished = False
    with sigterm_as_interrupt():
        thread, go = signal_from_another_thread(signum)
        with pytest.raises(raised), signals_deferred():
            go.set()
            thread.join()
            time.sleep(0.2)  # a handler that raised would have raised here
            finished = True
    assert finished


def test_without_a_signal_the_block_changes_nothing() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with signals_deferred():
        pass
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before
