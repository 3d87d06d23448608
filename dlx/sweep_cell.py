"""One sweep cell, trained inside a worker process (``dlx.sweep_worker``): claim it, then skip, resume or train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig, config_from_dict
from dlx.errors import DlxError
from dlx.runs import CONFIG_FILE, Run, claim_cell, reset_run
from dlx.sweep_checks import read_summary


def _fail_before_fit(run: Run, cfg: ExperimentConfig, previous: dict[str, Any], message: str) -> dict[str, Any]:
    """Record a cell that could not even start (dataset missing, ...) so compare lists it as failed."""
    if not run.config_path.exists():
        run.write_config(cfg.to_yaml())
    summary = {**previous, "status": "failed", "name": cfg.name, "run_id": run.path.name, "run_dir": str(run.path),
               "message": message}  # fmt: skip
    run.write_summary(summary)
    return summary


def run_cell(run_dir: str | Path, config: dict[str, Any], *, retry_failed: bool = False) -> dict[str, Any]:
    """Claim one cell and do what its state asks; returns ``{"outcome", "status", "message", ...}``.

    outcome: ``busy`` (another process holds it), ``skipped`` (completed, or failed without
    retry_failed), ``trained``, ``resumed``. KeyboardInterrupt propagates after the run is marked
    interrupted (fit does that), so the worker can report and stop.
    """
    run = claim_cell(run_dir)
    if run is None:
        return {"outcome": "busy", "status": None, "message": "held by another dlx process"}
    try:
        try:
            previous = run.read_summary()
        except DlxError:
            previous = {}  # a corrupt summary: the cell starts over
        status = previous.get("status")
        if status == "completed":
            return {"outcome": "skipped", "status": status, "message": "completed earlier"}
        if status in ("failed", "diverged") and not retry_failed:
            return {"outcome": "skipped", "status": status, "message": previous.get("message", "")}
        cfg = config_from_dict(config, str(run.path / CONFIG_FILE))
        from dlx.build import prepare
        from dlx.train import fit

        try:
            setup = prepare(cfg)
        except DlxError as e:
            _fail_before_fit(run, cfg, previous, str(e))
            return {"outcome": "trained", "status": "failed", "message": str(e)}
        # "running" with the lock free means the process that ran it died: continue like an interrupted run.
        resume = status in ("interrupted", "running") and run.last_checkpoint.exists()
        from_epoch = int(previous.get("epochs_completed") or 0) if resume else 0
        if not resume:
            reset_run(run)
        try:
            summary = fit(setup, run, resume=resume, quiet=True)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # fit has marked the run failed or diverged; the sweep goes on
            summary = read_summary(run.path)
            summary.setdefault("status", "failed")
            summary.setdefault("message", f"{type(e).__name__}: {e}")
        return {
            "outcome": "resumed" if resume else "trained",
            "status": summary.get("status"),
            "message": summary.get("message", ""),
            "from_epoch": from_epoch,
        }
    finally:
        run.release()
