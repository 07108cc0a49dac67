"""The schema of ``metrics.json`` as typed dataclasses: what the runner writes, what eval
merges in, what compare and the Optuna metric read. Part of :mod:`gencompare.record`."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from gencompare.record.blocks import RecordError, _Block
from gencompare.record.layout import atomic_write_json

SCHEMA_VERSION = 2
"""Version 2 added ``schema_version`` and ``data.coverage``; version 1 (no key) reads the same.
Optional blocks added since (older files simply lack them): ``fid_is``, ``likelihood.dequantization``,
``wandb``, ``family_style``, ``compile`` (the compile state that ran), ``ais``; in the ``data`` block (:meth:`gencompare.data.DataBundle.describe`), ``classifier`` (the digit
classifier that scores mode coverage, or null) and ``table_order`` (where compare puts the variant's table)."""


@dataclass
class FamilyStyle(_Block):
    """How the reports show a run's family, as its class declares it
    (:class:`~gencompare.models.base.GenerativeModel`'s ``family_color``, ``family_order``,
    ``likelihood_label``), recorded at train time so that ``compare`` draws a run from its
    record alone, without importing the code its config names. A record without one (older
    runs) is drawn in grey, after the families that have one."""

    color: str
    order: int
    likelihood_label: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Any) -> "FamilyStyle":
        """The style ``model`` (a ``GenerativeModel`` or its class) declares."""
        return cls(color=str(model.family_color), order=int(model.family_order),
                   likelihood_label=model.likelihood_label)


@dataclass
class Likelihood(_Block):
    """The family's own likelihood on the test split (docs/protocols.md section 2).

    ``kind`` is ``nll_exact`` (NADE), ``nll_iwae`` (VAE), ``nll_bound`` (DDPM) or None
    (the GAN defines none; ``note`` says so). NLL in nats per example, bits/dim =
    NLL / (D ln 2).
    """

    kind: Optional[str]
    note: str = ""
    nll_nats: Optional[float] = None
    stderr: Optional[float] = None
    bits_per_dim: Optional[float] = None
    num_examples: Optional[int] = None
    binarization: Optional[str] = None
    #: 8-bit data only: how bits/dim of the 8-bit pixels was obtained (gencompare.models.pixels)
    dequantization: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parzen(_Block):
    """Parzen-window log-likelihood (Goodfellow et al. 2014 Table 1) in nats per test image,
    as :func:`gencompare.metrics.parzen.parzen_evaluate` returns it; ``selected_on``: the
    split sigma was chosen on (None for the sanity baselines)."""

    mean: float
    stderr: float
    sigma: float
    sigmas: list[float]
    valid_means: list[float]
    num_centres: int
    num_test: int
    num_valid: int
    protocol: str = ""
    selected_on: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixtureCoverage(_Block):
    """2D mixtures (docs/protocols.md 3a): modes within 3 std, high-quality fraction, reverse KL (nats)."""

    modes_captured: int
    num_modes: int
    high_quality_fraction: float
    reverse_kl: float
    counts: list[int]
    num_samples: int
    num_high_quality: int
    num_std: float
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def matches(d: Mapping[str, Any]) -> bool:
        return "modes_captured" in d


@dataclass
class _ClassifiedCoverage(_Block):
    """What class and Stacked MNIST coverage share: the histogram of the classifier's labels
    of the samples and its KL to uniform and to the data's own histogram (nats)."""

    kl_to_uniform: float
    kl_to_data: Optional[float]
    counts: list[int]
    num_samples: int


@dataclass
class ClassCoverage(_ClassifiedCoverage):
    """MNIST-like classes (docs/protocols.md 3b): classes covered, KL to the data's classes and to uniform (nats)."""

    classes_covered: int
    num_classes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def matches(d: Mapping[str, Any]) -> bool:
        return "classes_covered" in d


@dataclass
class StackedCoverage(_ClassifiedCoverage):
    """Stacked MNIST's 1,000 modes (docs/protocols.md 3c)."""

    modes_covered: int
    num_modes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def matches(d: Mapping[str, Any]) -> bool:
        return "modes_covered" in d


ModeCoverage = Union[MixtureCoverage, ClassCoverage, StackedCoverage]


