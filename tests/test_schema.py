"""The JSON Schemas of experiment and sweep files (dlx schema): the committed files are current, every shipped
file passes, broken files are refused, the enums are the registries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import load_config, read_yaml
from dlx.config.checks import datasets, initializers, models, optimizers, schedules
from dlx.models.class_path import CUSTOM
from dlx.schema_json import EXPERIMENT_SCHEMA_FILE, SWEEP_SCHEMA_FILE, experiment_schema, schema_text, sweep_schema
from dlx.sweep import load_sweep
from tests.conftest import REPO

runner = CliRunner()

EXPERIMENTS = sorted((REPO / "experiments").glob("mnist_*.yaml"))
SWEEP_FILE = REPO / "experiments" / "width-depth.yaml"


def committed(path: Path) -> dict[str, Any]:
    return json.loads((REPO / path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = committed(EXPERIMENT_SCHEMA_FILE)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def sweep_validator() -> Draft7Validator:
    schema = committed(SWEEP_SCHEMA_FILE)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def problems(validator: Draft7Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


# ---------------------------------------------------------------------------- the committed files


def test_committed_schemas_are_what_dlx_schema_prints_now() -> None:
    # After adding a key or a registered name: dlx schema --write (and --sweep --write), then commit.
    for args, path in (([], EXPERIMENT_SCHEMA_FILE), (["--sweep"], SWEEP_SCHEMA_FILE)):
        result = runner.invoke(app, ["schema", *args])
        assert result.exit_code == 0, result.output
        assert result.stdout == (REPO / path).read_text(encoding="utf-8"), f"{path} is stale: dlx schema {args} --write"


def test_schemas_are_draft_07_with_shared_definitions() -> None:
    for schema in (experiment_schema(), sweep_schema()):
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        Draft7Validator.check_schema(schema)
        text = schema_text(schema)
        assert "$defs" not in text and "prefixItems" not in text
        assert '"$ref": "#/definitions/' in text
    data = experiment_schema()["definitions"]["DataConfig"]["properties"]
    assert "description" in data["batch_size"] or "description" in data["data_dir"]  # the fields' descriptions


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_names_the_schema_validates_and_loads(path: Path, validator: Draft7Validator) -> None:
    assert path.read_text(encoding="utf-8").splitlines()[0] == "# yaml-language-server: $schema=dlx.schema.json"
    assert problems(validator, read_yaml(path)) == []
    assert load_config(path).name == path.stem  # the comment line changes nothing dlx reads


def test_the_shipped_sweep_names_its_schema_validates_and_loads(sweep_validator: Draft7Validator) -> None:
    first = SWEEP_FILE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=dlx.sweep.schema.json"
    assert problems(sweep_validator, read_yaml(SWEEP_FILE)) == []
    assert len(load_sweep(SWEEP_FILE).cells) == 9


def test_the_experiment_schema_never_requires_a_key(validator: Draft7Validator) -> None:
    # A file that extends another may hold any part of an experiment; name defaults to the file's name.
    assert problems(validator, {}) == []
    assert problems(validator, {"extends": "mnist_deep.yaml", "train": {"epochs": 1}}) == []


# ---------------------------------------------------------------------------- broken files are refused


@pytest.mark.parametrize(
    "data, where",
    [
        ({"model": {"name": "resnet9000"}}, "model.name"),
        ({"model": {"widht": 2}}, "model"),
        ({"trian": {"epochs": 1}}, ""),
        ({"train": {"epochs": "three"}}, "train.epochs"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"optimizer": {"name": "adamm"}}, "optimizer.name"),
        ({"init": {"name": "he"}}, "init.name"),
        ({"schedule": {"name": "linear"}}, "schedule.name"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset"),
        ({"data": {"val_size": -1}}, "data.val_size"),
        ({"augment": {"scale": [0.9, 1.1, 1.2]}}, "augment.scale"),
        ({"name": "a b"}, "name"),
        ({"extends": 3}, "extends"),
    ],
)
def test_a_broken_experiment_is_refused(data: dict[str, Any], where: str, validator: Draft7Validator) -> None:
    found = problems(validator, data)
    assert found and all(p.startswith(f"{where}: ") for p in found), found


def test_a_broken_sweep_is_refused(sweep_validator: Draft7Validator) -> None:
    assert problems(sweep_validator, {"grid": {"model.width": [1, 2]}}) == [": 'base' is a required property"]
    assert problems(sweep_validator, {"base": "x.yaml", "gird": {}})[0].startswith(": Additional properties")
    assert problems(sweep_validator, {"base": "x.yaml", "seeds": "0, 1"})[0].startswith("seeds: ")
    bad_random = {"base": "x.yaml", "random": {"budget": 4, "params": {"optimizer.lr": {"low": 1, "hi": 2}}}}
    assert problems(sweep_validator, bad_random)[0].startswith("random: ")  # 'hi' is no key of a sampled range
    assert problems(sweep_validator, {"base": "x.yaml", "grid": {"model.width": 2}}) == [
        "grid.model.width: 2 is not of type 'array'"
    ]


# ---------------------------------------------------------------------------- the enums are the registries

REGISTRIES = [
    ("model", models, ("ModelConfig", "name")),
    ("optimizer", optimizers, ("OptimizerConfig", "name")),
    ("initializer", initializers, ("InitConfig", "name")),
    ("schedule", schedules, ("ScheduleConfig", "name")),
    ("dataset", datasets, ("DataConfig", "dataset")),
]


@pytest.mark.parametrize("kind, registry, where", REGISTRIES, ids=[r[0] for r in REGISTRIES])
def test_each_enum_lists_every_registered_name(kind: str, registry: Any, where: tuple[str, str],
                                               validator: Draft7Validator) -> None:  # fmt: skip
    definition, key = where
    enum = committed(EXPERIMENT_SCHEMA_FILE)["definitions"][definition]["properties"][key]["enum"]
    names = registry().names()
    assert names, kind
    assert set(enum) == set(names) | ({CUSTOM} if kind == "model" else set())
    section = {"ModelConfig": "model", "OptimizerConfig": "optimizer", "InitConfig": "init",
               "ScheduleConfig": "schedule", "DataConfig": "data"}[definition]  # fmt: skip
    for name in names:
        assert problems(validator, {section: {key: name}}) == [], name


# ---------------------------------------------------------------------------- dlx schema --write / --output


def test_schema_write_saves_into_experiments_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    for args, path in (([], EXPERIMENT_SCHEMA_FILE), (["--sweep"], SWEEP_SCHEMA_FILE)):
        result = runner.invoke(app, ["schema", "--write", *args])
        assert result.exit_code == 0, result.output
        assert f"wrote {path}" in result.stderr and result.stdout == ""
        assert (tmp_path / path).read_text() == (REPO / path).read_text()
    result = runner.invoke(app, ["schema", "--output", "other/s.json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "other" / "s.json").read_text()) == experiment_schema()


def test_schema_bad_targets_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["schema", "--write"])  # no experiments/ here
    assert result.exit_code == 1
    assert result.output.startswith("error: --write: no experiments/ folder here") and result.output.count("\n") == 1
    assert not (tmp_path / "experiments").exists()
    (tmp_path / "a-file").write_text("x")
    for target, says in (("a-file/s.json", "a-file is a file, not a folder"), (".", "is a folder; give a file")):
        result = runner.invoke(app, ["schema", "--output", target])
        assert result.exit_code == 1
        assert result.output.startswith(f"error: --output {target}") and says in result.output, result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1
