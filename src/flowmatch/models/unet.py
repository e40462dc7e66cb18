"""A small conditional UNet velocity field for images from 8x8 to 32x32.

The layout follows the DDPM UNet (Ho et al. 2020, App. B; Ronneberger et al. 2015) trimmed for
CPU training: residual blocks with GroupNorm + SiLU, the time (+ label) embedding injected in
every block as a scale and shift of the second normalisation ("adaptive group norm", Dhariwal &
Nichol 2021, Sec. 3), one skip connection per residual block, and an optional single
self-attention layer at the lowest resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmatch.interfaces import CondSpec
from flowmatch.models.base import MODELS, ModelConfig, check_cond_kinds
from flowmatch.models.embeddings import (
    ConditionEmbedding,
    LabelEmbedding,
    SinusoidalTimeEmbedding,
    check_condition_part,
    check_labels,
    condition_parts,
)
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option

_MAX_GROUPS = 8  # GroupNorm groups at most; small nets have few channels per level


def _num_groups(channels: int) -> int:
    """Largest divisor of ``channels`` that is ``<= _MAX_GROUPS`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, _MAX_GROUPS + 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """``skip(x) + conv(SiLU(AdaGN(conv(SiLU(GN(x))), emb)))``; ``AdaGN = GN(h) (1 + a) + b``."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_num_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        # The scale/shift is applied to an un-affine norm: the embedding supplies the affine part.
        self.norm2 = nn.GroupNorm(_num_groups(out_ch), out_ch, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, residual, pre-GroupNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_num_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """Options of the UNet."""

    base_channels: int = option(16, ge=1, doc="channels of the first resolution level")
    channel_mults: tuple[int, ...] = option((1, 2, 2), ge=1, doc="channel multiplier per level")
    num_res_blocks: int = option(1, ge=1, doc="residual blocks per level")
    attention: bool = option(False, doc="self-attention at the lowest resolution")
    dropout: float = option(0.0, ge=0, lt=1, doc="dropout in the residual blocks")

    def validate(self) -> None:
        """At least one resolution level."""
        if not self.channel_mults:
            raise OptionError("channel_mults", "must list at least one level, got []")


def _build_unet(config: ModelConfig, *, sample_shape: tuple[int, ...], cond: CondSpec) -> nn.Module:
    assert isinstance(config, UNetConfig)  # guaranteed by Registry.build
    if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
        raise OptionError(
            "kind",
            f"model 'unet' needs square images (C, H, H), got samples of shape {sample_shape}; "
            "use model.kind = 'mlp' for vectors",
        )
    check_cond_kinds("unet", UNet.cond_kinds, cond)
    ctx = cond.context_shape
    if ctx is not None and (len(ctx) != 3 or tuple(ctx[1:]) != tuple(sample_shape[1:])):
        raise OptionError(
            "kind",
            f"model 'unet' takes context images (C, H, W) of the samples' H x W = "
            f"{sample_shape[1]} x {sample_shape[2]}, got context of shape {ctx}; use model.kind "
            "= 'mlp' (a linear embedding of the flattened context) or resize the context",
        )
    return UNet(
        sample_shape[0],
        image_size=sample_shape[1],
        base_channels=config.base_channels,
        channel_mults=config.channel_mults,
        num_res_blocks=config.num_res_blocks,
        num_classes=cond.num_classes,
        dropout=config.dropout,
        attention=config.attention,
        values_dim=cond.values_dim,
        context_channels=None if ctx is None else ctx[0],
    )


@MODELS.register("unet", config=UNetConfig, build=_build_unet)
class UNet(nn.Module):
    r"""Conditional UNet velocity field ``v_theta(x, t, y)`` for images ``(B, C, H, W)``.

    ``e = MLP(sinusoidal(t)) + embed(y)`` conditions every residual block through
    ``GN(h) (1 + a(e)) + b(e)``; resolution is halved ``len(channel_mults) - 1`` times
    (stride-2 convs) and restored (nearest-neighbour upsampling) with one skip connection per
    residual block. The output conv is zero-initialised, so an untrained net returns exactly
    0 (the usual start for a velocity net: no random drift before training).

    Conditioning kinds: class labels (``embed(y)`` above), continuous values ``(B, C)`` (a
    linear embedding added to ``e`` like the label's) and context images ``(B, C_ctx, H, W)``
    of the samples' ``H x W``, concatenated with ``x`` as extra input channels.

    Null conditions (classifier-free guidance, Ho & Salimans 2022): label ``num_classes``;
    for values a learned null vector where ``Condition.drop`` is True
    (:class:`~flowmatch.models.embeddings.ConditionEmbedding`); for context, zeros plus a
    mask channel: the input gets one more channel, 1 where the context is kept and 0 where it
    is dropped (its channels then zeroed), so a dropped context is told apart from a context
    that is zero (a black image) without learning a null image. A kind the net takes but the
    condition leaves out (``cond=None`` included) is the null condition of that kind.

    Args:
        in_channels: image channels ``C``.
        image_size: height and width ``H = W``; divisible by ``2 ** (len(channel_mults) - 1)``.
        base_channels: channels at full resolution; level ``i`` has
            ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per resolution level (the first is full resolution).
        num_res_blocks: residual blocks per level on each side of the UNet.
        time_dim: size of the time (and label) embedding; even.
        num_classes: classes for label conditioning, or ``None`` for an unconditional net.
        dropout: dropout probability inside residual blocks, in ``[0, 1)``.
        attention: add one self-attention layer at the lowest resolution.
        values_dim: number ``C`` of continuous condition values per sample, or ``None``.
        context_channels: channels ``C_ctx`` of context images ``(C_ctx, H, W)``, or ``None``.

    Raises:
        ValueError: non-positive sizes, an odd ``time_dim``, an empty ``channel_mults``,
            ``dropout`` outside ``[0, 1)``, or ``image_size`` not divisible by
            ``2 ** (len(channel_mults) - 1)``.
        TypeError: non-integer sizes or ``channel_mults`` entries, a non-bool ``attention``.

    Example:
        >>> import torch
        >>> net = UNet(1, image_size=8, num_classes=10)
        >>> x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 3, 9, 10])
        >>> net(x, t, y).shape  # label 10 == net.null_label: unconditional
        torch.Size([4, 1, 8, 8])
    """

    cond_kinds: ClassVar[frozenset[str]] = frozenset({"labels", "values", "context"})

    def __init__(
        self,
        in_channels: int,
        *,
        image_size: int,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        time_dim: int = 128,
        num_classes: int | None = None,
        dropout: float = 0.0,
        attention: bool = False,
        values_dim: int | None = None,
        context_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.image_size = check_positive_int(image_size, "image_size")
        check_positive_int(base_channels, "base_channels")
        check_positive_int(num_res_blocks, "num_res_blocks")
        mults = _check_mults(channel_mults)
        factor = 2 ** (len(mults) - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**(len(channel_mults)-1) = "
                f"{factor} for channel_mults={mults}; use fewer levels or a padded image"
            )
        check_positive_int(time_dim, "time_dim", minimum=2)
        if time_dim % 2:
            raise ValueError(f"time_dim must be even (sin/cos pairs), got {time_dim}")
        if num_classes is not None:
            check_positive_int(num_classes, "num_classes")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(attention, bool):
            raise TypeError(f"attention must be a bool, got {attention!r}")
        self.num_classes = num_classes
        self.channel_mults = mults
        self.values_dim = (
            None if values_dim is None else check_positive_int(values_dim, "values_dim")
        )
        self.context_channels = (
            None
            if context_channels is None
            else check_positive_int(context_channels, "context_channels")
        )
        # Context channels plus the keep-mask channel join the image at the input.
        extra = 0 if self.context_channels is None else self.context_channels + 1

        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim),
            nn.Linear(time_dim, time_dim),
            nn.SiLU(),
            nn.Linear(time_dim, time_dim),
        )
        self.label_embed = (
            LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        )

        chans = [base_channels * m for m in mults]
        self.in_conv = nn.Conv2d(in_channels + extra, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = chans[0]
        for i, c in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch, c, time_dim, dropout))
                ch = c
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid1 = _ResBlock(ch, ch, time_dim, dropout)
        self.attn = _SelfAttention(ch) if attention else None
        self.mid2 = _ResBlock(ch, ch, time_dim, dropout)
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch + chans[i], chans[i], time_dim, dropout))
                ch = chans[i]
            self.up.append(blocks)
        self.out_norm = nn.GroupNorm(_num_groups(ch), ch)
        self.out_conv = nn.Conv2d(ch, in_channels, 3, padding=1)
        for p in self.out_conv.parameters():
            nn.init.zeros_(p)
        # Built last, so a label-only net draws the same initial weights as before.
        self.values_embed = (
            None if self.values_dim is None else ConditionEmbedding((self.values_dim,), time_dim)
        )

    @property
    def null_label(self) -> int | None:
        """The label id of the empty condition, or ``None`` if unconditional."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Return the velocity ``(B, C, H, W)`` at ``x`` ``(B, C, H, W)``, ``t`` ``(B,)``.

        Args:
            x: images ``(B, C, H, W)`` with ``(C, H, W) = (in_channels, image_size, image_size)``.
            t: times ``(B,)`` in ``[0, 1]``.
            cond: integer labels ``(B,)`` in ``[0, num_classes]``, a
                :class:`~flowmatch.interfaces.Condition` (labels, values ``(B, C)``, context
                ``(B, C_ctx, H, W)``, drop ``(B,)``) or ``None`` (the null condition of every
                kind the net takes; the only choice on an unconditional one).

        Returns:
            The velocity, shaped like ``x``.

        Raises:
            ValueError: wrong shape of ``x``, ``t`` or ``cond``; a kind the net was not built
                for (labels on a net without classes, ...).
            TypeError: non-integer labels.
        """
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (B, C, H, W) with (C, H, W) = {expected}, got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        if t.shape != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        labels, values, context, drop = condition_parts(cond)
        check_labels(labels, self.num_classes, batch)
        check_condition_part(
            "values", values, None if self.values_dim is None else (self.values_dim,), batch
        )
        ctx_shape = (
            None if self.context_channels is None else (self.context_channels, *expected[1:])
        )
        check_condition_part("context", context, ctx_shape, batch)
        emb = self.time_embed(t)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((batch,), self.label_embed.null_label, device=x.device)
            emb = emb + self.label_embed(labels)
        if self.values_embed is not None:
            emb = emb + self.values_embed(values, drop, batch).to(emb.dtype)
        emb = F.silu(emb)  # shared by every block's scale/shift projection

        h = self.in_conv(x if ctx_shape is None else self._with_context(x, context, drop))
        skips = []
        for i, blocks in enumerate(self.down):
            for block in cast(nn.ModuleList, blocks):
                h = block(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid1(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, emb)
        for i, blocks in enumerate(self.up):
            for block in cast(nn.ModuleList, blocks):
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.up) - 1:
                # Nearest-neighbour x2 without a conv: the next block's 3x3 conv (on the
                # concatenation with the skip) does the smoothing, at a third of the cost.
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return self.out_conv(F.silu(self.out_norm(h)))

    def _with_context(self, x: Tensor, context: Tensor | None, drop: Tensor | None) -> Tensor:
        """``[x, context * keep, keep]`` along channels; ``keep`` is 0 for a dropped context."""
        b, _, h, w = x.shape
        keep = torch.ones(b, dtype=torch.bool, device=x.device) if drop is None else ~drop
        if context is None:  # no context at all: the null condition for every sample
            keep = torch.zeros_like(keep)
            context = x.new_zeros(b, cast(int, self.context_channels), h, w)
        keep4 = keep[:, None, None, None]
        ctx = torch.where(keep4, context.to(x.dtype), 0.0)  # dropped rows: zeros, even if NaN
        mask = keep4.to(x.dtype).expand(b, 1, h, w)
        return torch.cat([x, ctx, mask], dim=1)

    def extra_repr(self) -> str:
        """Summarise size for ``print(model)``."""
        params = sum(p.numel() for p in self.parameters())
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, "
            f"channel_mults={self.channel_mults}, num_classes={self.num_classes}, "
            f"params={params} ({params / 1e6:.2f}M), log10={math.log10(params):.1f}"
        )


def _check_mults(channel_mults: tuple[int, ...]) -> tuple[int, ...]:
    """Validate ``channel_mults`` (a non-empty sequence of positive ints); return a tuple."""
    if isinstance(channel_mults, str) or not hasattr(channel_mults, "__len__"):
        raise TypeError(f"channel_mults must be a tuple of ints, got {channel_mults!r}")
    mults = tuple(channel_mults)
    if not mults:
        raise ValueError("channel_mults must have at least one level, got ()")
    for m in mults:
        check_positive_int(m, "channel_mults entries")
    return mults
