"""Metrics as objects: what every entry of the ``metrics`` config group is.

Each block of ``conf/metrics/*.yaml`` that has a ``_target_`` is one :class:`Metric`,
built with its protocol parameters as keyword arguments (``metrics.parzen.num_centres``
is :class:`~gencompare.metrics.evaluators.ParzenWindow`'s ``num_centres``). The block's
name is the metric's key in ``metrics.json`` and ``eval/*``; the blocks run in the order
the config lists them, which is also the order they draw from the global RNG (the
family's likelihood estimators do), so a new block goes last. A metric outside the
package is one class and one override, ``+metrics.<name>._target_=module.Class``
(tests/test_extension_metric.py).

What the others need from one metric (the classifier the coverage and feature metrics
score with, the split Parzen chose sigma on) goes through :attr:`EvalContext.shared`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from gencompare.errors import GencompareError
from gencompare.metrics.ranks import OneProcess

if TYPE_CHECKING:  # type names only: a metric module is imported by name from the config
    from gencompare.data import DataBundle
    from gencompare.models.base import GenerativeModel
    from gencompare.report.tables import Metric as TableRow

__all__ = ["EvalContext", "Metric", "build_metrics"]


@dataclass
class EvalContext:
    """What one evaluation hands every metric.

    Attributes:
        model: the model evaluated (on its device, in whatever mode; a metric that runs it
            restores the mode).
        bundle: the data as trained on (binarized where the run binarizes).
        cont: ``bundle.continuous_view()``: [0, 1] pixels for the image metrics.
        samples: ``(N, *data shape)`` float samples on the CPU, drawn once
            (:func:`gencompare.evaluate.evaluation_samples`) and shared by every metric.
        run_dir: the run dir (a metric may write a figure there).
        cache_dir: ``paths.cache_dir`` (cached classifiers, Parzen baselines).
        final: False for a ``trainer.eval_every`` evaluation (fewer samples, and the
            metrics with ``final_only`` skipped).
        seed: the run's seed; a metric that draws random numbers of its own seeds a
            ``torch.Generator`` from it, leaving the global RNG the others draw from as it was.
        shared: what earlier metrics leave for later ones, by name.
        ranks: the processes the evaluation runs on (:mod:`gencompare.metrics.ranks`; one
            process: :class:`~gencompare.metrics.ranks.OneProcess`, the identity).
    """

    model: GenerativeModel
    bundle: DataBundle
    cont: DataBundle
    samples: torch.Tensor
    run_dir: Path
    cache_dir: Path
    final: bool = True
    seed: int = 0
    shared: dict[str, Any] = field(default_factory=dict)
    ranks: OneProcess = field(default_factory=OneProcess)

    @property
    def device(self) -> torch.device:
        return self.model.device


class Metric:
    """One metric of the evaluation; subclasses set what varies.

    ``compute`` returns the metric's own block of ``metrics.json``: a dataclass of
    :mod:`gencompare.record.schema` (a ``_Block``) or, for a metric outside the package,
    any JSON-able dict; None records nothing (a prerequisite metric did not run).

    Class attributes:
        final_only: computed at the end of training and by ``gencompare eval``, not in the
            lighter ``trainer.eval_every`` evaluations.
        across_ranks: ``compute`` spreads its work over the ranks of a data-parallel job
            through ``ctx.ranks`` (so every rank runs it, together); False: rank 0 computes
            it alone on the gathered samples (the others skip it, so it must not draw from
            the global RNG a later ``across_ranks`` metric draws from).
        rows: how its numbers are shown, for a metric outside the package:
            :class:`gencompare.report.tables.Metric` rows the terminal table and
            ``compare`` add to the registry ``report.tables.METRICS`` (the built-in
            metrics' rows are in that registry already).
    """

    final_only: ClassVar[bool] = False
    across_ranks: ClassVar[bool] = False
    rows: ClassVar[tuple[TableRow, ...]] = ()

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.name = type(self).__name__  # set to its config block's name by build_metrics

    def applies(self, bundle: DataBundle, model: GenerativeModel) -> bool | str:
        """True when the metric scores ``model`` on ``bundle``; else a string saying why not."""
        return True

    def compute(self, ctx: EvalContext) -> Any:
        raise NotImplementedError

    def when_disabled(self, ctx: EvalContext) -> Any:
        """The block recorded when ``enabled`` is false (default: none)."""
        return None

    def check(self, *, kind: str, num_samples: int) -> None:
        """Raise :class:`gencompare.errors.GencompareError` before any training when the
        settings cannot follow the metric's protocol for ``kind`` data ("image" or
        "points") and ``num_samples`` final samples. Default: nothing to check."""


def build_metrics(mcfg: DictConfig | Mapping[str, Any]) -> list[Metric]:
    """The metrics the ``metrics`` group names, in its order: every block with a
    ``_target_``, built with the block's other keys as keyword arguments.

    Raises:
        GencompareError: a ``_target_`` that does not import, a key its class does not
            take, or a class that is not a :class:`Metric`; one line naming the block.
    """
    metrics = []
    for name, spec in mcfg.items():
        if isinstance(spec, (DictConfig, Mapping)) and "_target_" in spec:
            try:
                metric = instantiate(spec, _convert_="all")
            except InstantiationException as exc:
                raise GencompareError(f"metrics.{name}: {' '.join(str(exc).split())}") from None
            if not isinstance(metric, Metric):
                raise GencompareError(f"metrics.{name}: {spec['_target_']} is not a gencompare.metrics.base.Metric")
            metric.name = str(name)
            metrics.append(metric)
    return metrics
