"""The experiment schema: one pydantic section per YAML section, ``extra="forbid"`` everywhere (the shared base
in dlx.config.section; the ``data:`` section, the largest, in dlx.config.data_section).

The validators call dlx.config.checks for what types cannot say (registered names, a factory's keywords).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator

from dlx.config.checks import (
    check_kwargs,
    check_name,
    initializers,
    model_factory,
    model_problems,
    models,
    optimizers,
    schedule_problems,
    schedules,
    transfer_problems,
)
from dlx.config.data_section import DataConfig
from dlx.config.section import Section, seed_fits

# A multiplier of a model's channels / layers: the shipped sweeps use 0.125..2; beyond this no model fits in memory.
MAX_MULTIPLIER = 64
MAX_CROP_PADDING = 4096  # pixels; whether the padding suits the image size is checked when the data is built


class ModelConfig(Section):
    name: str = "deep_cnn"
    width: float = Field(1.0, gt=0, le=MAX_MULTIPLIER, description="channel / unit multiplier")
    depth: float = Field(1.0, gt=0, le=MAX_MULTIPLIER, description="layer / block multiplier")
    args: dict[str, Any] = Field(default_factory=dict)
    # User models (dlx.models.sequential, dlx.models.class_path): a layer list for name: sequential, or a class of one's own.
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
        from dlx.models.class_path import CUSTOM

        if isinstance(data, dict) and data.get("class_path") is not None and "name" not in data:
            return {**data, "name": CUSTOM}
        return data

    @field_validator("name")
    @classmethod
    def _model_known(cls, v: str) -> str:
        from dlx.models.class_path import CUSTOM

        return v if v == CUSTOM else check_name("model", models, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> ModelConfig:
        from dlx.models import RESERVED_MODEL_ARGS

        problems = model_problems(self)
        if problems:
            raise ValueError(" | ".join(problems))
        if self.class_path is None:
            check_kwargs(f"model {self.name!r}", models().get(self.name), self.args, RESERVED_MODEL_ARGS)
        return self

    def factory(self) -> Callable[..., Any]:
        """The class or function that builds this model (a registered factory or class_path's object)."""
        return model_factory(self)


class InitConfig(Section):
    name: str = "default"
    bias: float = 0.0
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _init_known(cls, v: str) -> str:
        return check_name("initializer", initializers, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> InitConfig:
        check_kwargs(f"initializer {self.name!r}", initializers().get(self.name), self.args, {"tensor"})
        if self.name == "default" and self.bias != 0.0:
            raise ValueError(
                "bias: only with an initializer other than 'default' (default keeps PyTorch's own biases); "
                f"got {self.bias:g}"
            )
        return self


class OptimizerConfig(Section):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float | None = Field(None, ge=0, description="the optimizer's own weight decay; null: its default")
    head_lr: float | None = Field(None, gt=0, description="learning rate of the parameters model.head names")
    scale_lr: Literal["none", "linear", "sqrt"] = Field(
        "none", description="scale lr (and head_lr) by the global batch over base_batch: linear or sqrt (timm's rule)"
    )
    base_batch: int | None = Field(
        None, ge=1, description="the batch lr was tuned for (scale_lr); null: data.batch_size, i.e. one device"
    )
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _optimizer_known(cls, v: str) -> str:
        return check_name("optimizer", optimizers, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> OptimizerConfig:
        reserved = {"params", "lr", "weight_decay"}
        check_kwargs(f"optimizer {self.name!r}", optimizers().get(self.name), self.args, reserved)
        return self


class RegularizationConfig(Section):
    l1: float = Field(0.0, ge=0, description="lambda * sum |w| added to the loss (weights, not biases)")
    l2: float = Field(0.0, ge=0, description="0.5 * lambda * sum w^2 added to the loss (weights, not biases)")
    dropout: float | None = Field(None, ge=0, lt=1, description="override the model's dropout probability")
    batch_norm: bool | None = Field(None, description="override the model's batch-norm switch")
    sync_batch_norm: bool = Field(
        False, description="batch statistics over all processes (SyncBatchNorm; CUDA only, several devices)"
    )


class AugmentConfig(Section):
    rotate: float = Field(0.0, ge=0, le=180, description="max degrees")
    translate: float = Field(0.0, ge=0, le=1, description="max fraction of the image size")
    scale: tuple[float, float] = (1.0, 1.0)
    crop_padding: int = Field(0, ge=0, le=MAX_CROP_PADDING, description="pixels of padding before a random crop")
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
        return check_name("schedule", schedules, v)

    @model_validator(mode="after")
    def _args_accepted(self) -> ScheduleConfig:
        from dlx.schedule import NO_WARMUP, RESERVED_SCHEDULE_ARGS

        check_kwargs(f"schedule {self.name!r}", schedules().get(self.name), self.args, RESERVED_SCHEDULE_ARGS)
        if self.warmup_epochs and self.name in NO_WARMUP:
            raise ValueError(f"warmup_epochs: not supported with schedule {self.name!r} ({NO_WARMUP[self.name]})")
        return self


# More worker processes than this on one machine is a typo (and each holds a copy of the data).
MAX_DEVICES = 1024


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    device: str = "auto"
    devices: int | Literal["auto"] = Field(
        1, description="processes on this machine, one device each (DDP); auto: every visible GPU, 1 on CPU"
    )
    grad_accum: int = Field(1, ge=1, le=4096, description="micro-batches whose gradients add up to one step")
    dist_timeout: float = Field(
        600.0, gt=0, le=86400, description="seconds a process waits for the others in a collective before failing"
    )
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="auto: bf16 where the device computes it natively (AMX/AVX512-BF16 CPU, Ampere+ GPU)"
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="channels-last (NHWC) model and batches; auto: when the model has a 2-D convolution"
    )
    compile: bool = False
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    early_stopping: int | None = Field(None, ge=1, description="stop after this many evaluations without improvement")
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    eval_every: int = Field(1, ge=1, description="validate every N epochs (and always after the last)")
    log_every: int = Field(20, ge=1, description="steps between progress updates (and divergence checks)")
    train_sample: int = Field(
        5000, ge=1, description="training images measured in eval mode after each epoch: train_loss, train_acc"
    )
    test_every_epoch: bool = Field(
        False, description="also measure the test set after every epoch (time-to-accuracy benchmarks; informs nothing)"
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_form(cls, v: Any) -> int | str:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DEVICES):
            return v
        raise ValueError(f"got {v!r}; allowed: 'auto' or a number of processes 1..{MAX_DEVICES}")

    @field_validator("channels_last", mode="before")
    @classmethod
    def _layout_form(cls, v: Any) -> bool | str:
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError(f"got {v!r}; allowed: true, false or 'auto'")

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
    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="trackers beside the run's files: tensorboard, mlflow, wandb (extras)"
    )

    @field_validator("loggers")
    @classmethod
    def _loggers_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"got {v}; name each tracker once")
        return v


