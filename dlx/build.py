"""The one place where a validated config becomes objects: device, data splits, model, and what training needs.

``prepare`` raises DlxError for anything the user can fix (device, dataset, model, initial weights) *before* a
run directory exists, so a bad experiment never leaves a half-written run behind.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dlx.config import ExperimentConfig, ModelConfig
from dlx.data.augment import Augment
from dlx.data.datasets import ImageData, load_data
from dlx.data.loader import Batches, Split
from dlx.devices import AMP_DTYPES, check_device_settings, device_for, precision_reason, resolve_precision
from dlx.distributed import SINGLE, World
from dlx.errors import ConfigError, DlxError, first_line
from dlx.init import initialize
from dlx.modelinfo import count_parameters, flops_per_image
from dlx.models import build_model
from dlx.models.class_path import build_class_path_model
from dlx.optim import build_optimizer
from dlx.schedule import Schedule, build_schedule
from dlx.transfer import Transfer
from dlx.transfer import apply as apply_transfer


def build_model_from_config(
    model: ModelConfig,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float | None = None,
    batch_norm: bool | None = None,
) -> nn.Module:
    """Build the model a validated ``model:`` section describes: registered, sequential or class_path."""
    if model.class_path is None:
        args = dict(model.args)
        if model.layers is not None:
            args["layers"] = model.layers
        return build_model(model.name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           width=model.width, depth=model.depth, dropout=dropout, batch_norm=batch_norm,
                           args=args)  # fmt: skip
    return build_class_path_model(model.class_path, model.init_args, in_channels=in_channels,
                                  num_classes=num_classes, image_size=image_size, width=model.width,
                                  depth=model.depth, dropout=dropout, batch_norm=batch_norm)  # fmt: skip


def lr_factor(cfg: ExperimentConfig, world_size: int) -> float:
    """optimizer.scale_lr (timm's lr_base rule): lr x (global batch / base_batch), linear or square root."""
    o = cfg.optimizer
    ratio = global_batch(cfg, world_size) / (o.base_batch or cfg.data.batch_size)
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[o.scale_lr]


def global_batch(cfg: ExperimentConfig, world_size: int) -> int:
    """Images per optimizer step over all processes: per-device batch x processes x accumulated micro-batches."""
    return cfg.data.batch_size * world_size * cfg.train.grad_accum


@dataclass
class Setup:
    """Everything ``fit`` needs, checked and built."""

    config: ExperimentConfig
    device: torch.device
    data: ImageData
    train: Split
    val: Split | None
    test: Split
    model: nn.Module
    parameters: int
    flops_per_image: int
    transfer: Transfer = field(default_factory=Transfer)  # initial weights, frozen parameters, head (dlx.transfer)
    world: World = SINGLE  # this process's place among the run's processes (dlx.distributed)
    precision_auto: str | None = None  # train.precision: auto, what it chose and why (summary.json)


def split_data(data: ImageData, cfg: ExperimentConfig) -> tuple[Split, Split | None, Split]:
    """Hold ``val_size`` training images (a count, or a fraction when < 1) out for validation, seeded by
    data.split_seed; a dataset with its own validation split (an image folder's val/) uses that, whatever val_size."""
    n = data.train_labels.shape[0]
    d = cfg.data
    m = d.test_size or data.test_labels.shape[0]
    test = Split(data.test_images[:m].contiguous(), data.test_labels[:m].contiguous())
    if data.val_images is not None and data.val_labels is not None:
        train_idx = torch.arange(n)[: d.train_size]
        val = Split(data.val_images, data.val_labels)
        return Split(data.train_images[train_idx].contiguous(), data.train_labels[train_idx].contiguous()), val, test
    val_size = round(d.val_size * n) if isinstance(d.val_size, float) else d.val_size
    if val_size >= n:
        hint = "; give a fraction instead (val_size: 0.1)" if isinstance(d.val_size, int) else ""
        raise DlxError(f"data.val_size: got {d.val_size}; the {data.name} training set has only {n} images{hint}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(d.split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if d.train_size is not None:
        train_idx = train_idx[: d.train_size]
    # Sorted indices keep memory access sequential; the epoch permutation does the shuffling.
    train_idx = train_idx.sort().values
    train = Split(data.train_images[train_idx].contiguous(), data.train_labels[train_idx].contiguous())
    val = None
    if val_size > 0:
        val_idx = val_idx.sort().values
        val = Split(data.train_images[val_idx].contiguous(), data.train_labels[val_idx].contiguous())
    return train, val, test


def build_initialized_model(cfg: ExperimentConfig, data: ImageData) -> nn.Module:
    """The experiment's model for this dataset, with its initializer applied (seeded by cfg.seed alone)."""
    torch.manual_seed(cfg.seed)
    model = build_model_from_config(
        cfg.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        image_size=data.image_size,
        dropout=cfg.regularization.dropout,
        batch_norm=cfg.regularization.batch_norm,
    )
    try:
        initialize(model, cfg.init.name, bias=cfg.init.bias, args=cfg.init.args)
    except (TypeError, ValueError) as e:
        raise DlxError(f"init: initializer {cfg.init.name!r} failed: {e}") from None
    return model


def prepare(
    cfg: ExperimentConfig,
    *,
    download: bool | None = None,
    world: World = SINGLE,
    device: torch.device | None = None,
    measuring: bool = False,
) -> Setup:
    """Everything a run needs, checked; ``download=False`` (--dry-run) never fetches or creates a data folder.

    ``world``: this process's place when several train together (its device is LOCAL_RANK's GPU). ``device``
    overrides where the data and model go (the launcher checks a run on the CPU before starting processes).
    ``measuring`` (eval): a 16-bit precision this CPU only emulates is allowed; it is slow, not wrong.
    """
    target = device_for(cfg, world)
    auto = cfg.train.precision == "auto"
    cfg = resolve_precision(cfg, device or target)
    check_device_settings(cfg, target, probe_gpu=device is None, slow_ok=measuring)
    if not measuring:
        check_loggers(cfg)
    device = device or target
    data = load_data(cfg.data, download)
    train, val, test = split_data(data, cfg)
    model = build_initialized_model(cfg, data)
    transfer = apply_transfer(model, cfg)  # after initialize: loaded weights must not be re-initialized
    check_training(cfg, data, train, model, transfer.parameters(model, cfg.optimizer.head_lr), world)
    shape = (data.in_channels, data.image_size, data.image_size)
    flops = flops_per_image(model, shape)
    model.to(device)
    cfg = resolve_layout(cfg, model)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return Setup(cfg, device, data, train.to(device), val.to(device) if val else None, test.to(device), model,
                 count_parameters(model), flops, transfer, world,
                 precision_reason(cfg, device) if auto else None)  # fmt: skip


def uses_channels_last(cfg: ExperimentConfig, model: nn.Module) -> bool:
    """``train.channels_last`` for this model: as given, or (auto) when it has a 2-D convolution, whose oneDNN and
    cuDNN kernels are faster on channels-last tensors (pytorch/examples' Net: x1.09 on 2 CPU cores)."""
    if cfg.train.channels_last != "auto":
        return bool(cfg.train.channels_last)
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_layout(cfg: ExperimentConfig, model: nn.Module) -> ExperimentConfig:
    """The config with ``train.channels_last: auto`` made true or false; the run's config.yaml records that."""
    if cfg.train.channels_last != "auto":
        return cfg
    return cfg.with_train(channels_last=uses_channels_last(cfg, model))


def make_batches(setup: Setup, split: Split, *, train: bool = False, batch_size: int | None = None) -> Batches:
    """Batches of a split as the config says: normalization, channels_last, and for training shuffle, augmentation
    and ``drop_last`` (no incomplete last batch; see dlx.data.loader); with several processes, this rank's shard."""
    return batches_for(setup.config, setup.data, split, train=train, batch_size=batch_size, world=setup.world)


def normalization(cfg: ExperimentConfig, data: ImageData) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The mean and std the images are standardized with: data.mean/std if given, else the dataset's own."""
    if not cfg.data.normalize:
        return None, None
    if cfg.data.mean is not None and cfg.data.std is not None:
        return tuple(cfg.data.mean), tuple(cfg.data.std)
    return data.mean, data.std


def batches_for(
    cfg: ExperimentConfig,
    data: ImageData,
    split: Split,
    *,
    train: bool = False,
    batch_size: int | None = None,
    world: World = SINGLE,
) -> Batches:
    mean, std = normalization(cfg, data)
    size = batch_size or (cfg.data.batch_size if train else cfg.data.eval_batch_size)
    augment = None
    if train:
        a = cfg.augment
        augment = Augment(rotate=a.rotate, translate=a.translate, scale=tuple(a.scale), crop_padding=a.crop_padding,
                          hflip=a.hflip, brightness=a.brightness, contrast=a.contrast)  # fmt: skip
    return Batches(split, batch_size=size, mean=mean, std=std, shuffle=train, augment=augment,
                   channels_last=cfg.train.channels_last is True, drop_last=train, rank=world.rank,
                   world=world.size)  # fmt: skip


# A schedule is stepped through the whole run before training (at most this many steps) to find settings that
# fail or make the rate infinite late in the run (OneCycle with too few steps divides by zero at its turn).
SIMULATED_STEPS = 200_000


def check_loggers(cfg: ExperimentConfig) -> None:
    """output.loggers' packages are installed: one line naming the extra otherwise (before data is loaded)."""
    from dlx.trackers import check_trackers

    try:
        check_trackers(cfg.output.loggers)
    except DlxError as e:
        raise ConfigError([f"{cfg.source_file or cfg.name}: {e}"]) from None


def check_training(
    cfg: ExperimentConfig, data: ImageData, train: Split, model: nn.Module, params: Any = None, world: World = SINGLE
) -> None:
    """Build what ``fit`` builds from the config, once and thrown away, before any run folder exists.

    Augmentation (one call on two images), optimizer and schedule (stepped through the run) settings that
    the schema cannot judge alone become a ConfigError naming the section: ``x.yaml: optimizer: ...``.
    """
    label = cfg.source_file or cfg.name

    def problem(key: str, detail: str) -> ConfigError:
        return ConfigError([f"{label}: {key}: {detail}"])

    if cfg.data.mean is not None and len(cfg.data.mean) != data.in_channels:
        raise problem("data.mean", f"got {len(cfg.data.mean)} value(s); {data.name} images have {data.in_channels} "
                                   f"channel(s): one mean and one std per channel")  # fmt: skip
    if cfg.augment.crop_padding > data.image_size:
        raise problem("augment.crop_padding", f"got {cfg.augment.crop_padding}; at most the image size "
                                              f"({data.image_size} pixels for {data.name})")  # fmt: skip
    try:
        batches = batches_for(cfg, data, train, train=True, world=world)
        batches.prepare(train.images[:2])
    except (ValueError, RuntimeError) as e:
        raise problem("augment", first_line(e)) from None
    per_epoch = steps_per_epoch(batches, cfg.train.grad_accum)
    if per_epoch == 0:
        raise problem("train.grad_accum", f"got {cfg.train.grad_accum}, but each process has only {len(batches)} "
                                          f"batch(es) per epoch ({len(train):,} training images over {world.size} "
                                          f"process(es), data.batch_size {cfg.data.batch_size})")  # fmt: skip
    o, s = cfg.optimizer, cfg.schedule
    try:
        optimizer = build_optimizer(o.name, params if params is not None else model.parameters(),
                                    o.lr * lr_factor(cfg, world.size), o.weight_decay, o.args)  # fmt: skip
    except (ValueError, TypeError, RuntimeError) as e:
        raise problem("optimizer", f"{o.name} rejects these settings: {first_line(e)}") from None
    steps = cfg.train.epochs * per_epoch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": no training happens here
            schedule = build_schedule(s.name, optimizer, epochs=cfg.train.epochs, steps_per_epoch=per_epoch,
                                      warmup_epochs=s.warmup_epochs, args=s.args)  # fmt: skip
            for step in range(min(steps, SIMULATED_STEPS) if schedule.interval == "step" else 0):
                rate = optimizer.param_groups[0]["lr"]
                if not math.isfinite(rate):
                    raise ValueError(f"the learning rate becomes {rate} at step {step} of {steps}")
                schedule.after_step()
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, RuntimeError) as e:
        what = first_line(e)
        if isinstance(e, ZeroDivisionError):
            what = f"division by zero ({what})"
        elif isinstance(e, OverflowError):
            what = "the learning rate overflows"
        raise problem("schedule", f"{s.name} cannot run {cfg.train.epochs} epochs of {per_epoch} steps: "
                                  f"{what}") from None  # fmt: skip


@dataclass
class Training:
    """What one ``fit`` steps besides the model: batches, optimizer, schedule, loss scaler, precision, processes."""

    train: Batches
    train_sample: Batches  # a fixed sample of the training split, measured in eval mode (train_loss, train_acc)
    val: Batches | None
    test: Batches
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    step_model: nn.Module  # what a training step calls: the model, DDP-wrapped with several processes, compiled
    eval_model: nn.Module  # what evaluation calls: the model (compiled), never DDP (ranks evaluate their own shard)
    amp: torch.dtype | None
    ddp: DistributedDataParallel | None  # its no_sync() skips the all-reduce of accumulated micro-batches
    steps_per_epoch: int  # optimizer steps: batches // train.grad_accum
    lr_factor: float  # optimizer.scale_lr's factor on lr and head_lr


def steps_per_epoch(batches: Batches, accum: int) -> int:
    """Optimizer steps per epoch: whole groups of ``accum`` batches (a short last group is dropped, like drop_last)."""
    return len(batches) // accum


def training_sample(setup: Setup) -> Split:
    """``train.train_sample`` training images, the same every epoch (seeded by data.split_seed)."""
    n, k = len(setup.train), min(len(setup.train), setup.config.train.train_sample)
    if k == n:
        return setup.train
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(setup.config.data.split_seed))[:k].sort().values
    pick = pick.to(setup.train.images.device)
    return Split(setup.train.images[pick], setup.train.labels[pick])


