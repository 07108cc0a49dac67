"""The built-in metrics of the ``metrics`` group (conf/metrics/default.yaml), one class per
block of ``metrics.json`` (docs/protocols.md):

- :class:`ParzenWindow` (``parzen``) and :class:`ParzenBaselines` (``parzen_baselines``):
  section 1, images only;
- :class:`TrainedClassifier` (``classifier``): the tool's own classifier, which
  :class:`ModeCoverage`, :class:`FeatureMetrics` and :class:`FidIs` score with;
- :class:`ModeCoverage` (``mode_coverage``): 2D mixtures (3a), classes (3b), Stacked
  MNIST's 1,000 modes (3c);
- :class:`FeatureMetrics` (``features``): precision/recall, density/coverage and a Frechet
  distance on the classifier's features (3d);
- :class:`FidIs` (``fid_is``): Inception FID and IS on 8-bit colour data (section 4), or
  the same statistics on the tool's classifier under their own names.

The family's likelihood (section 2) is :class:`gencompare.metrics.likelihood.FamilyLikelihood`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gencompare.errors import GencompareError
from gencompare.data import as_pixels
from gencompare.metrics.base import EvalContext, Metric
from gencompare.metrics.features import density_coverage, frechet_distance, precision_recall
from gencompare.metrics.image_classifier import classifier_for
from gencompare.metrics.inception import fid_and_is
from gencompare.metrics.mode_coverage import class_coverage, mixture_coverage, stacked_coverage
from gencompare.metrics.parzen import parzen_evaluate, plot_sigma_selection
from gencompare.metrics.parzen_baselines import cached_baselines
from gencompare.record import Classifier, Features, FidIs as FidIsBlock, Parzen, RunDir
from gencompare.record.schema import ClassCoverage, MixtureCoverage, StackedCoverage
from gencompare.terminal import console

__all__ = ["FeatureMetrics", "FidIs", "ModeCoverage", "ParzenBaselines", "ParzenWindow", "TrainedClassifier"]

_CLASSIFIER = "classifier"   # EvalContext.shared: (classifier, info) of TrainedClassifier
_PARZEN_SPLITS = "parzen"    # EvalContext.shared: the validation and test images Parzen used
_CLASSIFIED = ("classes", "stacked")  # coverage kinds scored with the classifier


def _images_only(bundle) -> bool | str:
    return True if bundle.kind == "image" else f"{bundle.variant} is not image data"


class ParzenWindow(Metric):
    """``metrics.parzen``: the Parzen-window log-likelihood of Goodfellow et al. 2014
    (:func:`gencompare.metrics.parzen.parzen_evaluate`) with the first ``num_centres``
    samples as kernel centres, sigma chosen on ``num_valid`` validation images (the
    training split's first ones when there is none) and the mean on ``num_test`` test
    images (None: all). Writes the sigma-selection figure into the run dir.

    Args:
        baselines: whether :class:`ParzenBaselines` runs (``metrics.parzen_baselines``
            reads it), kept here since that is where users set it.
    """

    final_only = True

    def __init__(self, *, enabled: bool = True, num_centres: int = 10000, num_valid: int = 1000,
                 num_test: int | None = None, sigmas: list[float] | None = None, memory_budget_mb: float = 256,
                 baselines: bool = True) -> None:
        super().__init__(enabled=enabled)
        self.num_centres, self.num_valid, self.num_test = num_centres, num_valid, num_test
        self.sigmas, self.memory_budget_mb, self.baselines = sigmas, memory_budget_mb, baselines

    def applies(self, bundle, model) -> bool | str:
        return _images_only(bundle)

    def check(self, *, kind: str, num_samples: int) -> None:
        if self.enabled and kind == "image" and num_samples < int(self.num_centres):
            raise GencompareError(
                f"metrics.num_samples={num_samples} is below the {self.num_centres} Parzen centres "
                "the protocol needs; raise metrics.num_samples or lower metrics.parzen.num_centres"
            )

    def compute(self, ctx: EvalContext) -> Parzen:
        cont, device = ctx.cont, ctx.device
        valid, selected_on = cont.valid, "valid"
        if len(valid) == 0:
            valid, selected_on = as_pixels(cont.train[: int(self.num_valid)] if cont.streamed else cont.train), \
                "train (no validation split)"
        valid = valid[: int(self.num_valid)].to(device)
        test = cont.test if self.num_test is None else cont.test[: int(self.num_test)]
        test = test.to(device)
        centres = ctx.samples[: int(self.num_centres)].to(device)
        result = parzen_evaluate(centres, valid, test, self.sigmas, memory_budget_mb=self.memory_budget_mb)
        result.selected_on = selected_on
        plot_sigma_selection(result, RunDir(ctx.run_dir).parzen_plot)
        ctx.shared[_PARZEN_SPLITS] = (valid, test, self)
        return result


class ParzenBaselines(Metric):
    """``metrics.parzen_baselines``: real training images and k-means centroids of them as
    Parzen centres (Theis et al. 2016), on the validation and test images
    :class:`ParzenWindow` used and with its settings; cached per variant
    (:func:`gencompare.metrics.parzen_baselines.cached_baselines`). Runs after
    ``metrics.parzen``, and only where it ran."""

    final_only = True

    def applies(self, bundle, model) -> bool | str:
        return _images_only(bundle)

    def compute(self, ctx: EvalContext) -> dict[str, Any] | None:
        if _PARZEN_SPLITS not in ctx.shared:
            return None
        valid, test, pz = ctx.shared[_PARZEN_SPLITS]
        return cached_baselines(ctx.cont, valid, test, num_centres=pz.num_centres, sigmas=pz.sigmas,
                                memory_budget_mb=pz.memory_budget_mb, cache_dir=Path(ctx.cache_dir))


class TrainedClassifier(Metric):
    """``metrics.classifier``: the tool's classifier for the dataset variant
    (:func:`gencompare.metrics.image_classifier.classifier_for`: trained once per variant,
    cached), recorded with its test accuracy and left for the metrics after it.

    Args:
        epochs: training epochs (None: the classifier's own default for the variant).
    """

    def __init__(self, *, enabled: bool = True, epochs: int | None = None) -> None:
        super().__init__(enabled=enabled)
        self.epochs = epochs

    def applies(self, bundle, model) -> bool | str:
        return True if bundle.coverage in _CLASSIFIED else f"{bundle.variant} is not scored with a classifier"

    def compute(self, ctx: EvalContext) -> Classifier:
        clf, info = classifier_for(ctx.cont, ctx.cache_dir, device=ctx.device, epochs=self.epochs)
        ctx.shared[_CLASSIFIER] = (clf, info)
        return Classifier.from_dict({k: info[k] for k in ("test_accuracy", "meets_protocol", "feature_network",
                                                          "variant", "num_train", "required_accuracy") if k in info},
                                    "classifier")


class ModeCoverage(Metric):
    """``metrics.mode_coverage``: modes of a 2D mixture within 3 std (PacGAN), or the
    histogram of the classifier's labels of the samples (classes, Stacked MNIST's 1,000
    modes) and its KL divergences; the latter only where ``metrics.classifier`` ran."""

    def applies(self, bundle, model) -> bool | str:
        return True if bundle.coverage in ("mixture", *_CLASSIFIED) else f"{bundle.variant} has no modes to cover"

    def compute(self, ctx: EvalContext):
        bundle, cont = ctx.bundle, ctx.cont
        if bundle.coverage == "mixture":
            return MixtureCoverage.from_dict(mixture_coverage(ctx.samples, bundle.means.cpu(), bundle.std),
                                             "mode_coverage")
        if _CLASSIFIER not in ctx.shared:
            return None
        clf, _ = ctx.shared[_CLASSIFIER]
        fake = ctx.samples.to(ctx.device)
        if bundle.coverage == "stacked":
            return StackedCoverage.from_dict(
                stacked_coverage(clf.predict_stacked(fake).cpu(), data_labels=cont.test_labels.cpu()), "mode_coverage")
        return ClassCoverage.from_dict(class_coverage(clf.predict(fake).cpu(), bundle.num_classes,
                                                      data_labels=cont.test_labels.cpu()), "mode_coverage")


class FeatureMetrics(Metric):
    """``metrics.features``: precision/recall (k=3), density/coverage (k=5) and a Frechet
    distance between the classifier's features of ``num_real`` test images and as many
    samples (:mod:`gencompare.metrics.features`); classes only, where
    ``metrics.classifier`` ran."""

    def __init__(self, *, enabled: bool = True, num_real: int = 10000) -> None:
        super().__init__(enabled=enabled)
        self.num_real = num_real

    def applies(self, bundle, model) -> bool | str:
        return True if bundle.coverage == "classes" else f"{bundle.variant} is not scored on classifier features"

    def compute(self, ctx: EvalContext) -> Features | None:
        if _CLASSIFIER not in ctx.shared:
            return None
        clf, info = ctx.shared[_CLASSIFIER]
        cont, device = ctx.cont, ctx.device
        fake = ctx.samples.to(device)
        m = min(len(cont.test), int(self.num_real), len(fake))
        real_f = clf.embed(cont.test[:m].to(device)).cpu()
        fake_f = clf.embed(fake[:m]).cpu()
        return Features.from_dict({
            **precision_recall(real_f, fake_f, k=3),
            **density_coverage(real_f, fake_f, k=5),
            "frechet_distance": frechet_distance(real_f, fake_f),
            "feature_network": info.get("feature_network"),
            "num_real": m, "num_fake": m,
        }, "features")


class FidIs(Metric):
    """``metrics.fid_is``: FID and IS on 8-bit colour images
    (:func:`gencompare.metrics.inception.fid_and_is`; its settings are this block's keys:
    ``inception_weights``, ``download``, ``num_real``, ``splits``, ``batch_size``), with
    the classifier of ``metrics.classifier`` as the fallback network when it ran."""

    final_only = True

    def __init__(self, *, enabled: bool = True, **settings: Any) -> None:
        super().__init__(enabled=enabled)
        self.settings = settings

    def applies(self, bundle, model) -> bool | str:
        if bundle.kind == "image" and bundle.bit_depth == 8:
            return True
        return f"{bundle.variant} is not 8-bit colour images"

    def compute(self, ctx: EvalContext) -> FidIsBlock:
        clf, info = ctx.shared.get(_CLASSIFIER, (None, {}))
        out = fid_and_is(ctx.cont.train, ctx.samples, fcfg=OmegaConf.create(self.settings), device=ctx.device,
                         classifier=clf, classifier_name=info.get("feature_network"))
        if out.get("fid") is None:
            console.print(f"[bold yellow]warning:[/] {out['note']}")
        return FidIsBlock.from_dict(out, "fid_is")
