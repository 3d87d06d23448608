"""``dlx`` commands for the runs folder: ``dlx runs`` (list), ``runs rm``, ``runs clean-checkpoints``; and
``dlx augment`` (a picture of the augmentation). Registered on ``dlx.cli_app.app``; the work is in
``dlx.manage`` and ``dlx.augment_view``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dlx.cli_app import _console, _err, app, guarded


class _RunsGroup(TyperGroup):
    """``dlx runs PATH --status X`` is ``dlx runs ls PATH --status X``: anything that is not a subcommand lists."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # a click Context (Typer vendors click)
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["ls", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=_RunsGroup,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="List runs (dlx runs [PATH] [--status S] [--format F]), delete them (rm), free checkpoint space.",
)
app.add_typer(runs_app, name="runs")

FORMATS = ("table", "csv", "json")
STATUS_STYLE = {"completed": "green", "failed": "red", "diverged": "red", "stale": "yellow", "running": "cyan",
                "interrupted": "magenta"}  # fmt: skip


def _runs_dir(path: Path | None) -> Path:
    """``path``, else the runs folder an experiment writes to by default (``output.runs_dir``)."""
    if path is not None:
        return path
    from dlx.config.schema import OutputConfig

    return Path(OutputConfig.model_fields["runs_dir"].default)


def _interactive() -> bool:
    """Whether someone at a terminal can answer a question (tests replace this)."""
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    """Go on only with a yes from the terminal; no terminal is a one-line error, a no ends the command."""
    from dlx.errors import DlxError

    if not _interactive():
        raise DlxError("refusing to delete without --yes: stdin is not a terminal (nothing deleted)")
    if not typer.confirm(question, default=False):
        _err("nothing deleted")
        raise typer.Exit(1)


@runs_app.callback()
def _runs(ctx: typer.Context) -> None:
    """List, delete and slim run folders. Bare ``dlx runs`` lists the runs below runs/."""
    if ctx.invoked_subcommand is None:
        guarded(lambda: _list(None, [], "table"))


@runs_app.command(name="ls")
def ls(
    path: Annotated[Path | None, typer.Argument(help="a folder of runs, a sweep or a run (default: runs/)")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="only these (repeat or comma-separate): completed, failed, ..., stale"),
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """List runs: name, run id, status (stale: running, but its process is gone), accuracy, epochs, age, path."""
    guarded(lambda: _list(path, status or [], format_))


def _list(path: Path | None, status: list[str], format_: str) -> None:
    import csv
    import io
    import json
    import time

    from dlx.errors import DlxError
    from dlx.manage import check_statuses, list_runs

    if format_ not in FORMATS:
        raise DlxError(f"--format {format_!r}: choose table, csv or json")
    wanted = check_statuses(status)
    root = _runs_dir(path)
    runs, skipped = list_runs(root)
    if wanted:
        runs = [r for r in runs if r.status in wanted]
    now = time.time()
    if format_ == "json":
        sys.stdout.write(json.dumps([r.row(now) for r in runs], indent=2) + "\n")
    elif format_ == "csv":
        buf = io.StringIO()
        rows = [r.row(now) for r in runs]
        from dlx.manage import RunInfo

        columns = list(rows[0]) if rows else list(RunInfo(root, {}, "", None).row(now))
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        sys.stdout.write(buf.getvalue())
    else:
        _print_table(runs, root, wanted, now)
    if skipped:
        first = skipped[0]
        _err(f"skipped {len(skipped)} folder(s) that are not readable runs (first: {first.path}: {first.reason})")


def _print_table(runs: list[Any], root: Path, wanted: list[str], now: float) -> None:
    from rich.table import Table

    from dlx.manage import format_age
    from dlx.progress import pct

    which = f" ({', '.join(wanted)})" if wanted else ""
    console = _console()
    if not runs:
        console.print(f"no runs{which} below {root}", markup=False)
        return
    table = Table(title=f"{len(runs)} run(s){which} below {root}", title_justify="left")
    for column, justify in (("name", "left"), ("run id", "left"), ("status", "left"), ("best val", "right"),
                            ("test", "right"), ("epochs", "right"), ("age", "right"), ("path", "left")):  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=column != "path")  # type: ignore[arg-type]
    for r in runs:
        s = r.summary
        done, planned = s.get("epochs_completed"), s.get("epochs")
        epochs = f"{done if done is not None else '-'}/{planned}" if planned else "-"
        name = r.name if r.kind == "run" else f"{r.name} ({r.kind})"
        status = f"[{STATUS_STYLE.get(r.status, 'default')}]{r.status}[/]"
        table.add_row(_plain(name), _plain(r.run_id), status, pct(s.get("best_val_acc")), pct(s.get("test_acc")),
                      epochs, format_age(r.age(now)), _plain(str(r.path)))  # fmt: skip
    console.print(table)


def _plain(text: str) -> str:
    """Text of a run's (a name, a path) shown as is, never read as rich markup."""
    from rich.markup import escape

    return escape(text)


