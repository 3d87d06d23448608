"""The ``dlx`` Typer app and what every command shares: one-line errors (``guarded``), the console.

Commands live in ``dlx.cli`` (training, sweeps, comparisons, models), ``dlx.cli_after`` (after training:
eval, predict, export, ensemble), ``dlx.cli_runs`` (runs: list, rm, clean-checkpoints; augment) and ``dlx.cli_tools``
(schema); ``dlx.cli.main`` is the entry point. The app itself answers ``--version``, ``-h`` (as ``--help``, on
every command) and ``--install-completion``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="dlx",
    help="Run and compare deep-learning image-classification experiments described in YAML.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def version_text() -> str:
    """``dlx 0.1.0 (torch 2.7.1)``: the installed dlx and torch, read from package metadata (torch not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        dlx_version = version("dlx")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import dlx

        dlx_version = getattr(dlx, "__version__", "unknown")
    try:
        torch_version = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch_version = "torch not installed"
    return f"dlx {dlx_version} ({torch_version})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show dlx's and torch's versions and exit."
        ),
    ] = False,
) -> None:
    """Run and compare deep-learning image-classification experiments described in YAML."""


def _err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)


def _rank() -> str | None:
    """This process's rank when a launcher (torchrun, dlx --devices) started it, else None."""
    import os

    return os.environ.get("RANK") if "WORLD_SIZE" in os.environ else None


def guarded(fn: Callable[[], Any], *, say_interrupt: bool = True) -> Any:
    """Run a command body: user errors print one clear message and exit with their code, no traceback.

    Among several processes rank 0 says what every rank hit alike (the config, a shared decision); another
    rank's own error is said with its rank. ``say_interrupt=False``: a launcher says "interrupted" itself.
    """
    from dlx.errors import ConfigError, DlxError, SharedError, one_line

    rank = _rank()
    quiet = rank not in (None, "0")
    prefix = f"rank {rank}: " if quiet else ""
    try:
        return fn()
    except ConfigError as e:
        if not quiet:
            _err("\n".join(f"error: {one_line(line)}" for line in e.problems))
        raise typer.Exit(e.exit_code) from None
    except DlxError as e:
        if not (quiet and isinstance(e, SharedError)):
            _err(f"error: {prefix}{one_line(str(e))}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        from dlx.signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated

        terminated = isinstance(e, Terminated)
        if not quiet and say_interrupt:
            _err("terminated" if terminated else "interrupted")
        raise typer.Exit(EXIT_SIGTERM if terminated else EXIT_SIGINT) from None


def _console() -> Any:
    from dlx.console import wide_console

    return wide_console()
