"""The experiment file: YAML in, a validated ``ExperimentConfig`` out.

Raw YAML exists only in this module. ``load_config`` reads the file (``yaml.safe_load``),
follows ``extends:``, applies ``--set key=value`` overrides, validates everything at once
with pydantic and reports *every* problem as one line:

    experiments/x.yaml: model.widht: unknown key; did you mean 'width'?
    experiments/x.yaml: train.precision: got 'fp8'; allowed: 'fp32', 'bf16', 'fp16'

Everything after this module works with typed objects.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlx.errors import ConfigError
from dlx.registry import closest, unknown_name_message


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_name(kind: str, registry_getter: Callable[[], Any], name: str) -> str:
    registry = registry_getter()
    if name not in registry:
        raise ValueError(unknown_name_message(kind, name, registry.names()))
    return name


def _check_kwargs(kind: str, fn: Callable[..., Any], args: dict[str, Any], reserved: set[str]) -> None:
    """Every key in ``args`` must be a keyword the factory accepts (and not one dlx sets itself)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL} - reserved
    problems = []
    for key in args:
        if key in reserved:
            problems.append(f"args.{key}: set by dlx itself; remove it from args")
        elif key not in accepted:
            hint = closest(key, accepted)
            msg = f"args.{key}: unknown argument for {kind}"
            msg += f"; did you mean {hint!r}?" if hint else ""
            msg += f" allowed: {', '.join(sorted(accepted)) or '(none)'}"
            problems.append(msg)
    if problems:
        raise ValueError(" | ".join(problems))


def _models():
    from dlx.models import MODELS

    return MODELS


def _optimizers():
    from dlx.optim import OPTIMIZERS

    return OPTIMIZERS


def _schedules():
    from dlx.schedule import SCHEDULES

    return SCHEDULES


def _initializers():
    from dlx.init import INITIALIZERS

    return INITIALIZERS


def _datasets():
    from dlx.data.datasets import DATASETS

    return DATASETS


