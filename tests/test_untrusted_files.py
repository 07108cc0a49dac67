"""Dataset files and archives are data: a crafted CIFAR-10 batch, meta file or archive is
refused in one line, and the marker file its payload would write never appears."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from gencompare.errors import GencompareError
from gencompare.data import CIFAR10_ARCHIVE
from gencompare.untrusted import extract_tar, load_data_pickle
from image_data import write_fake_cifar10


class _Payload:
    """Unpickling this runs ``os.system(touch <marker>)``: what a tampered file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tamper(path: Path, marker: Path) -> None:
    entry = pickle.loads(path.read_bytes(), encoding="latin1")
    entry["labels"] = _Payload(marker)
    path.write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_a_cifar_file_that_names_code_is_refused_and_never_run(tmp_path, data_dir, name):
    root = tmp_path / "data"
    folder = write_fake_cifar10(root, per_batch=20, num_test=20)
    marker = tmp_path / "PWNED"
    _tamper(folder / name, marker)
    res = run_cli("train", "dataset=cifar10", "model=vae", "trainer.max_steps=1", "logger=none",
                  "trainer.progress=false", "metrics=none", "dataset.download=false", "dataset.valid_size=20", f"paths.data_dir={root}",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to unpickle posix.system from "), res.stderr
    assert name in lines[0]
    assert not marker.exists()


def test_data_pickles_of_arrays_lists_and_strings_load(tmp_path):
    path_entry = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [1, 2], "name": b"batch",
                  "label_names": ["cat", "dog"], "scale": 0.5}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        p = tmp_path / f"data-{protocol}.pkl"
        p.write_bytes(pickle.dumps(path_entry, protocol=protocol))
        got = load_data_pickle(p, encoding="latin1")
        assert np.array_equal(got["data"], path_entry["data"]) and got["labels"] == [1, 2]
        assert got["label_names"] == ["cat", "dog"] and got["name"] == b"batch"


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.parametrize("members, why", [
    ([_file("cifar-10-batches-py/ok"), _file("../../ESCAPED")], "an absolute path or '..'"),
    ([_file("/tmp/gencompare-ESCAPED-abs")], "an absolute path or '..'"),
    ([_link("cifar-10-batches-py", "../.."), _file("cifar-10-batches-py/ESCAPED")], "outside the folder"),
    ([_link("evil", "/etc/passwd", hard=True)], "outside the folder"),
])
def test_an_archive_member_that_leaves_its_folder_is_refused_before_anything_is_written(tmp_path, members, why):
    dest = tmp_path / "a" / "b" / "data"
    dest.mkdir(parents=True)
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(GencompareError, match=f"refusing to extract .*{why}.*nothing was extracted"):
        extract_tar(archive, dest)
    assert list(dest.iterdir()) == []  # checked up front: not even the good members
    assert not list(tmp_path.rglob("ESCAPED")) and not Path("/tmp/gencompare-ESCAPED-abs").exists()


def test_a_crafted_cifar_archive_placed_by_the_user_is_refused_in_one_line(tmp_path, data_dir):
    root = tmp_path / "data"
    root.mkdir()
    _tar(root / CIFAR10_ARCHIVE, [_file("cifar-10-batches-py/data_batch_1"), _file("../OUTSIDE")])
    res = run_cli("train", "dataset=cifar10", "trainer.max_steps=1", "logger=none", "trainer.progress=false",
                  "metrics=none", "dataset.download=false", f"paths.data_dir={root}",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: refusing to extract {root / CIFAR10_ARCHIVE}"), res.stderr
    assert not (tmp_path / "OUTSIDE").exists() and not (root / "cifar-10-batches-py").exists()


def test_a_genuine_archive_extracts(tmp_path):
    src = write_fake_cifar10(tmp_path / "src", per_batch=5, num_test=5)
    archive = tmp_path / CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    extract_tar(archive, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "cifar-10-batches-py").iterdir()) == \
        sorted(p.name for p in src.iterdir())
