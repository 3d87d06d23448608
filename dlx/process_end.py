"""How a dlx process ends: the interpreter's own exit steps, then ``os._exit`` instead of its finalization.

Python ends a process in steps: it waits for non-daemon threads (``threading._shutdown``), runs the
``atexit`` handlers, flushes the standard streams, then finalizes -- tears down every module and
collects every object. With PyTorch loaded that last step takes about 1 s on a small CPU (0.7 s for
``import torch`` alone, 1.0 s once an optimizer has imported ``torch._dynamo``), and it is where
gloo's threads, kept alive by DistributedDataParallel after ``destroy_process_group`` (a reference
cycle in its C++ reducer), can abort a rank that ended well ("terminate called without an active
exception": about once in 50 torchrun runs on 2 loaded cores). Everything a command writes is on disk
before its entry returns (atomic writes, status, checkpoints, trackers finished), so a dlx process
takes the first three steps and skips the fourth. Imports nothing heavy: the command line's entry uses it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def exit_code(entry: Callable[[], object]) -> int:
    """Run ``entry`` and return the exit code the interpreter would give its outcome (printing what it would)."""
    try:
        entry()
        return 0
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the interpreter's (or the CLI framework's) traceback printer
        return 1


def end_process(entry: Callable[[], object]) -> NoReturn:
    """Run the process's entry, then end it as the interpreter would, without its finalization.

    Non-daemon threads are waited for and ``atexit`` handlers run (trackers, logging, multiprocessing's
    children), the streams are flushed, then ``os._exit`` with the entry's exit code: 0, ``sys.exit(n)``'s
    n, 1 with the message for ``sys.exit("...")`` or a crash (its traceback printed), 130 for Ctrl-C.
    """
    code = exit_code(entry)
    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if shutdown_threads is None or run_exit_handlers is None:  # an interpreter without these steps: its own exit
        sys.exit(code)
    shutdown_threads()
    run_exit_handlers()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing to save
            stream.flush()
    os._exit(code)