class DataConfig(Section):
    dataset: str = "mnist"
    data_dir: str | None = Field(None, description="where torchvision datasets live; default $DLX_DATA_DIR or ./data")
    download: bool = True
    val_size: int = Field(5000, ge=0, description="images held out of the training set for validation")
    train_size: int | None = Field(None, ge=1, description="use only this many training images (quick runs)")
    test_size: int | None = Field(None, ge=1, description="use only this many test images (quick runs)")
    split_seed: int = 0
    batch_size: int = Field(100, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    normalize: bool = Field(True, description="standardize with the dataset's mean/std; false: scale to [0, 1]")

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        return _check_name("dataset", _datasets, v)


class ModelConfig(Section):
    name: str = "deep_cnn"
    width: float = Field(1.0, gt=0, description="channel / unit multiplier")
    depth: float = Field(1.0, gt=0, description="layer / block multiplier")
    args: dict[str, Any] = Field(default_factory=dict)
    # User models (dlx.models.custom): a layer list for name: sequential, or a class of one's own.
    layers: list[Any] | None = Field(None, description="name: sequential: [{conv: {out: 16}}, {act: relu}, ...]")
    class_path: str | None = Field(None, description="your own nn.Module, 'package.module:ClassName' (name: custom)")
    init_args: dict[str, Any] = Field(default_factory=dict, description="keywords for class_path's class")
    # Transfer learning (dlx.transfer).
    init_from: str | None = Field(None, description="start from runs/<name>/<run-id> (best.pt) or a checkpoint file")
    weights: str | None = Field(None, description="torchvision pretrained weights: DEFAULT or an enum name")
    freeze: list[str] = Field(default_factory=list, description="fnmatch patterns of parameters kept fixed")
    head: list[str] = Field(default_factory=list, description="fnmatch patterns of the head (optimizer.head_lr)")

    @model_validator(mode="before")
    @classmethod
    def _class_path_names_the_model(cls, data: Any) -> Any:
        from dlx.models.custom import CUSTOM

        if isinstance(data, dict) and data.get("class_path") is not None and "name" not in data:
            return {**data, "name": CUSTOM}
        return data

    @field_validator("name")
    @classmethod
    def _model_known(cls, v: str) -> str:
        from dlx.models.custom import CUSTOM

        return v if v == CUSTOM else _check_name("model", _models, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> ModelConfig:
        from dlx.models import RESERVED_MODEL_ARGS
        from dlx.models.custom import model_problems

        problems = model_problems(self)
        if problems:
            raise ValueError(" | ".join(problems))
        if self.class_path is None:
            _check_kwargs(f"model {self.name!r}", _models().get(self.name), self.args, RESERVED_MODEL_ARGS)
        return self

    def factory(self) -> Callable[..., Any]:
        """The class or function that builds this model (a registered factory or class_path's object)."""
        from dlx.models.custom import model_factory

        return model_factory(self)


class InitConfig(Section):
    name: str = "default"
    bias: float = 0.0
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _init_known(cls, v: str) -> str:
        return _check_name("initializer", _initializers, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> InitConfig:
        _check_kwargs(f"initializer {self.name!r}", _initializers().get(self.name), self.args, {"tensor"})
        return self


class OptimizerConfig(Section):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float | None = Field(None, ge=0, description="the optimizer's own weight decay; null: its default")
    head_lr: float | None = Field(None, gt=0, description="learning rate of the parameters model.head names")
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _optimizer_known(cls, v: str) -> str:
        return _check_name("optimizer", _optimizers, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> OptimizerConfig:
        reserved = {"params", "lr", "weight_decay"}
        _check_kwargs(f"optimizer {self.name!r}", _optimizers().get(self.name), self.args, reserved)
        return self


class RegularizationConfig(Section):
    l1: float = Field(0.0, ge=0, description="lambda * sum |w| added to the loss (weights, not biases)")
    l2: float = Field(0.0, ge=0, description="0.5 * lambda * sum w^2 added to the loss (weights, not biases)")
    dropout: float | None = Field(None, ge=0, lt=1, description="override the model's dropout probability")
    batch_norm: bool | None = Field(None, description="override the model's batch-norm switch")


class AugmentConfig(Section):
    rotate: float = Field(0.0, ge=0, le=180, description="max degrees")
    translate: float = Field(0.0, ge=0, le=1, description="max fraction of the image size")
    scale: tuple[float, float] = (1.0, 1.0)
    crop_padding: int = Field(0, ge=0)
    hflip: bool = False
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"got {list(v)}; need [low, high] with 0 < low <= high")
        return v


class ScheduleConfig(Section):
    name: str = "none"
    warmup_epochs: float = Field(0.0, ge=0)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _schedule_known(cls, v: str) -> str:
        return _check_name("schedule", _schedules, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> ScheduleConfig:
        from dlx.schedule import NO_WARMUP, RESERVED_SCHEDULE_ARGS

        _check_kwargs(f"schedule {self.name!r}", _schedules().get(self.name), self.args, RESERVED_SCHEDULE_ARGS)
        if self.warmup_epochs and self.name in NO_WARMUP:
            raise ValueError(f"warmup_epochs: not supported with schedule {self.name!r} ({NO_WARMUP[self.name]})")
        return self


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    early_stopping: int | None = Field(None, ge=1, description="stop after this many evaluations without improvement")
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    eval_every: int = Field(1, ge=1, description="validate every N epochs (and always after the last)")
    log_every: int = Field(20, ge=1, description="steps between progress updates (and divergence checks)")
    test_every_epoch: bool = Field(
        False, description="also measure the test set after every epoch (time-to-accuracy benchmarks; informs nothing)"
    )

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"got {v!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
        return v


class OutputConfig(Section):
    runs_dir: str = "runs"
    gallery_size: int = Field(20, ge=0, description="misclassified test images shown in misclassified.png")
    plots: bool = True


class ExperimentConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _model_takes_regularization(self) -> ExperimentConfig:
        from dlx.models import accepts
        from dlx.transfer import config_problems

        factory = self.model.factory()
        problems = [
            f"regularization.{key}: model {self.model.name!r} has no {key} option; remove the key"
            for key in ("dropout", "batch_norm")
            if getattr(self.regularization, key) is not None and not accepts(factory, key)
        ]
        problems += config_problems(self)  # weights, init_from, head / head_lr
        if problems:
            raise ValueError(" | ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------- loading


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"{label}: file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{label}: not valid YAML{where}: {problem}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not a UTF-8 text file"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{label}: the top level must be a mapping of keys, got {type(data).__name__}"])
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key; anything else in ``override`` replaces ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    label = str(path)
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ConfigError([f"{label}: extends: cycle ({chain})"])
    data = _read_yaml(path, label)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError([f"{label}: extends: got {parent!r}; expected a path to another experiment file"])
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise ConfigError([f"{label}: extends: file not found: {parent_path}"])
    return deep_merge(_resolve_extends(parent_path, (*seen, resolved)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``optimizer.lr=0.01`` -> (['optimizer', 'lr'], 0.01); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """``data[a][b] = value`` for keys ``[a, b]``, creating sections; a value in the way is a ValueError."""
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{k!r} is not a section (it holds {child!r})")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        try:
            set_dotted(out, keys, value)
        except ValueError as e:
            raise ConfigError([f"--set {item!r}: {e}"]) from None
    return out


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


def _format_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_SUBKEY = re.compile(r"^[a-z_][a-z0-9_.]*: ")


def format_errors(error: ValidationError, label: str, schema: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: ``file: key.path: what is wrong``. ``schema``: the model validated (default: experiments)."""
    lines = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
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


def validate(data: dict[str, Any], label: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, label)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, merge, override and validate an experiment file. Raises ConfigError listing every problem."""
    path = Path(path)
    data = _resolve_extends(path)
    data = apply_overrides(data, overrides or [])
    data.setdefault("name", path.stem)
    return validate(data, str(path))


def config_from_dict(data: dict[str, Any], label: str = "<config>") -> ExperimentConfig:
    return validate(copy.deepcopy(data), label)


def read_yaml(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A YAML file that must hold a mapping (sweep files, a run's config.yaml); ConfigError otherwise."""
    return _read_yaml(Path(path), label or str(path))


def read_experiment(path: str | Path) -> dict[str, Any]:
    """An experiment file with ``extends:`` followed, not yet validated: what sweeps build their cells on."""
    path = Path(path)
    data = _resolve_extends(path)
    data.setdefault("name", path.stem)
    return data
