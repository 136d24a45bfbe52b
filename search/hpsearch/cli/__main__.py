"""`python -m hpsearch.cli`: the `hpsearch` command (the benchmark launches runs this way)."""

import sys

from .app import main

sys.exit(main())
