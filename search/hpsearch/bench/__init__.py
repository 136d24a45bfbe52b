"""Benchmarks, apart from the runtime: `hpsearch bench` (the training loop against the plain torchvision loop, and a
search's start-up and overhead). The figures and their commands are in docs/BENCHMARKS.md.

Developer tooling: it may import the space, training and study parts; nothing but the CLI's `bench` verb imports
it (a CI contract, .importlinter).
"""
