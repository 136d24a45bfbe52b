"""hpsearch: hyperparameter search for image classifiers, on Optuna, PyTorch and torchvision.

The public Python API, flat: load_space, suggest, the TrialConfig dataclasses and space_schema; best_trials (a
study's best trials as a pandas DataFrame) and load_checkpoint (a checkpoint's model, rebuilt); HpsearchError, the
base of every error a user can fix. Importing the package loads neither torch nor Optuna: each function imports what
it needs when called. load_space and space_schema are the whole checks: the space part's and the study part's
(sampler and pruner options against Optuna).
The parts behind it are subpackages (docs/ARCHITECTURE.md): space, training, study, results, cli, bench.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HpsearchError
from .space import Space, SpaceError, TrialConfig, suggest
from .space.overrides import Override

if TYPE_CHECKING:
    import pandas as pd

    from .training.checkpoint import Checkpoint

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (tool.setuptools.dynamic)
__all__ = ["HpsearchError", "Space", "SpaceError", "TrialConfig", "__version__", "best_trials", "load_checkpoint",
           "load_space", "space_schema", "suggest"]


def load_space(path: str | Path, overrides: Sequence[Override] = ()) -> Space:
    """Read and check a space file (`overrides`: `key.path=value` strings, as --set gives them); SpaceError lists
    every problem with file, line, key path, the bad value and the options.

    The whole check: the space part's, and each sampler's and pruner's options against Optuna's own signatures.
    """
    from .study.samplers import load_space as _load_space

    return _load_space(path, overrides)


def space_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of the space format, as `hpsearch schema` prints it: the space part's tables, and
    each sampler's and pruner's options as Optuna's signatures give them."""
    from .study.samplers import space_schema as _space_schema

    return _space_schema()


def best_trials(storage: Any, study: str, k: int | None = 10) -> pd.DataFrame:
    """The best k trials of a study (storage: a URL or an Optuna storage) as the DataFrame `hpsearch report` prints:
    rank, trial, state, the metric, every parameter by its dotted name, epochs, best_epoch, seconds, images_per_sec,
    parameters, checkpoint."""
    from .results.report import best_trials as _best_trials

    return _best_trials(storage, study, k)


def load_checkpoint(path: str | Path, device: Any = "cpu") -> Checkpoint:
    """A checkpoint's model rebuilt in eval mode without the space file (weights-only loading), with its config,
    metric, trial number, class names and input normalisation: `ckpt.model(ckpt.preprocess(images))`."""
    from .training.checkpoint import load_checkpoint as _load_checkpoint

    return _load_checkpoint(path, device)
