"""The LADD adversarial term of sCM: gradient routing, hinge values, a discriminator that learns."""

import math

import pytest
import torch

from flowmatch.data import Batch
from flowmatch.fewstep.ladd import NoisedDiscriminator, adversarial_terms, noise_level
from flowmatch.fewstep.scm import SCMConfig, SCMStep
from flowmatch.models import MLP
from oracles import GaussianOracle

torch.set_num_threads(1)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_each_term_sends_its_gradient_to_its_own_module():
    torch.manual_seed(0)
    disc = NoisedDiscriminator(2, feature_numel=2, hidden=16)
    teacher = MLP(2, hidden=16, depth=2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    fake = torch.randn(8, 2, requires_grad=True)
    real, noise = torch.randn(8, 2), torch.randn(16, 2)
    t = torch.rand(8)
    terms = adversarial_terms(disc, fake, real, noise, t, teacher=teacher)
    assert terms.generator.shape == terms.discriminator.shape == (8,)
    terms.generator.sum().backward(retain_graph=True)
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    assert all(p.grad is None for p in disc.parameters())  # D's weights were detached
    fake.grad = None
    terms.discriminator.sum().backward()
    assert fake.grad is None  # the fake was detached in D's term
    assert all(p.grad is not None for p in disc.parameters())


def test_hinge_terms_are_zero_for_a_confident_discriminator():
    class Sign(torch.nn.Module):  # +2 on real (positive first coordinate), -2 on fake
        feature_numel = 0

        def forward(self, x, t, f=None):
            return 2 * torch.sign(x[:, 0])

    real, fake = torch.full((4, 2), 5.0), torch.full((4, 2), -5.0)
    terms = adversarial_terms(Sign(), fake, real, torch.zeros(8, 2), torch.ones(4))
    assert torch.equal(terms.discriminator, torch.zeros(4))
    assert torch.equal(terms.generator, torch.full((4,), 2.0))


def test_the_discriminator_learns_and_its_gradient_moves_fakes_towards_the_data():
    torch.manual_seed(0)
    disc = NoisedDiscriminator(2, hidden=32)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    g = _gen(0)
    shift = torch.tensor([2.0, 0.0])
    first = None
    for _ in range(150):
        real = torch.randn(128, 2, generator=g)
        fake = real + shift  # the fakes are the data moved right
        t = noise_level(128, mean=-0.6, std=1.0, sigma_d=1.0, like=real, generator=g)
        terms = adversarial_terms(disc, fake, real, torch.randn(256, 2, generator=g), t)
        loss = terms.discriminator.mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.5 and float(loss) < 1.0  # 2 = chance (logits 0)
    fake = (torch.randn(256, 2, generator=g) + shift).requires_grad_(True)
    t = torch.full((256,), 0.9)
    terms = adversarial_terms(disc, fake, fake.detach() - shift, torch.zeros(512, 2), t)
    terms.generator.sum().backward()
    assert float((-fake.grad).mean(0) @ -shift) > 0  # descent moves the fakes to the left


def test_noise_levels_are_the_linear_path_times_of_the_logit_normal_angles():
    t = noise_level(20000, mean=-0.6, std=1.0, sigma_d=1.0, like=torch.zeros(1), generator=_gen())
    assert float(t.min()) > 0 and float(t.max()) < 1
    # t = 1 / (1 + tan tau) with log tan tau ~ N(-0.6, 1): median 1 / (1 + e^-0.6)
    assert abs(float(t.median()) - 1 / (1 + math.exp(-0.6))) < 0.01


@pytest.fixture
def oracle():
    return GaussianOracle(torch.tensor([1.0, -2.0]), 0.3)


def test_the_adversarial_term_adds_to_the_unchanged_scm_loss(oracle):
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2)
    disc = NoisedDiscriminator(2, feature_numel=2, hidden=16)
    x = oracle.sample_x1(16, _gen(0))
    plain = SCMStep(warmup=0)({"model": net, "teacher": oracle}, Batch(x), _gen(1))
    step = SCMStep(warmup=0, adversarial=0.5)
    assert step.trains == ("model", "discriminator") and SCMStep().trains == ("model",)
    out = step({"model": net, "teacher": oracle, "discriminator": disc}, Batch(x), _gen(1))
    torch.testing.assert_close(out.logs["scm_loss"], plain.loss.mean())
    assert {"adv_d_loss", "adv_g_loss", "adv_d_real", "adv_d_fake"} <= set(out.logs)
    out.loss.mean().backward()
    assert all(p.grad is not None for p in [*net.parameters(), *disc.parameters()])
    with pytest.raises(ValueError, match="discriminator"):
        step({"model": net, "teacher": oracle}, Batch(x), _gen(1))


def test_adversarial_options_are_checked_and_build_the_discriminator():
    with pytest.raises(ValueError, match="adv_one_step"):
        SCMStep(adversarial=0.5, adv_one_step=1.5)
    with pytest.raises(ValueError, match="adversarial"):
        SCMStep(adversarial=-1.0)
    with pytest.raises(ValueError, match=r"adv_one_step must be in \[0, 1\], got 2.0"):
        SCMConfig(adversarial=0.5, adv_one_step=2.0)
    cfg = SCMConfig(adversarial=0.5, adv_hidden=8)
    mods = cfg.extra_modules(MLP(64, hidden=8, depth=1), (1, 8, 8), None)
    assert isinstance(mods["discriminator"], NoisedDiscriminator)
    assert mods["discriminator"].net[0].in_features == 64 + 64 + 16
    assert SCMConfig().extra_modules(MLP(2), (2,), None) == {}


def test_the_adversarial_term_runs_on_images():
    from flowmatch.models import UNet

    torch.manual_seed(0)
    kw = {"in_channels": 1, "image_size": 8, "base_channels": 8, "channel_mults": (1, 2)}
    disc = SCMConfig(adversarial=0.5, adv_hidden=16).extra_modules(UNet(**kw), (1, 8, 8), None)
    out = SCMStep(adversarial=0.5)(
        {"model": UNet(**kw), "teacher": UNet(**kw), **disc},
        Batch(torch.randn(4, 1, 8, 8)),
        _gen(0),
    )
    assert out.loss.shape == (4,) and torch.isfinite(out.loss).all()
