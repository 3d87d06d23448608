"""``dlx compare``: read every run below some folders, one table (or CSV / Markdown / JSON), pictures.

Runs that differ only by seed are one configuration: the table shows mean +- std and n. Broken,
partial or foreign folders are listed as skipped with the reason; they never stop the comparison.
No torch here: comparing a thousand runs takes a moment, not a GPU.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlx.config import parse_override, read_yaml
from dlx.diagnose import diagnose
from dlx.errors import ConfigError, DlxError
from dlx.numbers import finite
from dlx.registry import closest
from dlx.runs import CHECKPOINT_DIR, CONFIG_FILE, METRICS_JSONL, STATUSES, SUMMARY_FILE

FORMATS = ("table", "csv", "markdown", "json")
# Keys that do not change what is trained: runs differing only in these (and the seed) are one configuration.
NOT_CONFIGURATION = ("seed", "output", "data.data_dir", "data.download")


# ---------------------------------------------------------------------------- loading


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


def _load_run(path: Path, files: set[str]) -> RunRecord | Skipped:
    if SUMMARY_FILE not in files:
        return Skipped(path, f"partial run: no {SUMMARY_FILE} (never started, or not made by dlx)")
    try:
        summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return Skipped(path, f"{SUMMARY_FILE} unreadable: {e}")
    except json.JSONDecodeError as e:
        return Skipped(path, f"{SUMMARY_FILE} is not valid JSON (line {e.lineno}: {e.msg})")
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        return Skipped(path, f"{SUMMARY_FILE} has no valid status (one of {', '.join(STATUSES)})")
    if CONFIG_FILE not in files:
        return Skipped(path, f"partial run: no {CONFIG_FILE}")
    try:
        config = read_yaml(path / CONFIG_FILE)
    except ConfigError as e:
        return Skipped(path, e.problems[0].removeprefix(f"{path / CONFIG_FILE}: ") + f" ({CONFIG_FILE})")
    history: list[dict[str, Any]] = []
    if METRICS_JSONL in files:
        try:
            lines = (path / METRICS_JSONL).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            return Skipped(path, f"{METRICS_JSONL} unreadable: {e}")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return Skipped(path, f"{METRICS_JSONL} line {number} is not valid JSON")
            if isinstance(row, dict):
                history.append(row)
    # Recomputed from the history, so runs made before summaries carried a diagnosis get one too.
    diag = diagnose(history) if history else (summary.get("diagnosis") or diagnose([]))
    return RunRecord(path, summary, config, history, diag)


def load_runs(paths: Iterable[str | Path]) -> tuple[list[RunRecord], list[Skipped]]:
    """Every run folder at or below ``paths``, and every folder that looked like one but is not."""
    runs: list[RunRecord] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            raise DlxError(f"{root}: no such file or folder")
        if not root.is_dir():
            raise DlxError(f"{root}: not a folder; give a run folder, a sweep folder or a folder of runs")
        for folder, dirnames, filenames in os.walk(root):
            path = Path(folder)
            # Hidden folders (.logs, .git) and a run's own checkpoints are never runs.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != CHECKPOINT_DIR)
            files = {f for f in filenames if not f.startswith(".")}
            if path.resolve() in seen:
                dirnames[:] = []
                continue
            if files & {SUMMARY_FILE, CONFIG_FILE, METRICS_JSONL}:
                seen.add(path.resolve())
                dirnames[:] = []  # runs do not nest
                result = _load_run(path, files)
                (runs if isinstance(result, RunRecord) else skipped).append(result)  # type: ignore[arg-type]
            elif not dirnames and path != root:
                what = "empty folder (a run that never started?)" if not files else f"not a dlx run: no {SUMMARY_FILE}"
                skipped.append(Skipped(path, what))
    return runs, skipped


# ---------------------------------------------------------------------------- rows and columns


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


@dataclass
class Row:
    """One configuration: a single run, or runs that differ only by seed (mean, std over the runs)."""

    runs: list[RunRecord]
    values: dict[str, Any] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)


_number = finite


def configuration_key(r: RunRecord) -> str:
    config = json.loads(json.dumps(r.config, default=str))
    for key in NOT_CONFIGURATION:
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(config, sort_keys=True)


def _group_label(runs: list[RunRecord]) -> str:
    if len(runs) == 1:
        return runs[0].label
    stems = {re.sub(r"-s\d+$", "", r.label) for r in runs}
    if len(stems) == 1 and all(re.search(r"-s\d+$", r.label) for r in runs):
        return stems.pop()  # sweep cells w2-d1-s0, w2-d1-s1 -> w2-d1
    return f"{runs[0].label} (+{len(runs) - 1})"


def make_rows(runs: list[RunRecord], group: bool = True) -> list[Row]:
    """Rows of the table; with ``group``, runs that differ only by seed share one row."""
    if group:
        groups: dict[str, list[RunRecord]] = {}
        for r in runs:
            groups.setdefault(configuration_key(r), []).append(r)
        members = list(groups.values())
    else:
        members = [[r] for r in runs]
    rows = []
    for m in members:
        row = Row(m)
        for key, col in COLUMNS.items():
            values = [col.get(r) for r in m]
            values = [None if v is MISSING else v for v in values]
            if len(m) == 1:
                row.values[key] = values[0]
            elif col.numeric:
                numbers = [x for x in map(_number, values) if x is not None]
                row.values[key] = statistics.fmean(numbers) if numbers else None
                if len(numbers) > 1 and len(set(numbers)) > 1:
                    row.std[key] = statistics.stdev(numbers)
            elif key == "seed":
                row.values[key] = ",".join(str(v) for v in values)
            else:
                counts = Counter(str(v) for v in values if v is not None)
                row.values[key] = (
                    counts.most_common(1)[0][0]
                    if len(counts) == 1
                    else ", ".join(f"{n} {v}" for v, n in counts.most_common())
                )
        row.values["run"] = _group_label(m)
        row.values["n"] = len(m)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- filter, sort, choose


_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|!=|==|=|>|<)(.*)$")


def _lookup(r: RunRecord, key: str) -> Any:
    if key in COLUMNS:
        return COLUMNS[key].get(r)
    value = dotted(r.summary, key)
    return value if value is not MISSING else dotted(r.config, key)


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    a, w = _number(actual), _number(wanted)
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
        wanted = parse_override(f"{key}={raw}")[1]
        if runs and all(_lookup(r, key) is MISSING for r in runs):
            hint = closest(key, _known_keys(runs))
            raise DlxError(f"--where {clause!r}: no run has {key!r}" + (f"; did you mean {hint!r}?" if hint else ""))
        runs = [r for r in runs if (v := _lookup(r, key)) is not MISSING and _compare(v, op, wanted)]
    return runs


def _check_column(key: str, option: str) -> str:
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
    return [_check_column(c.strip(), "--columns") for c in spec.split(",") if c.strip()]


def _natural(text: str) -> list[Any]:
    return [
        (0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
        for t in re.split(r"(\d+(?:\.\d+)?)", text)
    ]


def sort_rows(rows: list[Row], key: str | None, descending: bool = False) -> list[Row]:
    """By a column (missing values last), else by experiment, model, width, depth, run name."""
    if key is None:
        return sorted(rows, key=lambda r: (str(r.values.get("model")), _number(r.values.get("width")) or 0,
                                           _number(r.values.get("depth")) or 0, _natural(str(r.values["run"]))))  # fmt: skip
    _check_column(key, "--sort")
    present = [r for r in rows if r.values.get(key) is not None]
    absent = [r for r in rows if r.values.get(key) is None]
    if COLUMNS[key].numeric:
        present.sort(key=lambda r: _number(r.values[key]) or 0.0, reverse=descending)
    else:
        present.sort(key=lambda r: _natural(str(r.values[key])), reverse=descending)
    return present + absent


# ---------------------------------------------------------------------------- output


def _fmt(kind: str, x: Any, std: float | None = None) -> str:
    if x is None or x is MISSING:
        return "-"
    if kind == "text":
        return str(x)
    v = _number(x)
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
    return _fmt(COLUMNS[col].kind, row.values.get(col), row.std.get(col))


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
            writer.writerow({k: "" if v is None else v for k, v in rec.items()})
        return buf.getvalue()
    if fmt == "markdown":
        headers = [COLUMNS[c].header for c in cols]
        right = [COLUMNS[c].kind != "text" for c in cols]
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
        text_col = COLUMNS[c].kind == "text"
        table.add_column(COLUMNS[c].header, justify="left" if text_col else "right", no_wrap=c != "run",
                         overflow="fold" if c == "run" else "ellipsis")  # fmt: skip
    for row in rows:
        cells = []
        for c in cols:
            text = formatted(row, c)
            style = _STATUS_STYLE.get(text, "") if c == "status" else _FIT_STYLE.get(text, "") if c == "fit" else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    console.print(table)


@dataclass
class Comparison:
    runs: list[RunRecord]  # after filtering
    rows: list[Row]  # after sorting and top-k
    columns: list[str]
    skipped: list[Skipped]
    pictures: list[Path]


def compare(
    paths: list[str | Path],
    *,
    where: list[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    top: int | None = None,
    columns: str | None = None,
    group: bool = True,
    output: str | Path | None = None,
) -> Comparison:
    """Load, filter, group by seed, sort, cut to top-k and (with ``output``) draw the pictures."""
    runs, skipped = load_runs(paths)
    runs = filter_runs(runs, where or [])
    rows = make_rows(runs, group=group)
    names = {r.summary.get("name") for r in runs}
    if len(names) == 1:  # one experiment or sweep: its name on every row is noise
        prefix = f"{names.pop()}/"
        for row in rows:
            row.values["run"] = str(row.values["run"]).removeprefix(prefix)
    if top is not None and sort is None:
        sort, descending = "test_acc", True  # "the best k" means by test accuracy unless told otherwise
    rows = sort_rows(rows, sort, descending)
    shown = rows[:top] if top is not None else rows
    cols = parse_columns(columns, shown)
    pictures: list[Path] = []
    if output is not None:
        from dlx import compare_plots  # matplotlib only when pictures are asked for

        # Heat maps and Pareto fronts show every configuration; the curves only the chosen (top-k) ones.
        pictures = compare_plots.draw_all(runs, rows, shown, Path(output))
    return Comparison(runs, shown, cols, skipped, pictures)
