"""Run folders read for a comparison: a record per run, a reason per folder that is not one.

What a run folder is, and where to look for them, is dlx.runs' business (``find_runs``); this module
reads the files of each and turns broken, partial or foreign folders into ``Skipped`` lines that
never stop a comparison.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlx.diagnose import diagnose
from dlx.errors import DlxError, first_line
from dlx.runs import CONFIG_FILE, METRICS_JSONL, METRICS_STEPS, RUN_FILES, STATUSES, SUMMARY_FILE, Run, find_runs


@dataclass
class RunRecord:
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    diagnosis: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.summary.get('name', self.path.parent.name)}/{self.summary.get('run_id', self.path.name)}"


@dataclass
class Skipped:
    path: Path
    reason: str


MAX_DEPTH = 32  # dlx writes 4 levels at most; deeper is not a run's file
MAX_VALUES = 100_000  # a resolved config holds ~70, a summary ~50
MAX_C_OPENERS = 1_000  # see yaml_loader
_C_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)
# dlx writes a few KB (metrics_steps.jsonl: ~150 bytes every train.log_every steps; read for --x step only)
MAX_BYTES = {SUMMARY_FILE: 1 << 20, CONFIG_FILE: 1 << 20, METRICS_JSONL: 64 << 20, METRICS_STEPS: 64 << 20}
NUMBER = "a number"
TEXT = "text"
MAPPING = "a mapping"
# What compare reads from a summary.json, and what each must be when present (null counts as absent).
SUMMARY_FIELDS: dict[str, str] = {
    "name": TEXT, "run_id": TEXT, "model": MAPPING, "model.name": TEXT, "model.width": NUMBER,
    "model.depth": NUMBER, "seed": NUMBER, "num_classes": NUMBER, "parameters": NUMBER, "flops_per_image": NUMBER,
    "best_val_acc": NUMBER, "test_acc": NUMBER, "epochs_completed": NUMBER, "wall_seconds": NUMBER,
    "images_per_s": NUMBER, "diagnosis": MAPPING, "diagnosis.verdict": TEXT, "diagnosis.gap": NUMBER,
}  # fmt: skip


_SUMMARY_CHECKS = [(key, *key.rpartition(".")[::2], kind) for key, kind in SUMMARY_FIELDS.items()]


def _is(value: Any, kind: str) -> bool:
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str if kind == TEXT else dict)


_JSON_SCALARS = (str, int, float, bool, type(None))  # what json writes back as it read it


def _shape(data: Any, text_keys: bool = False) -> tuple[str | None, int, bool]:
    """Why the lists and mappings in ``data`` are not a run file's (or None), how many values they hold, and
    whether every value is a JSON scalar (``_JSON_SCALARS``); walked without recursion.

    Nested deeper than MAX_DEPTH (a YAML alias that contains itself is infinitely deep), more than
    MAX_VALUES values counting each alias every time it is used (a "billion laughs" YAML is small on disk
    but never ends when walked), or, with ``text_keys``, a mapping key that is not text.
    """
    stack = [(data, 1)]
    values = 0
    plain = True
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels", values, plain
        values += len(node)
        if values > MAX_VALUES:
            return f"more than {MAX_VALUES:,} values", values, plain
        if isinstance(node, dict):
            if text_keys:
                key = next((k for k in node if not isinstance(k, str)), "")
                if not isinstance(key, str):
                    return f"keys must be text, got {type(key).__name__}", values, plain
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif plain and not isinstance(child, _JSON_SCALARS):
                plain = False
    return None, values, plain


def _summary_problem(summary: Any) -> str | None:
    """Why ``summary`` is not something compare can read, or None."""
    if not isinstance(summary, dict):
        return f"{SUMMARY_FILE}: the top level must be a mapping, got {type(summary).__name__}"
    problem = _shape(summary)[0]
    if problem:
        return f"{SUMMARY_FILE}: {problem}"
    if summary.get("status") not in STATUSES:
        return f"{SUMMARY_FILE} has no valid status (one of {', '.join(STATUSES)})"
    for key, section, name, kind in _SUMMARY_CHECKS:
        node = summary.get(section) if section else summary
        value = node.get(name) if isinstance(node, dict) else None
        if value is not None and not _is(value, kind):
            return f"{SUMMARY_FILE}: {key!r} must be {kind}, got {type(value).__name__}"
    return None


def yaml_loader(text: str) -> type[Any]:
    """libyaml's safe loader (``yaml.CSafeLoader``) where PyYAML has it, unless ``text`` could nest deep.

    Comparing thousands of runs was 95% pure-Python YAML. libyaml builds nested nodes by C recursion and
    kills the process (SIGSEGV) near 100,000 levels, where the pure-Python loader raises a RecursionError
    that becomes a skip reason. Every level of YAML nesting opens with one of ``[ { - ? :``, so a text with
    at most MAX_C_OPENERS of them cannot nest deeper than that: only such texts go to libyaml (a resolved
    dlx config has ~80; 10,000 levels were measured safe).
    """
    if _C_LOADER is not None and sum(map(text.count, "[{-?:")) <= MAX_C_OPENERS:
        return _C_LOADER
    return yaml.SafeLoader


# A line that starts a top-level entry (not indented, not a list item, not a comment), and a simple key.
_ENTRY = re.compile(r"^(?![ \t\r\n#-])", re.MULTILINE)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*:(?=[ \t\r\n]|\Z)")
# Top-level entry as YAML -> the same entry as JSON ('"key": value') and how many values it holds. A sweep's
# configs differ in a few lines (seed, width, depth, lr): each distinct entry is parsed once per comparison.
_entries: dict[str, tuple[str, int]] = {}


def _entry_json(entry: str, loader: type[Any]) -> tuple[str, int] | None:
    """One top-level entry of a config.yaml as JSON, or None when JSON would not give back what YAML reads."""
    try:
        data = yaml.load(entry, Loader=loader)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    problem, values, plain = _shape(data, text_keys=True)
    if problem or not plain:
        return None
    return json.dumps(data)[1:-1], values


def _yaml_by_entries(text: str, loader: type[Any]) -> dict[str, Any] | None:
    """``yaml.safe_load(text)`` put together from its top-level entries, each parsed once per comparison.

    None (read the whole text instead) unless ``text`` is a block mapping of simple keys whose every
    entry is complete YAML on its own with JSON's values: a flow collection, a quoted scalar or an alias
    that spans two entries leaves the first incomplete (an error: None), and a plain or block scalar
    ends at an unindented line, so the entries read alone are the entries read together. JSON keeps a
    repeated key's first place and last value, as PyYAML does. Document markers and anchors give None.
    """
    if not _KEY.match(text) or "\n---" in text or "\n..." in text or "&" in text:
        return None  # one document of simple keys, and no anchors (the same anchor twice is an error)
    starts = [m.start() for m in _ENTRY.finditer(text)]
    parts, values = [], 0
    for start, end in itertools.pairwise([*starts, len(text)]):
        entry = text[start:end]
        if not entry:
            continue
        cached = _entries.get(entry)
        if cached is None:
            if not _KEY.match(entry):
                return None
            cached = _entry_json(entry, loader)
            if cached is None:
                return None
            _entries[entry] = cached
        parts.append(cached[0])
        values += cached[1]
    if values > MAX_VALUES:
        return None
    return json.loads("{" + ",".join(parts) + "}")


def _parse_config(text: str) -> dict[str, Any] | str:
    """A run's config.yaml as a mapping, or why it is not one.

    Read here rather than with dlx.config.read_yaml: dlx wrote the file, compare reads thousands of them
    (libyaml where it is safe, see ``yaml_loader``; each distinct top-level entry once, see
    ``_yaml_by_entries``), and every problem is a skip reason, not a ConfigError.
    """
    loader = yaml_loader(text)
    try:
        data = _yaml_by_entries(text, loader)
        if data is None:
            data = yaml.load(text, Loader=loader)
            if isinstance(data, dict):
                problem = _shape(data, text_keys=True)[0]
                if problem:
                    return problem
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"not valid YAML{where}: {getattr(e, 'problem', None) or first_line(e)}"
    except ValueError as e:  # a 5,000-digit integer, the 45th of a 13th month
        return f"not valid YAML: {first_line(e)}"
    except RecursionError:
        return f"nested deeper than {MAX_DEPTH} levels"
    if data is None:
        return {}
    if not isinstance(data, dict):
        return f"the top level must be a mapping of keys, got {type(data).__name__}"
    return data


class _Unreadable(Exception):
    """A run file that is there but cannot be read: the reason is the message."""


def _read_text(path: Path) -> str | None:
    """The text of a run file, None when there is none; never opens anything but a regular file.

    A FIFO would block the read forever and /dev/zero never ends, so the file is stat'ed first and
    opened without blocking, and the open file is checked again (it may have been swapped since).
    Files larger than MAX_BYTES are not a run's either: dlx writes a few kilobytes.
    """
    name, limit = path.name, MAX_BYTES[path.name]
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _Unreadable(f"{name} unreadable: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise _Unreadable(f"{name} is not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _Unreadable(f"{name} unreadable: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unreadable(f"{name} is not a regular file")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise _Unreadable(f"{name} unreadable: {e.strerror}") from None
    if len(data) > limit:
        raise _Unreadable(f"{name} is larger than {limit >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unreadable(f"{name}: not a UTF-8 text file") from None


_scan_json = json.JSONDecoder().scan_once  # the C scanner behind json.loads


def _json_line(line: str) -> Any:
    """``json.loads(line)``, a third faster: the scanner without the wrapper's two regex matches."""
    text = line.strip(" \t\n\r")  # the whitespace json.loads skips
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return json.loads(line)  # raises the error, with its message
    return value if end == len(text) else json.loads(line)


def _load_run(run: Run) -> RunRecord | Skipped:
    path = run.path
    try:
        summary_text = _read_text(run.summary_path)
        if summary_text is None:
            return Skipped(path, f"partial run: no {SUMMARY_FILE} (never started, or not made by dlx)")
        try:
            summary = json.loads(summary_text)
        except json.JSONDecodeError as e:
            return Skipped(path, f"{SUMMARY_FILE} is not valid JSON (line {e.lineno}: {e.msg})")
        except ValueError as e:  # an integer of more than 4,300 digits
            return Skipped(path, f"{SUMMARY_FILE} is not valid JSON ({first_line(e)})")
        except RecursionError:
            return Skipped(path, f"{SUMMARY_FILE}: nested deeper than {MAX_DEPTH} levels")
        problem = _summary_problem(summary)
        if problem:
            return Skipped(path, problem)
        text = _read_text(run.config_path)
        if text is None:
            return Skipped(path, f"partial run: no {CONFIG_FILE}")
        config = _parse_config(text)
        if isinstance(config, str):
            return Skipped(path, f"{CONFIG_FILE}: {config}")
        lines = (_read_text(run.metrics_path) or "").splitlines()
    except _Unreadable as e:
        return Skipped(path, str(e))
    history: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = _json_line(line)
        except json.JSONDecodeError:
            return Skipped(path, f"{METRICS_JSONL} line {number} is not valid JSON")
        except ValueError as e:
            return Skipped(path, f"{METRICS_JSONL} line {number} is not valid JSON ({first_line(e)})")
        except RecursionError:
            return Skipped(path, f"{METRICS_JSONL} line {number}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(row, dict):
            epoch = row.get("epoch")
            if epoch is not None and not _is(epoch, NUMBER):  # the x of the curves
                kind = type(epoch).__name__
                return Skipped(path, f"{METRICS_JSONL} line {number}: 'epoch' must be a number, got {kind}")
            history.append(row)
    # Recomputed from the history, so runs made before summaries carried a diagnosis get one too.
    classes = summary.get("num_classes")
    kwargs = (
        {"num_classes": classes} if isinstance(classes, int) and not isinstance(classes, bool) and classes > 1 else {}
    )
    diag = diagnose(history, **kwargs) if history else (summary.get("diagnosis") or diagnose([]))
    return RunRecord(path, summary, config, history, diag)


def _not_a_run(path: Path) -> Skipped:
    odd = [name for name in RUN_FILES if os.path.lexists(path / name)]  # there, but not a regular file
    if odd:
        return Skipped(path, f"not a dlx run: {odd[0]} is not a regular file")
    has_files = any(not p.name.startswith(".") and not p.is_dir() for p in path.iterdir())
    reason = f"not a dlx run: no {SUMMARY_FILE}" if has_files else "empty folder (a run that never started?)"
    return Skipped(path, reason)


def load_runs(paths: Iterable[str | Path]) -> tuple[list[RunRecord], list[Skipped]]:
    """Every run folder at or below ``paths``, and every folder that looked like one but is not."""
    runs: list[RunRecord] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()  # overlapping paths (runs/ and runs/grid) list each folder once
    _entries.clear()  # a cache of this comparison's configs, never of an earlier one's
    collecting = gc.isenabled()
    gc.disable()  # every object made here is kept: the collector's passes over them were a fifth of the time
    try:
        for root in map(Path, paths):
            if not root.exists():
                raise DlxError(f"{root}: no such file or folder")
            if not root.is_dir():
                raise DlxError(f"{root}: not a folder; give a run folder, a sweep folder or a folder of runs")
            run_dirs, leaves = find_runs(root)
            others = set(leaves)
            real_root = root.resolve()  # find_runs follows no links below root: the rest of a path is real
            for path in sorted([*run_dirs, *leaves], key=lambda p: p.parts):  # walk order: by name, depth first
                real = real_root / path.relative_to(root)
                if real in seen:
                    continue
                seen.add(real)
                if path in others:
                    skipped.append(_not_a_run(path))
                    continue
                result = _load_run(Run(path))
                (runs if isinstance(result, RunRecord) else skipped).append(result)  # type: ignore[arg-type]
    finally:
        _entries.clear()
        if collecting:
            gc.enable()
    return runs, skipped


@dataclass
class Row:
    """One configuration: a single run, or runs that differ only by seed (mean, std over the runs)."""

    runs: list[RunRecord]
    values: dict[str, Any] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)
