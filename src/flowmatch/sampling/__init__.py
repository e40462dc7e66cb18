"""Sampling methods built on a run's velocity field.

Schedule conversion, observation-conditioned sampling, composite fields, inference-time
search, source pruning, FlowTurbo refiners and FlowOpt.
"""
