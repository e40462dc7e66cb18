"""Latent flow matching from the application layer: fit or load the space a run flows in.

``data.latent`` names it: ``"pca:K"`` (exact PCA with ``K`` components, fitted on the training
split) or the directory of an autoencoder run (``flowmatch autoencoder train``). The space is
stored in the flow run's ``config.json`` (PCA: its matrices; autoencoder: the run it came
from, the checkpoint step and the latent scale), so ``load_run`` decodes without naming it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowmatch.data.batch import ArrayDataset, Standardizer
from flowmatch.latent.space import (
    Autoencoder,
    AutoencoderLatent,
    AutoencoderStep,
    JointLabelSpace,
    LatentSpace,
    PCALatent,
    unit_scale,
)
from flowmatch.utils.io import atomic_write_text
from flowmatch.utils.options import OptionError, Options, option
from flowmatch.utils.tensor import mix_seed

logger = logging.getLogger(__name__)

LATENT_FILE = "latent.json"
_AE_INIT_STREAM = 0xAE


@dataclass(frozen=True)
class AutoencoderConfig(Options):
    """Options of ``flowmatch autoencoder train`` (a small MLP autoencoder)."""

    latent_dim: int = option(16, ge=1, doc="code size k")
    hidden: int = option(256, ge=1, doc="hidden width of encoder and decoder")
    depth: int = option(2, ge=1, doc="hidden layers of the encoder (and of the decoder)")
    steps: int = option(4000, ge=1, doc="training steps")
    batch_size: int = option(256, ge=1, doc="samples per step")
    lr: float = option(1e-3, gt=0, doc="peak learning rate (AdamW, cosine decay)")
    seed: int = option(0, doc="initialisation and batch seed")


def parse_latent(spec: str) -> tuple[str, Any]:
    """``("pca", K)`` for ``"pca:K"``, else ``("autoencoder", Path)``.

    Raises:
        OptionError: a malformed ``pca:K`` or a directory without ``latent.json``.
    """
    if spec.startswith("pca:") or spec == "pca":
        k = spec.partition(":")[2]
        if not k.isdigit() or int(k) < 1:
            raise OptionError("data.latent", f"must look like pca:K with K >= 1, got {spec!r}")
        return "pca", int(k)
    path = Path(spec)
    if not (path / LATENT_FILE).is_file():
        raise OptionError(
            "data.latent",
            f"is neither pca:K nor an autoencoder run: {str(path / LATENT_FILE)!r} does not "
            "exist (train one with flowmatch autoencoder train --data NAME --out DIR)",
        )
    return "autoencoder", path


def latent_shape(spec: str | None, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one code for ``data.latent = spec`` (``sample_shape`` without one)."""
    if spec is None:
        return tuple(sample_shape)
    kind, arg = parse_latent(spec)
    if kind == "pca":
        return (int(arg),)
    return (int(json.loads((arg / LATENT_FILE).read_text())["latent_dim"]),)


def fit_latent(spec: str | None, train_ds: ArrayDataset) -> LatentSpace | None:
    """The latent space of ``data.latent = spec`` for the (model-space) training set.

    Raises:
        OptionError: a bad spec, or an autoencoder trained on other data (shape or
            standardisation differ).
    """
    if spec is None:
        return None
    kind, arg = parse_latent(spec)
    if kind == "pca":
        try:
            return PCALatent.fit(train_ds.x, arg)
        except ValueError as err:
            raise OptionError("data.latent", str(err)) from None
    space = load_autoencoder(arg)
    if space.sample_shape != tuple(train_ds.sample_shape):
        raise OptionError(
            "data.latent",
            f"autoencoder {str(arg)!r} encodes samples of shape {space.sample_shape}, the data "
            f"has {tuple(train_ds.sample_shape)}",
        )
    info = json.loads((arg / LATENT_FILE).read_text())
    std = train_ds.standardizer or Standardizer.identity(train_ds.sample_shape)
    if info.get("standardizer") != std.to_dict():
        raise OptionError(
            "data.latent",
            f"autoencoder {str(arg)!r} was trained on differently standardised data (train it "
            "on the same data set and data.standardize)",
        )
    return space


def latent_from_info(info: dict[str, Any] | None) -> LatentSpace | None:
    """Rebuild the latent space stored in a run's ``config.json`` (``None``: pixel run).

    Raises:
        FileNotFoundError: the autoencoder run it refers to is gone.
        ValueError: that run's checkpoint changed since the flow was trained.
    """
    if info is None:
        return None
    if info["kind"] == "pca":
        return PCALatent.from_dict(info)
    if info["kind"] == "joint_labels":
        return JointLabelSpace(tuple(info["sample_shape"]), info["num_classes"])
    space = load_autoencoder(Path(info["run"]))
    if space.source.get("step") != info.get("step"):
        raise ValueError(
            f"autoencoder run {info['run']!r} is at step {space.source.get('step')}, the flow "
            f"was trained on its step {info.get('step')}"
        )
    return space


