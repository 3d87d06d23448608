"""The columns of the comparison table: what each shows of a run, its header and its kind of number.

``COLUMNS`` are dlx's own (``run``, ``params``, ``test_acc``, ...); any key of the runs' resolved configs is a
column too, in dotted form (``optimizer.name``, ``model.args.score_dropout``). By default the table shows the
config keys whose values differ between the compared runs (``varying_keys``). ``parse_columns`` reads ``--columns``.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlx.config import flatten
from dlx.errors import DlxError
from dlx.registry import closest

if TYPE_CHECKING:
    from dlx.compare.records import Row, RunRecord


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


CONFIG = "config"  # the kind of a config key's column: the value as the config has it
# Never shown as differing between runs: replicates differ by seed, an experiment's name is in the run column,
# and where results and data go does not change what is trained (dlx.compare.table.NOT_CONFIGURATION).
NOT_VARYING = ("seed", "name", "output", "data.data_dir", "data.download")
SHOWN_KEYS = ("model.name", "model.width", "model.depth")  # the model, width and depth columns
MAX_VARYING = 6  # differing config keys shown by default; more make the table too wide to read


def _config_value(r: RunRecord, key: str) -> Any:
    value = dotted(r.config, key)
    return None if value is MISSING else value


@functools.lru_cache(maxsize=256)
def _config_column(key: str) -> Column:
    return Column(key, key, CONFIG, lambda r: _config_value(r, key), numeric=False)


def column(key: str) -> Column:
    """The column ``key`` names: one of COLUMNS, else the config key ``key`` (dotted) of each run."""
    return COLUMNS.get(key) or _config_column(key)


def config_keys(runs: list[RunRecord]) -> list[str]:
    """Every dotted config key of ``runs``, leaves and the sections holding them, in the configs' order."""
    keys: dict[str, None] = {}
    for config in {json.dumps(r.config, sort_keys=True, default=str): r.config for r in runs}.values():
        for leaf in flatten(config):
            parts = leaf.split(".")
            keys.update((".".join(parts[: i + 1]), None) for i in range(len(parts)))
    return list(keys)


def _nearby(key: str, keys: list[str]) -> str:
    """Config keys to offer for an unknown ``key``: those of its section, nearest first, else the top-level sections."""
    section = key.split(".")[0]
    same = [k for k in keys if k.startswith(f"{section}.") and "." not in k[len(section) + 1 :]]
    same = difflib.get_close_matches(key, same, n=max(len(same), 1), cutoff=0.0)
    if same:
        return ", ".join(same[:12]) + (", ..." if len(same) > 12 else "")
    return ", ".join(f"{k}.*" if any(o.startswith(f"{k}.") for o in keys) else k for k in keys if "." not in k)


def check_column(key: str, option: str, runs: list[RunRecord] | None = None) -> str:
    """``key`` when it names a column or (``runs`` given) a config key one of the runs has; else a one-line error.

    No runs at all: any key (there is nothing to check it against, and no row to show it in)."""
    if key in COLUMNS or (runs is not None and (not runs or any(dotted(r.config, key) is not MISSING for r in runs))):
        return key
    keys = config_keys(runs) if runs else []
    hint = closest(key, [*COLUMNS, *keys])
    lead = f"; did you mean {hint!r}?" if hint else ";"
    more = f"; or a config key of the runs: {_nearby(key, keys)}" if keys else ""
    raise DlxError(f"{option} {key!r}: unknown column{lead} columns: {', '.join(COLUMNS)}{more}")


def _comparable(r: RunRecord, value: Any) -> str:
    """A config value as text to compare runs by, the run's own id and folder replaced where they stand as a whole
    name (``runs/x/<run-id>/best.pt``, not inside ``he_normal``): they differ in every run."""
    text = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str):
        for own in sorted({str(r.path), r.path.name, str(r.summary.get("run_id") or "")} - {""}, key=len)[::-1]:
            text = re.sub(rf"(?<![\w.-]){re.escape(own)}(?![\w.-])", "<run>", text)
    return text


def varying_keys(runs: list[RunRecord]) -> tuple[list[str], list[str]]:
    """The config keys whose values differ between ``runs``: (the first MAX_VARYING, the rest).

    Leaves out NOT_VARYING, the keys the model/width/depth columns show, and values that differ only
    by the run's own id or folder. In the configs' order. A key only some runs have (a run of an older dlx,
    which had no such key) differs when the values of the runs that have it differ.
    """
    values: dict[str, set[str]] = {}
    distinct = {json.dumps(r.config, sort_keys=True, default=str): r for r in runs}.values()
    flat = [(r, flatten(r.config)) for r in distinct]
    for r, config in flat:
        for key, value in config.items():
            if key in SHOWN_KEYS or any(key == n or key.startswith(f"{n}.") for n in NOT_VARYING):
                continue
            values.setdefault(key, set()).add(_comparable(r, value))
    varying = [k for k, seen in values.items() if len(seen) > 1]
    return varying[:MAX_VARYING], varying[MAX_VARYING:]


def parse_columns(
    spec: str | None, rows: list[Row], runs: list[RunRecord] | None = None, varying: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """The columns to show: ``spec`` (comma-separated columns and config keys, checked against ``runs``), else
    DEFAULT_COLUMNS with the ``varying`` config keys after the model's and ``n`` where a row has replicates."""
    if not spec:
        cols = list(DEFAULT_COLUMNS)
        at = cols.index("depth") + 1
        cols[at:at] = [k for k in varying if k not in cols]
        if any(row.n > 1 for row in rows):
            cols.insert(cols.index("status"), "n")
        return cols
    if runs is None:
        runs = [r for row in rows for r in row.runs]
    return [check_column(c.strip(), "--columns", runs) for c in spec.split(",") if c.strip()]
