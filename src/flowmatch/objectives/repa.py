"""Representation alignment to a frozen feature network (REPA; TORA's topological variant).

Yu et al. (2025), "Representation Alignment for Generation" (REPA): an intermediate layer of
the flow network, through a small trained projector, is aligned token by token with the
features a frozen pretrained encoder computes from the clean data. Lee, Chen, Pollefeys &
Hong (2026), "TORA" (arXiv:2604.04050), align the *similarity structure* instead, with
centred kernel alignment (CKA), invariant to rotations and scalings of either feature space:

    L = L_FM + weight * A,   A = -mean_tokens cos(P(h), f)           (measure = "cosine")
                             A = 1 - <K_h, K_f>_F / (|K_h|_F |K_f|_F)  (measure = "cka")

with ``h`` the student's features at ``x_t`` and ``f`` the teacher's at ``x1``, both taken from
the named submodule by a forward hook; ``K = Z_c Z_c^T`` the centred linear Gram matrix over
the tokens of a sample (over the batch when a sample has one token, e.g. an MLP on vectors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import CondSpec
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    ObjectiveStep,
    TrainingParts,
)
from flowmatch.objectives.flow_matching import (
    FlowMatchingConfig,
    FlowMatchingObjective,
    flow_matching_args,
)
from flowmatch.utils.options import OptionError, option

__all__ = ["AlignConfig", "AlignStep", "alignment_loss", "capture", "tokens"]


@dataclass(frozen=True)
class AlignConfig(FlowMatchingConfig):
    """Options of representation alignment (on top of flow matching's)."""

    teacher: str = option(
        "random",
        doc="frozen feature network: 'digits_classifier', 'autoencoder:RUN_DIR' (a library "
        "autoencoder) or 'random' (a fixed random MLP: the control)",
    )
    teacher_layer: str = option(
        "", doc="submodule of the teacher whose output are the features ('': the whole teacher)"
    )
    layer: str = option("net.3", doc="submodule of the flow network whose output is aligned")
    measure: Literal["cosine", "cka"] = option(
        "cosine", doc="token-wise cosine (REPA) or CKA (TORA)"
    )
    weight: float = option(0.5, ge=0, doc="weight of the alignment term")
    feature_dim: int = option(
        64, ge=1, doc="size of the teacher's features (the projector's output)"
    )
    projector_hidden: int = option(256, ge=1, doc="hidden width of the projector")

    def extra_modules(
        self, model: nn.Module, sample_shape: tuple[int, ...], cond: CondSpec
    ) -> dict[str, nn.Module]:
        """The trained projector from the student layer's channels to ``feature_dim``."""
        channels = _probe_channels(model, self.layer, sample_shape)
        return {
            "projector": nn.Sequential(
                nn.Linear(channels, self.projector_hidden),
                nn.SiLU(),
                nn.Linear(self.projector_hidden, self.feature_dim),
            )
        }


def tokens(features: Tensor) -> Tensor:
    """Features as tokens ``(B, N, C)``: ``(B, C)`` is one token, ``(B, C, *S)`` ``prod(S)``."""
    if features.ndim == 2:
        return features[:, None, :]
    return features.flatten(2).transpose(1, 2)


def _cka(a: Tensor, b: Tensor) -> Tensor:
    """Linear CKA of ``(..., N, C)`` and ``(..., N, C')`` over the ``N`` rows, shape ``(...)``."""
    a = a - a.mean(-2, keepdim=True)
    b = b - b.mean(-2, keepdim=True)
    ka, kb = a @ a.transpose(-1, -2), b @ b.transpose(-1, -2)
    num = (ka * kb).sum((-1, -2))
    return num / (ka.square().sum((-1, -2)).sqrt() * kb.square().sum((-1, -2)).sqrt() + 1e-12)


def alignment_loss(student: Tensor, teacher: Tensor, measure: str) -> Tensor:
    """Per-sample alignment loss ``(B,)`` of token features ``(B, N, C)`` and ``(B, N, C')``.

    ``"cosine"``: ``-mean_n cos(s_n, f_n)`` (``C = C'``). ``"cka"``: ``1 - CKA`` over the tokens
    of each sample, or over the batch when ``N = 1`` (then every sample gets the batch's value).
    Token counts that differ are mean-pooled to one token each.

    Raises:
        ValueError: an unknown measure, or cosine between features of different sizes.
    """
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    if measure == "cosine":
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(
                f"cosine alignment needs features of one size, got {student.shape[-1]} and "
                f"{teacher.shape[-1]} (set feature_dim to the teacher's size)"
            )
        return -F.cosine_similarity(student, teacher.to(student), dim=-1).mean(1)
    if measure == "cka":
        if student.shape[1] == 1:
            value = 1 - _cka(student[:, 0], teacher[:, 0].to(student))
            return value.expand(student.shape[0])
        return 1 - _cka(student, teacher.to(student))
    raise ValueError(f"unknown alignment measure {measure!r}; choose 'cosine' or 'cka'")


class capture:  # noqa: N801  (a context manager used like a function)
    """Context manager: the output of ``module.get_submodule(name)`` during the block.

    ``name = ""`` captures the module's own output. The hook is removed on exit.
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        self.target = _submodule(module, name)
        self.value: Tensor | None = None

    def __enter__(self) -> capture:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            self.value = out if isinstance(out, Tensor) else out[0]

        self.handle = self.target.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _submodule(module: nn.Module, name: str) -> nn.Module:
    inner = getattr(module, "module", module)  # DDP
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    try:
        return inner.get_submodule(name) if name else inner
    except AttributeError:
        names = [n for n, _ in inner.named_modules() if n]
        raise OptionError(
            "objective.layer",
            f"{name!r} is not a submodule of {type(inner).__name__}; one of {names}",
        ) from None


def _probe_channels(model: nn.Module, layer: str, sample_shape: tuple[int, ...]) -> int:
    x = torch.zeros(2, *sample_shape)
    with capture(model, layer) as cap, torch.no_grad():
        model(x, torch.full((2,), 0.5))
    if cap.value is None:
        raise OptionError("objective.layer", f"{layer!r} did not run in the model's forward")
    return int(tokens(cap.value).shape[-1])


class AlignStep(ObjectiveStep):
    """Flow matching plus alignment of a hooked student layer with a frozen teacher.

    Trains ``"model"`` and ``"projector"``; reads the frozen ``"teacher"`` (the application
    layer loads it from ``objective.teacher``). Logged: ``fm`` and ``align``.
    """

    uses = ("teacher",)

    def __init__(self, objective: FlowMatchingObjective, config: AlignConfig) -> None:
        super().__init__(objective)
        self.trains = ("model", "projector")
        self.config = config

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample ``L_FM + weight * A`` ``(B,)``."""
        cfg = self.config
        with capture(modules["model"], cfg.layer) as student:
            out = super().__call__(modules, batch, generator)
        with capture(modules["teacher"], cfg.teacher_layer) as teacher, torch.no_grad():
            modules["teacher"](batch.x1)
        assert student.value is not None and teacher.value is not None
        projected = modules["projector"](tokens(student.value))
        align = alignment_loss(projected, tokens(teacher.value).detach(), cfg.measure)
        loss = out.loss + cfg.weight * align
        return LossOutput(
            loss=loss, logs={"fm": out.loss.detach().mean(), "align": align.detach().mean()}
        )


def _build_align(config: ObjectiveConfig, *, parts: TrainingParts) -> AlignStep:
    assert isinstance(config, AlignConfig)  # guaranteed by Registry.build
    objective = FlowMatchingObjective(**flow_matching_args(config, parts))
    return AlignStep(objective, config)


OBJECTIVES.add("repa", AlignStep, config=AlignConfig, build=_build_align)
