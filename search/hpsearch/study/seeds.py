"""The one seed rule of a search: a seeded sampler is offset so that no two runs of a study draw the same trials.

offset = trials already in the study + RUN_SEED_STRIDE x the run's worker index + PROCESS_SEED_STRIDE x the process
index under --workers. A resumed run moves on past the trials it finds; parallel runs (machines, array tasks,
--workers processes) draw distinct streams; and every one of them is reproducible. Runs started beside each other
without a worker index (four `hpsearch run` in one shell) would see the same trial count and draw the same trials:
each run marks itself on the study, and a run that finds another marked at its trial count moves its seed by its
own random run id (concurrent_offset), so they differ; a run alone keeps its seed. Training's own seed
(train.seed) is not offset: every trial sees the same batches and initial weights, so trials differ only by their
configuration.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

from .storage import StudyError

# Where a run's worker index comes from, first found wins: ours, a SLURM array task, a Kubernetes Indexed Job.
WORKER_INDEX_VARS = ("HPSEARCH_WORKER", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
RUN_SEED_STRIDE = 100_003  # per worker index (one of several runs: machines, array tasks); far apart
PROCESS_SEED_STRIDE = 7919  # per process of one run's --workers: distinct streams, reproducible per process


def worker_index() -> int:
    """This worker's index among several on one study (0 when alone), from WORKER_INDEX_VARS."""
    for var in WORKER_INDEX_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(0, int(value))
            except ValueError:
                raise StudyError(f"{var}={value!r}: a worker index must be a whole number >= 0") from None
    return 0


def seed_offset(trials_so_far: int, process: int = 0) -> int:
    """What a sampler's seed is offset by in this run's process number `process` (0 without --workers)."""
    return trials_so_far + RUN_SEED_STRIDE * worker_index() + PROCESS_SEED_STRIDE * process


RUN_MARK = "hpsearch:run:"  # study system attr per run: the trial count it started at
CONCURRENT_SEED_STRIDE = 1_000_003  # per host-and-process when runs start beside each other


def concurrent_offset(storage: Any, study_id: int, run: str, trials_so_far: int) -> int:
    """Mark this run on the study, then: 0 when no other run is marked at the same trial count (a run alone keeps
    its reproducible seed), else an offset drawn from this run's random id.

    Marking comes before looking, so of two runs that start together at least the later looker sees both, and
    every run that sees another moves by its own id: two runs share a seed only if their ids' hashes meet in
    4,093 values, where without the marks every pair did.
    """
    storage.set_study_system_attr(study_id, RUN_MARK + run, trials_so_far)
    peers = [k for k, v in storage.get_study_system_attrs(study_id).items()
             if k.startswith(RUN_MARK) and v == trials_so_far]
    if len(peers) <= 1:
        return 0
    return CONCURRENT_SEED_STRIDE * (1 + zlib.crc32(run.encode()) % 4_093)


def forget(storage: Any, study_id: int, run: str) -> None:
    """Clear this run's mark: a run that ended without starting a trial (stopped while it started, or with nothing
    left to run) must not count as a concurrent run for the next one at the same trial count, which would move that
    run's seed."""
    storage.set_study_system_attr(study_id, RUN_MARK + run, None)
