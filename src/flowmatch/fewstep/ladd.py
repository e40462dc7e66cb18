"""Latent adversarial term on noised samples (LADD), for few-step students such as sCM.

Sauer et al. 2024 ("Fast High-Resolution Image Synthesis with Latent Adversarial Diffusion
Distillation") train a one-step student against a discriminator that never sees clean
samples: real data and the student's outputs are both noised to a random level of the flow
path and the discriminator reads them there, through the frozen teacher's features.
SANA-Sprint (Chen et al. 2025) adds this term to the sCM loss (generator loss
``L = L_sCM + 0.5 L_adv``, hinge loss, the discriminator's angle from a logit-normal with
mean -0.6 and std 1, and the generator's adversarial sample drawn from pure noise half the
time so the one-step mode is trained directly).

Here, in the library's convention (``t = 0`` noise, ``t = 1`` data, linear path):

- real ``x1`` and fake ``x1_hat`` are noised to ``x_t = t x + (1 - t) x0`` with a shared
  ``t`` per pair and fresh source noise, ``t`` the linear-path time of a TrigFlow angle
  ``tau ~ atan(exp(N(mean, std)) / sigma_d)``;
- the discriminator :class:`NoisedDiscriminator` is a small MLP on ``[x_t, u_T(x_t, t),
  embed(t)]`` where ``u_T`` is the frozen teacher's velocity there (its features; the
  teacher's weights are not trained, gradients flow through it to the fake);
- discriminator loss (hinge) ``relu(1 - D(real_t)) + relu(1 + D(fake_t))`` on the fake
  detached; generator term ``-D(fake_t)`` with the discriminator's weights detached.

Both terms go into one per-sample loss, so the library's single optimiser updates the
student and the discriminator simultaneously (each module receives only its own term's
gradient), instead of SANA-Sprint's alternating phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond
from flowmatch.utils.checks import check_positive_float, check_positive_int
from flowmatch.utils.tensor import expand_like


class NoisedDiscriminator(nn.Module):
    """A discriminator ``D(x_t, t, features) -> (B,)`` logits of noised samples.

    Args:
        sample_numel: number of values in one sample (``prod(sample_shape)``).
        feature_numel: number of values of the teacher's features per sample (``0``: none).
        hidden: width of the hidden layers.
        depth: number of hidden layers (``>= 1``).
        time_features: number of sinusoidal features of ``t`` (even, ``>= 2``).

    Raises:
        ValueError: a size that is not a positive integer, or ``feature_numel < 0``.

    Example:
        >>> import torch
        >>> d = NoisedDiscriminator(2, feature_numel=2, hidden=16)
        >>> d(torch.zeros(5, 2), torch.rand(5), torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        sample_numel: int,
        *,
        feature_numel: int = 0,
        hidden: int = 256,
        depth: int = 2,
        time_features: int = 16,
    ) -> None:
        super().__init__()
        check_positive_int(sample_numel, "sample_numel")
        if not isinstance(feature_numel, int) or feature_numel < 0:
            raise ValueError(f"feature_numel must be an int >= 0, got {feature_numel!r}")
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")
        if time_features < 2 or time_features % 2:
            raise ValueError(f"time_features must be even and >= 2, got {time_features}")
        self.feature_numel = feature_numel
        freqs = torch.exp(torch.linspace(0.0, math.log(100.0), time_features // 2))
        self.freqs: Tensor
        self.register_buffer("freqs", freqs, persistent=False)
        layers: list[nn.Module] = []
        width = sample_numel + feature_numel + time_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x_t: Tensor, t: Tensor, features: Tensor | None = None) -> Tensor:
        """Logits ``(B,)`` of noised samples ``x_t`` ``(B, *D)`` at times ``t`` ``(B,)``."""
        ang = t[:, None].to(x_t.dtype) * self.freqs.to(x_t.dtype)
        parts = [x_t.flatten(1), torch.sin(ang), torch.cos(ang)]
        if self.feature_numel:
            if features is None:
                raise ValueError("this discriminator reads the teacher's features: pass them")
            parts.insert(1, features.flatten(1))
        return self.net(torch.cat(parts, dim=1)).squeeze(1)


@dataclass(frozen=True)
class AdversarialTerms:
    """Per-sample generator and discriminator terms ``(B,)`` and scalars to log."""

    generator: Tensor
    discriminator: Tensor
    logs: dict[str, Tensor]


def noise_level(
    n: int, *, mean: float, std: float, sigma_d: float, like: Tensor, generator: torch.Generator
) -> Tensor:
    """Linear-path times ``t`` ``(n,)`` of TrigFlow angles ``atan(exp(N(mean, std)) / sigma_d)``."""
    normal = torch.randn(n, generator=generator, device=like.device, dtype=like.dtype)
    tau = torch.atan(torch.exp(mean + std * normal) / sigma_d)
    c, s = torch.cos(tau), torch.sin(tau)
    return c / (c + sigma_d * s)


def adversarial_terms(
    discriminator: nn.Module,
    fake: Tensor,
    real: Tensor,
    noise: Tensor,
    t: Tensor,
    *,
    teacher: nn.Module | None = None,
    cond: Cond = None,
) -> AdversarialTerms:
    """The LADD hinge terms of ``fake`` (with gradient) against ``real`` samples.

    Args:
        discriminator: the trained discriminator (possibly DDP-wrapped: it is called once,
            on real and detached fake samples together, and its plain module with detached
            weights gives the generator's term).
        fake: the student's samples ``(B, *D)``, with the graph to the student.
        real: data ``(B, *D)``.
        noise: source samples ``(2B, *D)``: the first half noises ``real``, the second ``fake``.
        t: noise levels ``(B,)`` (linear-path time), shared by each real/fake pair.
        teacher: the frozen teacher whose velocity at the noised samples is the
            discriminator's feature (``None``: no features).
        cond: the batch's condition, passed to the teacher.

    Returns:
        :class:`AdversarialTerms`: ``generator = -D(fake_t)`` (gradient to the fake only),
        ``discriminator = relu(1 - D(real_t)) + relu(1 + D(fake_t))`` (gradient to the
        discriminator only).
    """
    from flowmatch.fewstep.base import unwrap

    n = fake.shape[0]
    tt = expand_like(t, fake)
    real_t = tt * real + (1 - tt) * noise[:n]
    fake_t = tt * fake + (1 - tt) * noise[n:]
    times = torch.cat([t, t])
    feats = None
    if teacher is not None:
        from flowmatch.interfaces import index_cond

        both = index_cond(cond, torch.arange(n, device=fake.device).repeat(2))
        feats = teacher(torch.cat([real_t, fake_t]), times, both)
    # The discriminator's own term: the fake (and its features) detached.
    x_d = torch.cat([real_t, fake_t.detach()])
    f_d = None if feats is None else feats.detach()
    logits = discriminator(x_d, times, f_d)
    d_real, d_fake = logits[:n], logits[n:]
    d_term = torch.relu(1 - d_real) + torch.relu(1 + d_fake)
    # The generator's term: the discriminator's weights detached, the graph to the fake kept.
    plain = unwrap(discriminator)
    frozen = {k: v.detach() for k, v in plain.named_parameters()}
    frozen.update(dict(plain.named_buffers()))
    f_g = None if feats is None else feats[n:]
    g_logits = torch.func.functional_call(plain, frozen, (fake_t, t, f_g))
    logs = {
        "adv_d_real": d_real.detach().mean(),
        "adv_d_fake": d_fake.detach().mean(),
        "adv_d_loss": d_term.detach().mean(),
        "adv_g_loss": -g_logits.detach().mean(),
    }
    return AdversarialTerms(generator=-g_logits, discriminator=d_term, logs=logs)


def check_adversarial(weight: float, one_step: float) -> tuple[float, float]:
    """Validated ``(weight >= 0, one_step in [0, 1])`` of the adversarial term."""
    weight = check_positive_float(weight, "adversarial", allow_zero=True)
    one_step = check_positive_float(one_step, "adv_one_step", allow_zero=True)
    if one_step > 1:
        raise ValueError(f"adv_one_step must be a probability in [0, 1], got {one_step}")
    return weight, one_step
