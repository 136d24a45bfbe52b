"""Which fields of a trial may differ between the members of a fused group (`--fuse K`), and which must not.

A fused group trains K trials as one model in one pass (training/fused.py), so the members must share everything
that shapes the computation: the model's architecture, the data and its augmentation, the batch size, the epochs,
the precision and the seed. What only the optimizer step, the loss or a dropout mask reads may differ per member:
the optimizer and its schedule (each member has its own), dropout rates, the weight initialisation, label smoothing
and gradient clipping. No torch and no Optuna here: the study groups trials by these rules, the trainer checks them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import config as C

# The fields a member may choose for itself, by section (whole sections: every field of theirs).
FREE_SECTIONS = ("optimizer", "scheduler")
FREE_FIELDS = {"model": ("dropout", "spatial_dropout", "init"), "train": ("label_smoothing", "grad_clip")}


def structure(config: C.TrialConfig) -> C.TrialConfig:
    """The config with every free field set to one value: two trials fuse when their structures are equal.

    model.spatial_dropout keeps whether it is on, since a Dropout2d exists in the cnn only when it is above 0.
    """
    model = dataclasses.replace(config.model, dropout=0.0, init="default",
                                spatial_dropout=0.5 if config.model.spatial_dropout > 0 else 0.0)
    train = dataclasses.replace(config.train, label_smoothing=0.0, grad_clip=None)
    return dataclasses.replace(config, model=model, train=train, optimizer=C.OptimizerConfig(),
                               scheduler=C.SchedulerConfig())


def is_free(name: str) -> bool:
    """Whether a searched parameter (its Optuna name: `optimizer.adam.lr`, `model.dropout`, `model.cnn.dropout`
    under a model `choose:`; a `cases:` row's dotted field alike) only sets free fields, so that the members of a
    group may draw it each for itself."""
    section, *rest = name.split(".")
    if section in FREE_SECTIONS:
        return True
    return bool(rest) and rest[-1] in FREE_FIELDS.get(section, ())


def structural_params(params: dict[str, Any], cases: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The parameters of a trial (name -> value) that the other members of its group must take over: all but the
    free ones. A `cases.<group>` parameter is free only when none of its rows sets a structural field."""
    out = {}
    for name, value in params.items():
        if name.startswith("cases."):
            rows = cases.get(name[len("cases."):], {})
            if all(is_free(key) for row in rows.values() for key in row):
                continue
        elif is_free(name):
            continue
        out[name] = value
    return out
