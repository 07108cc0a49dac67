"""Evaluation across ranks (issue 22, item 4): the evaluation's samples, ``gencompare
sample``'s and the test likelihoods are spread over the ranks of a data-parallel job, every
rank drawing the random numbers one process draws and running the network on its own rows
(:mod:`gencompare.metrics.ranks`), so that ``metrics.json`` is one process's up to float sums.

``ROW_TOL``: a row computed in a batch of another size may differ from one process's in the
last bits (the matrix products block differently); measured on the cases below
(2026-12-03, CPU, one thread): at most 7.2e-7 (the VAE's 2D samples, of magnitude ~3),
every likelihood bit-identical. A wrong noise row shows as a difference of the order of the
samples themselves (0.1 to 1), so 1e-5 separates the two.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_dir

from conftest import CONF_DIR
from model_configs import from_config
from test_distributed import _env, _one_process
from gencompare.models import nade as nade_module
from gencompare.build import load_run_model
from gencompare.evaluate import evaluate_run
from gencompare.metrics.ranks import AcrossRanks
from gencompare.models.base import batch_shard
from gencompare.sample import draw_to_file

ROW_TOL = 1e-5

FAMILIES = {  # name: (family, data shape, binary, model.module overrides)
    "gan": ("gan", (2,), False, {}),
    "vae_points": ("vae", (2,), False, {}),
    "vae_images": ("vae", (1, 8, 8), True, {"iwae_k": 7}),
    "nade": ("nade", (1, 6, 6), True, {"hidden_dim": 8}),
    "rnade": ("nade", (2,), False, {"hidden_dim": 8}),
    "ddpm_ancestral": ("ddpm", (2,), False, {"timesteps": 8, "bound_timesteps": None, "sampler": "ancestral",
                                             "sample_batch_size": 4, "bound_batch_size": 5}),
    "ddpm_ddim_eta": ("ddpm", (2,), False, {"timesteps": 8, "bound_timesteps": 3, "sampler": "ddim",
                                            "ddim_eta": 0.5, "sample_steps": 5}),
    "ddpm_images": ("ddpm", (1, 8, 8), False, {"timesteps": 4, "bound_timesteps": None, "base_channels": 4,
                                               "sampler": "ancestral", "sample_batch_size": 3,
                                               "bound_batch_size": 4}),
}
#: rows per rank of the global batch: even, uneven, and a rank holding no row (it still draws)
SPLITS = [(6, 5), (4, 0, 7)]


def _model(name: str):
    family, shape, binary, module = FAMILIES[name]
    torch.manual_seed(0)
    return from_config(family, shape, binary=binary, **module).eval(), shape, binary


def _over_ranks(fn, sizes: tuple[int, ...], seed: int) -> torch.Tensor:
    """``fn(start, count)`` run as each rank of a global batch split as ``sizes`` in turn
    (the same seed, as every rank is seeded), under the shard an evaluation gives it
    (:class:`gencompare.metrics.ranks.AcrossRanks`), the rows it keeps concatenated in
    rank order."""
    parts = []
    for rank in range(len(sizes)):
        ranks = AcrossRanks(rank, len(sizes))
        ranks.sizes = lambda n, sizes=sizes: sizes  # noqa: B023 - the split under test
        start, count = ranks.rows(sum(sizes))
        torch.manual_seed(seed)
        with batch_shard(ranks.shard(sum(sizes))):
            parts.append(fn(start, count)[: sizes[rank]])
    return torch.cat(parts)


@pytest.mark.parametrize("sizes", SPLITS)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_rank_samples_its_rows_of_one_process_samples(name, sizes, monkeypatch):
    """Every family's ``sample`` under a rank's shard returns that rank's rows of what one
    process samples for the whole batch (NADE cut into its own chunks as one process cuts)."""
    monkeypatch.setattr(nade_module, "_SAMPLE_CHUNK", 4)  # the chunked path at test size
    model, _, _ = _model(name)
    n = sum(sizes)
    torch.manual_seed(1)
    whole = model.sample(n)
    spread = _over_ranks(lambda start, count: model.sample(count), sizes, seed=1)
    torch.testing.assert_close(spread, whole, rtol=ROW_TOL, atol=ROW_TOL)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "gan"])
def test_each_rank_scores_its_rows_of_one_process_likelihood(name):
    """The exact likelihood (NADE), IWAE (VAE) and the DDPM bound of a rank's rows are its
    rows of one process's on the whole batch: the same epsilon, the same x_t noise."""
    model, shape, binary = _model(name)
    sizes = (4, 0, 7)  # rank 1 holds no row: it scores one of rank 0's for its draws and drops it
    g = torch.Generator().manual_seed(5)
    x = torch.rand(sum(sizes), *shape, generator=g)
    x = (x > 0.5).float() if binary else x
    torch.manual_seed(2)
    whole = model.log_likelihood(x)
    spread = _over_ranks(lambda start, count: model.log_likelihood(x[start : start + count]), sizes, seed=2)
    torch.testing.assert_close(spread, whole, rtol=ROW_TOL, atol=ROW_TOL)