def wrap_for_processes(setup: Setup) -> DistributedDataParallel | None:
    """With several processes: SyncBatchNorm if asked (CUDA), then DistributedDataParallel around the model.

    As torchvision's references do: convert batch norm before wrapping, one device per process
    (``device_ids`` on CUDA, none on CPU), buffers (batch-norm statistics) broadcast from rank 0 each step.
    """
    if not setup.world.distributed:
        return None
    model = setup.model
    if setup.config.regularization.sync_batch_norm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        setup.model = model
    ids = [setup.device.index] if setup.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def build_training(setup: Setup) -> Training:
    """Batches, optimizer (frozen parameters left out, the head's own rate), schedule and AMP scaler for ``fit``."""
    cfg = setup.config
    ddp = wrap_for_processes(setup)  # may replace setup.model's batch norms: before the optimizer sees parameters
    model = setup.model
    train = make_batches(setup, setup.train, train=True)
    o, s = cfg.optimizer, cfg.schedule
    factor = lr_factor(cfg, setup.world.size)
    params = setup.transfer.parameters(model, o.head_lr * factor if o.head_lr else None)
    optimizer = build_optimizer(o.name, params, o.lr * factor, o.weight_decay, o.args)
    per_epoch = steps_per_epoch(train, cfg.train.grad_accum)
    schedule = build_schedule(s.name, optimizer, epochs=cfg.train.epochs, steps_per_epoch=per_epoch,
                              warmup_epochs=s.warmup_epochs, args=s.args)  # fmt: skip
    compiled = torch.compile(model) if cfg.train.compile else model
    return Training(
        train=train,
        train_sample=make_batches(setup, training_sample(setup)),
        val=make_batches(setup, setup.val) if setup.val else None,
        test=make_batches(setup, setup.test),
        optimizer=optimizer,
        schedule=schedule,
        # fp16 needs loss scaling so small gradients do not flush to zero; bf16 and fp32 do not.
        scaler=torch.amp.GradScaler(setup.device.type, enabled=cfg.train.precision == "fp16"),
        # DDP first, then compile (PyTorch's order: its DDPOptimizer splits the graph at the gradient buckets).
        step_model=compiled if ddp is None else (torch.compile(ddp) if cfg.train.compile else ddp),
        eval_model=compiled,
        amp=AMP_DTYPES[cfg.train.precision],
        ddp=ddp,
        steps_per_epoch=per_epoch,
        lr_factor=factor,
    )
