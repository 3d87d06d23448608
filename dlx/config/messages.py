"""Pydantic's validation errors as dlx's one-line problems: ``file: key.path: what is wrong``."""

from __future__ import annotations

import re
import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError

from dlx.config.schema import ExperimentConfig
from dlx.registry import closest


def _fields_at(loc: tuple[Any, ...], schema: type[BaseModel] | None = None) -> list[str]:
    """Valid keys of the section that ``loc`` points into (for did-you-mean)."""
    cls: Any = schema or ExperimentConfig
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return []
        cls = field.annotation
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return []


# repr() of what a config holds, cut short while it is built: a value shared by YAML aliases can stand for a
# billion values, and repr() of an integer of 5,000 digits raises.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6


def _format_value(v: Any) -> str:
    """A value as a problem line quotes it: its repr, at most 60 characters, never built in full."""
    try:
        text = _REPR.repr(v)
    except Exception:  # a repr that raises (an int past Python's digit limit): name the type instead
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


# A section validator's message that names its sub-keys itself (``args.eps: ...``); args keys are the user's own.
_SUBKEY = re.compile(r"""^[a-z_](?:[^\s:'"]|'[^']*'|"[^"]*")*: """)


def _key_part(part: Any) -> str:
    """One part of a key path as a line shows it: an empty or unprintable key is quoted (``model.''``)."""
    text = str(part)
    return text if text and text.isprintable() else repr(text)


def format_errors(error: ValidationError, label: str, schema: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: ``file: key.path: what is wrong``. ``schema``: the model validated (default: experiments)."""
    lines = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        key = ".".join(_key_part(p) for p in loc) or "(top level)"
        kind = err["type"]
        given = err.get("input")
        if kind == "extra_forbidden":
            hint = closest(str(loc[-1]), _fields_at(loc, schema))
            msg = "unknown key" + (f"; did you mean {hint!r}?" if hint else "")
            allowed = _fields_at(loc, schema)
            if not hint and allowed:
                msg += f"; allowed: {', '.join(allowed)}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "literal_error":
            msg = f"got {_format_value(given)}; allowed: {err['ctx']['expected']}"
        elif kind == "value_error":
            text = str(err["ctx"]["error"])
            if _SUBKEY.match(text):  # a section validator names the sub-keys itself: one line each
                prefix = f"{key}." if loc else ""
                lines.extend(f"{label}: {prefix}{part}" for part in text.split(" | "))
                continue
            msg = text if text.startswith(("unknown ", "got ")) else f"got {_format_value(given)}; {text}"
        else:
            msg = f"got {_format_value(given)}; {err['msg'][0].lower()}{err['msg'][1:]}"
        lines.append(f"{label}: {key}: {msg}")
    return lines
