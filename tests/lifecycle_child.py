"""A real ``dlx train`` process that announces one moment of its life and waits there for a signal.

    python -m tests.lifecycle_child MOMENT MARKER dlx-train-args...

MOMENT: ``step`` (inside the second epoch's steps), ``validation`` (the first epoch's validation pass),
``final`` (the final test pass), ``pictures`` (while drawing the run's pictures). When the process reaches
it, it creates MARKER and sleeps until a signal ends it (at most 60 s, then carries on). Used by
tests/test_lifecycle.py; nothing else is changed about the run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def wait_here(marker: Path) -> None:
    marker.write_text("here")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.02)  # a signal handler that raises ends the sleep


def main() -> None:
    moment, marker, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    import dlx.train
    from dlx.cli import main as dlx_main

    real_penalty, real_evaluate, real_report = dlx.train.penalty, dlx.train.evaluate, dlx.train.write_report
    calls = {"penalty": 0, "evaluate": 0}

    def penalty(*a: Any, **k: Any) -> Any:
        calls["penalty"] += 1
        if moment == "step" and calls["penalty"] == 11:  # 8 steps an epoch: step 3 of epoch 2
            wait_here(marker)
        return real_penalty(*a, **k)

    def evaluate(*a: Any, **k: Any) -> Any:
        calls["evaluate"] += 1
        if moment == "validation" and calls["evaluate"] == 2:  # 1: training sample, 2: validation of epoch 1
            wait_here(marker)
        if moment == "final" and k.get("want_preds"):
            wait_here(marker)
        return real_evaluate(*a, **k)

    def write_report(*a: Any, **k: Any) -> Any:
        if moment == "pictures":
            wait_here(marker)
        return real_report(*a, **k)

    dlx.train.penalty, dlx.train.evaluate, dlx.train.write_report = penalty, evaluate, write_report
    sys.argv = ["dlx", *args]
    dlx_main()


if __name__ == "__main__":
    main()