@dataclass
class Classifier(_Block):
    """The tool's own classifier whose predictions and features score images."""

    test_accuracy: float
    feature_network: Optional[str] = None
    meets_protocol: Optional[bool] = None
    variant: Optional[str] = None
    num_train: Optional[int] = None
    required_accuracy: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Features(_Block):
    """Precision/recall (k=3), density/coverage (k=5) and a Frechet distance on ``feature_network``'s features."""

    precision: float
    recall: float
    density: float
    coverage: float
    frechet_distance: float
    feature_network: Optional[str]
    num_real: int
    num_fake: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FidIs(_Block):
    """8-bit colour images (docs/protocols.md section 4): ``fid`` and ``inception_score`` (mean and
    std over ``splits``) on Inception-v3, or, without its weights, the same statistics on the
    tool's classifier as ``fd`` and ``classifier_score``; ``feature_network`` names the
    network either way (None: neither was available, ``note`` says why). FID against
    ``num_real`` images of ``real_split``."""

    feature_network: Optional[str]
    num_real: int
    num_fake: int
    fid: Optional[float] = None
    inception_score: Optional[float] = None
    inception_score_std: Optional[float] = None
    fd: Optional[float] = None
    classifier_score: Optional[float] = None
    classifier_score_std: Optional[float] = None
    splits: Optional[int] = None
    real_split: Optional[str] = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AISEstimate(_Block):
    """One observation model's annealed importance sampling estimate (docs/protocols.md
    section 6; Neal 2001; Wu et al. 2017, arXiv:1611.04273), in nats per test example.

    ``nll_nats`` is minus the mean over ``num_test`` examples of forward AIS's log p(x) (a
    stochastic lower bound, so an upper bound in expectation on the NLL), plus D ln 256
    where ``data`` says the pixels were dequantized; ``stderr_nats`` its standard error
    (ddof 1). ``observation``: ``gaussian`` (N(x; mean(z), sigma^2 I), ``sigma`` a standard
    deviation chosen on the validation split over ``sigma_grid``, whose mean validation
    log-likelihoods are ``sigma_valid_ll``) or ``decoder (<name>)``, the family's own p(x|z).
    ``steps`` (K intermediate distributions), ``chains`` per example and ``leapfrog`` steps per
    HMC transition; ``acceptance_rate`` the mean HMC acceptance probability. BDMC (Grosse
    et al. 2015) on ``bdmc_examples`` examples simulated from the model: ``bdmc_gap_nats``
    the mean gap between reverse and forward AIS, ``bdmc_gap_too_large`` whether it exceeds
    ``bdmc_threshold_nats``."""

    nll_nats: Optional[float]     # None where AIS gave no finite estimate
    stderr_nats: Optional[float]
    observation: str
    steps: int
    chains: int
    leapfrog: int
    num_test: int
    acceptance_rate: Optional[float] = None
    sigma: Optional[float] = None
    sigma_grid: Optional[list[float]] = None
    sigma_valid_ll: Optional[list[float]] = None
    num_valid: Optional[int] = None
    select_steps: Optional[int] = None
    bdmc_gap_nats: Optional[float] = None
    bdmc_lower_nats: Optional[float] = None
    bdmc_upper_nats: Optional[float] = None
    bdmc_examples: Optional[int] = None
    bdmc_threshold_nats: Optional[float] = None
    bdmc_gap_too_large: Optional[bool] = None
    bits_per_dim: Optional[float] = None
    #: own decoder only: the family's own likelihood (the VAE's IWAE) on the same examples, NLL in nats
    family_nll_nats: Optional[float] = None
    data: str = ""
    seconds: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AIS(_Block):
    """``metrics.ais``: AIS estimates of a family with a decoder and a prior, one per
    observation model: ``gaussian`` (every such family, the GAN's density of Wu et al. 2017)
    and ``decoder`` (the family's own p(x|z), where it has one: the VAE's, which tightens
    its IWAE estimate)."""

    gaussian: Optional[AISEstimate] = None
    decoder: Optional[AISEstimate] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation(_Block):
    """What one evaluation measured (``evaluate_model``): written at the top level of
    ``metrics.json``; an intermediate one (``trainer.eval_every``) also carries ``step``.
    A metric outside the package is kept in ``extra`` under its config name."""

    num_samples: int
    sample_time_1000_s: float
    sampler: Optional[str] = None
    likelihood: Optional[Likelihood] = None
    parzen: Optional[Parzen] = None
    parzen_baselines: Optional[dict[str, Any]] = None
    mode_coverage: Optional[ModeCoverage] = None
    classifier: Optional[Classifier] = None
    features: Optional[Features] = None
    fid_is: Optional[FidIs] = None
    ais: Optional[AIS] = None
    step: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)


