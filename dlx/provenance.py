"""What a run records about where it ran: versions, git commit, device, command line."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def git_commit(cwd: str | Path | None = None) -> dict[str, Any] | None:
    """HEAD's commit of the repo holding ``cwd`` (and whether the tree has local changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


_IMPORTED = time.time()


def process_age() -> float:
    """Seconds since this process started (Linux: /proc/self/stat's start time, interpreter start and imports
    included); elsewhere since dlx was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


def _cpuinfo(field: str) -> str | None:
    """The first ``field: value`` of /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (what runs and benchmarks print beside a speed)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx512f, avx512_bf16, amx_bf16, ...); empty where /proc/cpuinfo is absent."""
    return set((_cpuinfo("flags") or "").split())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{cpu_model()} ({torch.get_num_threads()} threads)"
    return device.type


def _torchvision_version() -> str:
    """torchvision's version as its module reports it ('0.29.1+cu130'), read from its version.py: importing
    torchvision costs 0.2 s of a run's startup, and a run that uses none of it should not pay that."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return str(module.__version__)
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", _read(Path(folder) / "version.py"), re.M)
        if found:
            return found.group(1)
    return importlib.metadata.version("torchvision")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def versions() -> dict[str, str]:
    from dlx import __version__

    return {
        "dlx": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _torchvision_version(),
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if torch.cuda.is_available() else "",
    }


def describe(device: torch.device, experiment_file: str | Path | None = None) -> dict[str, Any]:
    """Where a run ran. ``git`` is the user's project: the repository holding the experiment file (else the
    working directory), not dlx's own; dlx itself is ``versions.dlx``."""
    project = Path(experiment_file).resolve().parent if experiment_file is not None else Path.cwd()
    return {
        "versions": versions(),
        "device": str(device),
        "device_name": device_name(device),
        "git": git_commit(project),
        "experiment_file": str(experiment_file) if experiment_file is not None else None,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
