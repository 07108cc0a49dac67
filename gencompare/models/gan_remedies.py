"""The remedies for mode collapse that the GAN offers as options (:mod:`gencompare.models.gan`).

- **Packing** (Lin et al. 2018, "PacGAN: The power of two samples in generative
  adversarial networks", Sec. 3): the discriminator judges ``m`` samples at once,
  concatenated (real with real, fake with fake): :func:`pack`.
- **Minibatch discrimination** (Salimans et al. 2016, "Improved Techniques for
  Training GANs", Sec. 3.2): a layer that gives the discriminator, for each example,
  how close it is to the other examples of its minibatch: :class:`MinibatchDiscrimination`.
- **Unrolled GAN** (Metz et al. 2017, "Unrolled Generative Adversarial Networks",
  Sec. 2): the generator's loss is taken against the discriminator after ``k`` more of
  its own Adam steps, differentiated through those steps: :func:`unrolled_parameters`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer


def pack(x: Tensor, m: int) -> Tensor:
    """Concatenate each run of ``m`` consecutive examples into one packed example.

    ``(n * m, D)`` -> ``(n, m * D)`` for points (PacGAN's ``tensor.concatenate(...,
    axis=1)``, fjxmlzn/PacGAN ``synthetic_data_experiments/PacGAN/pacgan/bricks.py``,
    ``compute_losses``) and ``(n * m, C, H, W)`` -> ``(n, m * C, H, W)`` for images
    (concatenated along channels, as PacGAN's DCGAN experiments do). ``m = 1`` returns
    ``x`` unchanged.

    Raises:
        ValueError: the number of examples is not a multiple of ``m``.
    """
    if m == 1:
        return x
    if x.shape[0] % m:
        raise ValueError(f"packing m={m} needs a batch whose size is a multiple of m, got {x.shape[0]} "
                         "(set trainer.batch_size to a multiple of model.module.pack)")
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, Sec. 3.2): ``(N, A)`` -> ``(N, A + B)``.

    Each example's features ``f(x_i)`` (A numbers) are projected by a tensor T
    (A x B x C) to B rows ``M_i`` of C numbers; ``c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_1)``
    and ``o(x_i)_b = sum_{j != i} c_b(x_i, x_j)``: near ``N - 1`` when the minibatch is
    made of copies of one point (a collapsed generator), near 0 when its examples are far
    apart. The output is ``[f(x_i), o(x_i)]``, read by the next layer.

    As in the authors' code (openai/improved-gan ``mnist_svhn_cifar10/nn.py``,
    ``MinibatchLayer``): T starts N(0, 0.05) and an example is not compared with itself.
    Left out from that code: the weight normalisation of T with its data-dependent
    initialisation, and the per-kernel bias (the next linear layer has one).
    Inputs with more than two dimensions are flattened.
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.05)

    @property
    def out_features(self) -> int:
        return self.T.shape[0] + self.kernels

    def closeness(self, f: Tensor) -> Tensor:
        """``o(x_i)``: ``(N, A)`` features -> ``(N, B)``."""
        m = (f @ self.T).view(f.shape[0], self.kernels, self.kernel_dim).transpose(0, 1)  # (B, N, C)
        l1 = torch.cdist(m, m, p=1)                                                      # (B, N, N)
        # minus c_b(x_i, x_i) = exp(0) = 1, exactly: the sum over j != i without a mask
        return (torch.exp(-l1).sum(dim=-1) - 1.0).transpose(0, 1)                        # (N, B)

    def forward(self, x: Tensor) -> Tensor:
        f = x.reshape(x.shape[0], -1)
        return torch.cat([f, self.closeness(f)], dim=1)


# ------------------------------------------------------------------ unrolled GAN
def _safe_sqrt(v: Tensor) -> Tensor:
    """sqrt(v) with gradient 0 where v = 0 (torch's is infinite there, and inf * 0 = NaN
    when a parameter's gradient is exactly 0, e.g. a maxout piece that never wins)."""
    positive = v > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, v, torch.ones_like(v))), torch.zeros_like(v))


def adam_hyperparameters(optimizer: Optimizer, params: list[Tensor]) -> list[dict]:
    """The Adam param group of each of ``params`` in ``optimizer``.

    Raises:
        ValueError: ``optimizer`` is not plain Adam (``torch.optim.Adam`` without
            amsgrad, weight decay or maximize), the update the unrolled GAN differentiates.
    """
    if type(optimizer) is not torch.optim.Adam:
        raise ValueError(f"unrolled_steps needs the discriminator's optimizer to be torch.optim.Adam, "
                         f"got {type(optimizer).__name__}")
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    groups = [group_of[id(p)] for p in params]
    for g in groups:
        if g["amsgrad"] or g["weight_decay"] or g["maximize"]:
            raise ValueError("unrolled_steps unrolls plain Adam: set amsgrad, weight_decay and maximize off")
    return groups


