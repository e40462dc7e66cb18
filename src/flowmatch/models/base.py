"""The model registry: name -> network class and its options (``[model]`` section).

A builder receives the shape of one sample and the run's :class:`~flowmatch.interfaces.CondSpec`
and returns an ``nn.Module`` with ``forward(x, t, cond=None)``. Every model declares the
conditioning kinds it accepts (``cond_kinds``); a run whose data carries another kind is
refused in one line before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from flowmatch.interfaces import CondSpec
from flowmatch.registry import ComponentConfig, Registry
from flowmatch.utils.options import OptionError, option


@dataclass(frozen=True)
class ModelConfig(ComponentConfig):
    """The ``[model]`` section: ``kind`` names the network, the rest are its options."""

    conditional: Literal["auto", "yes", "no"] = option(
        "auto",
        doc="condition on the data's labels/values/context: 'auto' = when the data has them",
    )


#: Networks by name; builders receive ``sample_shape`` (one sample's shape) and ``cond``.
MODELS: Registry[nn.Module, ModelConfig] = Registry(
    "model", ModelConfig, default="mlp", context=("sample_shape", "cond")
)


def check_cond_kinds(name: str, accepted: frozenset[str], cond: CondSpec) -> None:
    """Refuse a conditioning kind the model ``name`` does not take (one line, before training).

    Raises:
        OptionError: ``cond`` has a kind outside ``accepted``.
    """
    refused = [k for k in cond.kinds if k not in accepted]
    if refused:
        raise OptionError(
            "kind",
            f"model {name!r} does not accept {', '.join(refused)} conditions (it accepts "
            f"{sorted(accepted) or 'none'}); use another model or set model.conditional = 'no'",
        )
