"""The ``dlx`` Typer app and what every command shares: one-line errors (``guarded``), the console.

Commands live in ``dlx.cli`` (training, sweeps, comparisons, models), ``dlx.cli_after`` (after training:
eval, predict, export, ensemble) and ``dlx.cli_runs`` (runs: list, rm, clean-checkpoints; augment); ``dlx.cli.main`` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
