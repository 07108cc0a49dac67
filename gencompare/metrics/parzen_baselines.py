"""The two sanity baselines of the Parzen protocol (Theis, van den Oord & Bethge 2016,
"A note on the evaluation of generative models", Table 2): real training images and
k-means centroids of them as kernel centres, scored exactly as a model's samples are
(:func:`gencompare.metrics.parzen.parzen_evaluate`), and cached per dataset variant."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gencompare.data import as_pixels
from gencompare.metrics.parzen import _as_rows, parzen_evaluate
from gencompare.record import Parzen, atomic_write_json
from gencompare.terminal import console

__all__ = ["cached_baselines", "kmeans_centres", "sanity_baselines"]


def kmeans_centres(
    train: Tensor, n: int, *, seed: int = 0, max_iter: int = 10,
) -> Tensor:
    """k-means centroids of the training images, the stronger sanity baseline.

    Theis, van den Oord & Bethge 2016 (Table 2) show that k-means centroids of the
    training set, used as Parzen centres, score higher than real samples and than most
    models (about 313 nats on MNIST against 243 for 10,000 training images).

    Uses scikit-learn's ``KMeans`` (Lloyd, ``algorithm="lloyd"``) initialised with ``n``
    training images chosen at random by ``seed``, ``n_init=1`` and a bounded
    ``max_iter``: k-means++ seeding of 10,000 clusters on 50,000 x 784 tries ~11
    candidates per centre against every image, about as many flops as 11 Lloyd
    iterations but in 10,000 small sequential steps, and with about 5 images per
    cluster the Lloyd assignments settle within a few iterations (on Fashion-MNIST the
    inertia fell 704,540 -> 475,065 -> 464,040 -> 460,601 in the first three).
    Cost: one Lloyd iteration on 50,000 x 784 -> 10,000 clusters is ~8e11 flops; the
    whole :func:`sanity_baselines` (10 iterations plus two Parzen evaluations) took 77 s
    on 2 lightly loaded EPYC cores, 239 s on the same cores under heavy load
    (benchmarks/results/parzen.md).

    Args:
        train: (T, D) or (T, C, H, W) training images, pixels in [0, 1].
        n: number of centroids (the protocol: 10,000).
        seed: picks the initial images (and seeds scikit-learn).
        max_iter: Lloyd iterations (default 10).

    Returns:
        (n, *train.shape[1:]) float32 tensor of centroids on ``train``'s device.

    Raises:
        ValueError: n < 1 or more centroids than training images.
    """
    from sklearn.cluster import KMeans

    rows = _as_rows(train, "train")
    if n < 1 or n > rows.shape[0]:
        raise ValueError(f"k-means needs 1 <= n <= number of training images ({rows.shape[0]}), got n={n}")
    data = rows.detach().to("cpu", torch.float32).numpy()
    gen = torch.Generator().manual_seed(seed)
    init_idx = torch.randperm(rows.shape[0], generator=gen)[:n].numpy()
    km = KMeans(
        n_clusters=n, init=data[init_idx], n_init=1, max_iter=max_iter,
        algorithm="lloyd", random_state=seed,
    ).fit(data)
    centres = torch.from_numpy(np.ascontiguousarray(km.cluster_centers_, dtype=np.float32))
    return centres.reshape(n, *train.shape[1:]).to(train.device)


def sanity_baselines(
    train: Tensor,
    valid: Tensor,
    test: Tensor,
    n: int = 10000,
    *,
    seed: int = 0,
    sigmas: Sequence[float] | Tensor | None = None,
    memory_budget_mb: float = 256,
    kmeans_max_iter: int = 10,
) -> dict[str, Parzen]:
    """The two reference scores of Theis et al. 2016 under the identical Parzen protocol.

    Args:
        train: (T, ...) training images in [0, 1] (the paper: train[0:50000]).
        valid, test: as in :func:`parzen_evaluate`.
        n: number of centres (the protocol: 10,000).
        seed: picks the training-image subset and the k-means initialisation.
        sigmas, memory_budget_mb: as in :func:`parzen_evaluate`.
        kmeans_max_iter: Lloyd iterations of :func:`kmeans_centres`.

    Returns:
        ``{"train_images": ..., "kmeans_centroids": ...}``: :class:`gencompare.record.Parzen` blocks with ``n`` random
        training images (fixed by ``seed``) and ``n`` k-means centroids as centres.
        On MNIST Theis et al. report about 243 and 313 nats respectively.

    Raises:
        ValueError: fewer than ``n`` training images, or as :func:`parzen_evaluate`.
    """
    rows = _as_rows(train, "train")
    if rows.shape[0] < n:
        raise ValueError(f"sanity baselines need at least n={n} training images, got {rows.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(rows.shape[0], generator=gen)[:n].to(rows.device)
    kw = dict(sigmas=sigmas, memory_budget_mb=memory_budget_mb)
    return {
        "train_images": parzen_evaluate(rows[idx], valid, test, **kw),
        "kmeans_centroids": parzen_evaluate(
            kmeans_centres(rows, n, seed=seed, max_iter=kmeans_max_iter), valid, test, **kw
        ),
    }


def cached_baselines(cont, valid: Tensor, test: Tensor, *, num_centres: int, sigmas, memory_budget_mb: float,
                     cache_dir: Path) -> dict[str, Any]:
    """:func:`sanity_baselines` of ``cont`` (a [0, 1] :class:`gencompare.data.DataBundle`)
    with ``min(num_centres, training images)`` centres, as ``metrics.json``'s
    ``parzen_baselines`` block, cached in ``cache_dir`` per variant and protocol setting.

    With no more training images than centres the k-means row would repeat the training
    images' row: it is omitted and ``note`` says why; likewise for a training split streamed
    from its files (k-means reads the whole split at once).
    """
    n = min(int(num_centres), len(cont.train))
    key = f"parzen-baselines-v2-{cont.variant}-n{n}-v{len(valid)}-t{len(test)}-s{sigmas}.json"
    path = cache_dir / key
    if path.is_file():
        return json.loads(path.read_text())
    kw = dict(sigmas=sigmas, memory_budget_mb=memory_budget_mb)
    if cont.streamed:
        return _streamed_baselines(cont, valid, test, n, cache_dir / key.replace("-v2-", "-v2-streamed-"), kw)
    train = as_pixels(cont.train)  # 8-bit data keeps its training split as uint8
    if len(train) > n:
        console.print(f"Parzen sanity baselines for {cont.variant} ({n} centres; k-means takes a while, cached after)")
        results = sanity_baselines(train, valid, test, n=n, **kw)
        out = {k: v.to_dict() for k, v in results.items()}
    else:
        # n k-means centroids of n images are the images themselves: the baseline would
        # repeat the train-images row, so it is omitted and the reason recorded
        g = torch.Generator().manual_seed(0)
        centres = train[torch.randperm(len(train), generator=g)[:n].to(train.device)]
        out = {
            "train_images": parzen_evaluate(centres, valid, test, **kw).to_dict(),
            "note": f"k-means baseline omitted: {cont.variant} has {len(cont.train)} training images, "
                    f"not more than the {num_centres} centres it needs",
        }
    atomic_write_json(out, path)
    return out


def _streamed_baselines(cont, valid: Tensor, test: Tensor, n: int, path: Path, kw: dict) -> dict[str, Any]:
    """The baselines of a training split streamed from its files: the training-image row
    from the same ``n`` images the resident path picks (seed 0), read alone; k-means
    centroids need the whole split at once and are omitted, the reason recorded."""
    if path.is_file():
        return json.loads(path.read_text())
    g = torch.Generator().manual_seed(0)
    centres = as_pixels(cont.train[torch.randperm(len(cont.train), generator=g)[:n]])  # (n, C, H, W)
    out = {
        "train_images": parzen_evaluate(centres.reshape(len(centres), -1), valid, test, **kw).to_dict(),
        "note": f"k-means baseline omitted: {cont.variant}'s training split is streamed from its files "
                "(dataset.stream) and k-means reads the whole split at once",
    }
    atomic_write_json(out, path)
    return out
