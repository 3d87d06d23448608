"""``python -m dlx``: the command line, also as a launcher starts it (``torchrun -m dlx train X.yaml``).

Under torchrun the entry is wrapped in torch's ``@record``: a crash writes its traceback into the error file
the elastic agent reads, so torchrun's report names the failing rank's error. Like the ``dlx`` command, the
process ends through ``dlx.process_end.end_process``: no interpreter finalization
(about 1 s with PyTorch loaded, and where gloo's threads can abort a rank).
"""

from __future__ import annotations

import os
from typing import NoReturn

from dlx.cli import run_app
from dlx.process_end import end_process


def run() -> NoReturn:
    entry = run_app
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from torch.distributed.elastic.multiprocessing.errors import record

        entry = record(run_app)
    end_process(entry)


if __name__ == "__main__":
    run()
