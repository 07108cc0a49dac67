"""Issue 21, items 1 and 5: no code from a file a user was sent by any route (a resolver in
a run dir's config, a config inside a checkpoint, a metrics target compare would import),
and bad values refused before work starts (sample's n, an image folder too small for the
metrics, 16-bit images). Each route's test has a marker file its payload would write."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_cli
from gencompare.record import RunDir

TRAIN = ["train", "model=gan", "dataset=ring8", "trainer.max_steps=2", "trainer.batch_size=16", "trainer.progress=false",
         "logger=none", "metrics=none"]


def one_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    """One tiny ring8 GAN run, trained once for the module; tests work on copies."""
    where = tmp_path_factory.mktemp("trained")
    res = run_cli(*TRAIN, "hydra.run.dir=run", cwd=where, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    return where / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


def _resolver_payload(marker: Path) -> str:
    """An interpolation whose resolution makes a node Hydra instantiates as builtins.open:
    a ``_target_`` that appears in no line of the file's text."""
    return "${oc.create:{_target_: builtins.open, file: '" + str(marker) + "', mode: w}}"


def _add_payload(config: dict, marker: Path) -> dict:
    # a nested node of the family's arguments: Hydra instantiates it before the family
    config["model"]["module"]["extra"] = _resolver_payload(marker)
    return config


# ------------------------------------------------------------------------- item 1: no code from a run dir
@pytest.mark.parametrize("command", [["eval", "metrics=fast", "logger=none"], ["sample", "n=4"]])
def test_a_target_a_resolver_makes_in_config_yaml_is_refused(run_copy, tmp_path, data_dir, command):
    marker = tmp_path / "PWNED"
    config = RunDir(run_copy).config
    config.write_text(yaml.safe_dump(_add_payload(yaml.safe_load(config.read_text()), marker)))
    res = run_cli(command[0], f"run={run_copy}", "device=cpu", *command[1:], cwd=tmp_path,
                  data_dir=data_dir)
    line = one_line(res)
    assert "model.module.extra is an interpolation" in line and "config.yaml" in line
    assert not marker.exists()


def test_an_interpolation_in_the_config_inside_a_checkpoint_is_refused(run_copy, tmp_path, data_dir):
    marker = tmp_path / "PWNED"
    run = RunDir(run_copy)
    run.config.unlink()  # eval then rebuilds the model from the checkpoint's own config
    state = torch.load(run.checkpoint, weights_only=True)
    _add_payload(state["config"], marker)
    torch.save(state, run.checkpoint)
    res = run_cli("eval", f"run={run_copy}", "logger=none", "metrics=fast", "device=cpu", cwd=tmp_path,
                  data_dir=data_dir)
    line = one_line(res)
    assert "model.module.extra is an interpolation" in line and "last.ckpt" in line
    assert not marker.exists()


def test_any_interpolation_is_refused_with_its_key_before_anything_resolves(tmp_path):
    from omegaconf import OmegaConf

    from gencompare.errors import GencompareError
    from gencompare.trust import check_no_interpolation

    check_no_interpolation(OmegaConf.create({"a": {"b": [1, "plain", {"c": None}]}, "d": "???"}), "x")
    for value, key in (({"a": {"b": ["ok", "pre ${oc.env:HOME}"]}}, "a.b[1]"), ({"m": "${n}", "n": 1}, "m"),
                       ({"a": [{"_target_": "${oc.decode:'os.system'}"}]}, "a[0]._target_")):
        with pytest.raises(GencompareError, match=rf"^cfg: {re.escape(key)} is an "):
            check_no_interpolation(OmegaConf.create(value), "cfg")


