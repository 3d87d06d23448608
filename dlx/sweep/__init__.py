"""``dlx sweep``: many runs of one base experiment, as a grid, explicit variants, random samples and seeds.

Cells are the product grid x variants x random samples x seeds (see ``dlx.sweep.spec`` for the
sweep file), named from their values (``w2-d1-s0``), and land in ``<runs_dir>/<sweep>/<cell>/`` as
ordinary run folders (experiment name = sweep name, run id = cell name), with an index
``<runs_dir>/<sweep>/sweep.json``.

Execution: worker processes (``python -m dlx.sweep.worker``) train the cells; one per GPU (each sees
only its device) or, on CPU, ``--workers`` processes sharing the cores. A worker claims a cell by
locking its folder (runs.claim_cell), so two sweep processes never train one cell twice, and decides
from the cell's summary: completed -> skip, interrupted (or running with nobody holding the lock)
-> resume from checkpoints/last.pt, failed/diverged -> retrain only with ``--retry-failed``. A worker
that dies with its cell (SIGKILL, out of memory) cannot say so: the sweep process marks the cell failed.

The modules, each importing only the ones listed before it:

- ``spec``: the sweep file, its cells and their names, ``load_sweep``;
- ``checks``: checks before anything runs, and peeks at a cell folder on disk;
- ``worker``: one worker process and the one cell it trains at a time (``run_cell``);
- ``pool``: how many worker processes and where (``plan_workers``), one worker child, the GPU pool;
- ``executors``: the face of an executor, and ``LocalPool`` (worker processes on this machine);
- ``ray_executor``: ``RayExecutor``, cells as tasks on a Ray cluster (``--executor ray``, the ``ray`` extra);
- ``state``: what the sweep process knows about each cell while it runs;
- ``display``: the live table on a terminal, one line per finished cell elsewhere;
- ``runner``: scheduling cells onto workers, the sweep.json index, ``run_sweep`` and ``show_plan``.
"""

from __future__ import annotations

from dlx.sweep.runner import SweepResult, run_sweep, show_plan
from dlx.sweep.spec import Cell, Sweep, SweepSpec, cell_name, expand, load_sweep

__all__ = ["Cell", "Sweep", "SweepResult", "SweepSpec", "cell_name", "expand", "load_sweep", "run_sweep", "show_plan"]
