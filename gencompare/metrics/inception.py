"""FID (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016) of 8-bit images.

With Inception-v3's standard weights (torch-fidelity's port of the TensorFlow FID
network, ``weights-inception-2015-12-05-6726825d.pth``; docs/protocols.md section 4) they are
the published FID and IS: torchmetrics' ``NoTrainInceptionV3`` gives the 2048-D pool
features and the 1008 unbiased logits in one pass, and torchmetrics'
``FrechetInceptionDistance`` and ``InceptionScore`` compute the two numbers from them.

Where the weights are absent and cannot be downloaded (``fid_is.download``), or
torchmetrics / torch-fidelity are not installed, the same two statistics are computed on
the tool's own classifier (its features and its class logits) and recorded under other
names (``fd``, ``classifier_score``) with that network's name: never a silent switch to a
number that looks like FID.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gencompare.data import as_pixels

__all__ = ["INCEPTION_WEIGHTS", "InceptionUnavailable", "load_inception", "fid_and_is", "default_weights_path"]

#: torch-fidelity's Inception-v3 weights file (what ``load_state_dict_from_url`` saves).
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_NAME = "inception-v3-compat (torch-fidelity weights 2015-12-05)"


class InceptionUnavailable(Exception):
    """Inception-v3 cannot be built here; the message says why."""


def default_weights_path() -> Path:
    """Where torch-fidelity's download puts the weights: ``<torch hub dir>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS


def load_inception(weights: str | Path | None = None, *, download: bool = True) -> nn.Module:
    """torchmetrics' Inception-v3 (``NoTrainInceptionV3``) with the pool features and the
    unbiased logits as outputs: ``net(uint8 images (N, 3, H, W)) -> ((N, 2048), (N, 1008))``.

    Args:
        weights: the weights file; None: :func:`default_weights_path`.
        download: when the file is absent, let torch-fidelity download it (to the torch
            hub dir) instead of giving up.
    Raises:
        InceptionUnavailable: torchmetrics or torch-fidelity missing, the file absent with
            ``download`` off, or the download failed.
    """
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError:
        raise InceptionUnavailable("torchmetrics is not installed (pip install torchmetrics torch-fidelity)") from None
    if not _TORCH_FIDELITY_AVAILABLE:
        raise InceptionUnavailable("torch-fidelity is not installed (pip install torch-fidelity)")
    path = Path(weights).expanduser() if weights else default_weights_path()
    if not path.is_file() and not download:
        raise InceptionUnavailable(f"no Inception weights at {path} and fid_is.download=false")
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                 feature_extractor_weights_path=str(path) if path.is_file() else None)
    except Exception as exc:  # noqa: BLE001 - a failed download raises URLError, HTTPError, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InceptionUnavailable(f"no Inception weights at {path} and the download failed "
                                   f"({type(exc).__name__}: {first})") from None
    return _BothOutputs(net)


class _BothOutputs(nn.Module):
    """Runs torch-fidelity's forward once and returns its (pool, logits) tuple."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pool, logits = self.net._torch_fidelity_forward(x)  # noqa: SLF001 - NoTrainInceptionV3's one-pass API
        return pool.reshape(len(x), -1), logits.reshape(len(x), -1)


class _Given(nn.Module):
    """A "feature extractor" that returns its input: the features are computed once, outside
    the torchmetrics metric, and handed to it (``num_features`` tells FID their width)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def _to_uint8_rgb(x: Tensor) -> Tensor:
    """[0, 1] pixels (or uint8) ``(N, C, H, W)`` -> uint8 with 3 channels (grey repeated)."""
    x = (as_pixels(x) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _extract(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, batch_size: int,
             device: torch.device) -> tuple[Tensor, Tensor]:
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            f, lg = fn(x[i:i + batch_size].to(device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
    return torch.cat(feats), torch.cat(logits)


def _scores(real_f: Tensor, fake_f: Tensor, fake_logits: Tensor, splits: int) -> tuple[float, float, float]:
    """Frechet distance of the feature sets and the score exp(E KL(p(y|x) || p(y))) over
    ``splits`` splits, by torchmetrics on the given features (a float64 pass)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    fid = FrechetInceptionDistance(feature=_Given(real_f.shape[1]), reset_real_features=False)
    fid.update(real_f, real=True)
    fid.update(fake_f, real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "InceptionScore will save all extracted features"
        score = InceptionScore(feature=_Given(fake_logits.shape[1]), splits=max(1, min(splits, len(fake_logits))))
    score.update(fake_logits)
    mean, std = score.compute()
    return float(fid.compute()), float(mean), float(std)


def fid_and_is(real: Tensor, fake: Tensor, *, fcfg, device: torch.device, classifier=None,
               classifier_name: str | None = None, loader: Callable[..., nn.Module] | None = None) -> dict[str, Any]:
    """FID and IS of ``fake`` against ``real`` (each ``(N, C, H, W)``, [0, 1] floats or uint8).

    Inception-v3 when :func:`load_inception` succeeds; otherwise the same statistics on
    ``classifier`` (its ``embed`` features and ``logits``), named ``classifier_name``; with
    neither, only the reason.

    Args:
        fcfg: ``metrics.fid_is`` (``num_real``, ``splits``, ``batch_size``,
            ``inception_weights``, ``download``).
        loader: builds the Inception network (default :func:`load_inception`; tests pass a
            stand-in with the same contract).
    Returns:
        A dict for :class:`gencompare.record.schema.FidIs`.
    """
    loader = loader or load_inception
    m = min(len(real), int(fcfg.num_real))
    n = len(fake)
    splits, bs = int(fcfg.splits), int(fcfg.batch_size)
    base = {"num_real": m, "num_fake": n, "real_split": "train"}
    try:
        net = loader(fcfg.get("inception_weights"), download=bool(fcfg.download)).to(device).eval()
    except InceptionUnavailable as exc:
        reason = str(exc)
    else:
        def run(x: Tensor) -> tuple[Tensor, Tensor]:
            return net(_to_uint8_rgb(x))
        real_f, _ = _extract(run, real[:m], bs, device)
        fake_f, fake_logits = _extract(run, fake, bs, device)
        fid, is_mean, is_std = _scores(real_f, fake_f, fake_logits, splits)
        return {**base, "feature_network": getattr(net, "name", INCEPTION_NAME), "fid": fid,
                "inception_score": is_mean, "inception_score_std": is_std, "splits": splits,
                "note": f"FID on {m} training images and {n} samples, IS over {splits} splits"}
    if classifier is None:
        return {**base, "feature_network": None,
                "note": f"no FID/IS: {reason}; the data has no classes for the tool's classifier to stand in"}

    def run_clf(x: Tensor) -> tuple[Tensor, Tensor]:
        return classifier.embed(x), classifier.logits(x)
    real_f, _ = _extract(run_clf, real[:m], bs, device)
    fake_f, fake_logits = _extract(run_clf, fake, bs, device)
    fd, score, score_std = _scores(real_f, fake_f, fake_logits, splits)
    return {**base, "feature_network": classifier_name, "fd": fd, "classifier_score": score,
            "classifier_score_std": score_std, "splits": splits,
            "note": f"NOT FID/IS ({reason}): the same statistics on {classifier_name}, comparable only "
                    "with numbers from that network"}
