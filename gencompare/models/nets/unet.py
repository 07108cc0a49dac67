"""Denoisers epsilon_theta(x_t, t) for the DDPM family.

- :class:`UNet`: the U-Net of Ho et al. (2020, Appendix B; official code
  ``diffusion_tf/models/unet.py``), a PixelCNN++-style backbone with
  GroupNorm, residual blocks and a Transformer sinusoidal time embedding; by
  default scaled down (28 -> 14 -> 7 for MNIST), at full size for CIFAR-10
  with ``attention_resolutions`` (``conf/experiment/ddpm_cifar10.yaml``).
- :class:`MLPDenoiser`: a residual MLP for low-dimensional points (the 2D
  mixtures ring8 and grid25).

Both take ``t`` as integer timestep indices ``0 .. T-1`` (index ``i`` is the
paper's ``t = i + 1``, as in the official code) and return a tensor shaped
like ``x``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gencompare.models.base import ExampleDropout


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, sec. 3.5).

    As ``get_timestep_embedding`` in Ho et al.'s code: ``dim/2`` frequencies
    ``10000^{-k/(dim/2-1)}``, sines then cosines.

    Args:
        t: ``(B,)`` timestep indices (int or float).
        dim: embedding width, even and >= 4.

    Returns:
        ``(B, dim)`` float32 embedding.

    Raises:
        ValueError: if ``dim`` is odd or smaller than 4.
    """
    if dim % 2 != 0 or dim < 4:
        raise ValueError(f"timestep embedding dim must be even and >= 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    # Ho et al. use 32 groups at 128+ channels, i.e. >= 4 channels per group;
    # keep >= 4 channels per group at the narrower widths used on CPU.
    return nn.GroupNorm(num_groups=max(1, min(32, channels // 4)), num_channels=channels)


def _zero(module: nn.Module) -> nn.Module:
    # Zero-initialised output layers make every residual branch start as the
    # identity (official code: init_scale=0. on the last conv of each block).
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + time projection, GroupNorm -> SiLU -> dropout -> conv3x3, + skip.

    ``(B, in_ch, H, W), (B, temb_dim) -> (B, out_ch, H, W)``.
    """

    def __init__(self, *, in_ch: int, out_ch: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = ExampleDropout(dropout)  # nn.Dropout; per example under data parallelism
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual. ``(B, C, H, W) -> same``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        out = torch.einsum("bij,bcj->bci", attn, v).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """The DDPM U-Net (Ho et al. 2020, Appendix B) for small images.

    With ``channel_mults=(1, 2, 2)`` a 28x28 input runs at 28 -> 14 -> 7 and
    back; each level has ``num_res_blocks`` residual blocks on the way down
    and ``num_res_blocks + 1`` (with skip concatenation) on the way up.
    ``attention=True`` adds self-attention at the lowest resolution (7x7) and
    in the middle block, where Ho et al. put it at 16x16 of 32x32 and in the
    middle; off by default because on CPU it costs time and 28x28 digits do
    not need the long-range mixing.

    ``attention_resolutions`` switches to the official layout
    (``diffusion_tf/models/unet.py``): self-attention after every residual block of a
    level whose feature maps have one of those sizes (``(16,)`` for CIFAR-10), and always
    in the middle block; ``attention`` is then ignored.

    Args:
        in_channels: image channels C (1 for MNIST, 3 for Stacked MNIST).
        base_channels: width of the first level (Ho et al.: 128 on CIFAR-10).
        channel_mults: width multiplier per resolution level.
        num_res_blocks: residual blocks per level on the way down (Ho et al.: 2).
        attention: self-attention at the lowest resolution and the middle.
        dropout: dropout in the residual blocks (Ho et al.: 0.1 on CIFAR-10).
        attention_resolutions: feature-map sizes with self-attention (Ho et al.: (16,)
            on 32x32), or None for the ``attention`` switch.
        resolution: input height and width; needed with ``attention_resolutions``.

    Shapes: ``forward(x (B, C, H, W), t (B,)) -> (B, C, H, W)``; H and W must be
    divisible by ``2 ** (len(channel_mults) - 1)``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        dropout: float = 0.0,
        attention_resolutions: Sequence[int] | None = None,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        if not mults or base_channels < 4 or num_res_blocks < 1:
            raise ValueError(
                f"UNet needs channel_mults non-empty, base_channels >= 4, num_res_blocks >= 1; "
                f"got {mults}, {base_channels}, {num_res_blocks}"
            )
        if attention_resolutions is not None and resolution is None:
            raise ValueError("UNet attention_resolutions needs the input resolution")
        attn_sizes = None if attention_resolutions is None else {int(r) for r in attention_resolutions}

        def attends(level: int) -> bool:
            if attn_sizes is None:
                return attention and level == len(mults) - 1
            return int(resolution) // 2**level in attn_sizes  # type: ignore[arg-type]
        self.base_channels = base_channels
        self.num_levels = len(mults)
        temb_dim = 4 * base_channels
        self.temb = nn.Sequential(
            nn.Linear(base_channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        # built in this order (down, middle, up): the parameters' random draws follow it
        self.down, skip_chs, ch = self._down_path(mults, num_res_blocks, temb_dim, dropout, attends)
        self.mid1 = ResBlock(in_ch=ch, out_ch=ch, temb_dim=temb_dim, dropout=dropout)
        self.mid_attn = AttnBlock(ch) if attention or attn_sizes is not None else nn.Identity()
        self.mid2 = ResBlock(in_ch=ch, out_ch=ch, temb_dim=temb_dim, dropout=dropout)
        self.up, ch = self._up_path(mults, num_res_blocks, temb_dim, dropout, attends, skip_chs, ch)
        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, in_channels, 3, padding=1))

    def _down_path(self, mults, num_res_blocks, temb_dim, dropout, attends) -> tuple[nn.ModuleList, list[int], int]:
        """The down levels, the width of every tensor they push on the skip stack, and the last width."""
        down = nn.ModuleList()
        skip_chs = [self.base_channels]
        ch = self.base_channels
        for level, mult in enumerate(mults):
            blocks = nn.ModuleList()
            out_ch = self.base_channels * mult
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(in_ch=ch, out_ch=out_ch, temb_dim=temb_dim, dropout=dropout))
                ch = out_ch
                if attends(level):
                    blocks.append(AttnBlock(ch))
                skip_chs.append(ch)
            if level != len(mults) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_chs.append(ch)
            down.append(blocks)
        return down, skip_chs, ch

    def _up_path(self, mults, num_res_blocks, temb_dim, dropout, attends, skip_chs, ch) -> tuple[nn.ModuleList, int]:
        """The up levels, each residual block reading one skip tensor; and the last width."""
        up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            blocks = nn.ModuleList()
            out_ch = self.base_channels * mult
            for _ in range(num_res_blocks + 1):
                blocks.append(
                    ResBlock(in_ch=ch + skip_chs.pop(), out_ch=out_ch, temb_dim=temb_dim, dropout=dropout)
                )
                ch = out_ch
                if attends(level):
                    blocks.append(AttnBlock(ch))
            if level != 0:
                blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
                blocks.append(nn.Conv2d(ch, ch, 3, padding=1))
            up.append(blocks)
        assert not skip_chs, "skip connections unbalanced"
        return up, ch

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        factor = 2 ** (self.num_levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet input H, W must be divisible by {factor}, got {tuple(x.shape[-2:])}")
        temb = self.temb(timestep_embedding(t, self.base_channels))
        h = self.conv_in(x)  # (B, ch, 28, 28)
        skips = [h]
        for blocks in self.down:
            for block in blocks:
                if isinstance(block, ResBlock):
                    h = block(h, temb)
                    skips.append(h)
                elif isinstance(block, AttnBlock):
                    h = block(h)
                    skips[-1] = h
                else:  # stride-2 downsample: 28 -> 14 -> 7
                    h = block(h)
                    skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for blocks in self.up:
            for block in blocks:
                if isinstance(block, ResBlock):
                    h = block(torch.cat([h, skips.pop()], dim=1), temb)
                else:  # attention, nearest upsample, conv
                    h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MLPDenoiser(nn.Module):
    """Residual MLP epsilon_theta(x_t, t) for points ``(B, D)`` (e.g. D = 2).

    ``x -> Linear(D', hidden)``, then ``num_layers`` residual blocks
    ``h + Linear(SiLU(Linear(SiLU(h)) + time_proj(temb)))``, then ``Linear(hidden, D)``.
    The time embedding is sinusoidal (as the U-Net) or a learned table of T
    vectors (``time_embedding="learned"``).

    The input is the raw coordinates (``input_embedding="linear"``, D' = D) or, by
    default, each coordinate's sinusoidal embedding at ``input_scale`` times its value
    (Fourier features, Tancik et al. 2020; D' = D * temb_dim). An MLP on raw 2D
    coordinates learns smooth functions first: on ring8 (modes of std 0.01) it drew a
    continuous ring after 9,000 steps (measured); the features let it resolve the modes.

    Args:
        data_dim: D.
        timesteps: T (size of the learned table).
        hidden: width of the hidden layers.
        num_layers: number of residual blocks.
        time_embedding: "sinusoidal" or "learned".
        temb_dim: width of the time embedding (and of each coordinate's input embedding).
        input_embedding: "fourier" (default) or "linear".
        input_scale: coordinates are multiplied by this before their sinusoidal
            embedding (25, as the tiny-diffusion reference implementation for 2D data).

    Raises:
        ValueError: unknown ``time_embedding`` or ``input_embedding``.
    """

    def __init__(
        self,
        *,
        data_dim: int,
        timesteps: int,
        hidden: int = 256,
        num_layers: int = 3,
        time_embedding: str = "sinusoidal",
        temb_dim: int = 128,
        input_embedding: str = "fourier",
        input_scale: float = 25.0,
    ) -> None:
        super().__init__()
        if time_embedding not in ("sinusoidal", "learned"):
            raise ValueError(f"time_embedding must be 'sinusoidal' or 'learned', got {time_embedding!r}")
        if input_embedding not in ("fourier", "linear"):
            raise ValueError(f"input_embedding must be 'fourier' or 'linear', got {input_embedding!r}")
        self.time_embedding = time_embedding
        self.temb_dim = temb_dim
        self.input_embedding = input_embedding
        self.input_scale = float(input_scale)
        self.table = nn.Embedding(timesteps, temb_dim) if time_embedding == "learned" else None
        self.temb = nn.Sequential(nn.Linear(temb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(data_dim * temb_dim if input_embedding == "fourier" else data_dim, hidden)
        self.blocks = nn.ModuleList()
        for _ in range(num_layers):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "fc1": nn.Linear(hidden, hidden),
                        "tproj": nn.Linear(hidden, hidden),
                        "fc2": nn.Linear(hidden, hidden),
                    }
                )
            )
        self.out = nn.Linear(hidden, data_dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1)
        # The time path runs once per distinct timestep (a sampler step has one t for the
        # whole batch): 40% of the MLP's multiply-adds at the default sizes.
        # Not under the runner's vmap (trainer.seed_batch), where unique's output size would
        # differ between members; a training batch has ~B distinct timesteps anyway.
        if getattr(self, "vmapped", False):
            t_unique, index = t, slice(None)
        else:
            t_unique, index = torch.unique(t, return_inverse=True)
        if self.table is not None:
            emb = self.table(t_unique.long())
        else:
            emb = timestep_embedding(t_unique, self.temb_dim)
        temb = F.silu(self.temb(emb))  # (U, hidden), U distinct timesteps
        if self.input_embedding == "fourier":
            # (B, D) -> (B, D * temb_dim): each coordinate's sinusoidal embedding
            x = timestep_embedding(x.reshape(-1) * self.input_scale, self.temb_dim).reshape(shape[0], -1)
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk["fc2"](F.silu(blk["fc1"](F.silu(h)) + blk["tproj"](temb)[index]))
        return self.out(F.silu(h)).reshape(shape)


def unet(*, data_shape: Sequence[int], timesteps: int | None = None, base_channels: int = 32,
         channel_mults: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1, attention: bool = False,
         attention_resolutions: Sequence[int] | None = None, dropout: float = 0.0) -> UNet:
    """:class:`UNet` for ``(C, H, W)`` data (``timesteps`` is not needed: the embedding is sinusoidal)."""
    net = UNet(in_channels=int(data_shape[0]), base_channels=int(base_channels),
               channel_mults=tuple(int(m) for m in channel_mults), num_res_blocks=int(num_res_blocks),
               attention=bool(attention), dropout=float(dropout), attention_resolutions=attention_resolutions,
               resolution=int(data_shape[1]))
    net.arch = "unet"  # the name checkpoints record (DDPM.arch)
    return net


def mlp_denoiser(*, data_shape: Sequence[int], timesteps: int, hidden: int = 256, num_layers: int = 3,
                 time_embedding: str = "sinusoidal", input_embedding: str = "fourier") -> MLPDenoiser:
    """:class:`MLPDenoiser` for ``(D,)`` data."""
    net = MLPDenoiser(data_dim=math.prod(data_shape), timesteps=int(timesteps), hidden=int(hidden),
                      num_layers=int(num_layers), time_embedding=time_embedding, input_embedding=input_embedding)
    net.arch = "mlp"  # the name checkpoints record (DDPM.arch)
    return net
