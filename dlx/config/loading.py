"""YAML in, a validated ``ExperimentConfig`` out: the only place dlx reads raw YAML.

``load_config`` reads the file (``yaml.safe_load``), follows ``extends:``, applies ``--set key=value``
overrides and validates everything at once, reporting *every* problem as one line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlx.config.messages import format_errors
from dlx.config.schema import ExperimentConfig
from dlx.errors import ConfigError, DlxError


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"{label}: file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{label}: not valid YAML{where}: {problem}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not a UTF-8 text file"]) from None
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
        raise ConfigError([f"{label}: extends: got {parent!r}; expected a path to another experiment file"])
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise ConfigError([f"{label}: extends: file not found: {parent_path}"])
    return deep_merge(_resolve_extends(parent_path, (*seen, resolved)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``optimizer.lr=0.01`` -> (['optimizer', 'lr'], 0.01); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """``data[a][b] = value`` for keys ``[a, b]``, creating sections; a value in the way is a ValueError."""
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{k!r} is not a section (it holds {child!r})")
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DlxError(f"{path}: unreadable ({e})") from None
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


def config_differences(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ("output",)) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (sections in ``skip`` left out)."""
    a = {k: v for k, v in flatten(old).items() if k.split(".")[0] not in skip}
    b = {k: v for k, v in flatten(new).items() if k.split(".")[0] not in skip}
    return [
        f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)
    ]
