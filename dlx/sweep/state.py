"""What the sweep process knows about each cell while the sweep runs (shared by the runner and the display)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlx.sweep.spec import Cell

# "broken": the cell's summary.json is unreadable but it holds results (checkpoints, metrics): never deleted,
# retrained only with --retry-failed, which moves the old folder aside first.
FINAL = ("completed", "failed", "diverged", "interrupted", "broken")


@dataclass
class CellState:
    cell: Cell
    state: str = "pending"  # pending | running | elsewhere | <FINAL>
    note: str = ""
    worker: int | None = None
    started: float | None = None
    ended: float | None = None
    from_epoch: int = 0
    trained_here: bool = False
    was_elsewhere: bool = False  # another process held it at some point
    summary: dict[str, Any] = field(default_factory=dict)
