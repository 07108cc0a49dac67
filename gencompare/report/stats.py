"""Statistics over seeds: mean, sample standard deviation and standard error.

``std`` is the sample standard deviation (ddof = 1) and ``stderr = std / sqrt(n)``, the
"mean +- standard error over 10 trials" of PacGAN (Lin et al. 2018).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """A metric aggregated over seeds.

    Attributes:
        mean: mean over the runs that report the metric.
        std: sample standard deviation (ddof = 1); NaN for a single run.
        stderr: ``std / sqrt(n)``; NaN for a single run.
        n: number of runs that report the metric.
    """

    mean: float
    std: float
    stderr: float
    n: int


def summarize(values: Sequence[float]) -> Stat | None:
    """Mean, sample std (ddof = 1), standard error and count of ``values``.

    Non-finite values (an infinite reverse KL when a run has no high-quality sample)
    make the mean infinite and the spread NaN rather than being dropped.
    Returns None for no values.
    """
    vals = [float(v) for v in values]
    if not vals:
        return None
    n = len(vals)
    if not all(math.isfinite(v) for v in vals):
        mean = sum(vals) / n if not any(math.isnan(v) for v in vals) else math.nan
        return Stat(mean, math.nan, math.nan, n)
    mean = statistics.fmean(vals)
    if n < 2:
        return Stat(mean, math.nan, math.nan, n)
    std = statistics.stdev(vals)
    return Stat(mean, std, std / math.sqrt(n), n)
