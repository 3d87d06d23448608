"""The ``dlx`` command line: a thin Typer app. Heavy imports (torch) happen inside commands,
so ``dlx --help`` is instant."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="dlx",
    help="Run and compare deep-learning image-classification experiments described in YAML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Run and compare deep-learning image-classification experiments described in YAML."""


def _err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body: user errors print one clear message and exit with their code, no traceback."""
    from dlx.errors import ConfigError, DlxError

    try:
        return fn()
    except ConfigError as e:
        _err("\n".join(f"error: {line}" for line in e.problems))
        raise typer.Exit(e.exit_code) from None
    except DlxError as e:
        _err(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


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
) -> None:
    """Train one experiment and write a complete run directory."""

    def body() -> None:
        from dlx.errors import DlxError

        if resume is not None:
            if config is not None or set_ or dry_run or run_id:
                raise DlxError(
                    "--resume takes no experiment file, --set, --dry-run or --run-id: the run has its config"
                )
            from dlx.session import resume_run

            summary = resume_run(resume, quiet=quiet)
        else:
            if config is None:
                raise DlxError("give an experiment file (dlx train experiments/mnist_deep.yaml) or --resume RUN_DIR")
            from dlx.config import load_config

            cfg = load_config(config, set_ or [])
            if dry_run:
                from dlx.session import dry_run as show

                show(cfg)
                return
            from dlx.session import start_run

            summary = start_run(cfg, runs_dir=runs_dir, run_id=run_id, quiet=quiet)
        if summary["status"] != "completed":
            raise typer.Exit(1)

    guarded(body)


def main() -> None:
    app(prog_name="dlx")


if __name__ == "__main__":
    sys.exit(main())
