"""flowmatch: flow-matching generative models."""

__version__ = "0.1.0"
