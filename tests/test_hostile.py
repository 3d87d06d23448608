"""Hostile experiment files: each must end as exit 2 and one line ``error: ...``, never a traceback, a hang, a run
folder or code that runs. Every config here has one problem, so one line is the whole output.

Each goes through ``dlx train <file> --dry-run`` (CliRunner; one real subprocess checks stderr as a user sees it).

Settings caught only when the training objects are built (optimizer.args.betas [2, 3], schedule.args.step_size 0,
OneCycle with too few steps, augment.crop_padding above the image size) are exit-2 config errors too, tested in
tests/test_integrity.py. Problems of the environment rather than the file stay exit 1 (data.val_size larger than
the training set, train.device cuda:N without CUDA), and so do class_paths that build but fail on an image
(torch.nn:Module, torch.nn:Sequential) or ask for 10**12 units (the allocation fails at once).
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
    text: str | bytes | None  # the experiment file (None: a folder); {tmp} is the test's folder, MARKER lies there
    expect: str | tuple[str, ...]  # pieces of the one error line
    files: tuple[tuple[str, str], ...] = ()  # other files next to it: (name, text)
    args: tuple[str, ...] = ()  # more command-line arguments (--set)


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
    Case("top-level-is-a-folder", None, "x.yaml: is a folder, not a YAML file"),
    Case("two-documents", "name: x\n---\nname: y\n", "not valid YAML"),
    Case("duplicate-anchor", "name: x\na: &a 1\nb: &a 2\nseed: *a\n", "not valid YAML"),
    Case("undefined-alias", "name: x\nseed: *nowhere\n", "not valid YAML"),
]

FINITE = "input should be a finite number"
SEED_64 = "a seed must fit in 64 bits: -2**63 <= seed < 2**63"

# (key, value as YAML, a piece of the error): every numeric key of the schema, with values that are never right.
NUMBERS = [
    ("seed", "2**70", str(2**70), SEED_64),
    ("seed", "2**63", str(2**63), SEED_64),
    ("seed", ".nan", ".nan", FINITE),
    ("seed", "1e30", "1e30", "seed: got 1e+30"),
    ("data.split_seed", "-2**63-1", str(-(2**63) - 1), SEED_64),
    ("data.batch_size", "-1", "-1", "greater than or equal to 1"),
    ("data.batch_size", "0", "0", "greater than or equal to 1"),
    ("data.batch_size", "1e30", "1e30", "data.batch_size: got 1e+30"),
    ("data.batch_size", ".nan", ".nan", FINITE),
    ("data.eval_batch_size", "0", "0", "greater than or equal to 1"),
    ("data.val_size", "-1", "-1", "greater than or equal to 0"),
    ("data.train_size", "0", "0", "greater than or equal to 1"),
    ("data.test_size", ".inf", ".inf", FINITE),
    ("optimizer.lr", ".inf", ".inf", FINITE),
    ("optimizer.lr", "-1", "-1", "greater than 0"),
    ("optimizer.lr", ".nan", ".nan", FINITE),
    ("optimizer.lr", "0", "0", "greater than 0"),
    ("optimizer.weight_decay", ".inf", ".inf", FINITE),
    ("optimizer.weight_decay", "-1", "-1", "greater than or equal to 0"),
    ("optimizer.head_lr", ".nan", ".nan", FINITE),
    ("model.width", ".inf", ".inf", FINITE),  # was an OverflowError traceback
    ("model.width", "0", "0", "greater than 0"),
    ("model.width", "-1", "-1", "greater than 0"),
    ("model.width", ".nan", ".nan", FINITE),
    ("model.width", "1e30", "1e30", "less than or equal to 64"),  # was a TypeError traceback
    ("model.depth", ".inf", ".inf", FINITE),
    ("model.depth", "0", "0", "greater than 0"),
    ("model.depth", ".nan", ".nan", FINITE),
    ("model.depth", "1e30", "1e30", "less than or equal to 64"),  # was a MemoryError after minutes
    ("regularization.l1", ".inf", ".inf", FINITE),
    ("regularization.l2", ".nan", ".nan", FINITE),
    ("regularization.l2", "-1", "-1", "greater than or equal to 0"),
    ("regularization.dropout", ".nan", ".nan", FINITE),
    ("regularization.dropout", "1", "1", "less than 1"),
    ("augment.rotate", ".inf", ".inf", FINITE),
    ("augment.rotate", "-1", "-1", "greater than or equal to 0"),
    ("augment.translate", ".nan", ".nan", FINITE),
    ("augment.scale", "[1, .inf]", "[1, .inf]", "augment.scale.1: got inf; " + FINITE),
    ("augment.scale", "[.nan, 1]", "[.nan, 1]", FINITE),
    ("augment.scale", "[0, 1]", "[0, 1]", "need [low, high] with 0 < low <= high"),
    ("augment.scale", "[2, 1]", "[2, 1]", "need [low, high] with 0 < low <= high"),
    ("augment.crop_padding", "10**12", str(10**12), "less than or equal to 4096"),
    ("augment.crop_padding", "-1", "-1", "greater than or equal to 0"),
    ("augment.brightness", ".nan", ".nan", FINITE),
    ("augment.contrast", ".inf", ".inf", FINITE),
    ("train.epochs", "0", "0", "greater than or equal to 1"),
    ("train.epochs", ".inf", ".inf", FINITE),
    ("train.grad_clip", ".nan", ".nan", FINITE),
    ("train.grad_clip", ".inf", ".inf", FINITE),
    ("train.grad_clip", "0", "0", "greater than 0"),
    ("train.early_stopping", "0", "0", "greater than or equal to 1"),
    ("train.eval_every", "0", "0", "greater than or equal to 1"),
    ("train.log_every", "-5", "-5", "greater than or equal to 1"),
    ("train.train_sample", "0", "0", "greater than or equal to 1"),
    ("schedule.warmup_epochs", ".inf", ".inf", FINITE),
    ("schedule.warmup_epochs", ".nan", ".nan", FINITE),
    ("schedule.warmup_epochs", "-1", "-1", "greater than or equal to 0"),
    ("init.bias", ".inf", ".inf", FINITE),
    ("output.gallery_size", "-1", "-1", "greater than or equal to 0"),
]


def number_case(key: str, shown: str, value: str, expect: str) -> Case:
    """The line names the key (``x.yaml: optimizer.lr: got inf; ...``) and says what is wrong."""
    section, _, field = key.partition(".")
    text = f"{key}: {value}\n" if not field else f"{section}: {{{field}: {value}}}\n"
    if section == "init":
        text = f"init: {{name: normal, {field}: {value}}}\n"  # a bias needs an initializer other than 'default'
    return Case(f"{key}={shown}", "name: x\n" + text, (f"x.yaml: {key}", expect))


NUMBER_CASES = [number_case(*row) for row in NUMBERS]

MARK = "init_args: {args: [touch, '{tmp}/MARKER']}"  # what runs, if a class_path were called
NOT_A_CLASS = "is a function, not an nn.Module class"

CLASS_PATHS = [
    Case("class-path-subprocess-run", f"name: x\nmodel: {{class_path: 'subprocess:run', {MARK}}}\n", NOT_A_CLASS),
    Case(
        "class-path-os-system",
        "name: x\nmodel: {class_path: 'os:system', init_args: {command: 'touch {tmp}/MARKER'}}\n",
        NOT_A_CLASS,
    ),
    Case(
        "class-path-eval",
        "name: x\nmodel: {class_path: 'builtins:eval', init_args: {source: 'open(\"{tmp}/MARKER\", \"w\")'}}\n",
        NOT_A_CLASS,
    ),
    Case(
        "class-path-shutil-rmtree",
        "name: x\nmodel: {class_path: 'shutil:rmtree', init_args: {path: '{tmp}/keep'}}\n",
        NOT_A_CLASS,
    ),
    Case(
        "class-path-module",
        "name: x\nmodel: {class_path: 'os:path'}\n",
        "'os:path' is a module, not an nn.Module class",
    ),
    Case(
        "class-path-nonexistent",
        "name: x\nmodel: {class_path: 'no_such_package_dlx.nets:Net'}\n",
        "cannot import 'no_such_package_dlx.nets:Net' (No module named 'no_such_package_dlx')",
    ),
    Case(
        "class-path-missing-attribute",
        "name: x\nmodel: {class_path: 'tests.custom_net:Nope'}\n",
        "'tests.custom_net' has no 'Nope'",
    ),
    Case(
        "class-path-not-a-module-class",
        "name: x\nmodel: {class_path: 'pathlib:Path'}\n",
        "'pathlib:Path' is a class but not a subclass of torch.nn.Module",
    ),
    Case("class-path-type", "name: x\nmodel: {class_path: 'builtins:type'}\n", "is a class but not a subclass"),
    Case("class-path-constant", "name: x\nmodel: {class_path: 'math:pi'}\n", "'math:pi' is a float, not an nn.Module"),
    Case("class-path-no-colon", "name: x\nmodel: {class_path: 'os.system'}\n", "expected 'package.module:ClassName'"),
    Case("class-path-empty", "name: x\nmodel: {class_path: ''}\n", "expected 'package.module:ClassName'"),
    Case("class-path-relative", "name: x\nmodel: {class_path: '.nets:Net'}\n", "cannot import '.nets:Net'"),
    Case("class-path-not-a-string", "name: x\nmodel: {class_path: 5}\n", "input should be a valid string"),
]

EXTENDS = [
    Case("extends-itself", "extends: x.yaml\nname: x\n", "extends: cycle"),
    Case("extends-cycle", "extends: b.yaml\nname: x\n", "extends: cycle", (("b.yaml", "extends: x.yaml\n"),)),
    Case("extends-missing-file", "extends: nope.yaml\nname: x\n", "extends: file not found"),
    Case("extends-not-a-string", "extends: [a.yaml]\nname: x\n", "extends: got ['a.yaml']; expected a path"),
    Case("extends-a-number", "extends: 5\nname: x\n", "extends: got 5; expected a path"),
    Case("extends-a-folder", "extends: sub\nname: x\n", "extends: is a folder, not a YAML file"),
    Case("extends-a-name-too-long", "extends: " + "a" * 5000 + "\nname: x\n", "extends: cannot read"),
]

STRUCTURE = [
    Case("empty-key", "name: x\n'': 1\n", "x.yaml: '': unknown key"),
    Case("empty-key-in-a-section", "name: x\nmodel: {'': 1}\n", "model.'': unknown key"),
    Case("key-with-a-newline", 'name: x\n"a\\nb": 1\n', "'a\\nb': unknown key"),
    Case(
        "args-key-with-a-newline",
        'name: x\noptimizer: {args: {"a\\nb": 1}}\n',
        "x.yaml: optimizer.args.'a\\nb': unknown argument",
    ),
    Case("args-key-with-a-space", "name: x\noptimizer: {args: {a b: 1}}\n", "x.yaml: optimizer.args.'a b': unknown"),
    Case(
        "init-args-key-empty",
        "name: x\nmodel: {class_path: 'tests.custom_net:TinyNet', init_args: {'': 1}}\n",
        "x.yaml: model.init_args.'': unknown argument for tests.custom_net:TinyNet",
    ),
    Case("integer-key", "name: x\n1: 2\n", "keys should be strings"),
    Case("null-key", "name: x\n~: 2\n", "keys should be strings"),
    Case("section-is-a-number", "name: x\nmodel: 5\n", "model: got 5; input should be a valid dictionary"),
    Case("section-is-a-list", "name: x\ntrain: [1]\n", "train: got [1]; input should be a valid dictionary"),
    Case("name-empty", "name: ''\n", "name: got ''; string should match pattern"),
    Case("name-climbs-out", "name: ../../etc\n", "name: got '../../etc'; string should match pattern"),
    Case("name-with-a-newline", 'name: "x\\n"\n', "name: got 'x\\n'; string should match pattern"),
    Case("name-too-long", f"name: {'a' * 1000}\n", "string should have at most 100 characters"),
    Case("device-a-list", "name: x\ntrain: {device: [cpu]}\n", "train.device: got ['cpu']"),
    Case("precision-unknown", "name: x\ntrain: {precision: fp8}\n", "train.precision: got 'fp8'; allowed"),
]

SET = "quote a string value, e.g. --set name='\"a: b\"'"
OVERRIDES = [
    Case("set-not-yaml", "name: x\n", "--set 'optimizer.lr=[1,': not valid YAML", args=("--set", "optimizer.lr=[1,")),
    Case("set-not-yaml-string", "name: x\n", SET, args=("--set", "data.data_dir=@home")),
    Case("set-nesting-1000", "name: x\n", TOO_DEEP, args=("--set", f"seed={'[' * 1000}{']' * 1000}")),
    Case("set-no-equals", "name: x\n", "expected KEY=VALUE with a dotted key", args=("--set", "nonsense")),
    Case(
        "set-class-path-function",
        "name: x\n",
        NOT_A_CLASS,
        args=("--set", "model.class_path=subprocess:run", "--set", "model.init_args={args: [touch, {tmp}/MARKER]}"),
    ),
    Case("set-into-a-value", "name: x\nseed: 1\n", "'seed' is not a section", args=("--set", "seed.x=1")),
]

CASES = YAML_CASES + NUMBER_CASES + CLASS_PATHS + EXTENDS + STRUCTURE + OVERRIDES


def write_case(case: Case, folder: Path) -> Path:
    for name, text in case.files:
        (folder / name).write_text(text)
    (folder / "sub").mkdir()
    (folder / "keep").mkdir()
    path = folder / "x.yaml"
    if case.text is None:
        path.mkdir()
    elif isinstance(case.text, bytes):
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


def test_there_are_many_hostile_configs_with_distinct_names() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_config_is_one_clean_line(case: Case, in_tmp: Path) -> None:
    path = write_case(case, in_tmp)
    args = [a.replace("{tmp}", str(in_tmp)) for a in case.args]
    result = runner.invoke(app, ["train", str(path), "--dry-run", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for piece in (case.expect,) if isinstance(case.expect, str) else case.expect:
        assert piece in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (in_tmp / "runs").exists()
    assert not (in_tmp / "MARKER").exists() and (in_tmp / "keep").is_dir()


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
