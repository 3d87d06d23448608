"""``dlx compare A B --samples``: the test images one run gets right and the other wrong, as two galleries.

The book's figure 8-2 (the misclassified test images of its deep CNN), compared: each gallery shows the true
label top-left and the other run's (wrong) prediction bottom-right. Both runs are measured again with their best
weights and own preprocessing (as ``dlx ensemble`` does: same dataset, classes and test images, or refused).
This module needs torch; the rest of dlx.compare does not, and imports it only for ``--samples``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.errors import DlxError
from dlx.outputs import check_output_folder
from dlx.runs import Run, is_run_dir


def label(run: Path) -> str:
    """A run's name in a file name: ``<experiment>-<run-id>`` (two runs may share a run id)."""
    path = Path(run).resolve()
    return f"{path.parent.name}-{path.name}"


def compare_samples(a: Path, b: Path, output: Path | None = None, max_images: int = 20) -> dict[str, Any]:
    """Two galleries (A right and B wrong; B right and A wrong) and the counts; returns where they went."""
    from dlx import report
    from dlx.ensemble import member_probabilities

    for path in (a, b):
        if not is_run_dir(path):
            raise DlxError(f"--samples: {path} is not a run folder (give two runs: dlx compare RUN_A RUN_B --samples)")
    pa, labels, info_a, setup = member_probabilities(Run(a))
    pb, labels_b, info_b, _ = member_probabilities(Run(b))
    same = info_a["classes"] == info_b["classes"] and info_a["images"] == info_b["images"]
    if not same or not bool((labels == labels_b).all()):
        raise DlxError(f"--samples: {a} and {b} were not tested on the same images and classes")
    ya, yb = pa.argmax(1), pb.argmax(1)
    only_a = (ya == labels) & (yb != labels)
    only_b = (yb == labels) & (ya != labels)
    name_a, name_b = label(a), label(b)
    folder = check_output_folder(output) if output is not None else Path(a) / "samples" / name_b
    folder.mkdir(parents=True, exist_ok=True)
    images, classes = setup.test.images.cpu(), info_a["classes"]
    first = folder / f"right_{name_a}_wrong_{name_b}.png"
    second = folder / f"right_{name_b}_wrong_{name_a}.png"
    report.save_misclassified(images[only_a], labels[only_a], yb[only_a], classes, first, max_images)
    report.save_misclassified(images[only_b], labels[only_b], ya[only_b], classes, second, max_images)
    n = len(labels)
    return {"a": str(a), "b": str(b), "images": n, "a_right_b_wrong": int(only_a.sum()),
            "b_right_a_wrong": int(only_b.sum()), "both_wrong": int(((ya != labels) & (yb != labels)).sum()),
            "a_acc": int((ya == labels).sum()) / n, "b_acc": int((yb == labels).sum()) / n,
            "pictures": [str(first), str(second)]}  # fmt: skip
