"""A metric defined outside gencompare: how far the samples' mean is from the test split's.

Everything it needs is this one class: ``+metrics.sample_mean_error._target_=
extension_metric.sample_mean.SampleMeanError`` on the command line (with tests/ on PYTHONPATH), or
``metrics=with_mean_error`` with ``hydra.searchpath`` naming ``conf/`` beside this file.
"""
from __future__ import annotations

import torch

from gencompare.metrics.base import EvalContext, Metric
from gencompare.report.tables import Metric as Row


class SampleMeanError(Metric):
    """``||mean(samples) - mean(test)||_2`` over the flattened data, in data units
    (pixels in [0, 1], or the 2D plane's units), and the number of samples it used."""

    rows = (Row("sample_mean_error", "sample_mean_error.l2", "mean error",
                note="L2 distance of the sample mean to the test mean"),)

    def compute(self, ctx: EvalContext) -> dict:
        samples = ctx.samples.reshape(len(ctx.samples), -1).double()
        test = ctx.cont.test.reshape(len(ctx.cont.test), -1).double().cpu()
        return {"l2": float(torch.linalg.vector_norm(samples.mean(0) - test.mean(0))),
                "num_samples": len(samples)}
