"""What every data set reader returns and raises: RawData, a data set's two splits as numpy arrays with its class
names, and DataError.

Apart from rawdata.py so that the readers it imports (rawfiles, rawfolder, rawsynthetic) can import them too; the
rest of the package imports both from rawdata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import HpsearchError


class DataError(HpsearchError):
    """Bad or missing data; str() is the complete message for the user (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class RawData:
    x_train: np.ndarray  # (N, H, W, C) uint8, HWC: C=3 RGB (CIFAR, an image folder), C=1 grayscale (MNIST)
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
