"""The entry of one process that ``dlx train --devices N`` started (``python -m dlx.rank_entry``).

It reads what the launcher handed it (dlx.launch.LAUNCH_ENV), ends with its parent (Linux), and trains as one
rank of the group; torch's ``@record`` writes a crash's traceback where the launcher reads its root cause.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from dlx.config import config_from_dict
from dlx.distributed import LOST_PEER, from_environment, lost_peer
from dlx.errors import DlxError, first_line
from dlx.group import train_in_group
from dlx.launch import LAUNCH_ENV
from dlx.process_end import end_process


def die_with_parent(parent: int) -> None:
    """Linux: end this process (SIGTERM: its run is saved as interrupted) if the launching process dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_main() -> None:
    """The entry of a process ``launch`` started: train, then exit with the run's outcome."""
    import typer
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

    from dlx.cli_app import guarded

    spec = json.loads(os.environ.pop(LAUNCH_ENV))
    die_with_parent(spec["parent"])
    sys.argv = spec["argv"]  # the run records the command the user typed

    @record
    def body() -> None:
        world = from_environment()
        if world is None:
            raise DlxError(f"{LAUNCH_ENV} is set but no launcher environment (RANK, WORLD_SIZE): run dlx train")
        cfg = config_from_dict(spec["config"]).from_file(spec["source_file"])

        def train() -> None:
            try:
                summary = train_in_group(world, cfg, run_path=spec["run"], resume=spec["resume"], claimed=True,
                                         quiet=spec["quiet"])  # fmt: skip
            except DlxError as e:  # the launcher shows this rank's error and writes it into summary.json
                ErrorHandler().record_exception(e)
                raise
            except RuntimeError as e:
                if not lost_peer(e):
                    raise  # a crash of this rank: its traceback
                lost = DlxError(f"{LOST_PEER} ({first_line(e)})")  # a consequence: the launcher looks past it
                ErrorHandler().record_exception(lost)
                raise lost from None
            if summary["status"] != "completed":
                sys.exit(1)

        try:
            guarded(train, say_interrupt=False)  # the launcher says it once
        except typer.Exit as e:  # what guarded raises for the command line: this process's exit code
            sys.exit(e.exit_code)

    end_process(body)


if __name__ == "__main__":
    worker_main()
