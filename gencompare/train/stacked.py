"""The step strategy that trains S seeds of one family as one model: :class:`StackedSeeds`.

How a stacked seed stays an independent run:

- every parameter and buffer gets a leading seed dimension ``(S, ...)``; seed i starts from
  the weights its own run would build (built by :func:`gencompare.train.seeds.build_members`);
- one step runs the family's own ``training_step`` once per seed under ``torch.func.vmap``
  (``functional_call`` over the seed's slices), on the seed's own batch (its own
  :class:`~gencompare.data.BatchStream`, seeded as its separate run's) and its own noise
  (``randomness="different"``);
- the S losses are summed before ``backward``: seed i's gradient is that of its own loss
  alone; the family's optimizers over the stacked tensors are S independent optimizers, since
  every torch optimizer the configs use (SGD, Adam, AdamW, RMSprop) updates element-wise;
  gradient clipping and the logged gradient norms are per seed (:func:`clip_members`);
- ``on_train_batch_end`` runs once on the stacked tensors (the DDPM's EMA is element-wise).

A family needs nothing more for this than :class:`~gencompare.models.base.GenerativeModel`'s
interface; what a family may add is :class:`Stackable`.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call, vmap

from gencompare.data import StackedStreams
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel
from gencompare.train.loop import TrainingStep

__all__ = ["Stackable", "StackedSeeds", "check_one_seed", "clip_members", "refusal", "stacked_inputs"]


@runtime_checkable
class Stackable(Protocol):
    """What :class:`StackedSeeds` reads of a family besides the common interface; each
    member is optional (:func:`refusal`, :func:`stacked_inputs` and
    :meth:`StackedSeeds.__init__` supply the defaults).

    - ``seed_batch_refusal()``: why this model's seeds cannot train stacked, or None (a
      refused model trains its seeds one after another, and says so);
    - ``member_inputs()``: stacked ``(S, ...)`` tensors that one seed's step reads besides
      its parameters and buffers (the unrolled GAN: its discriminator's Adam moments), read
      before each stacked step; under the vmap the model finds its seed's slices in
      ``member_slices`` (None outside it);
    - ``read_host_state()``: read now the host copies of buffers that the training step
      consults (:func:`gencompare.models.base.forget_on_load`), since under vmap a buffer
      cannot be read on the host; called once after the stack is built and restored.

    While stacked, every submodule has ``vmapped = True``: the parameters are then one
    seed's slices under ``torch.func.vmap``, so a step must not change ``requires_grad``
    nor read a tensor on the host (no ``.item()``, ``bool(t)``).
    """

    def seed_batch_refusal(self) -> str | None: ...
    def member_inputs(self) -> dict[str, Tensor]: ...
    def read_host_state(self) -> None: ...


def refusal(model: GenerativeModel) -> str | None:
    """``model.seed_batch_refusal()`` where the family has it, else None."""
    hook = getattr(model, "seed_batch_refusal", None)
    return hook() if hook is not None else None


def stacked_inputs(model: GenerativeModel) -> dict[str, Tensor]:
    """``model.member_inputs()`` where the family has it, else none."""
    hook = getattr(model, "member_inputs", None)
    return hook() if hook is not None else {}


def check_one_seed(cfg: DictConfig) -> None:
    """Raises:
        GencompareError: ``cfg`` asks for several seeds stacked, which
            :func:`gencompare.train.train.train` (one run) does not train.
    """
    if int(cfg.trainer.get("seed_batch") or 1) > 1:
        raise GencompareError(f"trainer.seed_batch={cfg.trainer.seed_batch} trains several seeds: call "
                              "gencompare.train.seeds.train (what `gencompare train` does), "
                              "not gencompare.train.train.train")


def _set_tensor(module: nn.Module, name: str, value: Tensor, *, parameter: bool) -> None:
    *path, last = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    (owner._parameters if parameter else owner._buffers)[last] = value


class StackedSeeds:
    """S models of one family as one: ``members[0]`` becomes the host (:attr:`model`) whose
    parameters and buffers are the members' stacked along a new first dimension of size S.

    Args:
        members: S models built with the same config (and their own seeds), on one device.
        stream: the seeds' batches stacked, seed i's at ``[i]``
            (:class:`~gencompare.data.StackedStreams`; None: set :attr:`stream` before training).

    Raises:
        GencompareError: fewer than 2 members, or a member whose parameters differ in name
            or shape from the first's.
    """

    def __init__(self, members: list[GenerativeModel], stream: StackedStreams | None = None) -> None:
        if len(members) < 2:
            raise GencompareError("a seed batch needs at least 2 members (trainer.seed_batch >= 2)")
        self.size = len(members)
        self.model = host = members[0]
        with torch.no_grad():
            for name, p in list(host.named_parameters()):
                try:
                    stacked = torch.stack([m.get_parameter(name).detach() for m in members])
                except (AttributeError, RuntimeError) as exc:
                    raise GencompareError(f"seed batch members differ at parameter {name}: {exc}") from None
                _set_tensor(host, name, nn.Parameter(stacked, requires_grad=p.requires_grad), parameter=True)
            for name, _ in list(host.named_buffers()):
                _set_tensor(host, name, torch.stack([m.get_buffer(name) for m in members]), parameter=False)
        for m in host.modules():  # read by the family code that must behave under vmap
            m.vmapped = True
        self._step = TrainingStep(host)
        self.stream = stream

    def read_host_state(self) -> None:
        """The family's ``read_host_state`` (:class:`Stackable`), where it has one."""
        hook = getattr(self.model, "read_host_state", None)
        if hook is not None:
            hook()

    # -- the step strategy (gencompare.train.loop.StepStrategy)
    def next_batch(self) -> Tensor:
        return next(self.stream)  # (S, B, *data_shape): seed i's at [i]

    def loss(self, batches: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The family's ``training_step`` of every seed at once.

        Args:
            batches: ``(S, B, *data_shape)``, seed i's batch at ``[i]``.
            name: the optimizer, as for :meth:`GenerativeModel.training_step`.

        Returns:
            ``(losses, logs)``: ``(S,)`` losses (summed by :meth:`backward`) and the family's
            logs, each a ``(S,)`` tensor.
        """
        params = {f"model.{k}": v for k, v in self.model.named_parameters()}
        buffers = {f"model.{k}": v for k, v in self.model.named_buffers()}
        extra = stacked_inputs(self.model)  # e.g. the unrolled GAN's Adam moments, (S, ...) each

        def one_seed(p: dict[str, Tensor], b: dict[str, Tensor], e: dict[str, Tensor], x: Tensor):
            self.model.member_slices = e
            try:
                return functional_call(self._step, (p, b), (x, name))
            finally:
                self.model.member_slices = None

        return vmap(one_seed, randomness="different")(params, buffers, extra, batches)

    def backward(self, loss: Tensor) -> None:
        loss.sum().backward()  # seed i's gradient is its own loss's alone

    def clip(self, params: list[Tensor], max_norm: float, measure: bool) -> Tensor | None:
        return clip_members(params, self.size, max_norm, measure)

    # -- one seed out of the stack
    def member_state(self, i: int) -> dict[str, Tensor]:
        """Seed ``i``'s ``state_dict``: the keys and shapes of one model of the family."""
        return {k: v[i].clone() for k, v in self.model.state_dict().items()}

    def load_member(self, i: int, model: GenerativeModel) -> GenerativeModel:
        """Copy seed ``i`` into ``model`` (an ordinary model of the same config); returns it."""
        model.load_state_dict(self.member_state(i))
        return model


def clip_members(params: list[Tensor], size: int, max_norm: float, measure: bool) -> Tensor | None:
    """Per-seed gradient clipping of stacked ``params`` (each ``(S, ...)``): seed i's
    gradients are scaled by ``min(1, max_norm / (norm_i + 1e-6))`` with ``norm_i`` the total
    L2 norm of its own gradients, as ``torch.nn.utils.clip_grad_norm_`` does for one model.

    Returns:
        The ``(S,)`` norms before clipping when ``measure`` or clipping (a device tensor:
        no host sync), else None.
    """
    clipping = not math.isinf(max_norm)
    if not clipping and not measure:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(size, -1).norm(dim=1) for g in grads]).norm(dim=0)  # (S,)
    if clipping:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(size, *([1] * (g.dim() - 1))))
    return norms
