"""The ``dlx models`` figures cache: one small JSON file, so a repeated listing needs no torch at all.

Importing torch alone takes seconds; the registry's names, each model's parameters, FLOPs and description
for an input shape and class count only change when dlx's code or torch/torchvision change. So the file
keeps them under a fingerprint of exactly that: the torch and torchvision versions (package metadata, torch
is not imported) and the bytes of every ``.py`` file of the dlx package (its version included). A different
fingerprint starts an empty cache; an unreadable file is ignored; a failed write only costs the next call
its speed. ``$DLX_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlx``, else ``~/.cache/dlx``.

This module imports neither torch nor the model registry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FORMAT = 1
MAX_TABLES = 32  # input shape / class count combinations kept; the one written longest ago goes first
FILE_NAME = "models.json"


def cache_dir() -> Path:
    """``$DLX_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlx`` (an absolute path, as the XDG spec asks), else ``~/.cache/dlx``."""
    own = os.environ.get("DLX_CACHE_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "dlx"


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def code_fingerprint() -> dict[str, str]:
    """What the figures depend on: dlx's version and source, torch's and torchvision's versions."""
    import dlx

    root = Path(dlx.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {
        "format": str(FORMAT),
        "dlx": getattr(dlx, "__version__", "unknown"),
        "torch": _dist_version("torch"),
        "torchvision": _dist_version("torchvision"),
        "source_sha256": digest.hexdigest(),
    }


def table_key(shape: tuple[int, int, int], classes: int) -> str:
    """``1x28x28/10``: one table per input shape and class count."""
    return f"{'x'.join(map(str, shape))}/{classes}"


class FiguresCache:
    """The registry's model names and, per ``table_key``, one row (a dict) per model name."""

    def __init__(self, path: Path | None, fingerprint: dict[str, str]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.names: list[str] | None = None  # dlx's own registered models, once a call has imported the registry
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self.changed = False

    @classmethod
    def load(cls, folder: Path | None = None) -> FiguresCache:
        """The cache in ``folder`` (default ``cache_dir()``); empty when missing, unreadable or stale, and
        never written when dlx's own source cannot be read."""
        try:
            fingerprint = code_fingerprint()
        except OSError:  # dlx's source cannot be read: nothing tells a stale cache, so none is used
            return cls(None, {})
        path = (folder or cache_dir()) / FILE_NAME
        cache = cls(path, fingerprint)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cache
        if not isinstance(data, dict) or data.get("fingerprint") != cache.fingerprint:
            return cache
        names, tables = data.get("names"), data.get("tables")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            cache.names = names
        if isinstance(tables, dict):
            cache.tables = {k: v for k, v in tables.items() if isinstance(v, dict)}
        return cache

    def table(self, shape: tuple[int, int, int], classes: int) -> dict[str, dict[str, Any]]:
        """The rows known for ``shape`` and ``classes``, by model name (a copy: add rows with ``put``)."""
        return dict(self.tables.get(table_key(shape, classes), {}))

    def put(self, shape: tuple[int, int, int], classes: int, rows: dict[str, dict[str, Any]]) -> None:
        if not rows:
            return
        key = table_key(shape, classes)
        self.tables[key] = {**self.tables.pop(key, {}), **rows}  # re-inserted: now the newest
        while len(self.tables) > MAX_TABLES:
            del self.tables[next(iter(self.tables))]
        self.changed = True

    def set_names(self, names: list[str]) -> None:
        if names != self.names:
            self.names = list(names)
            self.changed = True

    def save(self) -> None:
        """Write the file atomically if anything changed; a cache that cannot be written is skipped silently."""
        if not self.changed or self.path is None:
            return
        from dlx.errors import DlxError
        from dlx.runs import write_json_atomic

        try:
            write_json_atomic(self.path, {"fingerprint": self.fingerprint, "names": self.names, "tables": self.tables})
        except (OSError, DlxError):
            return
        self.changed = False
