"""A sweep worker process: ``python -m dlx.sweep_worker`` (started by ``dlx sweep``, not by people).

Protocol: ``{"ready": true}`` on stdout once imports are done; then one JSON task per line on stdin
(``{"cell", "run_dir", "config", "retry_failed"}``) and one JSON result per line on stdout
(``dlx.sweep_cell.run_cell``'s dict). EOF on stdin ends the worker.

The process sees only what the sweep gave it: ``CUDA_VISIBLE_DEVICES`` (its GPU) and
``DLX_SWEEP_THREADS`` / ``OMP_NUM_THREADS`` (its share of the CPU cores). It runs in its own session,
so a terminal Ctrl-C reaches it only through the sweep (one SIGINT: the cell in training is saved
as interrupted). If the sweep process dies (SIGKILL), the worker notices it was orphaned and
interrupts itself the same way, so its cell is left resumable and its lock is released.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any


def _watch_parent(parent: int) -> None:
    # Re-parenting (to init or a subreaper) is how a child learns its parent died, on every POSIX system.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGINT)
            return


def _reply(channel: IO[str], result: dict[str, Any]) -> bool:
    try:
        channel.write(json.dumps(result, default=str) + "\n")
        channel.flush()
    except (BrokenPipeError, OSError):
        return False  # the sweep is gone; nobody to tell
    return True


def main() -> int:
    # SIGINT must raise KeyboardInterrupt here even when the sweep was started with SIGINT ignored
    # (a background job inherits SIG_IGN): it is how a cell in training is saved as interrupted.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # Results go to a private copy of stdout; anything else printed (warnings, libraries) goes to the log.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        import torch

        threads = int(os.environ.get("DLX_SWEEP_THREADS") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
            torch.set_num_interop_threads(max(1, min(threads, 2)))
        import dlx.train  # noqa: F401 - import everything once, before the first task
        from dlx.sweep_cell import run_cell

        if not _reply(channel, {"ready": True}):
            return 1
        for line in sys.stdin:
            if not line.strip():
                continue
            task = json.loads(line)
            try:
                result = run_cell(task["run_dir"], task["config"], retry_failed=bool(task.get("retry_failed")))
            except KeyboardInterrupt:
                # fit saved the run as interrupted; report it and stop: the sweep is shutting down.
                _reply(channel, {"outcome": "interrupted", "status": "interrupted", "message": "interrupted"})
                return 130
            except Exception as e:  # a broken task must not take the other cells down with this process
                result = {"outcome": "trained", "status": "failed", "message": f"{type(e).__name__}: {e}"}
            result["cell"] = task.get("cell")
            if not _reply(channel, result):
                return 1
    except KeyboardInterrupt:
        return 130  # interrupted while idle or starting: nothing to save
    return 0


if __name__ == "__main__":
    sys.exit(main())
