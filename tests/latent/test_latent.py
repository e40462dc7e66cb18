"""Latent spaces: round trips, unit-variance codes, and latent runs end to end (tiny)."""

from __future__ import annotations

import json

import pytest
import torch

from flowmatch import api
from flowmatch.api.latent import (
    AutoencoderConfig,
    fit_latent,
    latent_from_info,
    load_autoencoder,
    train_autoencoder,
)
from flowmatch.cli.main import main
from flowmatch.data import ArrayDataset
from flowmatch.latent import PCALatent, encode_dataset, unit_scale
from flowmatch.utils.options import OptionError

F64 = torch.float64


def _data(n=300, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return torch.randn(n, d, generator=g, dtype=F64) @ a + 1.0


def test_pca_round_trips():
    x = _data()
    full = PCALatent.fit(x, 6)
    full.mean, full.components = full.mean.double(), full.components.double()
    torch.testing.assert_close(full.reconstruct(x), x, atol=1e-5, rtol=0)  # float32 storage
    part = PCALatent.fit(x, 3)
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(part.encode(part.decode(z)), z, atol=1e-5, rtol=0)
    r = part.reconstruct(x)
    torch.testing.assert_close(part.reconstruct(r), r, atol=1e-5, rtol=0)  # a projection
    # The residual is orthogonal to the principal subspace.
    resid = (x - r) @ part.components.double().T
    assert resid.abs().max() < 1e-4
    # Training codes have unit variance (the latent scale), and the description round-trips.
    codes = part.encode(x)
    assert codes.square().mean().item() == pytest.approx(1.0, rel=1e-5)
    again = PCALatent.from_dict(json.loads(json.dumps(part.to_dict())))
    torch.testing.assert_close(again.encode(x), part.encode(x))
    with pytest.raises(ValueError, match="k <= min"):
        PCALatent.fit(x, 7)


def test_unit_scale():
    codes = 3.0 * torch.randn(1000, 4, generator=torch.Generator().manual_seed(0)) + 2
    scale, shift = unit_scale(codes)
    z = scale * (codes - shift)
    assert z.mean().abs() < 1e-5 and z.square().mean().item() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="constant"):
        unit_scale(torch.ones(5, 2))


TINY = ["train.log_every=5", "train.checkpoint_every=0", "sample.num_samples=8"]
TINY += ["train.batch_size=64", "model.hidden=16", "model.depth=1", "eval.num_samples=64"]


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    _, train, test = api.resolve_config(data="digits")
    cfg = AutoencoderConfig(latent_dim=4, hidden=16, depth=1, steps=20, batch_size=64)
    info = train_autoencoder(train, out, cfg, test_ds=test)
    assert {"scale", "shift", "recon_mse_train", "recon_mse_test"} <= set(info)
    return out


def test_autoencoder_codes_are_unit_variance_and_reload(ae_dir):
    _, train, _ = api.resolve_config(data="digits")
    space = load_autoencoder(ae_dir)
    z = space.encode(train.x)
    assert z.shape == (len(train), 4)
    assert z.square().mean().item() == pytest.approx(1.0, rel=1e-3)
    assert z.mean(0).abs().max() < 1e-3
    x = space.decode(z[:5])
    assert x.shape == (5, 1, 8, 8)
    again = latent_from_info(space.to_dict())
    torch.testing.assert_close(again.encode(train.x[:5]), z[:5])


@pytest.mark.parametrize("latent", ["pca:4", "ae"])
def test_latent_run_end_to_end(tmp_path, ae_dir, latent):
    spec = str(ae_dir) if latent == "ae" else latent
    cfg, train, test = api.resolve_config(
        data="digits", steps=4, overrides=[*TINY, f"data.latent={spec}"]
    )
    assert cfg.model.kind == "mlp"  # the latent preset
    api.train_run(cfg, train, out_dir=tmp_path, test_ds=test)
    run = api.load_run(tmp_path)
    assert run.latent is not None and run.model_shape == (4,) and run.sample_shape == (1, 8, 8)
    assert run.noise(5, seed=0).shape == (5, 4)
    res = api.generate(run, 6, solver="euler", nfe=2)
    assert res.samples.shape == (6, 1, 8, 8)  # decoded, in data space
    report = api.evaluate(run, test, nfe=[2], solvers=["euler"], reference=None, train_ds=train)
    assert set(report["latent_floor"]) >= {"fd_digits"}
    # The latent floor is the train/test floor through the latent space.
    codes = encode_dataset(run.latent, train)
    assert codes.sample_shape == (4,) and codes.labels is not None


def test_latent_errors(tmp_path, ae_dir):
    _, train, _ = api.resolve_config(data="digits")
    with pytest.raises(OptionError, match="pca:K"):
        fit_latent("pca:0", train)
    with pytest.raises(OptionError, match="latent.json"):
        fit_latent(str(tmp_path), train)
    other = ArrayDataset(train.x.reshape(len(train), -1)[:, :32].contiguous())
    with pytest.raises(OptionError, match="encodes samples of shape"):
        fit_latent(str(ae_dir), other)
    from flowmatch.data.batch import Standardizer

    std = Standardizer(torch.full((1, 8, 8), 0.5), torch.ones(1, 8, 8))
    shifted = ArrayDataset(train.x, standardizer=std)
    with pytest.raises(OptionError, match="differently standardised"):
        fit_latent(str(ae_dir), shifted)
    info = load_autoencoder(ae_dir).to_dict()
    with pytest.raises(ValueError, match="the flow was trained on its step"):
        latent_from_info({**info, "step": 999})


def test_autoencoder_cli(tmp_path, capsys):
    out = tmp_path / "ae"
    args = ["autoencoder", "train", "--data", "digits", "--out", str(out), "--quiet"]
    assert main([*args, "--set", "steps=5", "--set", "latent_dim=3"]) == 0
    assert "data.latent=" in capsys.readouterr().out
    assert json.loads((out / "latent.json").read_text())["latent_dim"] == 3
    assert main([*args, "--set", "bogus=1"]) == 2
    assert "autoencoder option 'bogus'" in capsys.readouterr().err
    run = tmp_path / "fm"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--steps",
                "3",
                "--out",
                str(run),
                "--quiet",
                "--set",
                f"data.latent={out}",
                *[f"--set={s}" for s in TINY],
            ]
        )
        == 0
    )
    assert main(["eval", str(run), "--nfe", "2", "--no-reference", "--num-samples", "32"]) == 0
    assert "decoded" in capsys.readouterr().out


def test_latent_run_resumes_and_is_checked_against_its_raw_data(tmp_path):
    # The data fingerprint is of the data as given (not of the codes), so a latent run
    # resumes, and its stored latent space and model shape survive the config rewrite.
    over = [*TINY, "data.latent=pca:4", "train.checkpoint_every=2"]
    cfg, train, test = api.resolve_config(data="digits", steps=2, overrides=over)
    api.train_run(cfg, train, out_dir=tmp_path)
    cfg3, _ = api.resume_config(tmp_path, steps=4)
    again, _ = api.load_run_data(cfg3, api.read_run_info(tmp_path), tmp_path)
    api.train_run(cfg3, again, out_dir=tmp_path, resume=True)
    run = api.load_run(tmp_path)
    assert run.step == 4 and run.model_shape == (4,) and run.latent is not None
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["latent"]["kind"] == "pca" and info["data"]["model_shape"] == [4]
    info["data"]["model_shape"] = [0]
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="data.model_shape must be"):
        api.load_run(tmp_path)