@runs_app.command(name="rm")
def rm(
    runs: Annotated[list[Path] | None, typer.Argument(help="run folders to delete")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="every failed, diverged or stale run below the runs folder")
    ] = False,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="runs started longer ago than this: 30m, 12h, 7d, 2w")
    ] = None,
    path: Annotated[
        Path | None, typer.Option("--path", help="where --failed / --older-than look (default: runs/)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
) -> None:
    """Delete run folders: those named, and/or those --failed / --older-than choose (with both: runs that are
    both). Says what it will delete and asks first; a run a process is training is never deleted."""

    def body() -> None:
        from dlx.errors import DlxError
        from dlx.manage import delete_run, folder_size, format_bytes, is_held, list_runs, named_runs, select, unique
        from dlx.manage import parse_duration as duration

        limit = duration(older_than) if older_than is not None else None
        filtered = failed or limit is not None
        if path is not None and not filtered:
            raise DlxError("--path: only with --failed or --older-than (it says where they look)")
        named = named_runs(runs or [])  # every named path checked before anything is deleted
        if not named and not filtered:
            raise DlxError("give run folders to delete, --failed or --older-than")
        chosen = list(named)
        if filtered:
            chosen += select(list_runs(_runs_dir(path))[0], failed=failed, older_than=limit)
        chosen = unique(chosen)
        named_paths = {r.path.resolve() for r in named}
        plan, refused = [], False
        for r in chosen:
            if is_held(r.path):
                _err(f"skipped {r.path}: in use by a running dlx process")
                refused = refused or r.path.resolve() in named_paths
            else:
                plan.append((r, folder_size(r.path)))
        if not plan:
            _err("nothing to delete")
            if refused:
                raise typer.Exit(1)
            return
        _print_plan([(str(r.path), r.status, format_bytes(size)) for r, size in plan])
        total = sum(size for _, size in plan)
        if not yes:
            _confirm(f"delete these {len(plan)} run folder(s), {format_bytes(total)}?")
        deleted = freed = 0
        for r, size in plan:
            if delete_run(r.path):
                deleted, freed = deleted + 1, freed + size
            else:
                _err(f"skipped {r.path}: in use by a running dlx process")
                refused = refused or r.path.resolve() in named_paths
        _err(f"deleted {deleted} run folder(s), freed {format_bytes(freed)}")
        if refused:
            raise typer.Exit(1)

    guarded(body)


def _print_plan(rows: list[tuple[str, str, str]]) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=True, pad_edge=False)
    for column, justify in (("path", "left"), ("status", "left"), ("size", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*map(_plain, row))
    _console().print(table)


@runs_app.command(name="clean-checkpoints")
def clean_checkpoints(
    path: Annotated[Path | None, typer.Argument(help="a folder of runs, a sweep or a run (default: runs/)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
) -> None:
    """Delete checkpoints/last.pt of completed runs that have a best.pt (incomplete runs keep it: they resume from it)."""

    def body() -> None:
        from dlx.manage import checkpoint_plan, delete_last_checkpoint, format_bytes, list_runs

        root = _runs_dir(path)
        plan = checkpoint_plan(list_runs(root)[0])
        kept = [(plan.kept_incomplete, "incomplete run(s): they need it to resume"),
                (plan.kept_no_best, "completed run(s) without best.pt: it holds their only weights"),
                (plan.kept_held, "run(s) in use by a running dlx process")]  # fmt: skip
        for runs, why in kept:
            if runs:
                _err(f"kept last.pt of {len(runs)} {why} (e.g. {runs[0].path}, {runs[0].status})")
        if not plan.delete:
            _err(f"nothing to delete: no completed run with a best.pt below {root} has a last.pt")
            return
        _print_plan(
            [(str(r.path / "checkpoints" / "last.pt"), r.status, format_bytes(size)) for r, size in plan.delete]
        )
        if not yes:
            _confirm(f"delete last.pt of these {len(plan.delete)} completed run(s), {format_bytes(plan.bytes)}?")
        freed = done = 0
        for r, _ in plan.delete:
            size = delete_last_checkpoint(r.path)
            if size:
                freed, done = freed + size, done + 1
            else:
                _err(f"skipped {r.path}: in use by a running dlx process, or changed since")
        _err(f"deleted last.pt of {done} completed run(s) (best.pt kept), freed {format_bytes(freed)} "
             f"({freed:,} bytes)")  # fmt: skip

    guarded(body)


@app.command()
def augment(
    config: Annotated[Path, typer.Argument(help="experiment YAML file")],
    n: Annotated[int, typer.Option("--n", min=1, max=1024, help="training images shown")] = 32,
    output: Annotated[Path | None, typer.Option(help="the PNG file (default runs/<name>/augment.png)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set augment.rotate=15")] = None,
) -> None:
    """Draw training images before (top) and after (below) the experiment's augmentation, the book's figure 8-4."""

    def body() -> None:
        from dlx.augment_view import NO_AUGMENTATION, write_augment_picture
        from dlx.config import load_config

        cfg = load_config(config, set_ or [])
        target = output if output is not None else Path(cfg.output.runs_dir) / cfg.name / "augment.png"
        _check_output_file(target, "--output" if output is not None else None)
        r = write_augment_picture(cfg, n, target)
        if r["augmentation"] is None:
            _err(f"{NO_AUGMENTATION}: after is the same as before")
        _err(f"wrote {r['path']} ({r['images']} images, {r['width']}x{r['height']} pixels)")

    guarded(body)


def _check_output_file(path: Path, option: str | None) -> None:
    """A file can be written at ``path``: it is not a folder, nor below a file; checked before anything is drawn."""
    from dlx.errors import DlxError

    label = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise DlxError(f"{label}: is a folder; give a file name{'' if option else ' with --output'}")
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise DlxError(f"{label}: {folder} is not a folder")
            return
