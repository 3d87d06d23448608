"""Weights & Biases: offline (files in ``<run>/wandb/``, ``wandb sync`` uploads them) unless the user configured
W&B (``WANDB_MODE``, or an API key in ``WANDB_API_KEY`` / ``~/.netrc``). Project: ``$WANDB_PROJECT`` or the
experiment's name; the W&B run id is kept so a resumed dlx run continues it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlx.trackers.base import EPOCH_KEYS, FINAL_KEYS, PICTURES, STEP_KEYS


def wandb_mode() -> str:
    """The user's WANDB_MODE; else online with credentials, offline without."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")
    return "online" if os.environ.get("WANDB_API_KEY") or logged_in else "offline"


class WandbTracker:
    name = "wandb"

    def __init__(self) -> None:
        self.run: Any = None

    def start(self, run_dir: Path, config: dict[str, Any], summary: dict[str, Any], step: int) -> dict[str, Any]:
        import wandb

        previous = (summary.get("loggers") or {}).get("wandb") or {}
        mode = wandb_mode()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or str(summary.get("name") or config.get("name")),
            name=str(summary.get("run_id") or run_dir.name),
            id=previous.get("id") if step else None,
            resume="allow" if step else None,
            dir=str(run_dir),
            config=config,
            mode=mode,
            settings=wandb.Settings(silent=True, console="off"),  # dlx prints its own lines; no stdout capture
        )
        return {"id": self.run.id, "mode": mode, "project": self.run.project}

    def log(self, steps: list[dict[str, Any]], epoch: dict[str, Any], step: int) -> None:
        for row in steps:
            self.run.log({f"step/{k}": row[k] for k in STEP_KEYS if row.get(k) is not None}, step=row["step"])
        values = {f"epoch/{k}": epoch[k] for k in EPOCH_KEYS if epoch.get(k) is not None}
        self.run.log({**values, "epoch": epoch["epoch"]}, step=step)

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        import wandb

        self.run.summary.update({k: summary[k] for k in FINAL_KEYS if summary.get(k) is not None})
        self.run.summary["status"] = status
        pictures = {p: wandb.Image(str(run_dir / p)) for p in PICTURES if (run_dir / p).is_file()}
        if pictures:
            self.run.log(pictures)
        self.run.finish(exit_code=0 if status == "completed" else 1)
