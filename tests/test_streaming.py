"""Image folders larger than memory (issue 11, item 2): the training split streamed from its
files through a DataLoader gives the pixels, the split, the batches and the resumable order
of the resident uint8 tensor, so a run trains the same either way; one line says which path
was taken, and unreadable files are counted in the same one warning."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from gencompare.data import BatchStream, StreamedBatches, load_dataset
from gencompare.errors import GencompareError
from gencompare.data import FolderImages, UnreadableImagesWarning
from gencompare.train.train import train
from image_data import write_png_folder


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    """Two class folders of 20 RGB 40x48 PNGs each (not square: resize and crop matter) and
    one file with a PNG name that is no image."""
    return write_png_folder(tmp_path_factory.mktemp("stream") / "pets", per_class=20)


def folder_cfg(path, **kw):
    return OmegaConf.create({"name": "image_folder", "path": str(path), "resolution": 32, "channels": 3,
                             "build_seed": 0, "test_fraction": 0.1, "valid_fraction": 0.05, "num_workers": 0,
                             **kw})


def load_quietly(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImagesWarning)
        return load_dataset(cfg)


def test_streamed_folder_has_the_resident_split_labels_and_pixels(png_dir):
    resident = load_quietly(folder_cfg(png_dir, stream=False))
    streamed = load_quietly(folder_cfg(png_dir, stream=True))
    assert not resident.streamed and isinstance(resident.train, torch.Tensor)
    assert streamed.streamed and isinstance(streamed.train, FolderImages)
    assert streamed.sizes() == resident.sizes() == {"train": 34, "valid": 2, "test": 4}
    assert streamed.train.shape == resident.train.shape and streamed.train.dtype == torch.uint8
    # every training image decoded from its file equals the resident tensor's, at the same index
    assert torch.equal(streamed.train[:], resident.train)
    idx = torch.tensor([32, 0, 7, 7])
    assert torch.equal(streamed.train[idx], resident.train[idx]) and torch.equal(streamed.train[-1], resident.train[-1])
    for split in ("valid", "test", "train_labels", "valid_labels", "test_labels"):
        assert torch.equal(getattr(streamed, split), getattr(resident, split)), split
    assert streamed.variant == resident.variant
    assert streamed.describe()["train_loading"] == "streamed" and resident.describe()["train_loading"] == "resident"
    with pytest.raises(TypeError, match="streams its images from files"):
        streamed.train.to(torch.float32)  # a whole-split conversion is what streaming avoids


def test_both_paths_count_unreadable_files_in_the_same_one_warning(png_dir):
    messages = {}
    for stream in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_dataset(folder_cfg(png_dir, stream=stream))
        lines = [str(w.message) for w in caught if issubclass(w.category, UnreadableImagesWarning)]
        assert len(lines) == 1, lines
        messages[stream] = lines[0]
    assert messages[True] == messages[False]
    assert messages[True].startswith("skipped 1 unreadable of 41 image files") and "broken.png" in messages[True]


def test_streamed_batches_are_the_resident_batches_and_resume_at_any_step(png_dir):
    resident = load_quietly(folder_cfg(png_dir, stream=False))
    streamed = load_quietly(folder_cfg(png_dir, stream=True, num_workers=1))
    # 34 images in batches of 8: 4 batches an epoch, so 14 batches cross three epoch boundaries
    stream = resident.batches(8, seed=5)
    expected = [next(stream) for _ in range(14)]
    got = BatchStream(streamed.train, 8, seed=5)  # what the runner builds
    assert isinstance(got, StreamedBatches)
    assert got.loader.num_workers == 1 and got.loader.persistent_workers and not got.loader.pin_memory
    for k, want in enumerate(expected):
        batch = next(got)
        assert batch.dtype == torch.float32 and torch.equal(batch, want), f"batch {k}"
    assert got.batches_drawn == 14 and got.epoch == 3
    got.close()
    for start in (1, 6, 8):  # mid-epoch, and at an epoch boundary
        resumed = streamed.batches(8, seed=5, batches_drawn=start)
        for k in range(start, 14):
            assert torch.equal(next(resumed), expected[k]), f"resumed at {start}: batch {k}"
        resumed.close()
    other = streamed.batches(8, seed=6)
    assert not torch.equal(next(other), expected[0])  # the order is the seed's
    other.close()


def test_auto_streams_over_the_budget_and_says_which_path_in_one_line(png_dir, capsys):
    # 41 files x 3 x 32 x 32 bytes = 0.12 MB
    assert not load_quietly(folder_cfg(png_dir, stream="auto", max_resident_mb=1)).streamed
    line = capsys.readouterr().err.strip()
    assert "= 0.12 MB <= 1.0 MB (dataset.max_resident_mb)" in line and "resident" in line and "\n" not in line
    assert load_quietly(folder_cfg(png_dir, stream="auto", max_resident_mb=0.1)).streamed
    line = capsys.readouterr().err.strip()
    assert "= 0.12 MB > 0.1 MB (dataset.max_resident_mb)" in line and "streaming the training split" in line
    assert "\n" not in line
    # without a limit the budget is a quarter of the available memory: this folder fits
    assert not load_quietly(folder_cfg(png_dir, stream="auto")).streamed
    assert "of the available RAM" in capsys.readouterr().err
    with pytest.raises(GencompareError, match="dataset.stream must be auto, true or false, got sometimes"):
        load_dataset(folder_cfg(png_dir, stream="sometimes"))


def test_a_file_unreadable_after_start_up_is_one_line_naming_it(tmp_path, png_dir):
    folder = shutil.copytree(png_dir, tmp_path / "pets")
    streamed = load_quietly(folder_cfg(folder, stream=True))
    victim = streamed.train.files[3]
    victim.write_bytes(b"truncated")
    with pytest.raises(GencompareError, match=rf"{victim.name} can no longer be read"):
        streamed.train[3]
    stream = streamed.batches(34, seed=0)  # one batch holds every training image
    with pytest.raises(GencompareError, match=rf"{victim.name} can no longer be read") as err:
        next(stream)
    assert "\n" not in str(err.value)
    stream.close()


def test_static_binarization_of_a_streamed_split_is_refused_in_one_line(tmp_path, png_dir):
    cfg = compose_train(tmp_path / "run", tmp_path / "data", "model=nade", "dataset=image_folder",
                        f"dataset.path={png_dir}", "dataset.stream=true", "dataset.binarize=static")
    with pytest.raises(GencompareError, match="streamed from its files; use binarization dynamic or none"):
        train(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()


SHRINK_EVAL = ["metrics=fast", "metrics.num_samples=40", "metrics.sample_batch_size=40",
               "metrics.parzen.num_centres=20", "metrics.parzen.num_valid=1", "metrics.parzen.num_test=5",
               "metrics.parzen.baselines=true", "metrics.likelihood.max_examples=5",
               "metrics.classifier.epochs=1", "metrics.features.num_real=8", "metrics.fid_is.num_real=20",
               "metrics.fid_is.download=false", "metrics.fid_is.inception_weights=/nonexistent/inception.pth"]


def run_folder(run_dir, data_dir, png_dir, *overrides):
    cfg = compose_train(run_dir, data_dir, "model=vae", "dataset=image_folder", f"dataset.path={png_dir}",
                        "dataset.num_workers=1", "model.module.iwae_k=4", "model.module.conv_width=8",
                        "dataset.test_fraction=0.2", "trainer.batch_size=8", "trainer.checkpoint_every=1", *overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImagesWarning)
        return train(cfg)


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_streamed_training_equals_resident_training_with_the_same_metrics_and_resumes(tmp_path, png_dir):
    # 6 steps of 3 batches an epoch (30 training images): across an epoch boundary; each run its own classifier cache
    res = run_folder(tmp_path / "res", tmp_path / "d1", png_dir, "trainer.max_steps=6", "dataset.stream=false",
                     *SHRINK_EVAL)
    out = run_folder(tmp_path / "str", tmp_path / "d2", png_dir, "trainer.max_steps=6", "dataset.stream=true",
                     *SHRINK_EVAL)
    assert res["data"]["train_loading"] == "resident" and out["data"]["train_loading"] == "streamed"
    assert same_weights(weights(tmp_path / "res"), weights(tmp_path / "str"))
    # the metrics read the training split (classifier, FID's real images, Parzen's baseline)
    # from the files and compute what the resident run computes
    for key in ("parzen", "likelihood", "classifier", "mode_coverage", "fid_is"):
        assert out[key] == res[key], key
    assert out["parzen_baselines"]["train_images"] == res["parzen_baselines"]["train_images"]
    assert "k-means baseline omitted" in out["parzen_baselines"]["note"]
    # stopped after 3 steps and resumed: the same weights as the uninterrupted run
    run_folder(tmp_path / "cut", tmp_path / "d3", png_dir, "trainer.max_steps=3", "dataset.stream=true")
    run_folder(tmp_path / "cut", tmp_path / "d3", png_dir, "trainer.max_steps=6", "dataset.stream=true",
               "trainer.resume=true")
    assert same_weights(weights(tmp_path / "cut"), weights(tmp_path / "str"))
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["data"]["train_loading"] == "streamed"


def test_seed_batch_members_each_stream_their_own_runs_batches(tmp_path, png_dir):
    from gencompare.train import seeds

    for stream in ("false", "true"):
        cfg = compose_train(tmp_path / stream, tmp_path / "data", "model=gan", "dataset=image_folder",
                            f"dataset.path={png_dir}", f"dataset.stream={stream}", "dataset.num_workers=1",
                            "model.module.dcgan_width=8", "trainer.batch_size=8", "trainer.max_steps=5",
                            "trainer.seed_batch=2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnreadableImagesWarning)
            seeds.train(cfg)
    for member in ("", "_s1"):  # each seed's stream in the stack: the batches of its resident run
        assert same_weights(weights(tmp_path / f"false{member}"), weights(tmp_path / f"true{member}")), member
