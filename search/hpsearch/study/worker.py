"""One worker's resources, made once per process and handed to every trial it runs: the device, the data set on it,
the study, and the study's artifact folder and running-checkpoint folder.

Nothing else loads data or opens the study for a trial: each trial (alone or in a group trained together)
takes a Worker. A study made from another space is refused before the data loads; missing data fails before the
study is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from ..space import Space
from ..training.data import DeviceData, prepare
from ..training.device import repeatable_cublas, resolve_device
from .storage import artifact_dir, open_if_exists, open_storage, running_dir
from .studies import check_resumable, create_or_resume


@dataclass(frozen=True, eq=False)
class Worker:
    space: Space
    url: str  # the study's storage URL
    device: torch.device  # where every trial of this worker trains
    data: DeviceData  # the data set on that device, split; every trial reuses the tensors
    study: optuna.Study  # opened once, with this worker's sampler seed (seeds.py)
    artifacts: Path  # the artifact store's folder: the best trials' checkpoints
    running: Path  # running trials' last saved states, for retries (resume.py)

    @classmethod
    def open(cls, space: Space, url: str, study_name: str | None = None, process: int = 0,
             storage: optuna.storages.BaseStorage | None = None, run: str = "",
             existing: optuna.Study | None = None) -> Worker:
        """Check that the study may take this space (at once: before the data loads), load the data onto the
        device, then open (or create) the study. `process`: this worker's index under --workers; `storage` and
        `existing`: the study's storage and the study itself (None: not there yet) when the caller has opened
        them and checked the space on them (studies.check_resumable), so the command opens its study once; `run`:
        the command's id (seeds.concurrent_offset). A SQLite file that does not exist yet is created only once the
        data has loaded."""
        if storage is None:  # a caller that hands its storage has checked the space on it already
            storage = open_if_exists(url, space.study)
            if storage is not None:
                existing = check_resumable(space, url, study_name, storage)
        device = resolve_device(space.fixed_train_device())
        if space.sections["train"].fields.get("deterministic") is True:
            repeatable_cublas()  # before the data's copy starts a CUDA context
        data = prepare(space.fixed_data(), device)
        study = create_or_resume(space, url, study_name, process, storage or open_storage(url, space.study), run,
                                 existing=existing)
        name = study.study_name
        return cls(space, url, device, data, study, artifact_dir(url, name), running_dir(url, name))
