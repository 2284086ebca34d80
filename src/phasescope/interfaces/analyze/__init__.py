"""``phasescope analyze``: measure the learning phases of a training run that already exists.

    from phasescope import RunConfig
    from phasescope.interfaces.analyze import analyze, Source

    result = analyze("runs/old/checkpoints", RunConfig(dataset="cifar10", data_dir="~/data", model="vgg8",
                     width=0.5), out="runs/old-analyzed", backend="ray")
    result.payload["layers"]     # the phases, as phasescope run reports them

Each saved checkpoint is measured on its own (decoder and probe fitted at that checkpoint, as
the live tracker does), in parallel on Ray if asked, after an integrity guard has read every
checkpoint once; the run folder written is the one ``phasescope run`` writes, so ``phasescope
report`` and ``compare`` read it unchanged. Modules: :mod:`.discover` (which checkpoints, which
step), :mod:`.load` (formats, models), :mod:`.guard` (integrity), :mod:`.measure` (one
checkpoint; merging), :mod:`.backends` (local, Ray), :mod:`.run` (the driver), :mod:`.cli`.
"""
from __future__ import annotations

__all__ = ["analyze", "AnalyzeError", "AnalyzeResult", "IntegrityRefused", "NothingMeasured", "Source", "discover"]


def __getattr__(name: str):  # imported on use: the registry imports .extension (so this package) in every run
    if name in ("analyze", "AnalyzeError", "AnalyzeResult", "IntegrityRefused", "NothingMeasured"):
        from . import run  # lazy: else every run that lists the extensions loads the analyze driver (~0.07 s)

        return getattr(run, name)
    if name == "Source":
        from .load import Source  # lazy: on use, as .run above (load imports run.models)

        return Source
    if name == "discover":
        from .discover import discover  # lazy: on use, as .run above

        return discover
    raise AttributeError(name)
