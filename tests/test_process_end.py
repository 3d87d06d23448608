"""How a dlx process ends (dlx.process_end): the interpreter's exit steps and exit codes, without its finalization."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("body", "code", "stdout", "stderr"),
    [
        ("print('done', end='')", 0, "done", ""),
        ("print('partial', end=''); sys.exit(3)", 3, "partial", ""),
        ("sys.exit('refused: a reason')", 1, "", "refused: a reason"),
        ("raise ValueError('a crash')", 1, "", "ValueError: a crash"),
        ("raise KeyboardInterrupt", 130, "", ""),
        # The interpreter's own exit steps still run: atexit handlers, then nothing is lost from a non-daemon thread.
        ("import atexit; atexit.register(lambda: print('atexit ran', end=''))", 0, "atexit ran", ""),
        (
            "import threading, time; threading.Thread(target=lambda: (time.sleep(0.5), print('thread', end=''))).start()",
            0,
            "thread",
            "",
        ),
        (
            "import logging; logging.basicConfig(filename=sys.argv[1], level=logging.INFO); logging.info('logged')",
            0,
            "",
            "",
        ),
    ],
)
def test_end_process_exits_with_the_entry_outcome_and_flushes(
    tmp_path: Path, body: str, code: int, stdout: str, stderr: str
) -> None:
    program = f"import sys\nfrom dlx.process_end import end_process\ndef entry():\n    {body}\nend_process(entry)\n"
    log = tmp_path / "log.txt"
    done = subprocess.run(
        [sys.executable, "-c", program, str(log)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code
    assert done.stdout == stdout
    assert stderr in done.stderr
    if "logging" in body:
        assert log.read_text() == "INFO:root:logged\n"


def test_the_command_line_ends_with_its_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "dlx", "--version"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0
    assert ok.stdout.startswith("dlx ")
    bad = subprocess.run(
        [sys.executable, "-m", "dlx", "train", str(tmp_path / "missing.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "missing.yaml" in bad.stderr
