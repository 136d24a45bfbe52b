"""The space part: a YAML search space read, checked and sampled into TrialConfigs.

Owns the YAML reader that keeps lines (yamlfile), the TrialConfig dataclasses (config), the component registries
(registry: names, fields read, rules), the rules tables (rules), the checker (checker: the whole space; cases: the
`cases:` table; fields: each value), `--set` overrides, the JSON Schema (schema) and sampling (space.suggest). Must
not import torch or Optuna (a CI contract: pyproject.toml [tool.importlinter]): a space is checked by `hpsearch
validate` and edited with the schema without either.
"""

from .config import TrialConfig
from .load import load_space
from .space import Param, Section, Space, StudySpec, suggest
from .yamlfile import Problem, SpaceError

__all__ = ["Param", "Problem", "Section", "Space", "SpaceError", "StudySpec", "TrialConfig", "load_space", "suggest"]
