"""Benchmarks, apart from the runtime: `hpsearch bench` (the training loop against the plain torchvision loop, and a
search's start-up and overhead). The figures and their commands are in docs/BENCHMARKS.md.

Developer tooling, above the runtime: it may import every part but the CLI (the device check, suite.py, also
measures results' export and test set); nothing but the CLI's `bench` verb imports it (a CI contract,
pyproject.toml [tool.importlinter]).
"""
