"""Small pieces shared by the training methods built on flow matching."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Prediction, cond_batch_size
from flowmatch.paths.affine import AffinePath, PathSample
from flowmatch.utils.checks import check_batch


def per_sample_mse(out: Tensor, target: Tensor) -> Tensor:
    """``mean_D (out - target)^2`` per sample, ``(B,)``, in at least float32.

    Raises:
        ValueError: ``out`` is not shaped like ``target`` (a ``(B,)`` or ``(B, 1)`` output
            would broadcast silently).
    """
    if out.shape != target.shape:
        raise ValueError(
            f"model output must have the shape of x1 {tuple(target.shape)}, got {tuple(out.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(out.dtype, target.dtype), torch.float32)
    diff = out.to(dtype) - target.to(dtype)
    return diff.square().reshape(diff.shape[0], -1).mean(1)


def regression(
    path: AffinePath,
    prediction: Prediction,
    loss_space: str,
    out: Tensor,
    x0: Tensor,
    x1: Tensor,
    sample: PathSample,
) -> tuple[Tensor, Tensor]:
    """``(output, target)`` to compare, for endpoint targets ``(x0, x1)`` at ``sample``.

    The target of a network predicting ``prediction`` is ``path.from_endpoints(x0, x1)`` in
    that parameterisation (``x0``, ``x1`` may be averages over candidate endpoints, as in
    PAFM). With ``loss_space = "velocity"`` an ``x1``/``x0`` output is converted to a velocity
    and compared with the target converted the same way (Li & He 2025, JiT), as
    ``FlowMatchingObjective``.
    """
    xt, t = sample.xt, sample.t
    target = path.from_endpoints(x0, x1, dst=prediction, xt=xt, t=t)
    if loss_space == "velocity" and prediction != "velocity" and out.shape == xt.shape:
        # Both through the same (clamped) conversion, as FlowMatchingObjective.
        out = path.convert(out, src=prediction, dst="velocity", xt=xt, t=t)
        target = path.convert(target, src=prediction, dst="velocity", xt=xt, t=t)
    return out, target


def prediction_field(model: nn.Module, path: AffinePath, prediction: Prediction) -> Any:
    """``model`` as a velocity field (an ``x1``/``x0``-prediction converted through ``path``)."""
    if prediction == "velocity":
        return model
    from flowmatch.models.adapters import PredictionAdapter

    return PredictionAdapter(model, path, prediction)


def batch_labels(cond: Any) -> Tensor | None:
    """The class labels of a batch's condition (a bare tensor or ``Condition.labels``)."""
    return cond if isinstance(cond, Tensor) else getattr(cond, "labels", None)


def checked_batch_labels(x1: Tensor, cond: Any) -> Tensor | None:
    """Check a data batch ``x1`` ``(B, *D)`` and its condition's batch size; its labels.

    Raises:
        TypeError/ValueError: ``x1`` is not a floating ``(B, *D)`` batch, or ``cond`` holds
            another number of rows than ``B``.
    """
    check_batch(x1, "x1")
    b = x1.shape[0]
    if cond is not None and cond_batch_size(cond) != b:
        raise ValueError(f"cond must have batch size B = {b}, got {cond_batch_size(cond)}")
    return batch_labels(cond)
