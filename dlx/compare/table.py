"""The comparison table: one row per configuration, ``--where``, ``--sort``, csv/markdown/json, rich.

Runs that differ only by seed (and output folders) are one configuration: a row shows their mean,
the std where they differ, and n.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections import Counter
from typing import Any

from dlx.compare.columns import COLUMNS, CONFIG, MISSING, Column, check_column, column, dotted
from dlx.compare.records import Row, RunRecord
from dlx.config import flatten, parse_override
from dlx.errors import ConfigError, DlxError
from dlx.numbers import finite
from dlx.registry import closest

FORMATS = ("table", "csv", "markdown", "json")
# Keys that do not change what is trained: runs differing only in these (and the seed) are one configuration.
NOT_CONFIGURATION = ("seed", "output", "data.data_dir", "data.download")


# ---------------------------------------------------------------------------- rows


def configuration(r: RunRecord) -> dict[str, str]:
    """The run's config as {dotted key: value as JSON text}, without the NOT_CONFIGURATION keys."""
    return {
        key: json.dumps(v, sort_keys=True, default=str)
        for key, v in flatten(r.config).items()
        if not any(key == n or key.startswith(f"{n}.") for n in NOT_CONFIGURATION)
    }


def _without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``config`` less the dotted ``keys``, copying only the mappings they are in; a mapping they empty goes too."""
    out = dict(config)
    for key in keys:
        section, _, field = key.rpartition(".")
        if not section:
            out.pop(field, None)
            continue
        inner = out.get(section)  # NOT_CONFIGURATION's keys are at most two deep
        if isinstance(inner, dict) and field in inner:
            inner = {k: v for k, v in inner.items() if k != field}
            if inner:
                out[section] = inner
            else:
                del out[section]
    return out


def configuration_key(r: RunRecord) -> str:
    """One text per configuration: the config less NOT_CONFIGURATION, as ``configuration`` sees it.

    One json.dumps of the whole config rather than one per leaf of ``configuration``: ten times faster
    on thousands of runs. Keys json cannot sort (not text) fall back to the flattened form.
    """
    try:
        return json.dumps(_without(r.config, NOT_CONFIGURATION), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return json.dumps(configuration(r), sort_keys=True)


def _group_label(runs: list[RunRecord]) -> str:
    if len(runs) == 1:
        return runs[0].label
    stems = {re.sub(r"-s\d+$", "", r.label) for r in runs}
    if len(stems) == 1 and all(re.search(r"-s\d+$", r.label) for r in runs):
        return stems.pop()  # sweep cells w2-d1-s0, w2-d1-s1 -> w2-d1
    return f"{runs[0].label} (+{len(runs) - 1})"


def _aggregate(col: Column, runs: list[RunRecord]) -> tuple[Any, float | None]:
    """The value a row of ``runs`` shows in ``col``, and its std where the runs' numbers differ."""
    values = [col.get(r) for r in runs]
    values = [None if v is MISSING else v for v in values]
    if len(runs) == 1:
        return values[0], None
    if col.kind == CONFIG and len({json.dumps(v, sort_keys=True, default=str) for v in values}) == 1:
        return values[0], None  # the config's value as it is, not a mean of copies of it
    numbers = [x for x in map(finite, values) if x is not None]
    if col.numeric or (col.kind == CONFIG and len(numbers) == len(values)):
        std = statistics.stdev(numbers) if len(numbers) > 1 and len(set(numbers)) > 1 else None
        return (statistics.fmean(numbers) if numbers else None), std
    if col.key == "seed":
        return ",".join(str(v) for v in values), None
    counts = Counter(str(v) for v in values if v is not None)
    value = counts.most_common(1)[0][0] if len(counts) == 1 else ", ".join(f"{n} {v}" for v, n in counts.most_common())
    return value, None


def fill(rows: list[Row], keys: list[str] | tuple[str, ...]) -> None:
    """Give every row its value of each column in ``keys`` (config keys: see ``column``) it does not have yet."""
    for row in rows:
        for key in keys:
            if key not in row.values:
                row.values[key], std = _aggregate(column(key), row.runs)
                if std is not None:
                    row.std[key] = std


