"""Small data and short runs are accepted: the batch shrinks to the data, presets scale."""

import json

import numpy as np

from flowmatch.cli.main import main


def test_table_smaller_than_one_batch_trains_with_the_data_as_the_batch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = tmp_path / "small.csv"
    rows = rng.normal(size=(100, 3))
    table.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in r) for r in rows) + "\n")
    out = tmp_path / "run"
    argv = ["train", "--data", str(table), "--steps", "5", "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "model.hidden=16", "--set", "model.depth=1"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "train.batch_size = 90: the training set has only 90 samples" in err[0]
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["train"]["batch_size"] == 90  # the resolved config records what was used


def test_short_image_run_scales_the_preset_warmup(capsys):
    assert main(["train", "--data", "digits", "--steps", "20", "--dry-run"]) == 0
    captured = capsys.readouterr()
    cfg = json.loads(captured.out)
    assert cfg["train"]["warmup_steps"] == 2  # 200 in the preset, at most steps / 10
    assert "preset (image data): train.warmup_steps = 2" in captured.err
    # A value the user sets is never overridden by the preset.
    assert main(["train", "--data", "digits", "--steps", "20", "--set", "train.warmup_steps=0",
                 "--dry-run"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["train"]["warmup_steps"] == 0
