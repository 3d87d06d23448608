"""How a dlx process ends: its entry runs, then the process exits with ``os._exit`` once its streams are flushed.

Imports nothing heavy: the command line's entry point uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn


def end_process(entry: Callable[[], object]) -> NoReturn:
    """Run a multi-process run's entry in this process, then end the process with ``os._exit``.

    DistributedDataParallel keeps its process group alive after ``destroy_process_group`` (a reference cycle in
    its C++ reducer), so gloo's threads still run when the interpreter finalizes; there they can abort the process
    ("terminate called without an active exception": seen about once in 50 torchrun runs on 2 loaded cores)
    after the run ended well. Everything is on disk before the entry returns (status, checkpoints, trackers
    finished), so this process only flushes its streams and logs and skips the finalization.
    """
    try:
        entry()
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing to save
            stream.flush()
    os._exit(code)
