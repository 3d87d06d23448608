"""JSON Schemas (draft-07) of the experiment and sweep files, for editors (yaml-language-server) and CI checks.

Generated from the pydantic models (dlx.config.schema, dlx.sweep.spec) with the registered names as enums:
``dlx schema`` prints them, ``dlx schema --write`` saves ``experiments/dlx.schema.json`` and
``experiments/dlx.sweep.schema.json``, which the shipped files name in their first line
(``# yaml-language-server: $schema=dlx.schema.json``). The registries are imported when a schema is built.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
REF_TEMPLATE = "#/definitions/{model}"

# Where --write saves each schema (relative to the project folder: beside the shipped experiments).
EXPERIMENTS_DIR = Path("experiments")
EXPERIMENT_SCHEMA_FILE = EXPERIMENTS_DIR / "dlx.schema.json"
SWEEP_SCHEMA_FILE = EXPERIMENTS_DIR / "dlx.sweep.schema.json"

# The line an experiment file starts with so that yaml-language-server (VS Code's YAML extension) checks it.
SCHEMA_LINE = "# yaml-language-server: $schema={}"

# Keys an experiment file holds that the model does not: dlx.config.loading reads them before validating.
FILE_ONLY_KEYS: dict[str, dict[str, Any]] = {
    "extends": {
        "type": "string",
        "description": "build on another experiment file (a path relative to this one); this file's keys win",
    },
}

# pydantic writes these constraint names when it cannot place them (a union such as int | float).
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}

# Keywords whose value is a mapping of names to schemas, one schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_ONE = ("additionalProperties", "additionalItems", "items", "not", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "items")


def _draft7(node: Any) -> Any:
    """A pydantic (draft 2020-12) schema node as draft-07 says it, recursively."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key, keyword in _BOUNDS.items():
        if key in out and keyword not in out:
            out[keyword] = out.pop(key)
    if "prefixItems" in out:  # a tuple: draft-07 lists the items' schemas in items, and no more
        out["items"] = out.pop("prefixItems")
        out["additionalItems"] = False
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _draft7(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = _draft7(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_draft7(sub) for sub in out[key]]
    if "$ref" in out and len(out) > 1:  # draft-07 ignores whatever stands beside $ref: wrap it
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def _model_schema(model: type[BaseModel], title: str, description: str) -> dict[str, Any]:
    """``model``'s JSON Schema in draft-07 form: ``$schema`` first, shared sections under ``definitions``."""
    raw = model.model_json_schema(ref_template=REF_TEMPLATE)
    definitions = raw.pop("$defs", {})
    raw.pop("title", None)
    raw.pop("description", None)
    schema: dict[str, Any] = {"$schema": DRAFT_07, "title": title, "description": description, **raw}
    if definitions:
        schema["definitions"] = definitions
    return _draft7(schema)


def _name_enum(prop: dict[str, Any], names: list[str], description: str) -> None:
    prop["enum"] = names
    prop.setdefault("description", description)


def registered_names() -> dict[str, list[str]]:
    """The names each registry holds, sorted (what the enums of the experiment schema list)."""
    from dlx.config.checks import datasets, initializers, models, optimizers, schedules

    getters = {"model": models, "optimizer": optimizers, "initializer": initializers, "schedule": schedules,
               "dataset": datasets}  # fmt: skip
    return {kind: sorted(getter().names()) for kind, getter in getters.items()}


def experiment_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file (draft-07): every key with its type, bounds and description, the
    registered names as enums, ``extends`` allowed; no key required (a file that ``extends:`` another may hold
    any part, and ``name`` defaults to the file's name)."""
    from dlx.config.schema import ExperimentConfig
    from dlx.models.class_path import CUSTOM

    schema = _model_schema(
        ExperimentConfig,
        "dlx experiment file",
        "An experiment for `dlx train` (dlx.config.schema); `dlx schema` prints this schema.",
    )
    schema.pop("required", None)
    name = schema["properties"]["name"]
    name.setdefault("description", "the run folder's name, runs/<name>/<run-id>; default: the file's name")
    schema["properties"] = {**copy.deepcopy(FILE_ONLY_KEYS), **schema["properties"]}
    names, defs = registered_names(), schema["definitions"]
    _name_enum(defs["ModelConfig"]["properties"]["name"], sorted([*names["model"], CUSTOM]),
               f"a registered model (dlx models lists them), or {CUSTOM} with class_path")  # fmt: skip
    _name_enum(defs["OptimizerConfig"]["properties"]["name"], names["optimizer"], "a registered optimizer")
    _name_enum(defs["InitConfig"]["properties"]["name"], names["initializer"], "a registered initializer")
    _name_enum(defs["ScheduleConfig"]["properties"]["name"], names["schedule"], "a registered schedule")
    _name_enum(defs["DataConfig"]["properties"]["dataset"], names["dataset"],
               "a torchvision dataset, or folder / csv: your own images")  # fmt: skip
    return schema


# What each top-level key of a sweep file does (dlx.sweep.spec), where SweepSpec's own fields say nothing.
SWEEP_KEYS = {
    "name": "the sweep's folder, runs/<name>/<cell>; default: the sweep file's name",
    "base": "the experiment file every cell starts from (relative to the sweep file)",
    "set": "dotted keys set in every cell, like --set: {train.epochs: 2}",
    "grid": "dotted keys and the values to cross: {model.width: [0.5, 1, 2], model.depth: [1, 2]}",
    "variants": "explicit points, each a mapping of dotted keys (and an optional name), crossed with the grid",
    "random": "random search: budget (configurations), seed, params: {key: {low, high, log, integer} or {choices}}",
    "seeds": "every cell once per seed: [0, 1, 2]",
}


def sweep_schema() -> dict[str, Any]:
    """The JSON Schema of a sweep file (draft-07): its top-level keys (base, set, grid, variants, random, seeds,
    name, workers); the dotted keys inside are checked by dlx when it builds each cell."""
    from dlx.sweep.spec import SweepSpec

    schema = _model_schema(
        SweepSpec,
        "dlx sweep file",
        "A sweep for `dlx sweep` (dlx.sweep.spec): cells are grid x variants x random samples x seeds.",
    )
    for key, text in SWEEP_KEYS.items():
        schema["properties"][key].setdefault("description", text)
    return schema


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as the committed files hold it: indented JSON, ASCII, one final newline."""
    return json.dumps(schema, indent=2) + "\n"
