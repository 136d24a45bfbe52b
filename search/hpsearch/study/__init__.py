"""The study part: Optuna meets training here, and only here.

Owns storage (URLs, SQLite for many workers, where a study's files live), samplers and pruners by name, the one seed
rule, opening a study (once per command) with its space guard, the one life cycle of every trial (asked, trained
alone or in a fused group, told: trials.py), what a trial records (records.py), the faults and their words
(faults.py), heartbeats, retries and resume, one worker's resources, running one or N worker processes, and the
progress lines.
The only module using Optuna's private API is compat.py. Imports the space and training parts; must not import
results or the CLI (a CI contract: pyproject.toml [tool.importlinter]).
"""
