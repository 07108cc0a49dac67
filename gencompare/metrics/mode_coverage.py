"""Mode-coverage metrics of docs/protocols.md section 3 (3a, 3b, 3c).

- :func:`mixture_coverage`: modes captured, high-quality fraction and reverse KL on the
  2D Gaussian mixtures ring8 / grid25 (Metz et al. 2017, "Unrolled Generative Adversarial
  Networks", section 3.1; Srivastava et al. 2017, "VEEGAN", section 5.1; Lin et al. 2018,
  "PacGAN", section 4 and Table 1).
- :func:`class_coverage`: classes covered and KL divergences of the predicted-class
  histogram of generated digits (docs/protocols.md 3b).
- :func:`stacked_coverage`: modes covered out of 1,000 and KL to uniform on Stacked
  MNIST (Metz et al. 2017, section 3.3; Srivastava et al. 2017, Table 2; Lin et al. 2018,
  Table 3).

All KL divergences are in nats (natural log). A histogram bin where the generator put no
mass contributes 0 (``0 log 0 = 0``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import entropy
from torch import Tensor

__all__ = ["mixture_coverage", "class_coverage", "stacked_coverage"]

ArrayLike = Tensor | np.ndarray | Sequence


def _kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform over len(counts)) = ln K - H(p), in nats; p = counts / counts.sum()."""
    return float(entropy(counts, np.ones(len(counts))))


def mixture_coverage(
    samples: ArrayLike, means: ArrayLike, std: float, *, num_std: float = 3.0
) -> dict:
    """Mode coverage of samples from a 2D Gaussian mixture (docs/protocols.md 3a).

    Each sample is assigned to its nearest mode (Euclidean distance to the means). A
    sample is *high quality* when that distance is at most ``num_std * std``; a mode is
    *captured* when at least one high-quality sample is nearest to it. The reverse KL is
    ``KL(p_gen || uniform)`` over the histogram of the high-quality samples' modes, which
    ranges over [0, ln K] (0: every mode equally often; ln K: one mode only).

    The protocol evaluates 2,500 samples, std 0.01 (ring8) / 0.05 (grid25), 3 std.

    Args:
        samples: ``(N, 2)`` generated points in raw data coordinates.
        means: ``(K, 2)`` mixture means (:func:`gencompare.data.mixture_means`).
        std: the mixture's common standard deviation (data units).
        num_std: high-quality threshold in units of ``std``.
    Returns:
        dict with ``modes_captured`` (int), ``num_modes`` (K), ``high_quality_fraction``
        (float in [0, 1]), ``reverse_kl`` (nats; ``inf`` when no sample is high quality:
        the histogram is then undefined, and inf ranks such a generator below any that
        puts even one sample on a mode, whose value is at most ln K), ``counts`` (list of K
        ints, high-quality samples per mode), ``num_samples``, ``num_high_quality``,
        ``num_std``.
    Raises:
        ValueError: shapes are not ``(N, D)`` / ``(K, D)`` with equal D, N = 0, or
            ``std``/``num_std`` not positive.
    """
    x = torch.as_tensor(samples).detach().to("cpu", torch.float64)
    mu = torch.as_tensor(means).detach().to("cpu", torch.float64)
    if x.ndim != 2 or mu.ndim != 2 or x.shape[1] != mu.shape[1]:
        raise ValueError(
            f"samples must be (N, D) and means (K, D); got {tuple(x.shape)} and {tuple(mu.shape)}"
        )
    if len(x) == 0:
        raise ValueError("mixture_coverage needs at least one sample")
    if not (std > 0 and num_std > 0):
        raise ValueError(f"std and num_std must be positive, got std={std}, num_std={num_std}")
    if not torch.isfinite(x).all():
        # a diverged generator emits NaN/inf; those are simply not high quality
        x = torch.nan_to_num(x, nan=math.inf, posinf=math.inf, neginf=-math.inf)
    dist = torch.cdist(x, mu)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist <= num_std * std
    counts = torch.bincount(nearest[hq], minlength=len(mu)).numpy()
    num_hq = int(hq.sum())
    return {
        "modes_captured": int((counts > 0).sum()),
        "num_modes": int(len(mu)),
        "high_quality_fraction": num_hq / len(x),
        "reverse_kl": _kl_to_uniform(counts) if num_hq > 0 else math.inf,
        "counts": [int(c) for c in counts],
        "num_samples": int(len(x)),
        "num_high_quality": num_hq,
        "num_std": float(num_std),
    }


