"""A trained run, loaded so that it knows how to sample itself: field, source, path, defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.api.config import data_fingerprint, read_run_info, stored_config
from flowmatch.api.latent import latent_from_info
from flowmatch.config.build import build_modules, build_parts, build_step, restore_source
from flowmatch.config.schema import RunConfig, SampleConfig
from flowmatch.data.batch import ArrayDataset, Standardizer
from flowmatch.interfaces import Cond, CondSpec, cond_to
from flowmatch.latent.space import LatentSpace
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import Source
from flowmatch.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.tensor import step_generator

#: Source noise is drawn in chunks of this many samples, each from its own generator.
NOISE_CHUNK = 1024
_NOISE_STREAM = 0x5A


@dataclass
class Run:
    """A trained model with everything sampling, evaluation, likelihood and inversion need.

    Attributes:
        modules: the trained modules by name (EMA weights when loaded with ``use_ema``), in
            eval mode.
        field: what sampling integrates: a velocity field ``(x, t, cond) -> (B, *D)`` whatever
            the network predicts (an ``x1``/``x0``-prediction is converted through the path),
            or a flow map for two-time methods.
        source: the source distribution ``p0`` the run was trained from (its fitted state
            restored, e.g. a norm-aligned scale; the trained module for a learned source).
        path: the probability path.
        standardizer: maps model space to data space (``inverse``).
        cond: the conditioning the model takes (empty for an unconditional run).
        sample: the run's sampling defaults (solver and budget, grid, guidance, EMA).
        config: the run's configuration.
        step: the training step of the loaded weights.
        checkpoint: the checkpoint directory (``None`` for a run built from live modules).
        info: the stored ``config.json`` content.
        directory: the run directory (``None`` for a run built from live modules); holds what
            is computed once per run (e.g. ``grids.json``: BOSS grids).
        values_standardizer: maps data-space condition values to what the model sees
            (``None``: values used as given, or no values).
        latent: the latent space the flow lives in (``data.latent``), or ``None``: samples
            are decoded (:meth:`decode`) before :meth:`to_data_space`.
    """

    modules: dict[str, nn.Module]
    field: Any
    source: Source
    path: AffinePath
    standardizer: Standardizer
    cond: CondSpec
    sample: SampleConfig
    config: RunConfig
    step: int
    checkpoint: Path | None
    info: dict[str, Any]
    directory: Path | None = None
    values_standardizer: Standardizer | None = None
    latent: LatentSpace | None = None

    @property
    def model(self) -> nn.Module:
        """The main trained network (``modules["model"]``)."""
        return self.modules["model"]

    @property
    def num_classes(self) -> int | None:
        """Classes of a label-conditional model, else ``None``."""
        return self.cond.num_classes

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape ``D`` of one sample."""
        return tuple(self.info["data"]["sample_shape"])

    @property
    def model_shape(self) -> tuple[int, ...]:
        """Shape of one state of the flow: the code shape of a latent run, else ``D``."""
        return model_shape(self.info)

    def decode(self, z: Tensor) -> Tensor:
        """Flow states ``(N, *model_shape)`` as model-space samples ``(N, *D)``."""
        return z if self.latent is None else self.latent.decode(z)

    def encode(self, x: Tensor) -> Tensor:
        """Model-space samples ``(N, *D)`` as flow states (codes of a latent run)."""
        return x if self.latent is None else self.latent.encode(x)

    @property
    def device(self) -> torch.device:
        """Where the modules live."""
        return next(self.model.parameters()).device

    def to_data_space(self, x: Tensor) -> Tensor:
        """Map model-space samples ``(N, *D)`` to data space."""
        return self.standardizer.inverse(x)

    def noise(self, num_samples: int, *, seed: int, cond: Cond = None) -> Tensor:
        """Source samples ``(N, *D)`` where sample ``i`` depends only on ``(seed, i)``.

        Drawn in fixed chunks of :data:`NOISE_CHUNK` samples, each from its own generator,
        so a sample does not change with the batch size or the number of samples requested.
        A condition-dependent source (``source.conditional``, e.g. a learned CSFM source)
        maps standard-normal noise drawn the same way and each sample's condition ``cond``
        (``N`` rows, model space) to ``x0``.

        Raises:
            TypeError, ValueError: ``num_samples`` is not an int ``>= 1``.
        """
        check_positive_int(num_samples, "num_samples")
        if self.source.conditional:
            eps = [
                torch.randn(
                    (NOISE_CHUNK, *self.model_shape),
                    generator=step_generator(seed, _NOISE_STREAM, k),
                )
                for k in range(math.ceil(num_samples / NOISE_CHUNK))
            ]
            with torch.no_grad():
                return self.source.transform(  # type: ignore[attr-defined]
                    torch.cat(eps)[:num_samples].to(self.device), cond_to(cond, self.device)
                )
        chunks = [
            self.source.sample(
                (NOISE_CHUNK, *self.model_shape), step_generator(seed, _NOISE_STREAM, k)
            )
            for k in range(math.ceil(num_samples / NOISE_CHUNK))
        ]
        return torch.cat(chunks)[:num_samples].to(self.device)


