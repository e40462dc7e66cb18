"""High-level workflows behind the CLI: configure, train, load a run, sample, evaluate.

Everything the CLI does is one call here::

    from flowmatch import api
    cfg, train_ds, test_ds = api.resolve_config(data="checkerboard", steps=500)
    api.train_run(cfg, train_ds, out_dir="runs/demo")
    run = api.load_run("runs/demo")
    samples = api.generate(run, 1000, solver="midpoint", nfe=8).samples

One module per job: :mod:`~flowmatch.api.config` (resolve a configuration, load data),
:mod:`~flowmatch.api.train`, :mod:`~flowmatch.api.run` (a loaded run that knows its field,
source, path and sampling defaults), :mod:`~flowmatch.api.sample` and
:mod:`~flowmatch.api.evaluate`.
"""

from flowmatch.api.config import (
    DATA_SEED,
    Resolved,
    check_same_data,
    data_fingerprint,
    load_data,
    load_run_data,
    read_run_info,
    resolve_config,
    resume_config,
    stored_config,
)
from flowmatch.api.evaluate import MAX_DIM_FLOW_METRICS, Scorer, evaluate, flow_metrics
from flowmatch.api.run import Run, assemble_run, data_info, load_run
from flowmatch.api.sample import (
    SampleResult,
    generate,
    guided_field,
    sample_condition,
    sampling_plan,
)
from flowmatch.api.train import prepare_dataset, train_run

__all__ = [
    "DATA_SEED",
    "MAX_DIM_FLOW_METRICS",
    "Resolved",
    "Run",
    "SampleResult",
    "Scorer",
    "assemble_run",
    "check_same_data",
    "data_fingerprint",
    "data_info",
    "evaluate",
    "flow_metrics",
    "generate",
    "guided_field",
    "load_data",
    "load_run",
    "load_run_data",
    "prepare_dataset",
    "read_run_info",
    "resolve_config",
    "resume_config",
    "sample_condition",
    "sampling_plan",
    "stored_config",
    "train_run",
]
