"""Name -> object registries: YAML names things, code registers them.

MODELS = Registry("model")

@MODELS.register("deep_cnn")
def deep_cnn(...): ...

MODELS.get("deep_cnn")   # the function
MODELS.get("deep_cnm")   # DlxError: unknown model 'deep_cnm'; did you mean 'deep_cnn'? valid: ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dlx.errors import DlxError

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest valid name to a typo, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: object, choices: list[str]) -> str:
    """`unknown model 'vgj'; did you mean 'vgg'? valid: a, b, c` — shared by registry and config."""
    hint = closest(name, choices) if isinstance(name, str) else None
    lead = f"; did you mean {hint!r}?" if hint is not None else ";"
    return f"unknown {kind} {name!r}{lead} valid: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    """A named collection of factories. Duplicate names are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered as {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise DlxError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def describe(obj: Any) -> str:
    """First line of an entry's docstring, for listings."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
