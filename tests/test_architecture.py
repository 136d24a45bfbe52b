"""The rules between the parts (docs/ARCHITECTURE.md): the import contracts, and the commands that must stay light."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter, a dev dependency
# This checkout's package, whichever checkout the environment's editable install points at.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "search"), os.environ.get("PYTHONPATH", "")])}


def test_the_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: layers, the space without torch or Optuna, training without
    Optuna, nothing importing the CLI, errors.py and keys.py importing no part."""
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in done.stdout


def _modules_after(code: str) -> set[str]:
    """The top-level modules loaded once `code` (which may exit through SystemExit) has run in a fresh process."""
    script = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
              "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=ENV)
    return set(done.stderr.strip().splitlines()[-1].split())


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["validate", "spaces/cifar100.yaml"],
                                  ["validate", "spaces/smoke.yaml", "--set", "train.epochs=0"]])
def test_help_and_validate_load_no_torch(argv: list[str]) -> None:
    loaded = _modules_after(f"from hpsearch.cli import main; main({argv!r})")
    assert "hpsearch" in loaded
    assert not loaded & {"torch", "torchvision"}


def test_importing_the_package_loads_neither_torch_nor_optuna() -> None:
    loaded = _modules_after("import hpsearch; hpsearch.TrialConfig()")
    assert "hpsearch" in loaded and not loaded & {"torch", "torchvision", "optuna"}
