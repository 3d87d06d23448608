"""User-facing errors: printed as one clear message, never as a traceback."""

from __future__ import annotations


class DlxError(Exception):
    """A problem caused by the user's input (config, paths, environment).

    The CLI prints ``str(error)`` and exits with ``exit_code``; no traceback.
    """

    exit_code = 1


class ConfigError(DlxError):
    """One or more problems in an experiment file; each problem is one line."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SharedError(DlxError):
    """An error every process of a multi-process run raises alike (rank 0's, shared): only rank 0 prints it."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name: what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``): a key or value of the user's
    never splits an error line in two, nor sends control codes to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
