"""hpsearch: hyperparameter search for image classifiers, on Optuna, PyTorch and torchvision.

The public Python API: load_space, suggest and the TrialConfig dataclasses; best_trials (a study's best trials as a
pandas DataFrame) and load_checkpoint (a checkpoint's model, rebuilt). Importing the package loads no torch: the last
two import what they need when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrialConfig
from .space import Space, load_space, suggest
from .yamlfile import SpaceError

if TYPE_CHECKING:
    import pandas as pd

    from .checkpoint import Checkpoint

__version__ = "0.1.0"
__all__ = ["Space", "SpaceError", "TrialConfig", "__version__", "best_trials", "load_checkpoint", "load_space",
           "suggest"]


def best_trials(storage: Any, study: str, k: int | None = 10) -> pd.DataFrame:
    """The best k trials of a study (storage: a URL or an Optuna storage) as the DataFrame `hpsearch report` prints:
    rank, trial, state, the metric, every parameter by its dotted name, epochs, best_epoch, seconds, images_per_sec,
    parameters, checkpoint."""
    from .report import best_trials as _best_trials

    return _best_trials(storage, study, k)


def load_checkpoint(path: str | Path, device: Any = "cpu") -> Checkpoint:
    """A checkpoint's model rebuilt in eval mode without the space file (weights-only loading), with its config,
    metric, trial number, class names and input normalisation: `ckpt.model(ckpt.preprocess(images))`."""
    from .checkpoint import load_checkpoint as _load_checkpoint

    return _load_checkpoint(path, device)
