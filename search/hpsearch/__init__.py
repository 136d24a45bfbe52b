"""hpsearch: hyperparameter search for image classifiers, on Optuna, PyTorch and torchvision.

The public Python API: load_space, suggest and the TrialConfig dataclasses. Importing the package loads no torch.
"""

from __future__ import annotations

from .config import TrialConfig
from .space import Space, load_space, suggest
from .yamlfile import SpaceError

__version__ = "0.1.0"
__all__ = ["Space", "SpaceError", "TrialConfig", "__version__", "load_space", "suggest"]