class ExperimentConfig(Section):
    # pydantic's pattern is a Rust regex: its ``$`` does not match before a trailing newline ('x\n' is refused).
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(0, description="seeds everything random in the run; 64-bit")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # The experiment file this config was read from (not part of the config: runs record it as provenance).
    _source_file: str | None = PrivateAttr(default=None)

    @field_validator("seed")
    @classmethod
    def _seed_fits(cls, v: int) -> int:
        return seed_fits(v)

    @property
    def source_file(self) -> str | None:
        return self._source_file

    def from_file(self, path: str | None) -> ExperimentConfig:
        """Remember the experiment file this config came from (runs record its project's git commit); self."""
        self._source_file = None if path is None else str(path)
        return self

    def __eq__(self, other: object) -> bool:
        # Two configs are equal when they describe the same experiment, wherever each was read from.
        return isinstance(other, ExperimentConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _model_takes_regularization(self) -> ExperimentConfig:
        from dlx.models import accepts

        factory = self.model.factory()
        problems = [
            f"regularization.{key}: model {self.model.name!r} has no {key} option; remove the key"
            for key in ("dropout", "batch_norm")
            if getattr(self.regularization, key) is not None and not accepts(factory, key)
        ]
        problems += transfer_problems(self)  # weights, init_from, head / head_lr
        problems += schedule_problems(self)  # multistep milestones inside train.epochs
        if problems:
            raise ValueError(" | ".join(problems))
        return self

    def with_train(self, **changes: Any) -> ExperimentConfig:
        """A copy with these ``train`` keys changed (a value dlx resolved, e.g. ``auto``); the source file kept."""
        return self.model_copy(update={"train": self.train.model_copy(update=changes)})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
