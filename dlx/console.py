"""One rule for where dlx prints: a terminal keeps its width; a file or a pipe gets wide lines, never squeezed."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 200  # a file or a pipe has no width: tables are not squeezed into 80 columns there


def wide_console(*, stderr: bool = False) -> Console:
    """A rich console that prints tables whole: the terminal's width, or ``PIPE_WIDTH`` when not a terminal."""
    console = Console(highlight=False, stderr=stderr)
    if console.is_terminal:
        return console
    return Console(highlight=False, stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
