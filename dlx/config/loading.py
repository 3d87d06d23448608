"""YAML in, a validated ``ExperimentConfig`` out: the only place dlx reads raw YAML.

``load_config`` reads the file (safe YAML, ``DlxLoader``), follows ``extends:``, applies ``--set key=value``
overrides and validates everything at once, reporting *every* problem as one line.

Every YAML dlx reads (experiment files, their extends parents, sweep files, a run's config.yaml, ``--set``
values) goes through ``load_yaml_text``, which bounds what a file can make dlx build: at most ``MAX_DEPTH``
levels of nesting and ``MAX_VALUES`` values once aliases are expanded (a 'billion laughs' alias bomb is a
few lines of YAML), each refused with one line before anything walks the data.
"""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlx.config.messages import _format_value, format_errors
from dlx.config.schema import ExperimentConfig
from dlx.errors import ConfigError, DlxError, first_line

# libyaml's parser when PyYAML was built with it (many times faster), else the pure-Python one; both safe.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DlxLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The YAML dlx reads: PyYAML's safe loader, and ``1e-3`` is a float. A subclass, so that PyYAML's own
    loaders stay as they are."""


# YAML 1.1 (PyYAML) wants a dot and a signed exponent (1.0e-3): 1e-3 and 5E4 would be strings. Only plain decimal
# digits, so nothing else that Python's float() happens to accept (1_0e3, non-ASCII digits) becomes a number.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+\Z")
DlxLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


MAX_DEPTH = 64  # levels of nesting (the top-level mapping is one); an experiment needs about five
MAX_VALUES = 100_000  # values once aliases are expanded; an experiment has about a hundred


def _yaml_problem(e: yaml.YAMLError) -> tuple[str, str]:
    """(' (line L, column C)', problem) of a YAML error."""
    where = ""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})"
    return where, getattr(e, "problem", None) or first_line(e)


def _check_nesting(text: str, label: str) -> None:
    """Nesting counted on the parser's events, before the loader builds anything: its composer recurses once per
    level (RecursionError in Python; libyaml's C loader crashes the interpreter at about 100,000 levels)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=DlxLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError([f"{label}: nested deeper than {MAX_DEPTH} levels"])
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as e:
        # PyYAML >= 6.0.3 stops its scanner at its own depth limit, before the event that passes dlx's.
        if "nesting depth" in str(getattr(e, "problem", None) or ""):
            raise ConfigError([f"{label}: nested deeper than {MAX_DEPTH} levels"]) from None
        raise


def _check_size(data: Any, label: str) -> None:
    """Count the values of ``data`` as if its YAML aliases were expanded, without expanding them: a node that
    aliases share is counted once and its count reused (memo by id). Aliases also nest (an anchor inside an
    anchor inside ...) and can refer to a value holding them: both are refused here too."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values, levels of nesting)
    open_: set[int] = set()

    def measure(node: Any, depth: int) -> tuple[int, int]:
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return 1, 0
        key = id(node)
        if key in open_:
            raise ConfigError([f"{label}: a YAML alias refers to a value that contains it (a recursive structure)"])
        if key not in sizes:
            if depth > MAX_DEPTH:
                raise ConfigError([f"{label}: nested deeper than {MAX_DEPTH} levels"])
            open_.add(key)
            count, height = 1, 0
            for child in children:
                n, h = measure(child, depth + 1)
                count, height = count + n, max(height, h)
            open_.discard(key)
            sizes[key] = (count, height + 1)
        count, height = sizes[key]
        if depth + height - 1 > MAX_DEPTH:
            raise ConfigError([f"{label}: nested deeper than {MAX_DEPTH} levels"])
        return count, height

    count, _ = measure(data, 1)
    if count > MAX_VALUES:
        raise ConfigError(
            [
                f"{label}: too large: {count:,} values once YAML aliases are expanded (at most {MAX_VALUES:,}); "
                "is this an alias bomb?"
            ]
        )


def load_yaml_text(text: str, label: str, *, hint: str | None = None) -> Any:
    """Safe YAML -> Python data, within dlx's bounds (nesting, expanded size); ConfigError with one line otherwise.
    ``hint``: a YAML syntax error reads ``label: not valid YAML (problem); hint`` (a --set value has no lines)."""
    try:
        _check_nesting(text, label)
        data = yaml.load(text, Loader=DlxLoader)  # DlxLoader is a SafeLoader
    except yaml.YAMLError as e:
        where, problem = _yaml_problem(e)
        if hint is not None:
            raise ConfigError([f"{label}: not valid YAML ({problem}); {hint}"]) from None
        raise ConfigError([f"{label}: not valid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{label}: nested deeper than {MAX_DEPTH} levels"]) from None
    except (ValueError, OverflowError) as e:  # a date that does not exist, an integer of 5,000 digits
        raise ConfigError([f"{label}: cannot read a value ({first_line(e).split('; use sys.')[0]})"]) from None
    _check_size(data, label)
    return data


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a YAML file ('file not found', 'is a folder, ...'), or None when it can."""
    try:
        if path.is_file():
            return None
        return "is a folder, not a YAML file" if path.is_dir() else "file not found"
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte
        return f"cannot read ({getattr(e, 'strerror', None) or e})"


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    problem = _not_a_file(path)
    if problem is not None:
        raise ConfigError([f"{label}: {problem}"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not a UTF-8 text file"]) from None
    except OSError as e:
        raise ConfigError([f"{label}: cannot read ({e.strerror or e})"]) from None
    data = load_yaml_text(text, label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{label}: the top level must be a mapping of keys, got {type(data).__name__}"])
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key; anything else in ``override`` replaces ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    label = str(path)
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ConfigError([f"{label}: extends: cycle ({chain})"])
    data = _read_yaml(path, label)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(
            [f"{label}: extends: got {_format_value(parent)}; expected a path to another experiment file"]
        )
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    problem = _not_a_file(parent_path)
    if problem is not None:
        shown = str(parent_path) if len(str(parent_path)) <= 200 else str(parent_path)[:197] + "..."
        raise ConfigError([f"{label}: extends: {problem}: {shown}"])
    return deep_merge(_resolve_extends(parent_path, (*seen, resolved)), data)


_SET_HINT = """quote a string value, e.g. --set name='"a: b"'"""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``optimizer.lr=0.01`` -> (['optimizer', 'lr'], 0.01); the value is read as YAML, and a value that is not
    valid YAML is a ConfigError (never silently the raw string: a typo would reach the schema as text)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"])
    value = load_yaml_text(raw, f"--set {item!r}", hint=_SET_HINT) if raw.strip() else None
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """``data[a][b] = value`` for keys ``[a, b]``, creating sections; a value in the way is a ValueError."""
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{k!r} is not a section (it holds {_format_value(child)})")
        node = child
    node[keys[-1]] = value


# Sections whose ``args`` are keywords of the thing ``name`` picks: a new name makes the file's args meaningless.
NAMED_SECTIONS = ("model", "init", "optimizer", "schedule")


def _set(out: dict[str, Any], item: str, keys: list[str], value: Any) -> None:
    try:
        set_dotted(out, keys, value)
    except ValueError as e:
        raise ConfigError([f"--set {item!r}: {e}"]) from None


def _drop_args_of_renamed(
    data: dict[str, Any], out: dict[str, Any], section: str, parsed: list[tuple[str, list[str], Any]]
) -> None:
    """``--set <section>.name=other`` drops the args the file gave the old name; ``--set <section>.args...`` stay."""
    touched = [keys for _, keys, _ in parsed if keys[0] == section]
    if [section, "name"] not in touched or [section] in touched:
        return
    before, after = data.get(section), out.get(section)
    if not isinstance(before, dict) or not before.get("args") or not isinstance(after, dict):
        return
    default = ExperimentConfig.model_fields[section].annotation.model_fields["name"].default
    if after.get("name") == before.get("name", default):
        return
    after.pop("args", None)
    for item, keys, value in parsed:
        if keys[:2] == [section, "args"]:
            _set(out, item, keys, value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set key=value`` items applied in order. One that changes a ``<section>.name`` (model, init, optimizer,
    schedule) also drops the args the file gave that section (they belong to the old name), keeping only args
    set by ``--set <section>.args...``; nothing is printed (the README says so)."""
    parsed = [(item, *parse_override(item)) for item in overrides]
    out = copy.deepcopy(data)
    for item, keys, value in parsed:
        _set(out, item, keys, value)
    for section in NAMED_SECTIONS:
        _drop_args_of_renamed(data, out, section, parsed)
    return out


def validate(data: dict[str, Any], label: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, label)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, merge, override and validate an experiment file. Raises ConfigError listing every problem."""
    path = Path(path)
    data = _resolve_extends(path)
    data = apply_overrides(data, overrides or [])
    data.setdefault("name", path.stem)
    return validate(data, str(path)).from_file(str(path))


def config_from_dict(data: dict[str, Any], label: str = "<config>") -> ExperimentConfig:
    return validate(copy.deepcopy(data), label)


def read_yaml(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A YAML file that must hold a mapping (sweep files, a run's config.yaml); ConfigError otherwise."""
    return _read_yaml(Path(path), label or str(path))


def read_experiment(path: str | Path) -> dict[str, Any]:
    """An experiment file with ``extends:`` followed, not yet validated: what sweeps build their cells on."""
    path = Path(path)
    data = _resolve_extends(path)
    data.setdefault("name", path.stem)
    return data


def load_run_config(path: str | Path) -> ExperimentConfig:
    """The resolved config a run folder stores (its config.yaml), validated again."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DlxError(f"{path}: unreadable ({e})") from None
    data = load_yaml_text(text, str(path))
    if not isinstance(data, dict):
        raise DlxError(f"{path}: not a dlx config")
    return config_from_dict(data, str(path))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1, "c": {}}``: a nested config as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


# Keys a run resolves when it starts (``auto`` made concrete for its machine and model); config.yaml records the
# choice, so a stored value is what ``auto`` became, not a change.
RESOLVED_AT_START = ("train.precision", "train.channels_last")


def config_differences(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ("output",)) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (sections in ``skip`` left out).

    ``old`` is read with today's schema first when it can be: a key added to dlx since it was written takes its
    default there, so a run or sweep made by an earlier dlx still compares equal to itself. ``auto`` in ``new``
    matches whatever a run stored for a key in RESOLVED_AT_START (a sweep cell trained with precision ``auto``).
    """
    with contextlib.suppress(ConfigError):  # not valid today: compared as written
        old = validate(copy.deepcopy(old), "<stored config>").to_dict()
    a = {k: v for k, v in flatten(old).items() if k.split(".")[0] not in skip}
    b = {k: v for k, v in flatten(new).items() if k.split(".")[0] not in skip}
    for key in RESOLVED_AT_START:
        if b.get(key) == "auto" and key in a:
            b[key] = a[key]
    return [
        f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)
    ]
