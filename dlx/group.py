"""One process of a multi-process run: join the process group, build the run, train; rank 0 alone writes.

``train_in_group`` is what each process runs, whether ``dlx train --devices N`` (dlx.launch) or the user's own
launcher (``torchrun``, ``srun torchrun``) started it: it enters the process group, builds the run (the first
process of each machine first: it may download the data), lets rank 0 claim the run folder and trains with
``fit``. A problem any rank meets before training is raised on every rank alike (``SharedError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig
from dlx.distributed import World, first_problem, join, leave
from dlx.errors import DlxError, SharedError
from dlx.runs import Run, create_run, open_run


def check_launcher(cfg: ExperimentConfig, world: World, devices: int | str | None = None) -> None:
    """Under a user's launcher, it decides the processes; a different explicit train.devices is a mistake."""
    wanted = cfg.train.devices if devices is None else devices
    if isinstance(wanted, int) and wanted > 1 and wanted != world.local_size:
        raise DlxError(f"train.devices: {wanted}, but the launcher started {world.local_size} process(es) on this "
                       f"machine (LOCAL_WORLD_SIZE); drop train.devices or make the two agree")  # fmt: skip


def train_in_group(
    world: World,
    cfg: ExperimentConfig,
    *,
    run_path: str | Path | None = None,
    resume: bool = False,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    claimed: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` as one of ``world.size`` processes; returns the summary (rank 0's figures on every rank).

    ``run_path``: the run folder (a resume, or one ``launch`` claimed: ``claimed``); otherwise rank 0 creates one
    under ``runs_dir`` and tells the others its path.
    """
    from dlx.build import prepare
    from dlx.devices import device_for
    from dlx.train import fit

    device = device_for(cfg, world)
    join(world, device, cfg.train.dist_timeout)
    run: Run | None = None
    try:
        setup, problem = None, None
        for first in (True, False):  # the first process of each machine builds first: it may download the data
            if (world.local_rank == 0) == first:
                try:
                    setup = prepare(cfg, world=world)
                except DlxError as e:
                    problem = str(e)
            world.barrier()
        _raise_first(world.all_objects(problem))
        run, problem = None, None
        if world.main:
            try:
                run = _claim(cfg, run_path, resume=resume, runs_dir=runs_dir, run_id=run_id, claimed=claimed)
            except DlxError as e:
                problem = str(e)
        path = world.broadcast_object(str(run.path) if run is not None else None)
        _raise_first([world.broadcast_object(problem)])
        if run is None:
            run = Run(path)  # the other ranks only name it: rank 0 writes
        assert setup is not None
        return fit(setup, run, resume=resume and run.last_checkpoint.exists(), quiet=quiet)
    finally:
        if run is not None and world.main and not claimed:
            run.release()
        leave()


def _raise_first(problems: list[str | None]) -> None:
    found = first_problem(problems)
    if found is not None:
        raise SharedError(found[1])


def _claim(
    cfg: ExperimentConfig,
    run_path: str | Path | None,
    *,
    resume: bool,
    runs_dir: str | Path | None,
    run_id: str | None,
    claimed: bool,
) -> Run:
    """Rank 0's run folder: the claimed one, the resumed one (locked, config unchanged) or a new one (locked)."""
    if run_path is not None:
        run = open_run(run_path) if resume else Run(run_path)
        if not claimed:
            run.acquire()
        return run
    run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    run.acquire()
    return run