# -- two processes -----------------------------------------------------------------------------
#: the VAE on ring8 (IWAE, samples with decoder noise, AIS on rank 0 alone), tens of steps;
#: chunks that split unevenly over 2 ranks: 301 samples in draws of 100 (the last of 1 row,
#: which rank 1 computes and drops), 101 test examples in batches of 50
EVAL_RUN = ["model=vae", "dataset=ring8", "trainer.max_steps=100", "trainer.batch_size=100", "trainer.log_every=50",
            "trainer.num_grid_samples=64", "metrics=fast",
            "metrics.num_samples_2d=301", "metrics.sample_batch_size=100", "metrics.likelihood.max_examples=101",
            "metrics.likelihood.batch_size=50"]
#: relative tolerance of metrics.json's numbers between world sizes 1 and 2. Evaluating one
#: checkpoint: the rows are one process's up to ROW_TOL. After training on 2 ranks the
#: weights differ from one process's in the last float bits (tests/test_distributed.py,
#: WEIGHT_ATOL), and so does the NLL: 7.1e-9 relative, its standard error 2.5e-8, mode
#: coverage identical (measured on EVAL_RUN, 2026-12-03); a wrong noise row or a lost
#: example moves the NLL by 1e-3 or more.
METRIC_RTOL = 1e-5
WALL_CLOCK = {"sample_time_1000_s", "seconds"}


def _gencompare(tmp_path: Path, data_dir: Path, *args: str, torchrun: bool = False) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else []
    result = subprocess.run([sys.executable, *launcher, "-m", "gencompare", *args], cwd=tmp_path,
                            env=_env(data_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _evaluation(metrics_json: Path, blocks=("num_samples", "likelihood", "mode_coverage")) -> dict:
    """The evaluation's ``blocks`` of a metrics.json, flattened, without wall-clock times."""
    def flat(value, key):
        if not isinstance(value, dict):
            return {key: value}
        return {k: v for name, sub in value.items() if name not in WALL_CLOCK
                for k, v in flat(sub, f"{key}.{name}").items()}

    record = json.loads(metrics_json.read_text())
    return {k: v for block in blocks for k, v in flat(record[block], block).items()}


def _assert_same_evaluation(one: dict, two: dict, what: str) -> None:
    assert one.keys() == two.keys(), what
    for key, value in one.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=METRIC_RTOL, abs=1e-9), f"{what}: {key}"
        else:
            assert two[key] == value, f"{what}: {key}"


def test_two_ranks_record_the_one_process_evaluation(tmp_path, data_dir):
    """metrics.json is the same for world size 1 and 2 (up to float sums): training with
    trainer.devices=2, evaluating one checkpoint with `gencompare eval trainer.devices=2`;
    and `gencompare sample` under torchrun draws the one-process samples."""
    one = tmp_path / "one"
    _one_process(one, data_dir, *EVAL_RUN)
    trained_one = _evaluation(one / "metrics.json")
    assert trained_one["num_samples"] == 301 and trained_one["likelihood.num_examples"] == 101
    assert trained_one["mode_coverage.high_quality_fraction"] > 0  # samples near the modes: a comparison of substance

    _gencompare(tmp_path, data_dir, "train", "trainer.devices=2", *EVAL_RUN, "logger=none", "trainer.progress=false",
                "hydra.run.dir=two")
    _assert_same_evaluation(trained_one, _evaluation(tmp_path / "two" / "metrics.json"), "train, 2 ranks")

    metrics = [a for a in EVAL_RUN if a.startswith("metrics")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        evaluate_run(compose(config_name="eval", overrides=[f"run={one}", "logger=none", "device=cpu",
                                                            f"paths.data_dir={data_dir}",
                                                            f"paths.cache_dir={data_dir / 'cache'}", *metrics]))
    blocks = ("num_samples", "likelihood", "mode_coverage", "ais")  # one checkpoint: AIS (rank 0's) too
    evaluated_one = _evaluation(one / "metrics.json", blocks)
    _gencompare(tmp_path, data_dir, "eval", f"run={one}", "logger=none", *metrics, "trainer.devices=2")
    _assert_same_evaluation(evaluated_one, _evaluation(one / "metrics.json", blocks), "eval, 2 ranks")

    _gencompare(tmp_path, data_dir, "sample", f"run={one}", "n=7", "batch_size=4", "out=s2.png", torchrun=True)
    _, _, bundle, model = load_run_model(one, data_dir=str(data_dir))
    s1 = draw_to_file(model, 7, tuple(bundle.shape), 0, 4, tmp_path / "s1.pt")  # seed 0, as sample's default
    torch.testing.assert_close(torch.load(tmp_path / "s2.pt", weights_only=True), s1, rtol=ROW_TOL, atol=ROW_TOL)
