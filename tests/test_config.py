from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from dlx.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    load_run_config,
    parse_override,
    read_yaml,
)
from dlx.config.messages import _format_value
from dlx.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    return e.value.problems


def test_shipped_experiments_validate() -> None:
    for path in [*sorted((REPO / "experiments").glob("mnist_*.yaml")), REPO / "benchmarks" / "examples_net.yaml"]:
        cfg = load_config(path)
        assert isinstance(cfg, ExperimentConfig)
        assert cfg.name == path.stem


def test_book_recipe_is_the_books() -> None:
    cfg = load_config(REPO / "experiments" / "mnist_deep_book.yaml")
    assert (cfg.model.name, cfg.init.name, cfg.optimizer.name, cfg.optimizer.lr) == (
        "deep_cnn",
        "he_normal",
        "adam",
        1e-3,
    )
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.augment.rotate, cfg.schedule.name) == (100, 20, 0, "none")
    # All 60,000 training images, pixels in [0, 1], the final weights tested (train_deepnet.py's Trainer).
    assert (cfg.data.val_size, cfg.data.normalize) == (0, False)


def test_every_problem_reported_at_once_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\n"
        "model: {widht: 2}\n"
        "optimizer: {name: adm, lr: -1}\n"
        "train: {precision: fp8, device: gpu, epochs: x, channels_last: maybe}\n"
        "foo: 1\n",
    )
    p = str(path)
    assert problems(path) == [
        f"{p}: model.widht: unknown key; did you mean 'width'?",
        f"{p}: optimizer.name: unknown optimizer 'adm'; did you mean 'adam'? valid: adadelta, adagrad, adam, adamw, "
        "momentum, nesterov, rmsprop, sgd",
        f"{p}: optimizer.lr: got -1; input should be greater than 0",
        f"{p}: train.epochs: got 'x'; input should be a valid integer, unable to parse string as an integer",
        f"{p}: train.device: got 'gpu'; allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'",
        f"{p}: train.precision: got 'fp8'; allowed: 'fp32', 'bf16', 'fp16' or 'auto'",
        f"{p}: train.channels_last: got 'maybe'; allowed: true, false or 'auto'",
        f"{p}: foo: unknown key; allowed: name, seed, data, model, init, optimizer, regularization, augment, "
        "schedule, train, output",
    ]


def test_unknown_model_and_factory_arguments(tmp_path: Path) -> None:
    from dlx.models import MODELS

    path = write(tmp_path, "name: t\nmodel: {name: deep_cnm}\n")
    valid = ", ".join(MODELS.names())
    assert problems(path) == [f"{path}: model.name: unknown model 'deep_cnm'; did you mean 'deep_cnn'? valid: {valid}"]
    path = write(tmp_path, "name: t\nmodel: {name: mlp, args: {hiden: [10], width: 2}}\n")
    assert problems(path) == [
        f"{path}: model.args.hiden: unknown argument for model 'mlp'; did you mean 'hidden'? "
        "allowed: activation_name, hidden",
        f"{path}: model.args.width: set by dlx itself; remove it from args",
    ]
    path = write(tmp_path, "name: t\noptimizer: {name: adam, args: {beta: [0.9, 0.99]}}\n")
    assert problems(path) == [
        f"{path}: optimizer.args.beta: unknown argument for optimizer 'adam'; did you mean 'betas'? "
        "allowed: amsgrad, betas, eps"
    ]


