"""The one seed rule of a search: a seeded sampler is offset so that no two runs of a study draw the same trials.

offset = trials already in the study + RUN_SEED_STRIDE x the run's worker index + PROCESS_SEED_STRIDE x the process
index under --workers. A resumed run moves on past the trials it finds; parallel runs (machines, array tasks,
--workers processes) draw distinct streams; and every one of them is reproducible. Training's own seed
(train.seed) is not offset: every trial sees the same batches and initial weights, so trials differ only by their
configuration.
"""

from __future__ import annotations

import os

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