EVALUATION_KEYS = tuple(f.name for f in dataclasses.fields(Evaluation) if f.name not in ("extra", "step"))


@dataclass
class WandbRun(_Block):
    """The W&B run that tracked a run (``logger=wandb``): what links a run dir to W&B.

    ``path`` is W&B's run path, ``entity/project/id`` (``project/id`` while the entity is
    not known: offline, the default entity is set by ``wandb sync``); ``url`` only online;
    ``dir``, the run's W&B files relative to the run dir (``wandb sync <run dir>/<dir>``).
    """

    id: str
    project: Optional[str] = None
    entity: Optional[str] = None
    path: Optional[str] = None
    mode: Optional[str] = None
    url: Optional[str] = None
    dir: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunMetrics(_Block):
    """``metrics.json``: the run's facts (what trained, how long, how big) and, merged at
    the top level, its final :class:`Evaluation`.

    Times in seconds; ``final_losses`` are the means of the last ``trainer.log_every``
    steps (``train/*`` keys without the prefix); ``parameters`` per network.
    """

    model: str
    dataset: str
    variant: str
    seed: Optional[int] = None
    steps: Optional[int] = None
    status: Optional[str] = None
    schema_version: int = 1
    family: Optional[str] = None
    family_style: Optional[FamilyStyle] = None
    device: Optional[str] = None
    precision: Optional[str] = None  # the precision that ran: "32" when bf16 was asked off CUDA
    compile: Optional[str] = None    # "off", "on", or "eager (<why>)" when torch.compile was asked but did not run
    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    train_time_s: Optional[float] = None
    steps_per_s: Optional[float] = None
    samples_per_s: Optional[float] = None
    final_losses: Optional[dict[str, float]] = None
    parameters: Optional[dict[str, int]] = None
    parameters_total: Optional[int] = None
    data: Optional[dict[str, Any]] = None
    sample_grid: Optional[str] = None
    checkpoint: Optional[str] = None
    eval_history: Optional[list[Evaluation]] = None
    evaluated_step: Optional[int] = None
    evaluation: Optional[Evaluation] = None
    wandb: Optional[WandbRun] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        evaluation = out.pop("evaluation", None)
        if evaluation:
            out.update(evaluation)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics.json") -> "RunMetrics":
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: not a JSON object")
        data = dict(data)
        if "num_samples" in data and "sample_time_1000_s" in data:
            data["evaluation"] = {k: data.pop(k) for k in list(data) if k in EVALUATION_KEYS}
        metrics = super().from_dict(data, where)
        if metrics.schema_version > SCHEMA_VERSION:
            raise RecordError(f"{where}: schema_version {metrics.schema_version} is newer than this "
                              f"gencompare reads ({SCHEMA_VERSION}); upgrade gencompare")
        return metrics


def read_metrics(path: Path) -> RunMetrics:
    """Read and check a ``metrics.json`` (any schema version up to :data:`SCHEMA_VERSION`).

    Raises:
        RecordError: missing, unreadable, corrupt JSON, or values of the wrong type, in
            one line naming the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty file" if not text.strip() else f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise RecordError(f"{path}: corrupt JSON ({what})") from None
    return RunMetrics.from_dict(data, str(path))


def write_metrics(metrics: RunMetrics, path: Path) -> Path:
    """Write ``metrics`` atomically as the current schema version."""
    metrics.schema_version = SCHEMA_VERSION
    return atomic_write_json(metrics.to_dict(), path)


def schema_has(path: str) -> bool:
    """True when the dotted ``path`` (``mode_coverage.reverse_kl``) names a field of
    :class:`RunMetrics` or of a block under it (any mode-coverage shape), so a table's
    metric registry can be checked against the schema."""
    candidates: list[Any] = [RunMetrics, Evaluation]
    for part in path.split("."):
        nxt: list[Any] = []
        for c in candidates:
            if c is Any:
                nxt.append(Any)  # a free-form block (parzen_baselines, data): any key below it
                continue
            if not (isinstance(c, type) and dataclasses.is_dataclass(c)):
                continue
            hints = typing.get_type_hints(c)
            if part in hints:
                nxt.extend(_block_types(hints[part]))
        if not nxt:
            return False
        candidates = nxt
    return True


def _block_types(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return [t for a in typing.get_args(hint) for t in _block_types(a)]
    if origin is dict:
        return [Any]
    return [hint]

