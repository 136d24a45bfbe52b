"""The rules tables of the space format: sections and keys, what can be searched, closed sets, numeric ranges.

Read by the checker and the JSON Schema alike, so that an editor's squiggles and `hpsearch validate` agree. The
component names and the fields each component reads are the registries' (registry.py).
"""

from __future__ import annotations

import re

from . import config as C
from .registry import DATASETS, NAMED_SECTIONS

SECTIONS = ("data", "train", "model", "optimizer", "scheduler")
TOP_KEYS = ("study", *SECTIONS, "cases")
# `cases:` groups of named rows, each row fixed values by dotted path (a table's rows: spaces/seeds/); one
# categorical parameter a group. Every combination of rows is checked as a whole space, so there are at most this
# many.
MAX_CASE_COMBINATIONS = 1_000
MAX_FUSE = 64  # study.fuse, --fuse: the most trials one fused group trains at once
CASE_GROUP = r"[A-Za-z][A-Za-z0-9_]*"
STUDY_KEYS = ("name", "direction", "metric", "storage", "sampler", "pruner", "keep_checkpoints",
              "heartbeat_interval", "grace_period", "max_retry", "resume_interval", "fuse")
PARAM_KEYS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
              "categorical": ("choices",)}
DIRECTIONS = ("maximize", "minimize")

# Fields that fix the data every trial sees: searching them would make trials incomparable.
UNSEARCHABLE = {"data.dataset", "data.root", "data.image_size", "data.download", "data.val_size", "data.train_limit",
                "data.split_seed", "data.mean", "data.std", "data.synthetic", "train.device", "train.eval_batch_size",
                "train.deterministic"}
# Closed sets of strings, by field path.
OPTIONS: dict[str, tuple[str, ...]] = {
    "data.dataset": DATASETS.names(), "train.precision": C.PRECISIONS, "model.pool": C.POOLS,
    "model.head": C.HEADS, "model.activation": C.ACTIVATIONS, "model.init": C.INITS,
    **{f"{s}.name": reg.names() for s, reg in NAMED_SECTIONS.items()},
}
# Allowed numeric ranges (low, high, low_open, high_open) by field path; None is unbounded. The upper bounds keep a
# typo (a 400-digit epoch count, a width of 100000) from reaching torch as an allocation or an overflow.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_WIDTH = 4_096  # channels of a stage
MAX_IMAGES = 1_000_000  # a synthetic split: 3 GB of uint8 pixels
MAX_CLASSES = 10_000
MAX_IMAGE_SIZE = 512  # an image folder's resized side: 50,000 such images are 39 GB of uint8 pixels
MAX_KERNEL = 15
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.val_size": (1, 10 * MAX_IMAGES, False, False), "data.train_limit": (1, 10 * MAX_IMAGES, False, False),
    "data.augment.crop_padding": (0, 16, False, False), "data.augment.rotation": (0, 180, False, False),
    "data.augment.translate": (0, 1, False, True), "data.augment.brightness": (0, 10, False, False),
    "data.augment.contrast": (0, 10, False, False), "data.augment.saturation": (0, 10, False, False),
    "data.augment.hue": (0, 0.5, False, False), "data.augment.erasing": (0, 1, False, False),
    "data.image_size": (8, MAX_IMAGE_SIZE, False, False),
    "data.mean": (0, 1, False, False), "data.std": (0, None, True, False),
    "data.synthetic.size": (2, MAX_IMAGES, False, False),
    "data.synthetic.test_size": (1, MAX_IMAGES, False, False),
    "data.synthetic.classes": (2, MAX_CLASSES, False, False), "data.synthetic.noise": (0, None, False, False),
    "train.epochs": (1, MAX_EPOCHS, False, False), "train.batch_size": (1, MAX_BATCH, False, False),
    "train.eval_batch_size": (1, MAX_BATCH, False, False), "train.label_smoothing": (0, 1, False, True),
    "train.grad_clip": (0, None, True, False),
    "model.stages": (1, 16, False, False), "model.blocks_per_stage": (1, 64, False, False),
    "model.width": (1, MAX_WIDTH, False, False), "model.width_growth": (0, 16, True, False),
    "model.widths": (1, MAX_WIDTH, False, False), "model.dropout": (0, 1, False, True),
    "model.kernel_size": (1, MAX_KERNEL, False, False), "model.kernel_sizes": (1, MAX_KERNEL, False, False),
    "model.hidden": (1, MAX_WIDTH, False, False), "model.spatial_dropout": (0, 1, False, True),
    "optimizer.lr": (0, None, True, False), "optimizer.momentum": (0, 1, False, True),
    "optimizer.weight_decay": (0, None, False, False), "optimizer.betas": (0, 1, False, True),
    "optimizer.eps": (0, None, True, False), "optimizer.alpha": (0, 1, False, False),
    "scheduler.warmup_epochs": (0, MAX_EPOCHS, False, False), "scheduler.step_size": (1, MAX_EPOCHS, False, False),
    "scheduler.milestones": (1, MAX_EPOCHS, False, False), "scheduler.gamma": (0, None, True, False),
    "scheduler.min_lr_factor": (0, 1, False, False), "scheduler.pct_start": (0, 1, True, True),
    "scheduler.div_factor": (0, None, True, False), "scheduler.final_div_factor": (0, None, True, False),
    "scheduler.factor": (0, 1, True, True), "scheduler.patience": (0, MAX_EPOCHS, False, False),
    "scheduler.end_factor": (0, 1, False, False),
}
# A study's name: Optuna's, a file name (studies/<name>.db) and a folder (studies/<name>/): no path, no spaces.
STUDY_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
MAX_STUDY_NAME = 128


def study_name_problem(name: object) -> str | None:
    """What is wrong with a study name, or None: one rule for study.name and --study alike."""
    if not isinstance(name, str) or not re.fullmatch(STUDY_NAME, name) or ".." in name:
        return (f"expected a name that starts with a letter or digit, then letters, digits, '_', '.' or '-' (no "
                f"'..'), got {name!r}")
    if len(name) > MAX_STUDY_NAME:
        return f"a study name has at most {MAX_STUDY_NAME} characters, got {len(name)}"
    return None


# What a field's annotation accepts, and how to say it.
KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
         "int | None": "a whole number or null", "float | None": "a number or null",
         "tuple[int, ...]": "a list of whole numbers", "tuple[int, ...] | None": "a list of whole numbers or null",
         "tuple[float, float]": "a list of two numbers", "tuple[float, ...] | None": "a list of numbers or null"}