def test_compare_and_eval_import_no_metric_module_a_run_dir_names(run_copy, tmp_path, data_dir):
    """A run dir's ``metrics.<name>._target_`` is looked up for its table rows; a module no
    config of the user's names is not imported (importing runs its top-level code)."""
    marker = tmp_path / "PWNED"
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "evil_rows.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "from gencompare.metrics.base import Metric\n\n\nclass Rows(Metric):\n    rows = ()\n")
    config = RunDir(run_copy).config
    cfg = yaml.safe_load(config.read_text())
    cfg["metrics"]["evil"] = {"_target_": "evil_rows.Rows"}
    config.write_text(yaml.safe_dump(cfg))
    env = {"PYTHONPATH": str(mods)}
    res = run_cli("compare", str(run_copy), "--out", str(tmp_path / "cmp"), cwd=tmp_path, data_dir=data_dir, env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cmp" / "comparison.md").is_file()
    assert not marker.exists()
    res = run_cli("eval", f"run={run_copy}", "logger=none", "metrics=fast", "device=cpu", cwd=tmp_path,
                  data_dir=data_dir, env=env)
    assert res.returncode == 0, res.stderr
    assert not marker.exists()


# ------------------------------------------------------------------------- item 5: bad values before work starts
@pytest.mark.parametrize("key, value", [("n", "abc"), ("n", "1.5"), ("n", "true"), ("n", "0"), ("batch_size", "-2"),
                                        ("seed", "abc")])
def test_sample_values_that_are_no_whole_numbers_are_one_line(trained, tmp_path, data_dir, key, value):
    res = run_cli("sample", f"run={trained}", f"{key}={value}", "device=cpu", f"out={tmp_path / 'x.png'}",
                  cwd=tmp_path, data_dir=data_dir)
    assert re.match(rf"error: {key} must be (a )?(positive|whole)", one_line(res)), res.stderr
    assert not (tmp_path / "x.pt").exists()


def test_sample_n_the_disk_cannot_hold_is_refused_with_its_size(trained, tmp_path, data_dir):
    res = run_cli("sample", f"run={trained}", "n=1e15", "device=cpu", f"out={tmp_path / 'x.png'}", cwd=tmp_path,
                  data_dir=data_dir)
    line = one_line(res)
    assert "n=1,000,000,000,000,000 samples of shape (2,) take 7,450,580.60 GB" in line and "free" in line
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*raw"))


def test_sample_large_n_is_drawn_in_batches_into_one_tensor_file(trained, tmp_path, data_dir):
    res = run_cli("sample", f"run={trained}", "n=2500", "batch_size=1000", "device=cpu", f"out={tmp_path / 'big.png'}",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    big = torch.load(tmp_path / "big.pt", weights_only=True)
    assert big.shape == (2500, 2) and big.dtype == torch.float32 and torch.isfinite(big).all()
    assert (tmp_path / "big.png").is_file() and not list(tmp_path.glob(".*raw"))
    # a batch is one draw: the first batch is what n=1000 draws with the same seed
    res = run_cli("sample", f"run={trained}", "n=1000", "device=cpu", f"out={tmp_path / 'one.png'}", cwd=tmp_path,
                  data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert torch.equal(torch.load(tmp_path / "one.pt", weights_only=True), big[:1000])
    assert not torch.equal(big[1000:2000], big[:1000])


SIXTEEN_BIT = [0, 257, 1000, 20000, 32896, 40000, 50000, 60000, 65000, 65535]  # 257 * k is exactly k in 8 bits


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, channels):
    """A 16-bit greyscale PNG (PIL mode I;16) holds 0..65535: each value is scaled to
    round(v * 255 / 65535), never clipped at 255 (what PIL's own convert does)."""
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from gencompare.data import load_dataset

    folder = tmp_path / "deep"
    folder.mkdir()
    for i, v in enumerate(SIXTEEN_BIT * 2):
        Image.fromarray(np.full((12, 12), v, dtype=np.uint16)).save(folder / f"{i:02d}.png")
    assert Image.open(folder / "00.png").mode.startswith("I")  # PIL wrote 16 bits
    bundle = load_dataset(OmegaConf.create({"name": "image_folder", "path": str(folder), "resolution": 8,
                                            "channels": channels, "build_seed": 0, "test_fraction": 0.2,
                                            "valid_fraction": 0.2, "stream": False}))
    pixels = torch.cat([bundle.train.float().flatten(), (bundle.valid * 255).round().flatten(),
                        (bundle.test * 255).round().flatten()])
    assert sorted(set(pixels.int().tolist())) == sorted({round(v * 255 / 65535) for v in SIXTEEN_BIT})
    for x in (bundle.train.float(), bundle.valid * 255, bundle.test * 255):  # each image one value, all channels
        assert torch.equal(x.amax(dim=(1, 2, 3)).round(), x.amin(dim=(1, 2, 3)).round())


def test_float_images_are_skipped_as_unreadable_not_clipped(tmp_path):
    from omegaconf import OmegaConf
    from PIL import Image

    from gencompare.data import UnreadableImagesWarning, load_dataset

    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(20):
        Image.new("L", (8, 8), 10 * i).save(folder / f"{i:02d}.png")
    Image.new("F", (8, 8), 3.5).save(folder / "float.tif")
    with pytest.warns(UnreadableImagesWarning, match=r"skipped 1 unreadable of 21 .*first: float\.tif"):
        bundle = load_dataset(OmegaConf.create({"name": "image_folder", "path": str(folder), "resolution": 8,
                                                "channels": 1, "stream": False}))
    assert sum(bundle.sizes().values()) == 20


def test_an_image_folder_too_small_for_the_metrics_is_refused_before_training(tmp_path, data_dir):
    from image_data import write_png_folder

    folder = write_png_folder(tmp_path / "few", per_class=8, unreadable=False)  # 16 images: a test split of 1
    args = ["train", "model=vae", "dataset=image_folder", f"dataset.path={folder}", "logger=none",
            "trainer.progress=false", "trainer.max_steps=2", "trainer.batch_size=4"]
    res = run_cli(*args, "metrics=fast", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir)
    # the loader's status line ("image folder: 16 images ... resident"), then one error line
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    line = errors[0]
    assert "the test split holds 1 of 16 examples" in line and "at least 6" in line and "test_fraction" in line
    assert not (tmp_path / "run").exists()  # nothing trained, nothing left
    # without an evaluation the same folder trains
    res = run_cli(*args, "metrics=none", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr


def test_compare_never_resolves_a_sent_sweep_dirs_multirun_yaml(tmp_path, monkeypatch):
    """The sweep command compare prints (and writes into comparison.md) is read from the sweep
    dir's multirun.yaml as text: an interpolation there (an environment variable's value)
    stays unresolved, so a report never carries a value of the machine that made it."""
    from gencompare.report.command import _sweep_command
    from gencompare.report.runs import HYDRA_MULTIRUN

    monkeypatch.setenv("GENCOMPARE_SECRET_FOR_TEST", "s3cr3t-value")
    f = tmp_path / HYDRA_MULTIRUN
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("hydra:\n  overrides:\n    task:\n    - seed=${oc.env:GENCOMPARE_SECRET_FOR_TEST}\n")
    line = _sweep_command([tmp_path])
    assert line is not None and "s3cr3t-value" not in line
    assert "oc.env:GENCOMPARE_SECRET_FOR_TEST" in line


def test_eval_of_a_run_dir_from_before_networks_were_parts_is_one_line(run_copy, tmp_path, data_dir):
    """A config.yaml written before the networks became config parts (model.module.arch, no
    model.parts) no longer builds: eval says so in one line instead of a constructor's error."""
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    del config["model"]["parts"]
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    res = run_cli("eval", f"run={run_copy}", "metrics=none", "logger=none", cwd=tmp_path, data_dir=data_dir)
    line = one_line(res)
    assert "older than its networks as config parts" in line and "config.yaml" in line