def make_rows(runs: list[RunRecord], group: bool = True, keys: list[str] | tuple[str, ...] = ()) -> list[Row]:
    """Rows of the table, with every column of COLUMNS and the config ``keys``; with ``group``, runs that differ
    only by seed share one row."""
    if group:
        groups: dict[str, list[RunRecord]] = {}
        for r in runs:
            groups.setdefault(configuration_key(r), []).append(r)
        members = list(groups.values())
    else:
        members = [[r] for r in runs]
    rows = [Row(m) for m in members]
    fill(rows, [*COLUMNS, *keys])
    for row in rows:
        row.values["run"] = _group_label(row.runs)
        row.values["n"] = row.n
    return rows


# ---------------------------------------------------------------------------- filter, sort, choose


_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|!=|==|=|>|<)(.*)$")


def _lookup(r: RunRecord, key: str) -> Any:
    if key in COLUMNS:
        return COLUMNS[key].get(r)
    value = dotted(r.summary, key)
    return value if value is not MISSING else dotted(r.config, key)


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    a, w = finite(actual), finite(wanted)
    if a is not None and w is not None:
        left, right = a, w
    elif op in ("=", "==", "!="):
        left, right = str(actual).lower(), str(wanted).lower()  # "true" matches True, "deep_cnn" a string
    else:
        return False
    return {
        "=": left == right,
        "==": left == right,
        "!=": left != right,
        ">": left > right,
        "<": left < right,
        ">=": left >= right,
        "<=": left <= right,
    }[op]


def _known_keys(runs: list[RunRecord]) -> list[str]:
    keys = set(COLUMNS)
    for r in runs[:1]:
        for source in (r.summary, r.config):
            stack = [("", source)]
            while stack:
                prefix, node = stack.pop()
                for k, v in node.items():
                    keys.add(prefix + k)
                    if isinstance(v, dict):
                        stack.append((f"{prefix}{k}.", v))
    return sorted(keys)


def filter_runs(runs: list[RunRecord], where: list[str]) -> list[RunRecord]:
    """Keep runs matching every ``KEY OP VALUE`` (OP: = != > < >= <=); KEY is a column or a config/summary key."""
    for clause in where:
        m = _WHERE.match(clause)
        if not m:
            raise DlxError(f"--where {clause!r}: expected KEY=VALUE (or !=, >, <, >=, <=), e.g. model.width=2")
        key, op, raw = m.group(1), m.group(2), m.group(3).strip()
        try:
            wanted = parse_override(f"{key}={raw}")[1]
        except ConfigError:
            wanted = raw  # --where compares a value that is not YAML as text
        if runs and all(_lookup(r, key) is MISSING for r in runs):
            hint = closest(key, _known_keys(runs))
            raise DlxError(f"--where {clause!r}: no run has {key!r}" + (f"; did you mean {hint!r}?" if hint else ""))
        runs = [r for r in runs if (v := _lookup(r, key)) is not MISSING and _compare(v, op, wanted)]
    return runs


