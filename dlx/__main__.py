"""``python -m dlx``: the command line, also as a launcher starts it (``torchrun -m dlx train X.yaml``).

Under torchrun the entry is wrapped in torch's ``@record``: a crash writes its traceback into the error file
the elastic agent reads, so torchrun's report names the failing rank's error. A process of a multi-process run
(WORLD_SIZE > 1) ends through ``dlx.process_end.end_process``: no interpreter finalization with gloo's threads.
"""

from __future__ import annotations

import os
import sys

from dlx.cli import main


def run() -> None:
    entry = main
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from torch.distributed.elastic.multiprocessing.errors import record

        entry = record(main)
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):  # a bad value: main names it
        from dlx.process_end import end_process

        end_process(entry)
    entry()


if __name__ == "__main__":
    sys.exit(run())
