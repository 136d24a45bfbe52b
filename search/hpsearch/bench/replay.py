"""The fresh process of bench.optuna_alone: `python -m hpsearch.bench.replay SPACE URL` with the recorded curves as
JSON on stdin; prints the seconds per trial of the bare Optuna loop."""

from __future__ import annotations

import json
import sys

from .bench import replay

if __name__ == "__main__":
    curves = [[(int(s), float(v)) for s, v in c] for c in json.load(sys.stdin)]
    print(replay(sys.argv[1], sys.argv[2], curves))
