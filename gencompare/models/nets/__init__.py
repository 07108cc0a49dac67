"""The networks the families are built from, passed in by the config (issue 20, item 2).

Each family takes its networks as factories (Hydra ``_partial_: true`` configs) and calls
them with the data's shape once the data is loaded, in a fixed order (the generator before
the discriminator, the encoder before the decoder), so parameter initialisation draws the
same random numbers whichever config named the nets:

- :mod:`.mlp`: the GAN paper's MNIST generator and maxout discriminator, the 2D MLPs of
  the Unrolled GAN paper, the VAE's MLP encoder and decoder;
- :mod:`.dcgan`: the DCGAN pair for 28x28 and 32x32 images;
- :mod:`.pacgan`: PacGAN's 2D generator (Blocks batch normalization) and discriminator;
- :mod:`.conv_vae`: the VAE's convolutional encoder and decoder (28x28 and 32x32);
- :mod:`.unet`: the DDPM's U-Net and its residual MLP denoiser for points.

:class:`ByDataShape` picks one of several factories by the data's shape, the ``auto``
choice of the configs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn


class ByDataShape:
    """A net factory that calls one of ``choices`` by the data's shape.

    ``choices`` maps ``"points"`` (``(D,)`` data), ``"images"`` (any ``(C, H, W)``) and
    ``"images_<H>x<W>"`` (that size only, ahead of ``"images"``) to factories.
    ``factory(data_shape=..., **kw)`` calls the chosen one with the same arguments.

    Raises (on call):
        ValueError: no choice fits ``data_shape``.
    """

    def __init__(self, name: str = "network", **choices: Callable[..., nn.Module] | None) -> None:
        self.name = name
        self.choices = {k: v for k, v in choices.items() if v is not None}

    def pick(self, data_shape: Sequence[int]) -> Callable[..., nn.Module]:
        """The factory for ``data_shape``."""
        shape = tuple(int(s) for s in data_shape)
        keys = ["points"] if len(shape) == 1 else [f"images_{shape[1]}x{shape[2]}", "images"] if len(shape) == 3 else []
        for key in keys:
            if key in self.choices:
                return self.choices[key]
        raise ValueError(f"{self.name} has no network for data_shape {shape} (it has {sorted(self.choices)})")

    def __call__(self, *, data_shape: Sequence[int], **kw: Any) -> nn.Module:
        return self.pick(data_shape)(data_shape=data_shape, **kw)