def _histogram(labels: ArrayLike, num_classes: int, name: str) -> np.ndarray:
    y = torch.as_tensor(labels).detach().to("cpu")
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError(f"{name} is empty")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError(f"{name} must hold integer class indices")
    y = y.long()
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    return torch.bincount(y, minlength=num_classes).numpy()


def class_coverage(
    pred_labels: ArrayLike, num_classes: int, data_labels: ArrayLike | None = None
) -> dict:
    """Class coverage of generated samples from their predicted labels (docs/protocols.md 3b).

    Args:
        pred_labels: ``(N,)`` int class predicted for each generated sample, in [0, K).
        num_classes: K (10 for MNIST digits).
        data_labels: ``(M,)`` labels of real data (e.g. the test split) giving
            ``p_data``; without them ``kl_to_data`` is None.
    Returns:
        dict with ``classes_covered`` (classes predicted for at least one sample),
        ``num_classes``, ``kl_to_uniform`` = KL(p_gen || uniform) = ln K - H(p_gen) in
        nats, in [0, ln K] (ln 10 = 2.303), ``kl_to_data`` = KL(p_gen || p_data) in nats
        (``inf`` when the generator puts mass on a class absent from ``data_labels``),
        ``counts`` (list of K ints), ``num_samples``.
    Raises:
        ValueError: labels not 1-D integers in [0, K), empty, or ``num_classes < 1``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    counts = _histogram(pred_labels, num_classes, "pred_labels")
    kl_to_data = None
    if data_labels is not None:
        # scipy.stats.entropy normalises both histograms and gives inf where q = 0 < p
        kl_to_data = float(entropy(counts, _histogram(data_labels, num_classes, "data_labels")))
    return {
        "classes_covered": int((counts > 0).sum()),
        "num_classes": int(num_classes),
        "kl_to_uniform": _kl_to_uniform(counts),
        "kl_to_data": kl_to_data,
        "counts": [int(c) for c in counts],
        "num_samples": int(counts.sum()),
    }


def stacked_coverage(
    pred_triples: ArrayLike, *, data_labels: ArrayLike | None = None, num_digits: int = 10
) -> dict:
    """Mode coverage on Stacked MNIST, 1,000 modes (docs/protocols.md 3c).

    A mode is the triple of digits the classifier predicts for the R, G, B channels.
    The protocol evaluates 26,000 samples (PacGAN) or 25,600 (Unrolled GAN).

    Args:
        pred_triples: ``(N,)`` mode indices ``100 r + 10 g + b`` in [0, 1000) (what
            :meth:`DigitClassifier.predict_stacked` returns), or ``(N, 3)`` digits (r, g, b).
        data_labels: optional ``(M,)`` mode indices of real Stacked MNIST for ``kl_to_data``.
        num_digits: classes per channel (10).
    Returns:
        dict with ``modes_covered`` (distinct triples, of ``num_modes`` = 1000),
        ``num_modes``, ``kl_to_uniform`` = ln 1000 - H(p_gen) in nats (0 .. 6.91),
        ``kl_to_data`` (nats, or None), ``counts`` (list of 1000 ints), ``num_samples``.
    Raises:
        ValueError: malformed labels (see :func:`class_coverage`).
    """
    y = torch.as_tensor(pred_triples).detach().to("cpu")
    if y.ndim == 2:
        if y.shape[1] != 3:
            raise ValueError(f"pred_triples of shape (N, 3) expected, got {tuple(y.shape)}")
        if int(y.min()) < 0 or int(y.max()) >= num_digits:
            raise ValueError(f"per-channel digits must lie in [0, {num_digits})")
        y = (y[:, 0] * num_digits + y[:, 1]) * num_digits + y[:, 2]
    num_modes = num_digits**3
    out = class_coverage(y, num_modes, data_labels)
    return {
        "modes_covered": out["classes_covered"],
        "num_modes": num_modes,
        "kl_to_uniform": out["kl_to_uniform"],
        "kl_to_data": out["kl_to_data"],
        "counts": out["counts"],
        "num_samples": out["num_samples"],
    }
