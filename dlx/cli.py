"""The ``dlx`` command line: a thin Typer app. Heavy imports (torch) happen inside commands,
so ``dlx --help`` is instant. The app and its shared helpers are in ``dlx.cli_app``; the commands for after
training in ``dlx.cli_after``; ``dlx schema`` in ``dlx.cli_tools``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from dlx.cli_app import _console, _err, app, guarded
from dlx.process_end import end_process

__all__ = ["app", "guarded", "main", "run_app"]


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="experiment YAML file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a key: --set optimizer.lr=0.01 (value read as YAML)")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="continue runs/<name>/<run-id> from its last checkpoint")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config and model, then exit")] = False,
    run_id: Annotated[str | None, typer.Option(help="name of the run folder (default: a timestamp)")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="where runs go (default: output.runs_dir)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    devices: Annotated[
        str | None,
        typer.Option(help="processes on this machine, one device each (DDP): a number or 'auto' (train.devices)"),
    ] = None,
) -> None:
    """Train one experiment and write a complete run directory."""

    def body() -> None:
        from dlx.errors import DlxError

        count = _devices(devices)
        if resume is not None:
            if config is not None or dry_run or run_id:
                raise DlxError(
                    "--resume takes no experiment file, --dry-run or --run-id: the run has its config "
                    "(--set train.epochs=N extends it)"
                )
            from dlx.session import resume_run

            summary = resume_run(resume, quiet=quiet, devices=count, changes=set_ or [])
        else:
            if config is None:
                raise DlxError("give an experiment file (dlx train experiments/mnist_deep.yaml) or --resume RUN_DIR")
            from dlx.config import load_config

            cfg = load_config(config, [*(set_ or []), *([f"train.devices={count}"] if count is not None else [])])
            if dry_run:
                from dlx.session import dry_run as show

                show(cfg)
                return
            from dlx.session import start_run

            summary = start_run(cfg, runs_dir=runs_dir, run_id=run_id, quiet=quiet)
        if summary["status"] != "completed":
            raise typer.Exit(1)

    guarded(body)


def _devices(text: str | None) -> int | str | None:
    """--devices: a number of processes or 'auto'."""
    from dlx.config.schema import MAX_DEVICES
    from dlx.errors import DlxError

    if text is None or text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= MAX_DEVICES:
        return int(text)
    raise DlxError(f"--devices: got {text!r}; allowed: 'auto' or a number of processes 1..{MAX_DEVICES}")


@app.command()
def sweep(
    sweep_file: Annotated[str, typer.Argument(help="a sweep in experiments/ (width-depth) or a sweep YAML file")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a key in every cell: --set train.epochs=1")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the runs (parameters, FLOPs) and check every cell; train nothing")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes (default: one per GPU, else 1; CPU cores are shared)")
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="train failed and diverged cells again")] = False,
    runs_dir: Annotated[
        Path | None, typer.Option(help="where the sweep folder goes (default: output.runs_dir)")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (worker processes here) or ray (Ray tasks)")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray: join this cluster ('auto' or host:6379) instead of starting one here")
    ] = None,
    no_shared_fs: Annotated[
        bool, typer.Option("--no-shared-fs", help="Ray: tasks train in a local folder; their files come back")
    ] = False,
    fetch_checkpoints: Annotated[
        bool, typer.Option("--fetch-checkpoints", help="Ray, --no-shared-fs: bring the checkpoints back too")
    ] = False,
) -> None:
    """Run a grid / variants / random sample of an experiment; re-run to resume (completed cells are skipped)."""

    def body() -> None:
        from dlx.errors import DlxError
        from dlx.sweep import load_sweep, run_sweep, show_plan

        if executor not in ("local", "ray"):
            raise DlxError(f"--executor {executor!r}: choose local or ray")
        ray_only = [o for o, given in (("--address", address is not None), ("--no-shared-fs", no_shared_fs),
                                        ("--fetch-checkpoints", fetch_checkpoints)) if given]  # fmt: skip
        if executor != "ray" and ray_only:
            raise DlxError(f"{', '.join(ray_only)}: only with --executor ray")
        if fetch_checkpoints and not no_shared_fs:
            raise DlxError("--fetch-checkpoints: only with --no-shared-fs (on a shared file system they are there)")
        ray = None
        if executor == "ray":
            from dlx.sweep.ray_executor import RayOptions, require_ray

            require_ray()  # before anything is checked or built: a missing extra is one line
            ray = RayOptions(address=address, shared_fs=not no_shared_fs, fetch_checkpoints=fetch_checkpoints,
                             workers=workers)  # fmt: skip
        spec = load_sweep(sweep_file, set_ or [], runs_dir)
        if dry_run:
            show_plan(spec, workers, ray=ray)
            return
        if not run_sweep(spec, workers=workers, retry_failed=retry_failed, ray=ray).ok:
            raise typer.Exit(1)

    guarded(body)


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(help="run folders, sweep folders or folders of runs (e.g. runs/)")],
    where: Annotated[
        list[str] | None, typer.Option("--where", help="keep runs matching KEY=VALUE (or !=, >, <, >=, <=)")
    ] = None,
    sort: Annotated[str | None, typer.Option(help="sort by a column, e.g. test_acc")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="sort descending")] = False,
    top: Annotated[int | None, typer.Option(min=1, help="only the first K rows (default order: best test acc)")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="comma-separated columns or config keys, e.g. run,optimizer.name,params,test_acc"),
    ] = None,
    group: Annotated[bool, typer.Option(help="one row per configuration (mean ± std over seeds)")] = True,
    format_: Annotated[str, typer.Option("--format", help="table, csv, markdown or json")] = "table",
    output: Annotated[Path | None, typer.Option(help="write heat maps, learning curves, Pareto plots here")] = None,
    x: Annotated[str, typer.Option("--x", help="x of the learning curves: epoch, or step (optimizer steps)")] = "epoch",
    samples: Annotated[
        bool, typer.Option("--samples", help="two runs: galleries of the test images one gets right, the other wrong")
    ] = False,
    tensorboard: Annotated[
        Path | None, typer.Option(help="write one TensorBoard event folder per run here (needs dlx[tensorboard])")
    ] = None,
) -> None:
    """Compare runs: a table of size, cost, accuracy and over/underfitting; CSV/Markdown/JSON; pictures."""

    def body() -> None:
        from rich.console import Console

        from dlx.compare import FORMATS, compare, print_table, render
        from dlx.errors import DlxError

        if format_ not in FORMATS:
            raise DlxError(f"--format {format_!r}: choose one of {', '.join(FORMATS)}")
        if samples:
            from dlx.compare.samples import compare_samples

            if len(paths) != 2:
                raise DlxError(f"--samples compares two runs; got {len(paths)} path(s)")
            r = compare_samples(paths[0], paths[1], output)
            _err(f"{r['images']:,} test images: {r['a_right_b_wrong']} right only by {r['a']} ({100 * r['a_acc']:.2f}%), "
                 f"{r['b_right_a_wrong']} only by {r['b']} ({100 * r['b_acc']:.2f}%), {r['both_wrong']} by neither; "
                 f"wrote {', '.join(r['pictures'])}")  # fmt: skip
            return
        result = compare(
            list(paths), where=where, sort=sort, descending=desc, top=top, columns=columns, group=group,
            output=output, tensorboard=tensorboard, x=x,
        )  # fmt: skip
        names = sorted({str(r.summary.get("name")) for r in result.runs})
        title = f"{len(result.rows)} configurations from {len(result.runs)} runs"
        title += f" of {names[0]}" if len(names) == 1 else ""
        if format_ == "table":
            console = Console(highlight=False)
            if not console.is_terminal:  # a file or a pipe has no width: do not squeeze the table into 80 columns
                console = Console(highlight=False, width=240)
            print_table(result.rows, result.columns, title, console)
        else:
            sys.stdout.write(render(result.rows, result.columns, format_, title))
        notes = [f"skipped {s.path}: {s.reason}" for s in result.skipped]
        notes += result.notes
        notes += [f"wrote {p}" for p in result.pictures]
        for line in notes:
            _err(line)

    guarded(body)


@app.command()
def models(
    pattern: Annotated[str, typer.Argument(help="only models matching this pattern, e.g. 'resnet*'")] = "*",
    input_: Annotated[str, typer.Option("--input", help="input size CxHxW")] = "1x28x28",
    classes: Annotated[int, typer.Option(min=1, help="number of classes")] = 10,
) -> None:
    """List the registered models with their parameters and FLOPs for one input size."""

    def body() -> None:
        from dlx.inspect import model_rows, parse_input, print_models

        shape = parse_input(input_)
        print_models(model_rows(shape, classes, pattern), shape, classes, _console())

    guarded(body)


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(help="an experiment YAML file or a registered model name")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key of the experiment file")] = None,
    input_: Annotated[str, typer.Option("--input", help="input size CxHxW (for a model name)")] = "1x28x28",
    classes: Annotated[int, typer.Option(min=1, help="number of classes (for a model name)")] = 10,
) -> None:
    """Show a model layer by layer: output shape, parameters, FLOPs and receptive field."""

    def body() -> None:
        from dlx.inspect import parse_input, print_inspect, resolve_target

        print_inspect(resolve_target(target, set_ or [], parse_input(input_), classes), _console())

    guarded(body)


@app.command()
def profile(
    config: Annotated[Path, typer.Argument(help="experiment YAML file")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set data.batch_size=256")] = None,
    batches: Annotated[int, typer.Option(min=1, help="batches to time (after one warm-up batch)")] = 5,
    output: Annotated[Path | None, typer.Option(help="where profile.png/json go (default runs/<name>/profile)")] = None,
) -> None:
    """Time forward and backward per layer type on the configured device; table and bar chart."""

    def body() -> None:
        from dlx.build import prepare
        from dlx.config import load_config
        from dlx.outputs import check_output_folder
        from dlx.profile import print_profile, write_profile
        from dlx.profile import profile as run_profile

        cfg = load_config(config, set_ or [])
        if output is not None:
            folder = check_output_folder(output)
        else:
            folder = Path(cfg.output.runs_dir) / cfg.name / "profile"
            check_output_folder(folder, default=True)
        result = run_profile(prepare(cfg), batches=batches)
        print_profile(result, _console())
        for path in write_profile(result, folder):
            _err(f"wrote {path}")

    guarded(body)


from dlx import cli_after, cli_runs, cli_tools  # noqa: E402, F401 - registers eval, export, predict, ensemble; runs, augment; schema


def run_app() -> None:
    """The command line in this process, under the name ``dlx`` (what ``main`` and ``python -m dlx`` run)."""
    app(prog_name="dlx")


def main() -> NoReturn:
    """The ``dlx`` entry point: the app, then the process ends without the interpreter's finalization (about 1 s
    with PyTorch loaded; ``dlx.process_end``)."""
    end_process(run_app)


if __name__ == "__main__":
    main()
