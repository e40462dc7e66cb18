"""Latent spaces for flow matching: encode the data, flow in the codes, decode the samples.

``z = scale * (E(x) - shift)`` with a scalar ``scale`` that gives the training codes unit
variance (the "latent scale factor" of latent diffusion and LFM; Dao et al. 2023, "Flow
Matching in Latent Space", arXiv:2307.08698): a mis-scaled latent is a mis-scaled Gaussian
source. Two encoders ship: exact PCA (linear, fitted in closed form) and a small MLP
autoencoder trained by the library (``flowmatch autoencoder train``). Samples and metrics are
decoded; the decoder's own error is a floor no latent flow can beat.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.data.batch import ArrayDataset, Batch
from flowmatch.objectives.base import LossOutput, TrainingStep
from flowmatch.utils.checks import check_positive_int

__all__ = [
    "Autoencoder",
    "AutoencoderLatent",
    "AutoencoderStep",
    "JointLabelSpace",
    "LatentSpace",
    "PCALatent",
    "encode_dataset",
    "unit_scale",
]


def unit_scale(codes: Tensor) -> tuple[float, Tensor]:
    """``(scale, shift)``: ``shift`` the mean code, ``scale = 1 / std`` over all coordinates."""
    flat = codes.reshape(codes.shape[0], -1).double()
    shift = flat.mean(0)
    std = float((flat - shift).square().mean().sqrt())
    if not std > 0:
        raise ValueError("the codes are constant: cannot scale them to unit variance")
    return 1.0 / std, shift.to(codes.dtype).reshape(codes.shape[1:])


class LatentSpace(ABC):
    """``encode: (N, *D) -> (N, *L)`` and ``decode: (N, *L) -> (N, *D)``, codes of unit variance.

    Attributes:
        sample_shape: shape ``D`` of one data sample.
        latent_shape: shape ``L`` of one code.
    """

    sample_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(N, *L)`` of data ``(N, *D)`` (scaled to unit variance)."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Data ``(N, *D)`` of codes ``(N, *L)``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON description from which the run rebuilds this space."""

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: what the space can represent of ``x``."""
        return self.decode(self.encode(x))


class PCALatent(LatentSpace):
    """Exact PCA: ``z = s (x - m) V^T`` with the top-``k`` principal directions ``V`` ``(k, D)``.

    ``decode(z) = m + (z / s) V``. Orthonormal rows make ``encode(decode(z)) = z`` exactly and
    ``decode(encode(x))`` the orthogonal projection of ``x`` onto the ``k``-dimensional
    principal subspace through the mean (the identity for ``k = D``).

    Args:
        mean: data mean ``(D,)``.
        components: principal directions ``(k, D)``, orthonormal rows.
        scale: the scalar making the training codes unit variance.
        sample_shape: shape of one data sample (``prod = D``).
    """

    def __init__(
        self, mean: Tensor, components: Tensor, scale: float, sample_shape: tuple[int, ...]
    ) -> None:
        self.mean, self.components, self.scale = mean, components, float(scale)
        self.sample_shape = tuple(sample_shape)
        self.latent_shape = (int(components.shape[0]),)
        if components.ndim != 2 or components.shape[1] != math.prod(self.sample_shape):
            raise ValueError(
                f"components must be (k, D) with D = {math.prod(self.sample_shape)}, got "
                f"{tuple(components.shape)}"
            )

    def __repr__(self) -> str:
        return f"PCALatent(k={self.latent_shape[0]}, D={self.components.shape[1]})"

    @classmethod
    def fit(cls, x: Tensor, k: int) -> PCALatent:
        """Fit on data ``(N, *D)`` with ``k`` components (SVD of the centred data, float64).

        Raises:
            ValueError: ``k`` outside ``[1, min(N, D)]``.
        """
        check_positive_int(k, "k")
        flat = x.reshape(x.shape[0], -1).double()
        if k > min(flat.shape):
            raise ValueError(f"PCA with k={k} components needs k <= min(N, D) = {min(flat.shape)}")
        mean = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        comps = vh[:k]
        codes = (flat - mean) @ comps.T
        scale = 1.0 / float(codes.square().mean().sqrt())
        return cls(mean.float(), comps.float(), scale, tuple(x.shape[1:]))

    def encode(self, x: Tensor) -> Tensor:
        """``s (x - m) V^T``, ``(N, k)``."""
        flat = x.reshape(x.shape[0], -1)
        return self.scale * (flat - self.mean.to(flat)) @ self.components.to(flat).T

    def decode(self, z: Tensor) -> Tensor:
        """``m + (z / s) V``, reshaped to ``(N, *D)``."""
        flat = self.mean.to(z) + (z / self.scale) @ self.components.to(z)
        return flat.reshape(z.shape[0], *self.sample_shape)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "pca", mean, components, scale, sample_shape}``."""
        return {
            "kind": "pca",
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "scale": self.scale,
            "sample_shape": list(self.sample_shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PCALatent:
        """Inverse of :meth:`to_dict`."""
        return cls(
            torch.tensor(d["mean"]),
            torch.tensor(d["components"]),
            d["scale"],
            tuple(d["sample_shape"]),
        )


class Autoencoder(nn.Module):
    """A small MLP autoencoder ``D -> h (x depth) -> k -> h (x depth) -> D`` (SiLU).

    Args:
        dim: number of features ``D``.
        latent_dim: code size ``k``.
        hidden: hidden width.
        depth: hidden layers of the encoder (and of the decoder).
    """

    def __init__(self, dim: int, latent_dim: int, *, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")

        def mlp(n_in: int, n_out: int) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.SiLU()]
            for _ in range(depth - 1):
                layers += [nn.Linear(hidden, hidden), nn.SiLU()]
            return nn.Sequential(*layers, nn.Linear(hidden, n_out))

        self.encoder = mlp(dim, latent_dim)
        self.decoder = mlp(latent_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` ``(N, D)``."""
        return self.decoder(self.encoder(x))


class AutoencoderLatent(LatentSpace):
    """An :class:`Autoencoder` as a latent space: ``z = s (E(x) - c)``, ``x = D(z / s + c)``.

    Args:
        net: the trained autoencoder (eval mode; its parameters are not trained further).
        scale: the scalar making the training codes unit variance.
        shift: the mean training code ``(k,)``.
        sample_shape: shape of one data sample.
        source: a JSON description of where the weights live (the autoencoder run), stored
            in the flow run by :meth:`to_dict`.
    """

    def __init__(
        self,
        net: Autoencoder,
        scale: float,
        shift: Tensor,
        sample_shape: tuple[int, ...],
        source: dict[str, Any] | None = None,
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.scale, self.shift = float(scale), shift
        self.sample_shape = tuple(sample_shape)
        self.latent_shape = (net.latent_dim,)
        self.source = dict(source or {})

    def __repr__(self) -> str:
        return f"AutoencoderLatent(k={self.latent_shape[0]}, source={self.source})"

    def encode(self, x: Tensor) -> Tensor:
        """Scaled codes ``(N, k)``."""
        with torch.no_grad():
            codes = self.net.encoder(x.reshape(x.shape[0], -1).to(self.shift.dtype))
        return (self.scale * (codes - self.shift)).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """Decoded data ``(N, *D)``."""
        with torch.no_grad():
            x = self.net.decoder((z / self.scale).to(self.shift.dtype) + self.shift)
        return x.reshape(z.shape[0], *self.sample_shape).to(z.dtype)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "autoencoder", scale, shift, sample_shape, **source}``."""
        return {
            "kind": "autoencoder",
            "scale": self.scale,
            "shift": self.shift.tolist(),
            "sample_shape": list(self.sample_shape),
            **self.source,
        }


def encode_dataset(space: LatentSpace | None, ds: ArrayDataset) -> ArrayDataset:
    """The data set in latent space (same labels, values and context); itself without a space."""
    if space is None:
        return ds
    z = space.encode(ds.x)
    meta = {**ds.meta, "latent": repr(space)}
    return ArrayDataset(
        z,
        labels=ds.labels,
        num_classes=ds.num_classes,
        name=ds.name,
        meta=meta,
        values=ds.values,
        context=ds.context,
        values_standardizer=ds.values_standardizer,
    )


class AutoencoderStep(TrainingStep):
    """Training step of the autoencoder: ``L = mean_D (D(E(x)) - x)^2`` per sample.

    Trains the module ``"autoencoder"`` (an :class:`Autoencoder`); the data are the run's
    training set in model space (standardised), flattened.
    """

    trains = ("autoencoder",)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample reconstruction errors ``(B,)``."""
        x = batch.x1.reshape(batch.x1.shape[0], -1)
        err = (modules["autoencoder"](x) - x).square().mean(1)
        return LossOutput(loss=err)

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """An autoencoder has no field to sample.

        Raises:
            TypeError: always.
        """
        raise TypeError("an autoencoder run has no velocity field; use it as data.latent")


class JointLabelSpace(LatentSpace):
    """Samples with ``K`` label channels appended: ``z = [flatten(x), 0_K]``, ``x = z[:, :D]``.

    The state space of symmetrical flow matching (Caetano et al. 2026), where one flow moves
    the image block and a label block in opposite time directions; ``decode`` keeps the
    image block. Exact: ``decode(encode(x)) = x``.

    Args:
        sample_shape: shape ``D`` of one data sample.
        num_classes: number ``K`` of label channels.
    """

    def __init__(self, sample_shape: tuple[int, ...], num_classes: int) -> None:
        self.sample_shape = tuple(sample_shape)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.dim = math.prod(self.sample_shape)
        self.latent_shape = (self.dim + self.num_classes,)

    def __repr__(self) -> str:
        return f"JointLabelSpace(D={self.dim}, K={self.num_classes})"

    def encode(self, x: Tensor) -> Tensor:
        """``[flatten(x), 0_K]``, ``(N, D + K)``."""
        flat = x.reshape(x.shape[0], -1)
        return torch.cat([flat, flat.new_zeros(flat.shape[0], self.num_classes)], dim=1)

    def decode(self, z: Tensor) -> Tensor:
        """The image block ``(N, *D)``."""
        return z[:, : self.dim].reshape(z.shape[0], *self.sample_shape)

    def labels(self, z: Tensor) -> Tensor:
        """The label block ``(N, K)``."""
        return z[:, self.dim :]

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "joint_labels", sample_shape, num_classes}``."""
        return {
            "kind": "joint_labels",
            "sample_shape": list(self.sample_shape),
            "num_classes": self.num_classes,
        }