def unrolled_parameters(module: nn.Module, optimizer: Optimizer, loss_fn: Callable[[Callable[[Tensor], Tensor]], Tensor],
                        steps: int) -> dict[str, Tensor]:
    """``module``'s parameters after ``steps`` Adam steps on ``loss_fn``, as a graph.

    Metz et al. 2017, Sec. 2.2: ``theta_D^{k+1} = theta_D^k + eta^k df/dtheta_D^k``, with
    the optimizer's own update (their code unrolls Keras' Adam: poolio/unrolled_gan,
    "Unrolled GAN demo.ipynb", cell "Construct model and training ops"). Here the update
    is ``torch.optim.Adam``'s, started from the optimizer's current moments and step
    count, so the first unrolled step is the step the optimizer would take. The steps
    are built with ``create_graph=True``: a loss on the returned parameters
    differentiates through every step, including how the steps depend on the
    generator's samples inside ``loss_fn``.

    Args:
        module: the discriminator; its own parameters are not changed and get no gradient.
        optimizer: the Adam that steps ``module`` (its hyperparameters and state are read).
        loss_fn: ``loss_fn(discriminator) -> scalar`` where ``discriminator(x)`` calls
            ``module`` with the current unrolled parameters.
        steps: k >= 1.
    Returns:
        ``{name: tensor}`` for :func:`torch.func.functional_call`.
    Raises:
        ValueError: see :func:`adam_hyperparameters`.
    """
    names = [n for n, p in module.named_parameters()]
    live = [p for _, p in module.named_parameters()]
    groups = adam_hyperparameters(optimizer, live)
    theta = [p.detach().requires_grad_() for p in live]
    exp_avg, exp_avg_sq, step = adam_moments(optimizer, live)

    def gradient(theta: list[Tensor]) -> tuple[Tensor, ...]:
        params = dict(zip(names, theta))
        loss = loss_fn(lambda x, params=params: functional_call(module, params, (x,)))
        return torch.autograd.grad(loss, theta, create_graph=True)

    return dict(zip(names, adam_unroll(theta, exp_avg, exp_avg_sq, step, groups, gradient, steps)))


def adam_moments(optimizer: Optimizer, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Adam's ``(exp_avg, exp_avg_sq, step)`` of each of ``params`` (zeros before its first
    step), detached: where :func:`unrolled_parameters` starts. ``step`` is a CPU float64
    scalar tensor per parameter, as torch keeps it."""
    exp_avg, exp_avg_sq, step = [], [], []
    for p in params:
        state = optimizer.state.get(p, {})
        exp_avg.append(state["exp_avg"].detach() if "exp_avg" in state else torch.zeros_like(p).detach())
        exp_avg_sq.append(state["exp_avg_sq"].detach() if "exp_avg_sq" in state else torch.zeros_like(p).detach())
        # a CPU scalar tensor, as torch keeps it: combined with device tensors as a scalar,
        # without a device sync (float64, as torch computes the bias corrections)
        step.append(state["step"].detach().double() if "step" in state else torch.tensor(0.0, dtype=torch.float64))
    return exp_avg, exp_avg_sq, step


def adam_unroll(theta: list[Tensor], exp_avg: list[Tensor], exp_avg_sq: list[Tensor], step: list[Tensor],
                groups: list[dict], gradient: Callable[[list[Tensor]], Sequence[Tensor]], steps: int) -> list[Tensor]:
    """``steps`` updates of ``torch.optim.Adam`` (its arithmetic, hyperparameters ``groups``)
    from ``theta`` and its moments, each on ``gradient(theta)``; a graph when the gradients
    are (create_graph, or ``torch.func.grad``). Returns the last parameters."""
    exp_avg, exp_avg_sq, step = list(exp_avg), list(exp_avg_sq), list(step)
    for _ in range(steps):
        grads = gradient(theta)
        new_theta = []
        for i, (p, g, group) in enumerate(zip(theta, grads, groups)):
            beta1, beta2 = group["betas"]
            step[i] = step[i] + 1
            exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
            exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
            bias1 = 1 - beta1 ** step[i]
            bias2_sqrt = torch.sqrt(1 - beta2 ** step[i])
            denom = _safe_sqrt(exp_avg_sq[i]) / bias2_sqrt + group["eps"]
            new_theta.append(p - (group["lr"] / bias1) * exp_avg[i] / denom)
        theta = new_theta
    return theta


def unrolled_parameters_vmapped(module: nn.Module, exp_avg: list[Tensor], exp_avg_sq: list[Tensor],
                                step: list[Tensor], groups: list[dict],
                                loss_fn: Callable[[Callable[[Tensor], Tensor]], Tensor], steps: int) -> dict[str, Tensor]:
    """:func:`unrolled_parameters` for one member of a seed batch, under ``torch.func.vmap``
    (:mod:`gencompare.train.seeds`), where ``requires_grad`` cannot change: the gradients are
    ``torch.func.grad``'s, which the outer backward differentiates as it does
    ``create_graph=True``. The Adam state is the member's own slices (``exp_avg``,
    ``exp_avg_sq``, in ``module.named_parameters()`` order) and the shared ``step`` counts
    and ``groups``, read outside the vmap (:func:`adam_moments`, :func:`adam_hyperparameters`).
    Same update; not bit-identical to the plain path (batched products round differently)."""
    names = [n for n, _ in module.named_parameters()]
    theta = [p.detach() for _, p in module.named_parameters()]

    def loss_of(theta: list[Tensor]) -> Tensor:
        params = dict(zip(names, theta))
        return loss_fn(lambda x: functional_call(module, params, (x,)))

    gradient = torch.func.grad(loss_of)
    return dict(zip(names, adam_unroll(theta, exp_avg, exp_avg_sq, step, groups, gradient, steps)))
