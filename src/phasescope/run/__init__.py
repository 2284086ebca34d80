"""One run from a configuration: models (the GPT too), training, presets, the overhead budget,
the run-folder writer, run_experiment.

Builds the model and the tracker from a :class:`~phasescope.config.RunConfig`, trains, and writes
through :class:`~phasescope.run.runfolder.RunWriter` (the one run-folder writer).
"""
