"""The command line: `hpsearch VERB`, its parser and verbs, and the look-up of a study from a command line.

The top of the package: it may import every part, and no part imports it (a CI contract: pyproject.toml
[tool.importlinter]). It imports torch only inside the verbs that train or load a model, so `hpsearch --help` and
`hpsearch validate` stay fast.
"""

from .app import entry, main

__all__ = ["entry", "main"]
