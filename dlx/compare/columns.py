"""The columns of the comparison table: what each shows of a run, its header and its kind of number.

``COLUMNS`` are dlx's own (``run``, ``params``, ``test_acc``, ...); ``parse_columns`` reads ``--columns``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlx.errors import DlxError
from dlx.registry import closest

if TYPE_CHECKING:
    from dlx.compare.records import RunRecord
    from dlx.compare.table import Row


def dotted(data: Any, key: str) -> Any:
    """``data["a"]["b"]`` for ``a.b``; MISSING when absent."""
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str  # text | int | pct | gap | flops | seconds | rate | epochs | num
    get: Callable[[RunRecord], Any]
    numeric: bool = True


def _model(r: RunRecord, key: str) -> Any:
    value = (r.summary.get("model") or {}).get(key)
    if value is None:
        value = dotted(r.config, f"model.{key}")
    return None if value is MISSING else value


COLUMNS: dict[str, Column] = {
    c.key: c
    for c in (
        Column("run", "run", "text", lambda r: r.label, numeric=False),
        Column("model", "model", "text", lambda r: _model(r, "name"), numeric=False),
        Column("width", "width", "num", lambda r: _model(r, "width")),
        Column("depth", "depth", "num", lambda r: _model(r, "depth")),
        Column("seed", "seed", "text", lambda r: r.summary.get("seed", r.config.get("seed")), numeric=False),
        Column("params", "params", "int", lambda r: r.summary.get("parameters")),
        Column("flops", "FLOPs", "flops", lambda r: r.summary.get("flops_per_image")),
        Column("val_acc", "best val", "pct", lambda r: r.summary.get("best_val_acc")),
        Column("test_acc", "test", "pct", lambda r: r.summary.get("test_acc")),
        Column("gap", "gap", "gap", lambda r: r.diagnosis.get("gap")),
        Column("fit", "fit", "text", lambda r: r.diagnosis.get("verdict"), numeric=False),
        Column("epochs", "epochs", "epochs", lambda r: r.summary.get("epochs_completed")),
        Column("wall", "wall", "seconds", lambda r: r.summary.get("wall_seconds")),
        Column("img_s", "img/s", "rate", lambda r: r.summary.get("images_per_s")),
        Column("status", "status", "text", lambda r: r.summary.get("status"), numeric=False),
        Column("n", "n", "int", lambda r: 1),
    )
}
DEFAULT_COLUMNS = ("run", "model", "width", "depth", "params", "flops", "val_acc", "test_acc", "gap", "fit",
                   "epochs", "wall", "img_s", "status")  # fmt: skip


def check_column(key: str, option: str) -> str:
    if key not in COLUMNS:
        hint = closest(key, list(COLUMNS))
        lead = f"; did you mean {hint!r}?" if hint else ";"
        raise DlxError(f"{option} {key!r}: unknown column{lead} columns: {', '.join(COLUMNS)}")
    return key


def parse_columns(spec: str | None, rows: list[Row]) -> list[str]:
    if not spec:
        cols = list(DEFAULT_COLUMNS)
        if any(row.n > 1 for row in rows):
            cols.insert(cols.index("status"), "n")
        return cols
    return [check_column(c.strip(), "--columns") for c in spec.split(",") if c.strip()]
