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

import pytest
import torch

from model_configs import from_config
from gencompare.models import nade as nade_module
from gencompare.metrics.ranks import AcrossRanks
from gencompare.models.base import batch_shard

ROW_TOL = 1e-5

FAMILIES = {  # name: (family, data shape, binary, model.module overrides)
    "gan": ("gan", (2,), False, {}),
    "vae_points": ("vae", (2,), False, {}),
    "vae_images": ("vae", (1, 8, 8), True, {"iwae_k": 7}),
    "nade": ("nade", (1, 6, 6), True, {"hidden_dim": 8}),
    "rnade": ("nade", (2,), False, {"hidden_dim": 8}),
    "ddpm_ancestral": ("ddpm", (2,), False, {"timesteps": 20, "bound_timesteps": None, "sampler": "ancestral",
                                             "sample_batch_size": 4, "bound_batch_size": 5}),
    "ddpm_ddim_eta": ("ddpm", (2,), False, {"timesteps": 20, "bound_timesteps": 5, "sampler": "ddim",
                                            "ddim_eta": 0.5, "sample_steps": 10}),
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
