"""Configuration (TOML -> validated records) and the builders that turn it into objects."""

from flowmatch.config.schema import (
    SECTIONS,
    ConfigError,
    DataConfig,
    EvalConfig,
    RunConfig,
    SampleConfig,
    apply_overrides,
    from_dict,
    load_toml,
    merge,
    overrides_dict,
    to_dict,
)

__all__ = [
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "RunConfig",
    "SampleConfig",
    "apply_overrides",
    "from_dict",
    "load_toml",
    "merge",
    "overrides_dict",
    "to_dict",
]
