"""The one interface every generative family implements.

`gencompare.train` trains any family through these four methods and never
asks which family it runs; the metrics use only :meth:`GenerativeModel.sample`,
so every family is scored the same way (style.md, "One interface for every
family").
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

OptimizerFactory = Callable[..., Optimizer]
"""A partially applied optimizer (Hydra ``_partial_: true``): ``factory(params) -> Optimizer``."""


@dataclass(frozen=True)
class LatentDecoder:
    """What a family with a decoder and a prior exposes for annealed importance sampling
    (:mod:`gencompare.metrics.ais_metric`): the prior is p(z) = N(0, I_latent_dim) (every
    family here that has a decoder uses it), and p(x|z) is built from these pieces.

    Attributes:
        latent_dim: size of z.
        mean: ``z (n, latent_dim) -> (n, *data_shape)``, E[x|z] in data space (the GAN's
            G(z), the VAE's decoder mean), differentiable in z; the metric puts the Gaussian
            observation N(x; mean(z), sigma^2 I) on it (Wu et al. 2017, arXiv:1611.04273).
        log_prob: the family's own log p(x|z) in nats, ``(x (n, *data_shape), z (n,
            latent_dim)) -> (n,)``, differentiable in z; None when the family has no
            observation model of its own (the GAN).
        sample: ``(z (n, latent_dim), generator) -> x (n, *data_shape)``, a draw from that
            own p(x|z) (bidirectional Monte Carlo simulates data with it); None with ``log_prob``.
        name: what the own observation model is, in words (``"bernoulli"``).
        discrete: whether ``log_prob`` is a probability of the pixel values (Bernoulli,
            discretized logistic) rather than a density (continuous Bernoulli, Gaussian).
    """

    latent_dim: int
    mean: Callable[[Tensor], Tensor]
    log_prob: Callable[[Tensor, Tensor], Tensor] | None = None
    sample: Callable[[Tensor, torch.Generator | None], Tensor] | None = None
    name: str | None = None
    discrete: bool = False


class GenerativeModel(nn.Module, abc.ABC):
    """Base class of the four families (GAN, VAE, NADE/RNADE, DDPM).

    Constructors are keyword-only and take at least:

    - ``data_shape``: shape of one example, ``(C, H, W)`` for images or ``(D,)``
      for points (the 2D mixtures);
    - ``binary``: True when the runner feeds binarized images ({0, 1} floats),
      False for continuous data (pixels in [0, 1], or real-valued points);
    - one or more optimizer factories (Hydra ``_partial_`` optimizers).

    Data convention: images are float pixels in [0, 1]; points are raw
    real coordinates. :meth:`sample` returns examples in the same space.
    """

    # A family declares itself here, on its class, and nowhere else: the runner records these
    # in metrics.json (``family``, ``family_style``), so ``compare`` draws a run from its
    # record without importing the code its config names.
    #: Family name, as the reports group runs ("gan" for :class:`~gencompare.models.gan.GAN`).
    family: ClassVar[str] = ""
    #: The family's colour in every figure (a matplotlib colour, e.g. ``"#d62728"``); the
    #: default grey is the one reports give a family that declares none.
    family_color: ClassVar[str] = "#7f7f7f"
    #: Position among the families in tables and figures, lowest first (the four families
    #: use 0-3); families with equal order sort by name.
    family_order: ClassVar[int] = 100
    #: Machine name of the likelihood :meth:`log_likelihood` returns: "nll_exact",
    #: "nll_iwae" (an importance-weighted estimate), "nll_bound" (a variational bound), or
    #: None when the family has none (then it is not evaluated).
    likelihood_kind: ClassVar[str | None] = None
    #: What the tables write beside the NLL (``1.23 ± 0.01 (IWAE)``): a word or two.
    likelihood_label: ClassVar[str | None] = None
    #: What :meth:`log_likelihood` computes, in words, for metrics.json's ``likelihood.note``:
    #: a template formatted with the model as ``self`` (``"IWAE, k={self.iwae_k}"``).
    likelihood_description: ClassVar[str | None] = None
    #: Whether :meth:`log_likelihood` of images is a probability of the pixel values it is
    #: given (Bernoulli, NADE, discretized decoders) rather than a density on [0, 1]^D
    #: (RNADE, the continuous Bernoulli). On 8-bit data the evaluation scores a density on
    #: dequantized pixels (:mod:`gencompare.models.pixels`) so that every family reports
    #: bits/dim of the same discrete images. Families set it per instance where it depends
    #: on the decoder.
    discrete_likelihood: bool = False
    def __init__(self, *, data_shape: Sequence[int], binary: bool = False) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.binary = bool(binary)

    @property
    def data_dim(self) -> int:
        """Number of dimensions D of one example (784 for MNIST, 2 for ring8)."""
        d = 1
        for s in self.data_shape:
            d *= s
        return d

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training ---------------------------------------------------------
    @abc.abstractmethod
    def configure_optimizers(self) -> dict[str, Optimizer]:
        """Optimizers in step order, e.g. ``{"discriminator": ..., "generator": ...}``."""

    def optimizer_repeats(self) -> dict[str, int]:
        """How many times each optimizer steps per training iteration; absent names step once.

        The GAN returns ``{"discriminator": k}`` (Goodfellow et al. 2014,
        Algorithm 1). The runner gives each repeat a fresh batch.
        """
        return {}

    @abc.abstractmethod
    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]:
        """Loss for optimizer ``name`` on ``batch`` and scalars to log.

        Args:
            batch: ``(B, *data_shape)`` examples on the model's device.
            name: one of the keys of :meth:`configure_optimizers`.

        Returns:
            ``(loss, logs)``: a scalar tensor to minimise, and a dict of detached
            scalar tensors (or Python floats) logged as ``train/<key>``. Keep them
            tensors: the runner reads them on the host only at log steps, since
            ``.item()`` per step is a CPU-GPU sync that stalls a GPU.
        """

    def on_train_batch_end(self, step: int) -> None:
        """Hook after every optimizer of an iteration stepped (e.g. EMA update). With seeds
        stacked (:mod:`gencompare.train.stacked`) it runs once on the stacked ``(S, ...)``
        tensors, outside vmap: keep it element-wise over parameters and buffers."""

    # -- evaluation -------------------------------------------------------
    @abc.abstractmethod
    def sample(self, n: int) -> Tensor:
        """Draw ``n`` examples: ``(n, *data_shape)`` in data space (see class doc)."""

    def log_likelihood(self, x: Tensor) -> Tensor | None:
        """Per-example log-likelihood in nats, shape ``(B,)``, or None if the family has none.

        Exact for NADE, an importance-weighted estimate for the VAE, a variational
        lower bound for the DDPM; :attr:`likelihood_kind` names which.
        """
        return None

    def latent_decoder(self) -> LatentDecoder | None:
        """The decoder and prior AIS scores (:class:`LatentDecoder`), or None when the family
        has none (an autoregressive or diffusion model): then ``metrics.ais`` does not apply.
        Callers put the model in eval mode first (batch norm must not mix the chains)."""
        return None

    def describe_sampler(self) -> str | None:
        """How :meth:`sample` draws, recorded with the metrics where a family has a choice
        (the DDPM: ancestral or DDIM, and how many steps). None: nothing to say."""
        return None

    def describe_likelihood(self) -> str | None:
        """What :meth:`log_likelihood` computes, in words, for the report:
        :attr:`likelihood_description` filled in from this model (None: the report's generic
        name for :attr:`likelihood_kind`)."""
        template = self.likelihood_description
        return None if template is None else template.format(self=self)

    def networks(self) -> dict[str, nn.Module]:
        """Named sub-networks whose parameter counts are reported (default: the whole model)."""
        return {"model": self}

    def compile_networks(self) -> list[str]:
        """``torch.compile`` each network of :meth:`networks` in place (``Module.compile``:
        the state_dict keeps its keys, so checkpoints are those of an uncompiled run);
        ``trainer.compile=true``. Only calls through a network's ``forward`` are compiled
        (the NADE family's autoregressive loops are methods, not ``forward``, and stay eager).

        Returns:
            The names of the compiled networks.
        """
        for net in self.networks().values():
            net.compile()
        return list(self.networks())


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def forget_on_load(module: nn.Module, attribute: str) -> None:
    """Set ``module.<attribute>`` to None after every ``load_state_dict``.

    For a host copy of a buffer that the training step consults (the DDPM's EMA step
    count, RNADE's initialised flag): reading the buffer itself every step would be a
    CPU-GPU sync, so the model keeps a Python copy, and None after loading tells it to
    read the buffer once again.
    """
    def hook(mod: nn.Module, incompatible_keys) -> None:  # noqa: ARG001 - torch's hook signature
        setattr(mod, attribute, None)

    module.register_load_state_dict_post_hook(hook)



# -- data parallelism: a step's noise as the global batch's, sliced per rank -----------------
@dataclass(frozen=True)
class BatchShard:
    """This process's share of a data-parallel global batch (:mod:`gencompare.train.distributed`,
    :mod:`gencompare.metrics.ranks`): rows ``[rank * n, (rank + 1) * n)`` of a global batch of
    ``world_size * n`` examples (a training step), or, with ``total``, the rows
    ``[start, start + n)`` of a global batch of ``total`` (an evaluation's chunk, split
    unevenly; a rank that holds no row of it computes one row of another rank's and drops
    it, :func:`shard_chunks`: the networks take no empty batch, and the rank must still draw
    the chunk's noise)."""

    rank: int
    world_size: int
    total: int | None = None
    start: int = 0

    def span(self, n: int) -> tuple[int, int]:
        """``(total, start)``: the global batch's size and the first global row of this
        rank's ``n`` rows.

        Raises:
            ValueError: ``n`` rows from ``start`` do not fit in ``total``.
        """
        if self.total is None:
            return n * self.world_size, n * self.rank
        if self.start + n > self.total:
            raise ValueError(f"rows [{self.start}, {self.start + n}) are not in a global batch of {self.total}")
        return self.total, self.start


_SHARD: ContextVar[BatchShard | None] = ContextVar("gencompare_batch_shard", default=None)


@contextmanager
def batch_shard(shard: BatchShard | None):
    """Within the block, :func:`draw_examples` and :func:`gather_examples` act for ``shard``
    (set by the data-parallel step strategy around each ``training_step``, and by a
    data-parallel evaluation around each chunk it draws; None: one process)."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def _active() -> BatchShard | None:
    shard = _SHARD.get()
    return None if shard is None or (shard.world_size == 1 and shard.total is None) else shard


def draw_examples(draw: Callable[[int], Tensor], n: int, dim: int = 0) -> Tensor:
    """Per-example random draws (a GAN's z, a VAE's epsilon, a DDPM's t and noise, a NADE
    sample's pixels) for ``n`` examples: ``draw(n)``, whose dimension ``dim`` indexes examples.

    Under a :class:`BatchShard`, ``draw(total)`` (the draw one process makes for the global
    batch, every rank's global RNG seeded alike) and this rank's ``n`` rows of it, so the
    ranks see the noise one process sees. Outside one, exactly ``draw(n)``.
    """
    shard = _active()
    if shard is None:
        return draw(n)
    total, start = shard.span(n)
    return draw(total).narrow(dim, start, n)


def randn_examples_like(x: Tensor) -> Tensor:
    """``torch.randn_like(x)`` for ``x`` ``(B, ...)`` whose first dimension indexes examples,
    drawn through :func:`draw_examples`: in a data-parallel step or evaluation this rank's
    rows of the global batch's draw."""
    return draw_examples(lambda m: torch.randn(m, *x.shape[1:], dtype=x.dtype, device=x.device), len(x))


def batch_total(n: int) -> int:
    """The global batch of which this rank holds ``n`` rows (outside a :class:`BatchShard`: ``n``)."""
    shard = _active()
    return n if shard is None else shard.span(n)[0]


def spread(x: Tensor, fill: float = 0.0) -> Tensor:
    """``x`` ``(n, ...)``, this rank's rows, placed at their rows of a global-batch tensor
    whose other rows are ``fill``: the parameters of a draw whose random numbers do not
    depend on them (``torch.bernoulli`` of probabilities draws one uniform per element,
    ``torch.multinomial`` of one sample one exponential per category), so that
    ``draw_examples(lambda m: torch.bernoulli(spread(p)), len(p))`` draws what one process
    draws for the whole batch without computing the other ranks' rows. Outside a
    :class:`BatchShard`, ``x`` itself."""
    shard = _active()
    if shard is None:
        return x
    total, start = shard.span(len(x))
    out = x.new_full((total, *x.shape[1:]), fill)
    out[start : start + len(x)] = x
    return out


def shard_chunks(n: int, chunk: int) -> Iterator[tuple[int, int, BatchShard | None]]:
    """``n`` examples in chunks of at most ``chunk`` *global* rows, for a family that draws
    a large batch in pieces, so that every rank cuts the global batch where one process
    cuts it and draws what it draws: per chunk ``(rows to compute, rows to keep, shard)``.
    A rank that holds no row of a chunk computes one and keeps none (see :class:`BatchShard`).
    Outside a :class:`BatchShard`, ``(m, m, None)`` with ``m = min(chunk, n - i)`` for ``i``
    in ``range(0, n, chunk)``."""
    shard = _active()
    if shard is None:
        for i in range(0, n, chunk):
            yield min(chunk, n - i), min(chunk, n - i), None
        return
    total, start = shard.span(n)
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        first, last = max(lo, start), min(hi, start + n)
        if last > first:
            yield last - first, last - first, BatchShard(shard.rank, shard.world_size, hi - lo, first - lo)
        else:
            yield 1, 0, BatchShard(shard.rank, shard.world_size, hi - lo, 0)


def in_chunks(draw: Callable[[int], Tensor], n: int, chunk: int) -> list[Tensor]:
    """``[draw(m)[:keep], ...]`` over the chunks of :func:`shard_chunks` (``n`` examples, at
    most ``chunk`` global rows per chunk), each called under its chunk's shard."""
    parts = []
    for m, keep, shard in shard_chunks(n, chunk):
        with batch_shard(shard):
            parts.append(draw(m)[:keep])
    return parts


def gather_examples(x: Tensor) -> Tensor:
    """``x`` ``(n, ...)`` of this rank's examples concatenated over the ranks in rank order
    ``(W * n, ...)``: the global batch, for what a step computes from the whole batch once
    (RNADE's data-dependent initialisation). Outside a :class:`BatchShard`, ``x`` itself.
    No gradient flows through the gathered copy.

    Raises:
        ValueError: under a shard of an uneven split (a training step's is even).
    """
    shard = _SHARD.get()
    if shard is None or shard.world_size == 1:
        return x
    if shard.total is not None:
        raise ValueError("gather_examples gathers equal shards only")
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(shard.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


class ExampleDropout(nn.Dropout):
    """``nn.Dropout`` whose mask, in a data-parallel step, is this rank's rows of the mask
    one process draws for the global batch (:func:`draw_examples`), so that N ranks drop
    the units one process drops. Outside a :class:`BatchShard` it is ``nn.Dropout`` itself.
    The mask is drawn as CPU's ``F.dropout`` draws it (``bernoulli_(1 - p)`` of the input's
    shape, scaled by ``1 / (1 - p)``): on CUDA, whose dropout is a fused kernel with its own
    random stream, the ranks' masks are as random but not one process's bit for bit."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not 0.0 < self.p < 1.0 or _SHARD.get() is None:
            return super().forward(x)
        keep = 1.0 - self.p
        mask = draw_examples(lambda m: x.new_empty(m, *x.shape[1:]).bernoulli_(keep), len(x))
        return x * mask.div_(keep)
