"""The experiment file: YAML in, a validated ``ExperimentConfig`` out. Raw YAML exists only in this package.

``load_config`` reads the file, follows ``extends:``, applies ``--set key=value`` overrides, validates
everything at once with pydantic and reports *every* problem as one line:

    experiments/x.yaml: model.widht: unknown key; did you mean 'width'?
    experiments/x.yaml: train.precision: got 'fp8'; allowed: 'fp32', 'bf16', 'fp16' or 'auto'

Everything after this package works with typed objects. Modules: ``schema`` (the sections; ``section`` their
base, ``data_section`` the data section), ``checks``
(registered names, keywords, user models, transfer keys), ``loading`` (files, extends, overrides),
``messages`` (one line per problem).
"""

from __future__ import annotations

from dlx.config.loading import (
    apply_overrides,
    config_differences,
    config_from_dict,
    deep_merge,
    flatten,
    load_config,
    load_run_config,
    parse_override,
    read_experiment,
    read_yaml,
    set_dotted,
    validate,
)
from dlx.config.messages import format_errors
from dlx.config.schema import (
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    InitConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    RegularizationConfig,
    ScheduleConfig,
    Section,
    TrainConfig,
)

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ExperimentConfig",
    "InitConfig",
    "ModelConfig",
    "OptimizerConfig",
    "OutputConfig",
    "RegularizationConfig",
    "ScheduleConfig",
    "Section",
    "TrainConfig",
    "apply_overrides",
    "config_differences",
    "config_from_dict",
    "deep_merge",
    "flatten",
    "format_errors",
    "load_config",
    "load_run_config",
    "parse_override",
    "read_experiment",
    "read_yaml",
    "set_dotted",
    "validate",
]
