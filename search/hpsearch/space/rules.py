"""The rules tables of the space format: sections and keys, what can be searched, closed sets, numeric ranges.

Read by the checker and the JSON Schema alike, so that an editor's squiggles and `hpsearch validate` agree. The
component names and the fields each component reads are the registries' (registry.py).
"""

from __future__ import annotations

from . import config as C
from .registry import DATASETS, NAMED_SECTIONS

SECTIONS = ("data", "train", "model", "optimizer", "scheduler")
TOP_KEYS = ("study", *SECTIONS)
STUDY_KEYS = ("name", "direction", "metric", "storage", "sampler", "pruner", "keep_checkpoints",
              "heartbeat_interval", "grace_period", "max_retry", "resume_interval")
PARAM_KEYS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
              "categorical": ("choices",)}
DIRECTIONS = ("maximize", "minimize")

# Fields that fix the data every trial sees: searching them would make trials incomparable.
UNSEARCHABLE = {"data.dataset", "data.root", "data.download", "data.val_size", "data.train_limit",
                "data.split_seed", "data.synthetic", "train.device", "train.eval_batch_size"}
# Closed sets of strings, by field path.
OPTIONS: dict[str, tuple[str, ...]] = {
    "data.dataset": DATASETS.names(), "train.precision": C.PRECISIONS,
    **{f"{s}.name": reg.names() for s, reg in NAMED_SECTIONS.items()},
}
# Allowed numeric ranges (low, high, low_open, high_open) by field path; None is unbounded.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.val_size": (1, None, False, False), "data.train_limit": (1, None, False, False),
    "data.augment.crop_padding": (0, 16, False, False), "data.synthetic.size": (2, None, False, False),
    "data.synthetic.test_size": (1, None, False, False), "data.synthetic.classes": (2, None, False, False),
    "data.synthetic.noise": (0, None, False, False),
    "train.epochs": (1, None, False, False), "train.batch_size": (1, None, False, False),
    "train.eval_batch_size": (1, None, False, False), "train.label_smoothing": (0, 1, False, True),
    "train.grad_clip": (0, None, True, False),
    "model.stages": (1, 5, False, False), "model.blocks_per_stage": (1, None, False, False),
    "model.width": (1, None, False, False), "model.width_growth": (0, None, True, False),
    "model.widths": (1, None, False, False), "model.dropout": (0, 1, False, True),
    "optimizer.lr": (0, None, True, False), "optimizer.momentum": (0, 1, False, True),
    "optimizer.weight_decay": (0, None, False, False), "optimizer.betas": (0, 1, False, True),
    "optimizer.eps": (0, None, True, False), "optimizer.alpha": (0, 1, False, False),
    "scheduler.warmup_epochs": (0, None, False, False), "scheduler.step_size": (1, None, False, False),
    "scheduler.milestones": (1, None, False, False), "scheduler.gamma": (0, None, True, False),
    "scheduler.min_lr_factor": (0, 1, False, False), "scheduler.pct_start": (0, 1, True, True),
    "scheduler.div_factor": (0, None, True, False), "scheduler.final_div_factor": (0, None, True, False),
    "scheduler.factor": (0, 1, True, True), "scheduler.patience": (0, None, False, False),
    "scheduler.end_factor": (0, 1, False, False),
}
# What a field's annotation accepts, and how to say it.
KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
         "int | None": "a whole number or null", "float | None": "a number or null",
         "tuple[int, ...]": "a list of whole numbers", "tuple[int, ...] | None": "a list of whole numbers or null",
         "tuple[float, float]": "a list of two numbers"}
