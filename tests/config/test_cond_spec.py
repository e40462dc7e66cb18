"""What a run is conditioned on: cond_spec, the data/eval keys, the 2-D preset."""

from __future__ import annotations

import pytest
import torch

from flowmatch.config.build import cond_spec
from flowmatch.config.presets import preset_for
from flowmatch.config.schema import ConfigError, RunConfig, from_dict
from flowmatch.data.batch import ArrayDataset
from flowmatch.interfaces import CondSpec
from flowmatch.utils.options import OptionError


def _model(conditional: str):
    return from_dict(RunConfig, {"model": {"conditional": conditional}}).model


def test_cond_spec_carries_every_kind():
    ds = ArrayDataset(
        torch.zeros(6, 2),
        labels=torch.arange(6) % 3,
        values=torch.zeros(6, 2),
        context=torch.zeros(6, 4, 5),
    )
    for conditional in ("auto", "yes"):
        assert cond_spec(_model(conditional), ds) == CondSpec(3, 2, (4, 5))
    assert cond_spec(_model("no"), ds) == CondSpec()  # "no" drops all of them
    only_values = ArrayDataset(torch.zeros(6, 2), values=torch.zeros(6, 1))
    assert cond_spec(_model("auto"), only_values) == CondSpec(values_dim=1)
    with pytest.raises(OptionError, match="has no labels or conditions .* data.cond_columns"):
        cond_spec(_model("yes"), ArrayDataset(torch.zeros(6, 2)))


def test_condition_keys():
    cfg = from_dict(
        RunConfig, {"data": {"cond_columns": ["angle", "t"]}, "eval": {"cond_bins": 16}}
    )
    assert cfg.data.cond_columns == ("angle", "t") and cfg.eval.cond_bins == 16
    assert RunConfig().data.cond_columns == () and RunConfig().eval.cond_bins == 8
    with pytest.raises(ConfigError, match="eval.cond_bins must be >= 1, got 0"):
        from_dict(RunConfig, {"eval": {"cond_bins": 0}})
    with pytest.raises(ConfigError, match="data.cond_columns"):
        from_dict(RunConfig, {"data": {"cond_columns": [1]}})


def test_2d_preset_keeps_conditions_of_value_data():
    preset, notes = preset_for("2d", {}, cond_kinds=("labels",))
    assert preset["model"]["conditional"] == "no" and "model.conditional = 'no'" in notes
    preset, notes = preset_for("2d", {}, cond_kinds=("values",))
    assert "conditional" not in preset.get("model", {}) and notes == []
    assert preset_for("2d")[0]["model"]["conditional"] == "no"  # default: as before