def data_info(ds: ArrayDataset) -> dict[str, Any]:
    """The description of a training set stored in ``config.json`` (what loading needs).

    Includes ``fingerprint`` (:func:`~flowmatch.api.config.data_fingerprint`: shape, dtype,
    sha256 of the data, labels and standardiser), checked when the run is resumed or
    evaluated, and ``given``: the data path as the user typed it (the config stores it
    absolute).
    """
    std = ds.standardizer or Standardizer.identity(ds.sample_shape)
    info = {
        "name": ds.name,
        "kind": ds.meta.get("kind", ""),
        "sample_shape": list(ds.sample_shape),
        "num_train": len(ds),
        "num_classes": ds.num_classes,
        "labelled": ds.labels is not None,
        "standardizer": std.to_dict(),
        "fingerprint": data_fingerprint(ds),
    }
    if "given" in ds.meta:
        info["given"] = ds.meta["given"]
    if "class_names" in ds.meta:
        info["class_names"] = list(ds.meta["class_names"])
    if ds.values is not None:
        info["values_dim"] = int(ds.values.shape[1])
        if ds.values_standardizer is not None:
            info["values_standardizer"] = ds.values_standardizer.to_dict()
        if "cond_names" in ds.meta:
            info["cond_names"] = list(ds.meta["cond_names"])
    if ds.context is not None:
        info["context_shape"] = list(ds.context.shape[1:])
    return info


def run_cond(info: dict[str, Any]) -> CondSpec:
    """The conditioning of a stored run (what its training set carried, see :func:`data_info`).

    Labels count only for conditional runs (``labelled``); values and context are stored only
    when the model was conditioned on them. Runs written before values/context existed have
    neither.
    """
    data = info["data"]
    context = data.get("context_shape")
    return CondSpec(
        num_classes=data["num_classes"] if data["labelled"] else None,
        values_dim=data.get("values_dim"),
        context_shape=None if context is None else tuple(context),
    )


def model_shape(info: dict[str, Any]) -> tuple[int, ...]:
    """The shape the flow of a stored run lives in (``model_shape``, else ``sample_shape``)."""
    data = info["data"]
    return tuple(data.get("model_shape", data["sample_shape"]))


def run_values_standardizer(info: dict[str, Any]) -> Standardizer | None:
    """The stored map of condition values to model space (``None``: used as given)."""
    d = info["data"].get("values_standardizer")
    return None if d is None else Standardizer.from_dict(d)


def assemble_run(
    cfg: RunConfig,
    info: dict[str, Any],
    modules: Mapping[str, nn.Module],
    *,
    step: int,
    checkpoint: Path | None = None,
) -> Run:
    """A :class:`Run` from a config, its stored description and live modules."""
    cond = run_cond(info)
    shape = model_shape(info)
    parts = build_parts(cfg, shape, cond)
    field = build_step(parts, cfg).field(modules)
    std = Standardizer.from_dict(info["data"]["standardizer"])
    # A learned source is the trained module "source"; a fitted one gets its stored state.
    learned = modules.get("source")
    source = (
        learned
        if isinstance(learned, Source)
        else restore_source(parts.source, info.get("source_state"))
    )
    return Run(
        dict(modules),
        field,
        source,
        parts.path,
        std,
        cond,
        cfg.sample,
        cfg,
        step,
        checkpoint,
        info,
        values_standardizer=run_values_standardizer(info),
        latent=latent_from_info(info.get("latent")),
    )


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    use_ema: bool | None = None,
    device: str | torch.device = "cpu",
) -> Run:
    """Load a trained run (EMA weights when the run kept them and ``use_ema``).

    Args:
        run_dir: the run directory (holds ``config.json``).
        checkpoint: a ``step_XXXXXXX`` directory; default the run's latest checkpoint.
        use_ema: load the EMA weights if the run kept them; ``None``: the run's
            ``sample.use_ema``.
        device: where to put the modules.

    Raises:
        FileNotFoundError: no ``config.json`` or no checkpoint (the message names the path).
        CheckpointError: a checkpoint file is corrupt (size/sha256 mismatch, bad header),
            edited (its step or checksum), or belongs to another run (its ``run_id`` is not
            the one in ``config.json``).
        ValueError: ``config.json`` is malformed, the checkpoint does not fit the run's
            modules (one line naming the run and the cause), or ``device`` is not a device.
        TypeError: ``use_ema`` is not a bool or ``None``.
    """
    if use_ema is not None and not isinstance(use_ema, bool):
        raise TypeError(f"use_ema must be True, False or None, got {use_ema!r}")
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device {device!r} is not a valid torch device (e.g. 'cpu', 'cuda', 'cuda:1'): {err}"
        ) from None
    info = read_run_info(run_dir)
    cfg = stored_config(info, where=str(Path(run_dir) / "config.json"))
    cond, shape = run_cond(info), model_shape(info)
    modules = build_modules(cfg, shape, cond)
    if checkpoint is None and latest_checkpoint(run_dir) is None:
        raise FileNotFoundError(
            f"run {str(run_dir)!r} has no checkpoint yet: training failed or was stopped "
            f"before the first one (train.checkpoint_every = {cfg.train.checkpoint_every})"
        )
    ckpt = load_checkpoint(
        checkpoint if checkpoint is not None else run_dir, run_id=info.get("run_id")
    )
    if info.get("run_id") is None and ckpt.run_id is not None:
        raise CheckpointError(
            f"{Path(run_dir) / 'config.json'} has no run id but checkpoint {ckpt.path} belongs "
            f"to run {ckpt.run_id}: the config was replaced (flowmatch writes the id into both)"
        )
    ema = cfg.sample.use_ema if use_ema is None else use_ema
    weights = ckpt.emas if ema and ckpt.emas is not None else ckpt.modules
    for name, module in modules.items():
        if name not in weights:
            raise ValueError(f"checkpoint {ckpt.path} has no weights for module {name!r}")
        try:
            module.load_state_dict(weights[name])
        except (RuntimeError, KeyError) as err:
            detail = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
            raise ValueError(
                f"checkpoint {ckpt.path} does not fit run {str(run_dir)!r} (another "
                f"architecture?): {detail[0] if detail else err}"
            ) from None
        module.to(device).eval()
    run = assemble_run(cfg, info, modules, step=ckpt.step, checkpoint=ckpt.path)
    run.directory = Path(run_dir)
    return run
