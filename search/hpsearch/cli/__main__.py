"""`python -m hpsearch.cli`: the `hpsearch` command (the benchmark launches runs this way)."""

from .app import entry

entry()