def test_schedule_warmup_refused_where_meaningless(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nschedule: {name: onecycle, warmup_epochs: 1}\n")
    assert problems(path) == [
        f"{path}: schedule.warmup_epochs: not supported with schedule 'onecycle' (it warms up by itself: "
        "use args.pct_start)"
    ]


def test_multistep_milestones_must_lie_inside_the_run(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: t\ntrain: {epochs: 10}\nschedule: {name: multistep, args: {milestones: [0, 5, 10]}}\n"
    )
    assert problems(path) == [
        f"{path}: schedule.args.milestones: got [0, 5, 10]; each must lie strictly inside the run, in 1..9 "
        "(train.epochs is 10); outside: [0, 10]"
    ]
    assert problems(path, ["train.epochs=1", "schedule.args.milestones=[1]"]) == [
        f"{path}: schedule.args.milestones: got [1]; a 1-epoch run (train.epochs) has no epoch boundary for them; "
        "remove them"
    ]
    assert problems(path, ["schedule.args.milestones=5"]) == [
        f"{path}: schedule.args.milestones: got 5; expected a list of epoch numbers, e.g. [30, 60]"
    ]
    assert load_config(path, ["schedule.args.milestones=[1, 9]"]).schedule.args["milestones"] == [1, 9]


def test_init_bias_needs_an_initializer(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ninit: {bias: 0.1}\n")
    assert problems(path) == [
        f"{path}: init.bias: only with an initializer other than 'default' (default keeps PyTorch's own biases); "
        "got 0.1"
    ]
    assert load_config(path, ["init.name=he_normal"]).init.bias == 0.1
    assert load_config(path, ["init.bias=0"]).init.name == "default"


def test_regularization_needs_a_model_that_takes_it(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: {name: deep_cnn}\nregularization: {dropout: 0.3, batch_norm: true}\n")
    cfg = load_config(path)
    assert cfg.regularization.dropout == 0.3


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: {name: deep_cnn\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: not valid YAML (line 3, column 1)")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]
    path = write(tmp_path, "- a\n- b\n")
    assert problems(path) == [f"{path}: the top level must be a mapping of keys, got list"]


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    (line,) = problems(path)
    assert "not valid YAML" in line


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level lists the previous one 9 times; ``seed`` holds 10**levels values."""
    lines = ["name: t", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"seed: *a{levels - 1}", ""])


def nested(levels: int, key: str = "seed") -> str:
    """``key`` holds lists nested ``levels`` deep: the file is nested ``levels + 1`` levels (its mapping is one)."""
    return f"name: t\n{key}: {'[' * levels}{']' * levels}\n"


BOMB = re.compile(
    r"too large: [\d,]+ values once YAML aliases are expanded \(at most 100,000\); is this an alias bomb\?$"
)


def test_an_alias_bomb_is_refused_before_anything_expands_it(tmp_path: Path) -> None:
    """Nine levels of 'billion laughs' once hung dlx at 4 GB: the error message repr()ed the expanded value."""
    path = write(tmp_path, billion_laughs())
    start = time.monotonic()
    (line,) = problems(path)
    assert time.monotonic() - start < 2  # a second or less on a quiet machine; minutes (and GBs) without the check
    assert line.startswith(f"{path}: ") and BOMB.search(line), line
    # Every YAML dlx reads has the same bound: sweep files (read_yaml), a run's config.yaml, --set values.
    with pytest.raises(ConfigError, match=BOMB):
        read_yaml(path)
    with pytest.raises(ConfigError, match=BOMB):
        load_run_config(path)
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    inline = f"[{', '.join(levels)}]"
    with pytest.raises(ConfigError, match=BOMB):
        parse_override(f"seed={inline}")
    # An extends parent too.
    child = write(tmp_path, "extends: exp.yaml\nname: c\n", "child.yaml")
    assert problems(child) == [line]


def test_nesting_is_bounded_with_a_clean_error(tmp_path: Path) -> None:
    """1000 levels gave a RecursionError traceback (and libyaml's C loader crashes on 100,000)."""
    for levels in (64, 999, 100_000):
        path = write(tmp_path, nested(levels))
        assert problems(path) == [f"{path}: nested deeper than 64 levels"], levels
    with pytest.raises(ConfigError, match=r"^--set 'seed=\[\[.*: nested deeper than 64 levels$"):
        parse_override(f"seed={'[' * 1000}{']' * 1000}")
    # 64 levels are read (and the schema says what is wrong with the value).
    (line,) = problems(write(tmp_path, nested(63)))
    assert (
        "seed: got [[[[...]]]]; input should be a valid integer" in line and "input should be a valid integer" in line
    )
    # Aliases nest too: three 30-level anchors, each inside the next, are 90 levels once expanded.
    chain = "name: t\na: &a " + "[" * 30 + "]" * 30 + "\nb: &b " + "[" * 29 + "*a" + "]" * 29
    chain += "\nseed: " + "[" * 29 + "*b" + "]" * 29 + "\n"
    path = write(tmp_path, chain)
    assert problems(path) == [f"{path}: nested deeper than 64 levels"]
    path = write(tmp_path, "name: t\nseed: &a [1, *a]\n")
    assert problems(path) == [f"{path}: a YAML alias refers to a value that contains it (a recursive structure)"]


def test_values_python_cannot_build_are_one_line(tmp_path: Path) -> None:
    """A date that does not exist or an integer of 5,000 digits raised ValueError inside the YAML loader."""
    path = write(tmp_path, "name: t\nseed: 2001-13-45\n")
    assert problems(path) == [f"{path}: cannot read a value (month must be in 1..12)"]
    path = write(tmp_path, f"name: t\nseed: {'9' * 5000}\n")
    assert problems(path) == [
        f"{path}: cannot read a value (Exceeds the limit (4300 digits) for integer string conversion: "
        "value has 5000 digits)"
    ]


def test_echoed_values_are_capped_without_building_their_repr() -> None:
    huge: list = ["lol"] * 10
    for _ in range(8):
        huge = [huge] * 10  # 10**9 strings once expanded, shared: repr() would take minutes and GBs
    start = time.monotonic()
    text = _format_value(huge)
    assert time.monotonic() - start < 1
    assert len(text) <= 60 and text.startswith("[[[")
    assert len(_format_value("x" * 10**6)) <= 60
    assert _format_value(0.5) == "0.5" and _format_value("adamw") == "'adamw'"
    assert len(_format_value(int("9" * 4000) * 10**1000)) <= 60  # repr() of it raises ValueError


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"optimizer": {"lr": float("inf")}}, "optimizer.lr: got inf; input should be a finite number"),
        ({"train": {"grad_clip": float("inf")}}, "train.grad_clip: got inf; input should be a finite number"),
        ({"augment": {"scale": [1, float("inf")]}}, "augment.scale.1: got inf; input should be a finite number"),
        ({"init": {"name": "normal", "bias": float("nan")}}, "init.bias: got nan; input should be a finite number"),
        ({"seed": 2**63}, f"seed: got {2**63}; a seed must fit in 64 bits: -2**63 <= seed < 2**63"),
        ({"data": {"split_seed": -(2**63) - 1}}, f"data.split_seed: got {-(2**63) - 1}; a seed must fit in 64 bits: "
                                                 "-2**63 <= seed < 2**63"),
        ({"model": {"width": 1e30}}, "model.width: got 1e+30; input should be less than or equal to 64"),
        ({"model": {"depth": float("inf")}}, "model.depth: got inf; input should be a finite number"),
        ({"augment": {"crop_padding": 10**12}}, "augment.crop_padding: got 1000000000000; input should be less than "
                                                "or equal to 4096"),
    ],
    ids=["lr-inf", "grad-clip-inf", "scale-inf", "bias-nan", "seed-2**63", "split-seed", "width-1e30", "depth-inf",
         "crop-padding"],
)  # fmt: skip
def test_numbers_are_finite_and_bounded(data: dict, line: str) -> None:
    """inf passed every gt/le bound (lr: .inf > 0); a width of 1e30 or an infinite depth crashed the model build."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "t", **data}, "x.yaml")
    assert e.value.problems == [f"x.yaml: {line}"]
    assert config_from_dict({"name": "t", "seed": -(2**63), "data": {"split_seed": 2**63 - 1}}).seed == -(2**63)


def test_extends_merges_and_detects_cycles(tmp_path: Path) -> None:
    write(tmp_path, "name: base\nseed: 3\noptimizer: {name: momentum, lr: 0.1}\ntrain: {epochs: 7}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\noptimizer: {lr: 0.05}\n", "child.yaml")
    cfg = load_config(child)
    assert (cfg.name, cfg.seed, cfg.optimizer.name, cfg.optimizer.lr, cfg.train.epochs) == (
        "child", 3, "momentum", 0.05, 7
    )  # fmt: skip
    a = write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    (line,) = problems(a)
    assert "extends: cycle" in line


def test_set_overrides_are_yaml_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\n")
    cfg = load_config(path, ["optimizer.lr=0.01", "train.epochs=3", "augment.scale=[0.9, 1.1]", "model.name=mlp"])
    assert (cfg.optimizer.lr, cfg.train.epochs, cfg.augment.scale, cfg.model.name) == (0.01, 3, (0.9, 1.1), "mlp")
    assert problems(path, ["train.epoch=3"]) == [f"{path}: train.epoch: unknown key; did you mean 'epochs'?"]
    assert problems(path, ["nonsense"]) == [
        "--set 'nonsense': expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"
    ]


def test_set_value_that_is_not_yaml_is_an_error_not_a_string(tmp_path: Path) -> None:
    """``--set optimizer.lr=[1,`` once became the string '[1,' (and a str-typed key took it silently)."""
    path = write(tmp_path, "name: t\n")
    hint = """quote a string value, e.g. --set name='"a: b"'"""
    assert problems(path, ["optimizer.lr=[1,"]) == [
        f"--set 'optimizer.lr=[1,': not valid YAML (did not find expected node content); {hint}"
    ]
    assert problems(path, ["data.data_dir=@home"]) == [
        f"--set 'data.data_dir=@home': not valid YAML (found character that cannot start any token); {hint}"
    ]
    assert load_config(path, ['data.data_dir="@home: x"']).data.data_dir == "@home: x"  # quoted: a string


def test_exponent_numbers_are_floats_in_files_and_set(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads 1e-3 as a string: dlx reads it as the float everyone means."""
    assert parse_override("optimizer.lr=1e-3") == (["optimizer", "lr"], 0.001)
    assert type(parse_override("optimizer.lr=1e-3")[1]) is float
    path = write(tmp_path, "name: t\noptimizer: {name: adam, lr: 2E-3, args: {eps: 1e-8, betas: [.9e0, 999e-3]}}\n")
    cfg = load_config(path)
    assert cfg.optimizer.lr == 0.002 and cfg.optimizer.args == {"eps": 1e-8, "betas": [0.9, 0.999]}
    assert type(cfg.optimizer.args["eps"]) is float
    # Only plain decimal exponent numbers: anything else float() would take stays a string.
    for text in ("1e", "e5", "1_0e3", "1e3.5", "0x1p3", "\u0661e3", "'1e-3'"):
        assert isinstance(parse_override(f"model.args.x={text}")[1], str), text
    # PyYAML's own loader is left as it is.
    assert yaml.safe_load("1e-3") == "1e-3"


def test_set_name_drops_the_args_of_the_old_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\nschedule: {name: onecycle, args: {pct_start: 0.3}}\n"
        "optimizer: {name: adam, args: {betas: [0.8, 0.99]}}\ninit: {name: normal, args: {std: 0.02}}\n",
    )
    cfg = load_config(path, ["schedule.name=cosine"])
    assert (cfg.schedule.name, cfg.schedule.args) == ("cosine", {})
    assert cfg.optimizer.args == {"betas": [0.8, 0.99]}  # other sections keep theirs
    # Args set with --set are kept, before or after the name.
    for overrides in (["schedule.name=cosine", "schedule.args.min_factor=0.1"],
                      ["schedule.args.min_factor=0.1", "schedule.name=cosine"]):  # fmt: skip
        assert load_config(path, overrides).schedule.args == {"min_factor": 0.1}
    # The same name again keeps the file's args; so does every named section.
    assert load_config(path, ["schedule.name=onecycle"]).schedule.args == {"pct_start": 0.3}
    cfg = load_config(path, ["optimizer.name=sgd", "init.name=he_normal"])
    assert (cfg.optimizer.args, cfg.init.args) == ({}, {})
    models = write(tmp_path, "name: t\nmodel: {name: mlp, args: {hidden: [32]}}\n", "models.yaml")
    assert load_config(models, ["model.name=deep_cnn"]).model.args == {}


def test_overrides_do_not_mutate_input() -> None:
    data = {"optimizer": {"lr": 1}}
    out = apply_overrides(data, ["optimizer.lr=2"])
    assert data == {"optimizer": {"lr": 1}} and out == {"optimizer": {"lr": 2}}


def test_name_defaults_to_file_stem_and_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 5\n", "my_exp.yaml")
    cfg = load_config(path)
    assert cfg.name == "my_exp"
    again = write(tmp_path, cfg.to_yaml(), "again.yaml")
    assert load_config(again) == cfg
