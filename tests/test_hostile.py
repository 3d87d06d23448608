"""Hostile experiment files: each must end as exit 2 and one line ``error: ...``, never a traceback, a hang, a run
folder or code that runs. Every config here has one problem, so one line is the whole output.

Each goes through ``dlx train <file> --dry-run`` (CliRunner; one real subprocess checks stderr as a user sees it).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from tests.conftest import REPO

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes  # the experiment file; {tmp} is the test's folder (MARKER lies there)
    expect: str  # a piece of the one error line
    files: tuple[tuple[str, str], ...] = ()  # other files next to it: (name, text)


def bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(["name: x", *lines, f"seed: *a{levels - 1}", ""])


def nested(levels: int, flow: bool = True) -> str:
    if flow:
        return f"name: x\nseed: {'[' * levels}{']' * levels}\n"
    return "name: x\nseed:\n" + "".join(" " * (2 * i) + "-\n" for i in range(levels)) + " " * (2 * levels) + "- 1\n"


# A mapping of 9 lists of 8, listed 50 times, listed 50 times: 200,000 values from four lines.
MAPPING_BOMB = "name: x\na: &a {" + ", ".join(f"k{i}: [1, 2, 3, 4, 5, 6, 7, 8]" for i in range(9)) + "}\n"
MAPPING_BOMB += f"b: &b [{', '.join(['*a'] * 50)}]\nc: [{', '.join(['*b'] * 50)}]\n"
ALIAS_NESTING = f"name: x\na: &a {'[' * 40}{']' * 40}\nseed: {'[' * 40}*a{']' * 40}\n"

TOO_LARGE = "values once YAML aliases are expanded (at most 100,000); is this an alias bomb?"
TOO_DEEP = "nested deeper than 64 levels"

YAML_CASES = [
    Case("alias-bomb-9-levels", bomb(9), TOO_LARGE),
    Case("alias-bomb-6-levels", bomb(6), TOO_LARGE),
    Case("alias-bomb-in-extends-parent", "extends: parent.yaml\nname: x\n", TOO_LARGE, (("parent.yaml", bomb(9)),)),
    Case("alias-bomb-of-mappings", MAPPING_BOMB, TOO_LARGE),
    Case("nesting-65-levels", nested(64), TOO_DEEP),
    Case("nesting-1000-levels", nested(1000), TOO_DEEP),
    Case("nesting-100000-levels", nested(100_000), TOO_DEEP),  # libyaml's C loader segfaults on this
    Case("nesting-1000-block-style", nested(1000, flow=False), TOO_DEEP),
    Case("nesting-1000-mappings", "name: x\nmodel: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", TOO_DEEP),
    Case("nesting-through-aliases", ALIAS_NESTING, TOO_DEEP),  # 40 levels inside 40: 81 once expanded
    Case("recursive-alias", "name: x\nseed: &a [1, *a]\n", "a YAML alias refers to a value that contains it"),
    Case("date-that-does-not-exist", "name: x\nseed: 2001-13-45\n", "cannot read a value (month must be in 1..12)"),
    Case("integer-of-5000-digits", "name: x\nseed: " + "9" * 5000 + "\n", "cannot read a value (Exceeds the limit"),
    Case("python-tag", "name: !!python/object/apply:os.system ['touch {tmp}/MARKER']\n", "not valid YAML"),
    Case("binary-garbage", bytes(range(256)) * 4, "not a UTF-8 text file"),
    Case("nul-bytes", "name: x\n\0\0\0\n", "not valid YAML"),
    Case("top-level-list", "- name: x\n", "the top level must be a mapping of keys, got list"),
    Case("top-level-scalar", "just a string\n", "the top level must be a mapping of keys, got str"),
    Case("two-documents", "name: x\n---\nname: y\n", "not valid YAML"),
    Case("duplicate-anchor", "name: x\na: &a 1\nb: &a 2\nseed: *a\n", "not valid YAML"),
    Case("undefined-alias", "name: x\nseed: *nowhere\n", "not valid YAML"),
]

CASES = YAML_CASES


def write_case(case: Case, folder: Path) -> Path:
    for name, text in case.files:
        (folder / name).write_text(text)
    path = folder / "x.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text.replace("{tmp}", str(folder)))
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder as the working directory (a default runs/ would land there); sys.path restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_config_is_one_clean_line(case: Case, in_tmp: Path) -> None:
    path = write_case(case, in_tmp)
    result = runner.invoke(app, ["train", str(path), "--dry-run"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {in_tmp}/"), result.output  # x.yaml or a parent
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (in_tmp / "runs").exists()
    assert not (in_tmp / "MARKER").exists()


def test_a_hostile_config_in_a_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(bomb(9))
    done = subprocess.run(
        [sys.executable, "-m", "dlx.cli", "train", str(path), "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {path}: too large: ") and line.endswith(TOO_LARGE), line
