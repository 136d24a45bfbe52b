"""The results part: what a search leaves, read and used.

Owns reports (a study's trials as a pandas DataFrame, summaries, formats), plots (Optuna's visualisations,
restyled), the dashboard (optuna-dashboard with the study's checkpoints), export (TorchScript, torch.export), the
test set (evaluate a checkpoint, retrain a configuration on train+validation) and the files they write, whole or not
at all (files.py). Imports the space, training and study parts; must not import the CLI (a CI contract:
pyproject.toml [tool.importlinter]).
"""
