"""The record contract: metrics.json round-trips through its schema exactly (today's files
and version-1 files alike), wrong types are one line naming the key, writes are atomic."""
from __future__ import annotations

import json

import pytest

from gencompare.errors import GencompareError
from gencompare.record import (
    SCHEMA_VERSION,
    ClassCoverage,
    MixtureCoverage,
    RecordError,
    RunDir,
    atomic_write,
    flatten,
    read_metrics,
    trim_history,
)
from gencompare.models.gan import GAN
from gencompare.train.train import train

# a metrics.json as gencompare wrote it before schema_version existed (digits, eval merged in)
V1 = {
    "model": "vae", "family": "vae", "dataset": "mnist", "variant": "mnist-5k", "seed": 0, "status": "finished",
    "steps": 300, "device": "cpu", "precision": "32", "epochs": 7.5, "batch_size": 100, "train_time_s": 12.5,
    "steps_per_s": 24.0, "samples_per_s": 2400.0, "final_losses": {"elbo": -180.5, "grad_norm/model": 3.25},
    "parameters": {"encoder": 400000, "decoder": 400000}, "parameters_total": 800000,
    "data": {"name": "mnist", "variant": "mnist-5k", "kind": "image", "shape": [1, 28, 28]},
    "sample_grid": "samples/samples.png", "checkpoint": "checkpoints/last.ckpt",
    "num_samples": 1000, "sample_time_1000_s": 0.01, "sampler": None,
    "likelihood": {"kind": "nll_iwae", "nll_nats": 120.5, "stderr": 1.5, "bits_per_dim": 0.22,
                   "num_examples": 200, "binarization": "dynamic", "note": "IWAE"},
    "mode_coverage": {"classes_covered": 10, "num_classes": 10, "kl_to_uniform": 0.05, "kl_to_data": 0.04,
                      "counts": [100] * 10, "num_samples": 1000},
}


def test_a_version_1_metrics_json_reads_and_writes_back_unchanged(tmp_path):
    v1 = {k: v for k, v in V1.items() if k != "sampler"}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(v1))
    record = read_metrics(path)
    assert record.schema_version == 1
    assert isinstance(record.evaluation.mode_coverage, ClassCoverage)
    assert record.evaluation.likelihood.nll_nats == 120.5
    assert record.to_dict() == {**v1, "schema_version": 1}


def test_what_the_runner_writes_round_trips_exactly(compose, tmp_path):
    out = train(compose("model=gan", "dataset=ring8", "metrics=fast", "metrics.num_samples_2d=500",
                        "trainer.max_steps=4"))
    saved = json.loads(RunDir(tmp_path / "run").metrics.read_text())
    assert saved == out and saved["schema_version"] == SCHEMA_VERSION
    assert saved["data"]["coverage"] == "mixture"
    # how compare shows the family, as the GAN's class declares it
    assert saved["family_style"] == {"color": GAN.family_color, "order": GAN.family_order}
    record = read_metrics(RunDir(tmp_path / "run").metrics)
    assert isinstance(record.evaluation.mode_coverage, MixtureCoverage)
    assert record.to_dict() == saved


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model", 5, "metrics.json.model: expected a string, got 5"),
    ("steps", "300", "metrics.json.steps: expected an integer, got '300'"),
    ("likelihood", {"kind": "nll_iwae", "nll_nats": "low"}, "likelihood.nll_nats: expected a number"),
    ("family_style", {"color": "#1f77b4", "order": "first"}, "family_style.order: expected an integer"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_the_key(tmp_path, key, value, message):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**V1, key: value}))
    with pytest.raises(RecordError) as err:
        read_metrics(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, GencompareError)  # the CLI prints it as one line


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**V1, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RecordError, match="upgrade gencompare"):
        read_metrics(path)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(GencompareError, match=r"cannot write .*f\.json: No space left on device"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_flatten_makes_slash_keys_and_keeps_scalar_lists():
    flat = flatten({"a": {"b": 1, "c": [1, 2], "d": [{"x": 1}]}, "e": None, "f": "s"})
    assert flat == {"a/b": 1, "a/c": [1, 2], "e": None, "f": "s"}


def test_trim_history_keeps_steps_up_to_the_checkpoint_and_drops_partial_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "train/lo')
    warnings = trim_history(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert len(warnings) == 1 and "line 4 is not a complete record" in warnings[0]


def test_two_claims_of_one_run_dir_get_two_dirs(tmp_path):
    first, second = RunDir(tmp_path / "r").claim(), RunDir(tmp_path / "r").claim()
    assert first.path == tmp_path / "r" and second.path == tmp_path / "r_1"
