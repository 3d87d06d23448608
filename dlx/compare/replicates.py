"""Which compared runs are distinct: a run folder copied (a backup, a copy resumed elsewhere) is one run.

Runs whose configs differ by seed alone are replicates, and a table row shows their mean +- std over n.
A copy of a run folder is not a replicate: it is the same run, and counting it again would shrink the
std and inflate n. Two run folders are one run when they have the same seed and configuration and

- the same ``run_id`` and ``started_at`` (a copy: summary.json is copied as it was), or
- the same provenance: ``started_at``, command line, working directory, experiment file and git commit
  (a copy that was resumed: a resume keeps these of the first process, on any host, and the run_id becomes
  the new folder's name), or
- the same summary.json, byte for byte in meaning (runs that record no start time).

Of one run's folders the one furthest along counts (completed, then the most epochs, then the last to end),
and of equals the one whose folder is named as its run_id says (the original, not the copy).
"""

from __future__ import annotations

import json
from typing import Any

from dlx.compare.records import RunRecord
from dlx.compare.table import configuration_key

# What a resume keeps of the run's first process (dlx.record.KEPT_ON_RESUME, which imports torch).
PROVENANCE = ("started_at", "argv", "cwd", "experiment_file", "git")


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def identities(r: RunRecord) -> list[tuple[str, str]]:
    """What makes ``r`` the run it is, as (why, key) pairs: two folders sharing one key hold the same run."""
    s = r.summary
    same = _text([configuration_key(r), s.get("seed", r.config.get("seed"))])
    keys = []
    if s.get("started_at"):
        keys.append(("the same run_id and started_at", _text([same, s.get("run_id"), s["started_at"]])))
        if s.get("argv"):  # a run dlx trained (an ensemble records no command line: its start alone is no identity)
            keys.append(("the same provenance", _text([same, {k: s.get(k) for k in PROVENANCE}])))
    keys.append(("the same summary.json", _text([same, s])))
    return keys


def _progress(r: RunRecord) -> tuple[bool, float, str, bool]:
    """Which folder of a run counts: completed, most epochs, last to end, then the one named as the run says."""
    epochs = r.summary.get("epochs_completed")
    done = epochs if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) else 0
    own = r.path.name == r.summary.get("run_id")  # the original, not the copy (a copy keeps the summary's run_id)
    return r.summary.get("status") == "completed", float(done), str(r.summary.get("ended_at") or ""), own


def distinct_runs(runs: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """``runs`` with each run once (in their order), and a note per folder left out naming the one kept."""
    owner: dict[str, int] = {}  # identity key -> index of its group
    groups: list[list[RunRecord]] = []  # the folders of one run
    for r in runs:
        keys = [key for _, key in identities(r)]
        index = next((owner[key] for key in keys if key in owner), len(groups))
        if index == len(groups):
            groups.append([])
        groups[index].append(r)
        owner.update((key, index) for key in keys)
    kept: set[int] = set()
    notes: list[str] = []
    for members in groups:
        best = max(members, key=_progress)  # the first of equals
        kept.add(id(best))
        best_keys = {key for _, key in identities(best)}
        for r in members:
            if r is not best:
                why = next((w for w, key in identities(r) if key in best_keys), "a copy of a copy")
                notes.append(f"{r.path} is the same run as {best.path} ({why}): counted once")
    return [r for r in runs if id(r) in kept], notes