def _natural(text: str) -> list[Any]:
    return [
        (0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
        for t in re.split(r"(\d+(?:\.\d+)?)", text)
    ]


def sort_rows(rows: list[Row], key: str | None, descending: bool = False) -> list[Row]:
    """By a column (missing values last), else by experiment, model, width, depth, run name."""
    if key is None:
        return sorted(rows, key=lambda r: (str(r.values.get("model")), finite(r.values.get("width")) or 0,
                                           finite(r.values.get("depth")) or 0, _natural(str(r.values["run"]))))  # fmt: skip
    check_column(key, "--sort", [r for row in rows for r in row.runs])
    fill(rows, [key])
    present = [r for r in rows if r.values.get(key) is not None]
    absent = [r for r in rows if r.values.get(key) is None]
    col = column(key)
    if col.numeric or (col.kind == CONFIG and all(finite(r.values[key]) is not None for r in present)):
        present.sort(key=lambda r: finite(r.values[key]) or 0.0, reverse=descending)
    else:
        present.sort(key=lambda r: _natural(str(r.values[key])), reverse=descending)
    return present + absent


# ---------------------------------------------------------------------------- output


def _fmt(kind: str, x: Any, std: float | None = None) -> str:
    if x is None or x is MISSING:
        return "-"
    if kind == "text":
        return str(x)
    if kind == CONFIG and (isinstance(x, bool) or finite(x) is None):  # as YAML writes it: true, [1.0, 1.0]
        return x if isinstance(x, str) else json.dumps(x, default=str)
    if kind == CONFIG:
        return f"{x:g} ± {std:.2g}" if std is not None else str(x)
    v = finite(x)
    if v is None:
        return str(x)
    pm = std is not None
    if kind == "pct":
        return f"{100 * v:.2f} ± {100 * std:.2f}%" if pm else f"{100 * v:.2f}%"  # type: ignore[operator]
    if kind == "gap":
        return f"{100 * v:+.1f} ± {100 * std:.1f}pt" if pm else f"{100 * v:+.1f}pt"  # type: ignore[operator]
    if kind == "flops":
        return f"{v / 1e6:,.2f}M"
    if kind == "seconds":
        return f"{v:,.1f} ± {std:,.1f}s" if pm else f"{v:,.1f}s"
    if kind == "rate":
        return f"{v:,.0f} ± {std:,.0f}" if pm else f"{v:,.0f}"
    if kind in ("int", "epochs"):
        return f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"
    return f"{v:g}" + (f" ± {std:.2g}" if pm else "")


def formatted(row: Row, col: str) -> str:
    return _fmt(column(col).kind, row.values.get(col), row.std.get(col))


def raw_record(row: Row, cols: list[str], with_paths: bool = False) -> dict[str, Any]:
    """Machine-readable row: plain numbers; ``<col>_std`` where runs of one configuration differ."""
    out: dict[str, Any] = {}
    for col in cols:
        out[col] = row.values.get(col)
        if col in row.std:
            out[f"{col}_std"] = row.std[col]
    if "n" not in out:
        out["n"] = row.n
    if with_paths:
        out["paths"] = [str(r.path) for r in row.runs]
    return out


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for None; config values that are not text or numbers as JSON (true, [1.0, 1.0])."""
    if value is None:
        return ""
    return json.dumps(value, default=str) if isinstance(value, (bool, list, dict)) else value


def render(rows: list[Row], cols: list[str], fmt: str, title: str = "") -> str:
    """The rows as csv, markdown or json text (``table`` is printed by ``print_table``)."""
    if fmt == "json":
        return json.dumps([raw_record(r, cols, with_paths=True) for r in rows], indent=2, default=str) + "\n"
    if fmt == "csv":
        records = [raw_record(r, cols) for r in rows]
        fields: list[str] = []
        for rec in records:
            fields += [k for k in rec if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields or cols, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: _csv_cell(v) for k, v in rec.items()})
        return buf.getvalue()
    if fmt == "markdown":
        headers = [column(c).header for c in cols]
        right = [column(c).kind not in ("text", CONFIG) for c in cols]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        for row in rows:
            cells = [formatted(row, c).replace("|", "\\|") for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        return (f"**{title}**\n\n" if title else "") + "\n".join(lines) + "\n"
    raise DlxError(f"--format {fmt!r}: unknown; choose one of {', '.join(FORMATS)}")


_STATUS_STYLE = {"completed": "green", "failed": "red", "diverged": "red", "interrupted": "yellow", "running": "cyan"}
_FIT_STYLE = {"overfits": "red", "underfits": "yellow", "undertrained": "yellow", "ok": "green"}


def print_table(rows: list[Row], cols: list[str], title: str, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for c in cols:
        # Numbers never wrap; the run name folds when the terminal is narrow.
        text_col = column(c).kind in ("text", CONFIG)
        table.add_column(column(c).header, justify="left" if text_col else "right", no_wrap=c != "run",
                         overflow="fold" if c == "run" else "ellipsis")  # fmt: skip
    for row in rows:
        cells = []
        for c in cols:
            text = formatted(row, c)
            style = _STATUS_STYLE.get(text, "") if c == "status" else _FIT_STYLE.get(text, "") if c == "fit" else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    console.print(table)
