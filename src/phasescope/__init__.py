"""phasescope: measure the learning phases of neural-network classifiers.

Library entry points:
- :class:`PhaseTracker` (hook into your own training loop), :func:`log_schedule`
- :func:`run_experiment` with a :class:`RunConfig` (the CLI's main job)
- :func:`detect_phases` (phases with paired-bootstrap intervals from per-sample errors)
"""
from .version import __version__  # noqa: E402
from . import _moved  # noqa: E402

_moved.install()  # old import paths of moved modules (phasescope.samples, phasescope.infoplane, ...) keep working

from .config import RunConfig  # noqa: E402
from .engine.phases import PhaseResult, detect_phases  # noqa: E402
from .engine.schedule import log_schedule  # noqa: E402
from .engine.tracker import PhaseTracker  # noqa: E402


def run_experiment(*args, **kwargs):  # imported lazily: keeps `import phasescope` light
    from .run.experiment import run_experiment as _run

    return _run(*args, **kwargs)


__all__ = ["PhaseTracker", "PhaseResult", "RunConfig", "detect_phases", "log_schedule", "run_experiment", "__version__"]
