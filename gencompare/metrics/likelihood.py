"""The family's own likelihood on the test split (docs/protocols.md section 2), named for
what it is: exact (NADE), an importance-weighted estimate (VAE), a variational bound
(DDPM), none (GAN)."""
from __future__ import annotations

import math
from typing import Any

import torch

from gencompare.metrics.base import EvalContext, Metric
from gencompare.metrics.ranks import OneProcess
from gencompare.models.pixels import LOG_256, dequantization_note, dequantize
from gencompare.record import Likelihood

__all__ = ["FamilyLikelihood", "test_likelihood"]


class FamilyLikelihood(Metric):
    """``metrics.likelihood``: the model's ``log_likelihood`` on the test split, in nats per
    example (NLL) and bits/dim.

    On 8-bit data (``bundle.bit_depth == 8``, not binarized) every family reports the NLL of
    the discrete 8-bit images, under the one convention of :mod:`gencompare.models.pixels`:
    a density (``model.discrete_likelihood`` False) is scored on uniformly dequantized
    pixels plus D ln 256; ``dequantization`` in the result says which applied.

    In a data-parallel evaluation each batch is split over the ranks: each rank scores its
    rows, drawing what one process draws for the whole batch (IWAE's epsilon, the DDPM
    bound's noise, the dequantization), and the per-example values are gathered in order,
    so the NLL is one process's up to float sums (:mod:`gencompare.metrics.ranks`).

    Args:
        max_examples: the first this many test examples (None: the whole split).
        batch_size: examples per ``log_likelihood`` call (global: split over the ranks).
    """

    final_only = True
    across_ranks = True

    def __init__(self, *, enabled: bool = True, max_examples: int | None = None, batch_size: int = 100) -> None:
        super().__init__(enabled=enabled)
        self.max_examples = None if max_examples is None else int(max_examples)
        self.batch_size = int(batch_size)

    def compute(self, ctx: EvalContext) -> Likelihood:
        return Likelihood.from_dict(self.score(ctx.model, ctx.bundle, ctx.ranks), "likelihood")

    def when_disabled(self, ctx: EvalContext) -> Likelihood:
        return self.compute(ctx)  # a block saying so: compare tells "disabled" from "none defined"

    def score(self, model, bundle, ranks: OneProcess | None = None) -> dict[str, Any]:
        """The result as a dict (the keys of :class:`gencompare.record.Likelihood`), scored
        on ``ranks`` (default: one process)."""
        ranks = ranks or OneProcess()
        kind = model.likelihood_kind
        if kind is None or not self.enabled:
            return {"kind": None, "note": f"{model.family} defines no likelihood" if kind is None else "disabled"}
        x = bundle.test
        if self.max_examples is not None:
            x = x[: self.max_examples]
        was_training = model.training
        model.eval()
        values = []
        bs = self.batch_size
        d = math.prod(bundle.shape)
        eight_bit = bundle.bit_depth == 8 and bundle.binarization == "none"
        dequantized = eight_bit and not model.discrete_likelihood
        with torch.no_grad():
            for i in range(0, len(x), bs):
                chunk = x[i : i + bs]

                def rows_ll(start: int, count: int) -> torch.Tensor:  # called at once, by ranks.chunk
                    xb = chunk[start : start + count]
                    return model.log_likelihood(dequantize(xb) if dequantized else xb).double().cpu()

                ll = ranks.chunk(len(chunk), rows_ll)  # (n,): every rank's rows, in order
                values.append(ll - d * LOG_256 if dequantized else ll)
        model.train(was_training)
        nll = -torch.cat(values)
        return {
            "kind": kind,
            "nll_nats": float(nll.mean()),
            "stderr": float(nll.std(unbiased=False) / math.sqrt(len(nll))),
            "bits_per_dim": float(nll.mean() / (d * math.log(2))),
            "num_examples": len(nll),
            "binarization": bundle.binarization,
            "note": _describe(model, kind, len(nll), bundle, eight_bit),
            **({"dequantization": dequantization_note(not dequantized)} if eight_bit else {}),
        }


def _describe(model, kind: str, n: int, bundle, eight_bit: bool) -> str:
    what = model.describe_likelihood() or kind  # the family says what its likelihood is
    return (f"{what} on {n} test examples of {bundle.variant}, binarization {bundle.binarization}"
            + (" (test set binarized once with a fixed seed)" if bundle.binarization in ("dynamic", "static") else "")
            + ("; bits/dim of the 8-bit pixels" if eight_bit else ""))


def test_likelihood(model, bundle, mcfg) -> dict[str, Any]:
    """:class:`FamilyLikelihood` with the settings of ``mcfg.likelihood`` (``enabled``,
    ``max_examples``, ``batch_size``), as a dict."""
    lc = mcfg.likelihood
    return FamilyLikelihood(enabled=lc.enabled, max_examples=lc.get("max_examples"),
                            batch_size=lc.get("batch_size", 100)).score(model, bundle)


test_likelihood.__test__ = False  # a function of the package, not a pytest test
