"""phasescope: measure the learning phases of neural-network classifiers.

Library entry points:
- :class:`PhaseTracker` (hook into your own training loop), :func:`log_schedule`
- :func:`run_experiment` with a :class:`RunConfig` (the CLI's main job)
- :func:`detect_phases` (phases with paired-bootstrap intervals from per-sample errors)

The layout shows the layers, lowest first; a module imports only from its own layer or lower
ones (declared once, in ``LAYERS`` of tests/test_imports.py, which checks it):

- **base**: ``version``, ``errors`` (every exception), ``defaults`` (allowed values, defaults).
- **data/**: datasets (text as windows of token ids too), subsets, atypical samples, the
  synthetic data model. Below the declarations because the configuration checks its values
  with data's own grammar.
- **declarations**: ``config`` (RunConfig, typed sections, the one validator), ``extension``
  (the extension contract), ``registry`` (built-in and installed extensions).
- **engine/**: the measurement itself: ``measure/`` (``targets``: what the decoder
  reconstructs, inputs or tokens), ``layers``, ``stats``, ``schedule``, ``phases``, ``settings``
  (typed measurement settings), ``diagnostics``, ``tracker``. It knows nothing of run folders,
  reports or command lines.
- **outputs/**: a run folder's files (``runs``), ``figures``, ``html`` (report.html),
  ``compare`` and ``rebuild`` (``phasescope report``).
- **extensions/**: the built-in extensions, one module (or package) each.
- **run/**: one run from a configuration: ``models`` (and ``gpt``, the language model),
  ``training``, ``presets``, ``budget`` (the overhead budget), ``runfolder`` (the one run-folder
  writer) and ``experiment`` (:func:`run_experiment`).
- **theory/**: the single-layer theory (simulations, analysis, its command).
- **interfaces/**: what users call: ``cli``, ``sweep/``, ``analyze/``, ``integrations/``.

Old module paths (the tracker, the CLI, ... directly under ``phasescope``) still import, as the
same module, with a DeprecationWarning naming the new one (``_moved.MOVED``).
"""
from .version import __version__  # noqa: E402
from . import _moved  # noqa: E402

_moved.install()  # old import paths of moved modules (phasescope.samples, phasescope.infoplane, ...) keep working

from .config import RunConfig  # noqa: E402
from .engine.phases import PhaseResult, detect_phases  # noqa: E402
from .engine.schedule import log_schedule  # noqa: E402
from .engine.tracker import PhaseTracker  # noqa: E402


def run_experiment(*args, **kwargs):
    from .run.experiment import run_experiment as _run  # lazy: keeps `import phasescope` light

    return _run(*args, **kwargs)


__all__ = ["PhaseTracker", "PhaseResult", "RunConfig", "detect_phases", "log_schedule", "run_experiment", "__version__"]
