"""The training part: one trial's model trained on data held on the device, with no Optuna anywhere.

Owns the raw data sets (rawdata, with a reader per family in rawfiles, rawfolder and rawsynthetic: arrays, no torch
at import), device data with batched augmentation and the one normalisation (data), the device and precision
(device), the model, optimizer and schedule builders attached to the space's registries (models, optim), the
one epoch loop for a group of K >= 1 trials (train; a step and its state: step; fused models: fused), the one
evaluation loop (evaluate) and the checkpoint file format (checkpoint). Imports the
space part; must not import Optuna, the study, results or CLI parts (a CI contract: pyproject.toml
[tool.importlinter]). Its one hook is a callback per epoch.
"""
