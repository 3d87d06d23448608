"""Several processes, one run: who this process is, the process group, and the few collectives training needs.

A run on N devices is N processes (one device each) in a ``torch.distributed`` process group: NCCL on CUDA,
gloo on CPU. ``dlx train --devices N`` starts them through PyTorch's elastic launcher (``dlx.launch``); under
a user's own launcher (``torchrun``, ``srun torchrun``) dlx finds its place in the environment that launcher
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).

Every collective here is called by every rank the same number of times; a single process (``SINGLE``)
makes them all no-ops, so the training code reads the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dlx.errors import DlxError

# What a launcher (torchrun, torch.distributed.launcher, dlx --devices) sets in each worker's environment.
RANK_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, *values: torch.Tensor | float | int, device: torch.device) -> list[float]:
        """The sums over all ranks of a few numbers (loss sums, counts), in one all-reduce; float64 keeps counts exact."""
        local = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
        if self.distributed:
            dist.all_reduce(local)
        return local.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a run folder's path, an error to raise everywhere)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_state(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Give every rank rank 0's parameters and buffers (or only the buffers: batch-norm statistics)."""
        if not self.distributed:
            return
        tensors = [b for b in module.buffers()]
        if not buffers_only:
            tensors += [p.data for p in module.parameters()]
        for t in tensors:
            dist.broadcast(t, src=0)

    def gather_strided(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """Reassemble a tensor sharded as ``x[rank::size]`` (evaluation shards) into all ``n`` entries, in order."""
        if not self.distributed:
            return part
        longest = (n + self.size - 1) // self.size
        padded = torch.zeros(longest, dtype=part.dtype, device=part.device)
        padded[: part.shape[0]] = part
        pieces = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(pieces, padded)
        full = torch.empty(n, dtype=part.dtype, device=part.device)
        for r, piece in enumerate(pieces):
            full[r :: self.size] = piece[: len(range(r, n, self.size))]
        return full


SINGLE = World()


def from_environment(environ: Mapping[str, str] | None = None) -> World | None:
    """The World a launcher put this process in, or None when no launcher started it (no RANK / WORLD_SIZE)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    values = {}
    for key in RANK_KEYS:
        raw = env.get(key)
        if raw is None:
            continue
        try:
            values[key] = int(raw)
        except ValueError:
            raise DlxError(
                f"environment: {key}={raw!r} is not a number (set by the launcher that started dlx)"
            ) from None
    missing = [k for k in ("RANK", "WORLD_SIZE") if k not in values]
    if missing:
        raise DlxError(f"environment: {' and '.join(missing)} not set, but a launcher set "
                       f"{', '.join(k for k in RANK_KEYS if k in values)}; set RANK and WORLD_SIZE")  # fmt: skip
    rank, size = values["RANK"], values["WORLD_SIZE"]
    local_rank = values.get("LOCAL_RANK", rank)
    local_size = values.get("LOCAL_WORLD_SIZE", size)
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise DlxError(f"environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}, "
                       f"LOCAL_WORLD_SIZE={local_size} do not fit together")  # fmt: skip
    if size > 1:
        absent = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if absent:
            raise DlxError(f"environment: WORLD_SIZE={size} but {' and '.join(absent)} not set; "
                           "start dlx with torchrun (it sets them) or set them to rank 0's address")  # fmt: skip
    return World(rank, size, local_rank, local_size)


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes (PyTorch's recommendation, as in torchvision's references)."""
    return "nccl" if device.type == "cuda" else "gloo"


def join(world: World, device: torch.device, timeout_s: float) -> None:
    """Enter the process group (``env://``: the launcher's MASTER_ADDR/PORT). A collective that waits longer than
    ``timeout_s`` for a rank fails instead of hanging."""
    if not world.distributed or dist.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device  # binds NCCL to this GPU: barriers know their device
    dist.init_process_group(
        backend_for(device), rank=world.rank, world_size=world.size, timeout=timedelta(seconds=timeout_s), **kwargs
    )


def leave() -> None:
    """Leave the process group (after the run's status is written)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


LOST_PEER = "lost another process of the run"  # how a rank whose peer ended says so (the launcher looks past it)


def lost_peer(error: BaseException) -> bool:
    """Whether an error is a collective failing because another process of the run is gone (its own error is
    the cause, reported by the launcher): NCCL/store errors, or gloo's transport errors."""
    kinds = tuple(getattr(dist, name) for name in ("DistBackendError", "DistNetworkError", "DistStoreError")
                  if hasattr(dist, name))  # fmt: skip
    return isinstance(error, kinds) or (isinstance(error, RuntimeError) and "gloo/transport" in str(error))


def first_problem(problems: Sequence[str | None]) -> tuple[int, str] | None:
    """The lowest rank's problem of an ``all_objects`` exchange, or None when every rank succeeded."""
    for rank, problem in enumerate(problems):
        if problem:
            return rank, problem
    return None
