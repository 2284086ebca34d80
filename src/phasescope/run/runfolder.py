"""The one writer of run folders: :class:`RunWriter`, used by ``phasescope run`` (and so by
sweeps and ``--seeds``), the Lightning and Hugging Face callbacks and ``phasescope theory``::

    with RunWriter.claim(out, name, overwrite=...) as run:   # create, lock; refuse what would lose a result
        run.start(config_document(...))                       # clear what overwrite replaces; config.json
        run.checkpoint(tracker, state)                        # after every measurement
        run.finish(tracker, status)                           # summaries, figures, status, report.html
    # leaving the block releases the lock; after an error, the claim is undone (nothing written
    # yet) or the run's status recorded ("failed", "interrupted")

The claim (lock, what a folder may hold, ``--overwrite`` deleting only phasescope's files,
resume checks) is :class:`phasescope.outputs.runs.RunFolder`'s; this module adds the writing, which
needs the report and figure modules that themselves write through :mod:`phasescope.outputs.runs`
(so it cannot live there). One schema of config.json for every run: :func:`config_document`.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..outputs.html import write_report_quietly
from ..outputs.figures import phases_payload, plot_curves
from ..outputs.runs import RunFolder, RunFolderError, save_state, write_errors, write_json, write_metrics
from ..version import __version__

if TYPE_CHECKING:
    from ..engine.tracker import PhaseTracker


def versions() -> dict[str, str]:
    return {"phasescope": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def config_document(config: dict, *, data: dict, measurement: dict, model: dict, adjusted: dict | None = None,
                    integration: dict | None = None) -> dict:
    """config.json of a run, one schema whoever writes it: ``config`` (the options; ``report`` and
    ``compare`` read model, dataset, seed, iterations), ``data``, ``measurement`` (the tracker's
    ``describe()``), ``model`` (name, parameters, device), ``versions``; with ``adjusted``, what
    was changed to fit the data and why (``adjusted``, ``notes``); for a callback's run,
    ``integration`` (its source and what the framework told it)."""
    return {"config": config, "data": data, "measurement": measurement, "model": model, "versions": versions(),
            **({"adjusted": adjusted, "notes": [c["why"] for c in adjusted.values()]} if adjusted else {}),
            **({"integration": integration} if integration is not None else {})}


def write_checkpoint(out: Path, tracker: PhaseTracker) -> pd.DataFrame:
    """What a checkpoint adds, so that a kill loses nothing measured: metrics.csv/.parquet and
    errors.npz (the measurement itself; small and uncompressed), and the files of extensions that
    must survive a kill (``checkpoint_files``, e.g. the kept weights). No phase detection, no
    per-sample tables, no figures: those are summaries, written once when the run ends (and
    rebuilt by ``--resume`` after a kill: every checkpoint's data is also in state.pt)."""
    df = tracker.results()
    if len(df):
        write_metrics(out, df)
        write_errors(out, tracker.errors)
        for ext in tracker.extensions:
            if getattr(ext, "checkpoint_files", False):
                ext.write(out, df, {}, figure=False)
    return df


def write_outputs(out: Path, tracker: PhaseTracker, *, figure: bool, title: str | None = None,
                  extra: dict | None = None) -> tuple[pd.DataFrame, dict, dict]:
    """Every file of the run: metrics.csv/.parquet, errors.npz, the figures (``figure``), the
    extensions' files, and last phases.json (with ``extra``, e.g. the final status): every file
    atomically, phases.json last so that a status in it means the files before it are written."""
    df = tracker.results()
    phases = tracker.phases()
    payload = _payload(tracker, df, phases, extra)
    if len(df):
        write_metrics(out, df)
        write_errors(out, tracker.errors)
        if figure:
            plot_curves(df, payload["layers"], out / "curves.png", title=title)
        for ext in tracker.extensions:  # extensions' own files (samples.parquet, samples.png, ...)
            if hasattr(ext, "write"):
                ext.write(out, df, payload, figure=figure)
    write_json(out / "phases.json", payload)
    return df, phases, payload


def _payload(tracker: PhaseTracker, df: pd.DataFrame, phases: dict, extra: dict | None) -> dict:
    """phases.json's content: the phases, the extensions' summaries, then ``extra`` (the status)."""
    payload = phases_payload(phases, df, tracker.num_classes)
    for ext in tracker.extensions:
        if hasattr(ext, "summarise"):
            payload.update(ext.summarise(df, payload))
    payload.update(extra or {})
    return payload


def _write_status_quietly(out: Path, tracker: PhaseTracker, extra: dict) -> None:
    """phases.json alone, for a run ending on an error while writing its files (a full disk): it
    is small and may still fit, and records that the run did not finish. Never raises."""
    try:
        write_json(out / "phases.json", _payload(tracker, tracker.results(), tracker.phases(), extra))
    except Exception:  # noqa: BLE001  the original error is the one to report
        pass


class RunWriter(RunFolder):
    """A claimed run folder (:meth:`RunFolder.claim <phasescope.outputs.runs.RunFolder.claim>`: lock,
    refusals, ``mode``) that a run writes: :meth:`start` once, :meth:`checkpoint` after every
    measurement, :meth:`finish` at the end, :meth:`close` (or the ``with`` block) to release it.
    The run's seconds count from the claim."""

    def __init__(self, path: Path, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.t0 = time.perf_counter()
        self.started = False
        self.title: str | None = None
        self.tracker: Any = None  # the tracker of the last checkpoint (for the status after an error)
        self.status: str | None = None  # set by finish()

    def _check_held(self) -> None:
        if not self.held:
            raise RunFolderError(f"{self.path} is not claimed by this writer (it was released); claim it again "
                                 "(RunWriter.claim) before writing.")

    def start(self, config: dict, *, title: str | None = None) -> None:
        """Begin writing: clear what an overwrite or restart replaces (:meth:`prepare`: call this
        once the configuration, data and model are known to be good), drop the status of an
        earlier session (phases.json, rewritten by :meth:`finish`), write ``config`` as
        config.json (a run's: :func:`config_document`). ``title`` heads the figures."""
        self._check_held()
        self.prepare()
        (self.path / "phases.json").unlink(missing_ok=True)
        write_json(self.path / "config.json", config)
        self.title = title if title is not None else self.title
        self.started = True

    def checkpoint(self, tracker: PhaseTracker, state: dict | None = None) -> pd.DataFrame:
        """After a measurement: metrics.csv, errors.npz and the extensions' checkpoint files
        (:func:`write_checkpoint`), and with ``state`` (:data:`phasescope.outputs.runs.STATE_KEYS`)
        state.pt; returns the results so far."""
        self._check_held()
        self.tracker = tracker
        df = write_checkpoint(self.path, tracker)
        if state is not None:
            save_state(self.path, state)
        return df

    def finish(self, tracker: PhaseTracker, status: str = "complete", *, figure: bool = True,
               report: bool = True) -> tuple[pd.DataFrame, dict, dict]:
        """The end of the run: every summary file (:func:`write_outputs`: phases, the extensions'
        tables, the figures with ``figure``), phases.json last with ``status`` and ``seconds``
        (total since the claim, and measurement), then report.html (``report``; a failure there
        is a warning). Returns (metrics, phases, payload)."""
        self._check_held()
        self.tracker, self.status = tracker, status
        seconds = {"total": time.perf_counter() - self.t0, "measurement": float(sum(tracker.timings.values()))}
        extra = {"status": status, "seconds": seconds}
        try:
            df, phases, payload = write_outputs(self.path, tracker, figure=figure, title=self.title, extra=extra)
        except OSError:  # e.g. the disk is full (RunWriteError): at least the status, where it fits
            _write_status_quietly(self.path, tracker, {**extra, "status": "failed"})
            raise
        if report:
            write_report_quietly(self.path, status=status)
        return df, phases, payload

    def close(self, exc: BaseException | None = None) -> None:
        """Release the folder. After an error (``exc``) once writing started and before
        :meth:`finish`, the run's status is recorded first (``interrupted`` for Ctrl-C, else
        ``failed``; best effort) when it has measured something; before :meth:`start` the claim
        is undone as :meth:`RunFolder.close <phasescope.outputs.runs.RunFolder.close>` does."""
        if exc is not None and self.held and self.started and self.status is None \
                and self.tracker is not None and self.tracker.measured:
            try:
                self.finish(self.tracker, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            except Exception:  # noqa: BLE001  the original error matters more
                pass
        super().close(exc)
