"""Moved: the keeper is a tracker extension in :mod:`phasescope.stopping` (kept importable here)."""
from ..stopping import BestFeaturesKeeper, Decision, StopTraining, decide  # noqa: F401
