"""Where a run computes: the device of this process and the settings that depend on the machine.

``train.device`` picks CUDA, MPS or CPU; with several processes each takes the GPU of its LOCAL_RANK.
16-bit precision is refused where the hardware would make it slow or wrong (fp16 on CPU, bf16 on a CPU
without AVX512-BF16/AMX, bf16 on a GPU older than Ampere), and so is SyncBatchNorm off CUDA.
"""

from __future__ import annotations

import torch

from dlx.config import ExperimentConfig
from dlx.distributed import SINGLE, World
from dlx.errors import ConfigError, DlxError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device is a DlxError naming the key."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DlxError(f"train.device: {spec!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DlxError(
                f"train.device: {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DlxError("train.device: 'mps' requested but MPS is not available here; use 'cpu' or 'auto'")
    return torch.device(spec)


def device_for(cfg: ExperimentConfig, world: World = SINGLE) -> torch.device:
    """This process's device: ``train.device``, and with several processes on CUDA the GPU of LOCAL_RANK."""
    device = resolve_device(cfg.train.device)
    if not world.distributed:
        return device
    if device.type == "mps":
        raise DlxError("train.device: 'mps' cannot join several processes (PyTorch has no MPS backend for "
                       "torch.distributed); use 'cuda' or 'cpu'")  # fmt: skip
    if device.type != "cuda":
        return device
    if cfg.train.device.startswith("cuda:"):
        raise DlxError(f"train.device: {cfg.train.device!r} names one GPU, but each of the {world.size} processes "
                       "takes the GPU of its LOCAL_RANK; use 'cuda' or 'auto' (limit GPUs with CUDA_VISIBLE_DEVICES)")  # fmt: skip
    if world.local_rank >= torch.cuda.device_count():
        raise DlxError(f"LOCAL_RANK {world.local_rank}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                       f"to this process; start at most that many processes per machine")  # fmt: skip
    return torch.device("cuda", world.local_rank)


AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates it, slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(cfg: ExperimentConfig, device: torch.device) -> ExperimentConfig:
    """``train.precision: auto`` made concrete for ``device``: bf16 where it is native (a CPU with AVX512-BF16 or
    AMX, a GPU with bf16 arithmetic), fp32 elsewhere. The run's config.yaml records what it trained with."""
    if cfg.train.precision != "auto":
        return cfg
    native = native_cpu_bf16() if device.type == "cpu" else (
        device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False))  # fmt: skip
    return cfg.with_train(precision="bf16" if native else "fp32")


def precision_reason(cfg: ExperimentConfig, device: torch.device) -> str:
    """Why ``auto`` chose what it chose, for the run's summary."""
    where = "this CPU" if device.type == "cpu" else "this GPU"
    if cfg.train.precision == "bf16":
        return f"auto: bf16, {where} computes it natively"
    return f"auto: fp32, {where} has no native bf16" + (
        " (neither AVX512-BF16 nor AMX)" if device.type == "cpu" else ""
    )


def check_device_settings(
    cfg: ExperimentConfig, device: torch.device, probe_gpu: bool = True, slow_ok: bool = False
) -> None:
    """Settings that depend on the machine: 16-bit precision and synchronized batch norm.

    ``probe_gpu=False`` skips what would start CUDA in this process (a launcher's check: its processes probe).
    ``slow_ok`` (a measurement, not training): 16-bit precision a CPU only emulates is allowed.
    """
    label = cfg.source_file or cfg.name
    precision = cfg.train.precision
    if slow_ok and device.type == "cpu":
        pass
    elif device.type == "cpu" and precision == "fp16":
        raise ConfigError([f"{label}: train.precision: 'fp16' on CPU is refused: CPUs have no fast fp16 "
                           "arithmetic (it ran ~90x slower than fp32: benchmarks/bench_precision.py); use 'bf16' "
                           "on a CPU with AVX512-BF16 or AMX, or 'fp32'"])  # fmt: skip
    elif device.type == "cpu" and precision == "bf16" and not native_cpu_bf16():
        raise ConfigError([f"{label}: train.precision: 'bf16' on this CPU is refused: it has neither AVX512-BF16 "
                           "nor AMX, so bf16 is emulated and slower than fp32; use 'fp32'"])  # fmt: skip
    gpu_bf16 = device.type == "cuda" and probe_gpu and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cuda" and probe_gpu and precision == "bf16" and not gpu_bf16:
        raise ConfigError([f"{label}: train.precision: 'bf16' needs a GPU with native bf16 (compute capability 8.0+, "
                           f"e.g. A100, RTX 30xx); {torch.cuda.get_device_name(device)} has none: use 'fp16'"])  # fmt: skip
    if cfg.regularization.sync_batch_norm and device.type != "cuda":
        raise ConfigError([f"{label}: regularization.sync_batch_norm: PyTorch's SyncBatchNorm needs CUDA; this run "
                           f"is on {device.type}: remove the key"])  # fmt: skip
