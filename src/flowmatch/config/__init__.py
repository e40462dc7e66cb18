"""Configuration (TOML -> frozen dataclasses) and the builders that turn it into objects."""

from flowmatch.config.schema import (
    ConfigError,
    CouplingCfg,
    DataCfg,
    EvalCfg,
    ModelCfg,
    ObjectiveCfg,
    PathCfg,
    RunConfig,
    SampleCfg,
    TimeCfg,
    apply_overrides,
    from_dict,
    load_toml,
    to_dict,
)

__all__ = [
    "ConfigError",
    "CouplingCfg",
    "DataCfg",
    "EvalCfg",
    "ModelCfg",
    "ObjectiveCfg",
    "PathCfg",
    "RunConfig",
    "SampleCfg",
    "TimeCfg",
    "apply_overrides",
    "from_dict",
    "load_toml",
    "to_dict",
]
