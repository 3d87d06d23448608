"""MLflow: the run's parameters, step and epoch metrics, final figures and files, in ``$MLFLOW_TRACKING_URI``
(default: an SQLite store ``<runs_dir>/mlruns.db`` with artifacts in ``<runs_dir>/mlartifacts``). The MLflow
experiment is the dlx experiment's name, the MLflow run is named by the run id and tagged with its folder; a
resumed dlx run continues its MLflow run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dlx.trackers.base import EPOCH_KEYS, FINAL_KEYS, PICTURES, STEP_KEYS, scalar_params

STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}  # failed, diverged: FAILED
PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000


def tracking_uri(runs_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(runs_dir / 'mlruns.db').absolute()}"


class MLflowTracker:
    name = "mlflow"

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id = ""

    def start(self, run_dir: Path, config: dict[str, Any], summary: dict[str, Any], step: int) -> dict[str, Any]:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from dlx.config import flatten

        runs_dir = run_dir.parent.parent  # runs/<name>/<run-id>, and a sweep's runs/<sweep>/<cell>
        uri = tracking_uri(runs_dir)
        self.client = MlflowClient(tracking_uri=uri)
        previous = (summary.get("loggers") or {}).get("mlflow") or {}
        if step and previous.get("run_id") and previous.get("tracking_uri") == uri:
            self.run_id = previous["run_id"]  # a resume continues the same MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
            return previous
        experiment_id = self._experiment(str(summary.get("name") or config.get("name")), runs_dir, uri)
        run = self.client.create_run(experiment_id, run_name=str(summary.get("run_id") or run_dir.name),
                                     tags={"dlx.run_dir": str(run_dir), "dlx.model": str(summary.get("model"))})  # fmt: skip
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in scalar_params(flatten(config)).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_BATCH])
        return {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id}

    def _experiment(self, name: str, runs_dir: Path, uri: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (runs_dir / "mlartifacts").absolute().as_uri() if uri.startswith("sqlite:") else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:  # another process (a sweep worker) created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _metrics(self, values: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, s) for k, v, s in values]
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + METRICS_PER_BATCH])

    def log(self, steps: list[dict[str, Any]], epoch: dict[str, Any], step: int) -> None:
        values = [(f"step_{k}", row[k], row["step"]) for row in steps for k in STEP_KEYS if row.get(k) is not None]
        values += [(f"epoch_{k}", epoch[k], epoch["epoch"]) for k in EPOCH_KEYS if epoch.get(k) is not None]
        self._metrics(values)

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        epochs = int(summary.get("epochs_completed") or 0)
        self._metrics([(k, summary[k], epochs) for k in FINAL_KEYS if isinstance(summary.get(k), (int, float))])
        for name in ("summary.json", "config.yaml", "metrics.jsonl", *PICTURES):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))