def load_autoencoder(run_dir: str | Path) -> AutoencoderLatent:
    """The trained autoencoder of ``run_dir`` as a latent space (EMA weights when kept).

    Raises:
        FileNotFoundError: no ``latent.json`` or no checkpoint.
    """
    from flowmatch.train.checkpoint import load_checkpoint

    root = Path(run_dir)
    path = root / LATENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: is {str(root)!r} an autoencoder run?")
    info = json.loads(path.read_text())
    cfg = AutoencoderConfig.from_dict(info["config"])
    shape = tuple(info["sample_shape"])
    net = Autoencoder(math.prod(shape), cfg.latent_dim, hidden=cfg.hidden, depth=cfg.depth)
    ckpt = load_checkpoint(root)
    weights = ckpt.emas if ckpt.emas is not None else ckpt.modules
    net.load_state_dict(weights["autoencoder"])
    source = {"run": str(root.resolve()), "step": ckpt.step}
    return AutoencoderLatent(net, info["scale"], torch.tensor(info["shift"]), shape, source)


def train_autoencoder(
    train_ds: ArrayDataset,
    out_dir: str | Path,
    config: AutoencoderConfig | None = None,
    *,
    test_ds: ArrayDataset | None = None,
    callbacks: Any = (),
) -> dict[str, Any]:
    """Train an :class:`~flowmatch.latent.Autoencoder` on ``train_ds`` and write ``latent.json``.

    The run directory holds the trainer's checkpoints and ``latent.json``: the options, the
    data description, the latent scale and shift (unit-variance codes), and the mean squared
    reconstruction error on the training and held-out sets (model space).

    Returns:
        The content of ``latent.json``.
    """
    from flowmatch.api.run import data_info
    from flowmatch.train import TrainConfig, Trainer

    cfg = config or AutoencoderConfig()
    out = Path(out_dir)
    dim = math.prod(train_ds.sample_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(cfg.seed, _AE_INIT_STREAM))
        net = Autoencoder(dim, cfg.latent_dim, hidden=cfg.hidden, depth=cfg.depth)
    plain = ArrayDataset(train_ds.x, standardizer=train_ds.standardizer, name=train_ds.name)
    tc = TrainConfig(
        steps=cfg.steps,
        batch_size=min(cfg.batch_size, len(plain)),
        lr=cfg.lr,
        seed=cfg.seed,
        log_every=min(200, cfg.steps),
        checkpoint_every=0,
    )
    trainer = Trainer(
        {"autoencoder": net}, AutoencoderStep(), plain, tc, out_dir=out, callbacks=callbacks
    )
    with trainer:
        trainer.fit()
    space = load_autoencoder_weights(trainer, cfg, tuple(train_ds.sample_shape), train_ds)
    std = train_ds.standardizer or Standardizer.identity(train_ds.sample_shape)
    info: dict[str, Any] = {
        "config": cfg.to_dict(),
        "data": data_info(plain),
        "standardizer": std.to_dict(),
        "sample_shape": list(train_ds.sample_shape),
        "latent_dim": cfg.latent_dim,
        "scale": space.scale,
        "shift": space.shift.tolist(),
        "recon_mse_train": _recon_mse(space, train_ds.x),
    }
    if test_ds is not None:
        info["recon_mse_test"] = _recon_mse(space, test_ds.x)
    atomic_write_text(out / LATENT_FILE, json.dumps(info, indent=2))
    return info


def load_autoencoder_weights(
    trainer: Any, cfg: AutoencoderConfig, shape: tuple[int, ...], train_ds: ArrayDataset
) -> AutoencoderLatent:
    """The trained (EMA) autoencoder of ``trainer`` with the unit scale of its training codes."""
    emas = trainer.emas
    net = (
        emas["autoencoder"].module_synced() if emas is not None else trainer.modules["autoencoder"]
    )
    net = net.cpu().eval()
    with torch.no_grad():
        codes = net.encoder(train_ds.x.reshape(len(train_ds), -1).cpu())
    scale, shift = unit_scale(codes)
    return AutoencoderLatent(net, scale, shift, shape)


def _recon_mse(space: LatentSpace, x: torch.Tensor) -> float:
    return float((space.reconstruct(x) - x).square().mean())


__all__ = [
    "AutoencoderConfig",
    "fit_latent",
    "latent_from_info",
    "latent_shape",
    "load_autoencoder",
    "parse_latent",
    "train_autoencoder",
]
