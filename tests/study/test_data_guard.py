"""The space guard and the data: an image folder's root is its data (its classes and image counts are stored on the
study and compared on resume), while the root of every other data set is only where it sits (moving it is fine)."""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from pathlib import Path

import optuna
import pytest
from PIL import Image

from hpsearch import keys, load_space
from hpsearch.cli import main
from hpsearch.space.config import DataConfig
from hpsearch.study.studies import check_resumable, create_or_resume
from hpsearch.training.rawdata import data_identity, load_arrays

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}


def _images(folder: Path, classes: tuple[str, ...], per_class: int, start: int = 0) -> Path:
    """per_class tiny flat-coloured PNGs in folder/<class>/ for each class (numbered from start)."""
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.new("RGB", (8, 8), COLOURS[name]).save(folder / name / f"{i:02d}.png")
    return folder


def test_the_identity_counts_what_the_loader_reads_without_opening_an_image(tmp_path: Path) -> None:
    """Files ImageFolder skips (no image extension) are not counted, images in a class's subfolders are, and no
    file is opened: a broken .png counts as the loader's file (the loader, not the listing, refuses it)."""
    root = tmp_path / "images"
    _images(root / "train", ("cat", "dog"), 3)
    _images(root / "test", ("cat", "dog"), 1)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "more").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train" / "dog" / "more" / "x.JPG")
    cfg = DataConfig(dataset="imagefolder", root=str(root), image_size=8, download=False, val_size=2)
    raw = load_arrays(cfg)
    assert data_identity(cfg) == {"classes": ["cat", "dog"], "train": [3, 4], "test": [1, 1]}
    assert [int((raw.y_train == k).sum()) for k in (0, 1)] == [3, 4] and len(raw.y_test) == 2
    (root / "train" / "cat" / "bad.png").write_text("not a png")
    assert data_identity(cfg) == {"classes": ["cat", "dog"], "train": [4, 4], "test": [1, 1]}
    for dataset in ("cifar100", "mnist", "synthetic"):  # their root is only where they sit
        assert data_identity(DataConfig(dataset=dataset, root=str(tmp_path / "nowhere"))) is None


def _space(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "folder.yaml"
    path.write_text(textwrap.dedent(f"""
        study: {{name: folder, sampler: {{name: random, seed: 0}}, pruner: {{name: none}}}}
        data: {{dataset: imagefolder, root: {str(root)!r}, image_size: 8, val_size: 2}}
        train: {{epochs: 1, batch_size: 4, device: cpu}}
        model: {{name: mlp, hidden: [4], dropout: {{type: float, low: 0.0, high: 0.5}}}}
    """))
    return path


def _run(space: Path, url: str, *more: str) -> int:
    return main(["run", str(space), "--trials", "1", "--storage", url, *more])


def _trials(url: str, name: str = "folder") -> int:
    return len(optuna.load_study(study_name=name, storage=url).trials)


@pytest.mark.parametrize("change, shown", [
    (lambda root: _images(root, ("fox",), 3), "classes: [cat, dog] -> [cat, dog, fox]\n  train images: 6 -> 9\n"),
    (lambda root: _images(root, ("cat", "dog"), 2, start=3), "changed:\n  train images: 6 -> 10\nfix:"),
    (lambda root: (root / "dog" / "00.png").rename(root / "cat" / "99.png"),
     "train images by class: cat 3 -> 4, dog 3 -> 2"),
])
def test_an_image_folder_that_changed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 change: object, shown: str) -> None:
    root = _images(tmp_path / "images", ("cat", "dog"), 3)
    space, url = _space(tmp_path, root), f"sqlite:///{tmp_path / 's.db'}"
    assert _run(space, url) == 0
    change(root)  # type: ignore[operator]
    capsys.readouterr()
    assert _run(space, url) == 2
    err = capsys.readouterr().err
    assert f"study 'folder' in {url} was created from other images than those in {root}; changed:" in err
    assert shown in err, err
    assert "fix: start a new study with --study folder-2, or point --data-root at the original images" in err
    assert "loading imagefolder" not in err  # refused before the data loads
    assert _trials(url) == 1
    assert _run(space, url, "--study", "folder-2") == 0


def test_an_image_folder_split_into_train_and_test_is_compared_per_split(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "images"
    _images(root / "train", ("cat", "dog"), 3)
    _images(root / "test", ("cat", "dog"), 1)
    space, url = _space(tmp_path, root), f"sqlite:///{tmp_path / 's.db'}"
    assert _run(space, url) == 0
    _images(root / "test", ("cat", "dog"), 1, start=1)
    capsys.readouterr()
    assert _run(space, url) == 2
    err = capsys.readouterr().err
    assert "test images: 2 -> 4" in err and "train images" not in err and "classes" not in err


def test_the_same_image_folder_moved_elsewhere_resumes(tmp_path: Path) -> None:
    root = _images(tmp_path / "images", ("cat", "dog"), 3)
    space, url = _space(tmp_path, root), f"sqlite:///{tmp_path / 's.db'}"
    assert _run(space, url) == 0
    moved = tmp_path / "elsewhere" / "pictures"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    assert _run(space, url, "--data-root", str(moved)) == 0
    assert _run(space, url, "--data-root", str(moved), "--workers", "2", "--trials", "2") == 0
    assert _trials(url) == 4


def test_a_study_made_before_the_data_was_stored_resumes(tmp_path: Path) -> None:
    root = _images(tmp_path / "images", ("cat", "dog"), 3)
    space, url = _space(tmp_path, root), f"sqlite:///{tmp_path / 's.db'}"
    assert _run(space, url) == 0
    with sqlite3.connect(tmp_path / "s.db") as db:  # as an older hpsearch left it
        assert db.execute("DELETE FROM study_user_attributes WHERE key = ?", (keys.DATA,)).rowcount == 1
    _images(root, ("fox",), 3)
    assert _run(space, url) == 0
    assert keys.DATA not in optuna.load_study(study_name="folder", storage=url).user_attrs  # not adopted
    assert _trials(url) == 2


def test_a_synthetic_study_resumes_with_another_data_root(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["run", str(TINY), "--trials", "1", "--storage", url, "--data-root", str(tmp_path / "a")]) == 0
    assert main(["run", str(TINY), "--trials", "1", "--storage", url, "--data-root", str(tmp_path / "b")]) == 0
    assert _trials(url, "tiny") == 2
    assert keys.DATA not in optuna.load_study(study_name="tiny", storage=url).user_attrs


@pytest.mark.parametrize("dataset", ["cifar100", "cifar10", "mnist", "fashion_mnist"])
def test_a_files_data_set_is_only_where_it_sits(tmp_path: Path, dataset: str) -> None:
    """Its root is a location: nothing there is listed or stored, so another root (even one that does not exist
    yet) resumes the study."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = load_space(TINY, [f"data.dataset={dataset}", f"data.root={tmp_path / 'a'}"])
    create_or_resume(first, url).enqueue_trial({"model.width": 4})
    moved = load_space(TINY, [f"data.dataset={dataset}", f"data.root={tmp_path / 'b'}"])
    existing = check_resumable(moved, url)
    assert existing is not None and keys.DATA not in existing.user_attrs
    assert len(create_or_resume(moved, url, existing=existing).trials) == 1
