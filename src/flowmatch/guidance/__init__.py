"""Guidance rules that turn a conditional velocity field into a guided one."""

from flowmatch.guidance.cfg import ClassifierFreeGuidance

__all__ = ["ClassifierFreeGuidance"]
