"""``phasescope sweep``: a grid of runs, locally or on Ray, resumable, with one table over all runs.

    from phasescope.interfaces.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("demo"), "sweeps/demo", backend="local")
    result.summary          # per configuration and layer, across seeds

The sweep folder ``DIR`` holds ``sweep.json`` (the expanded runs), ``runs/NAME/`` (one run
folder each, as ``phasescope run`` writes it), ``status/NAME.json`` (each run's progress and
outcome), ``sweep.csv``, ``summary.csv`` and ``sweep.png``. Running the same sweep into the
same folder again skips finished runs and resumes interrupted ones from their last checkpoint.
"""
from __future__ import annotations

import errno
import json
import math
import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ...outputs.runs import RunFolderError, RunLockedError, atomic_write, clear_run_files, locked_folder
from .backends import (
    CONNECT_TIMEOUT, ClusterUnreachable, INSTALL_RAY, RayMissing, finished_outcome, import_ray, run_local, run_ray,
    start_ray, status_path,
)
from .figure import plot_sweep
from .spec import PlannedRun, SweepError, SweepSpec, check_names, load_spec, shipped, spec_from_dict
from .tables import run_dir, write_tables
from .view import SweepView

__all__ = ["run_sweep", "load_spec", "shipped", "SweepSpec", "PlannedRun", "SweepError", "SweepResult",
           "RayMissing", "ClusterUnreachable", "INSTALL_RAY", "EXIT_FAILED", "EXIT_DIVERGED_ONLY"]

EXIT_FAILED, EXIT_DIVERGED_ONLY, EXIT_INTERRUPTED = 1, 3, 130
SWEEP_FILES = ("sweep.json", "sweep.csv", "summary.csv", "sweep.png", ".sweep.lock")
BACKENDS = ("ray", "local")


@dataclass
class SweepResult:
    out: Path
    spec: SweepSpec
    outcomes: dict[str, dict]
    table: pd.DataFrame
    summary: pd.DataFrame
    interrupted: bool = False
    figure: Path | None = None
    skipped: list[str] = field(default_factory=list)  # finished before this call

    @property
    def failed(self) -> dict[str, dict]:
        return {n: o for n, o in self.outcomes.items() if o["status"] not in ("complete", "stopped", "interrupted")}

    @property
    def exit_code(self) -> int:
        """0: every run finished; 3: some diverged and nothing else failed; 1: some failed; 130: interrupted."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        failed = self.failed
        if not failed:
            return 0
        return EXIT_DIVERGED_ONLY if all(o["status"] == "diverged" for o in failed.values()) else EXIT_FAILED


# ---------------------------------------------------------------------- the sweep folder
class _SweepLock:
    """An exclusive flock on ``out/.sweep.lock`` for the whole sweep. ``created``: the folders
    this invocation created for ``out`` (``out`` first, then its new parents); :meth:`abandon`
    removes them again (those left empty) with the lock file, so a sweep refused before it
    started leaves nothing behind."""

    def __init__(self, out: Path, created: list[Path] | None = None):
        self.path = Path(out) / ".sweep.lock"
        self.fd: int | None = None
        self.created = list(created or [])
        self.created_lock = False

    def abandon(self) -> None:
        """Remove what this invocation created (the lock file, folders), never what was there."""
        try:
            if self.created_lock or self.created:
                self.path.unlink(missing_ok=True)
            for folder in self.created:
                folder.rmdir()  # fails, harmlessly, when something is in it
        except OSError:
            pass

    def __enter__(self) -> "_SweepLock":
        self.created_lock = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl  # lazy: fcntl exists only on POSIX (Windows: no lock)
        except ImportError:  # Windows: concurrent sweeps are not detected
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = os.pread(self.fd, 32, 0).decode().strip()
            os.close(self.fd)
            self.fd = None
            self.created_lock, self.created = False, []  # in use: not ours to remove
            raise SweepError(f"{self.path.parent} is in use by another phasescope sweep"
                             f"{f' (pid {pid})' if pid else ''}. Wait for it to finish, or choose another --out.") \
                from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


def _differences(saved: dict, spec: SweepSpec) -> list[str]:
    old = {r["name"]: json.dumps(r["config"], sort_keys=True, default=str) for r in saved.get("runs", [])}
    new = {r.name: json.dumps(json.loads(json.dumps(r.config.to_dict(), default=str)), sort_keys=True)
           for r in spec.runs}
    out = [f"new run {n}" for n in new if n not in old] + [f"run {n} is gone" for n in old if n not in new]
    for n in new:
        if n in old and old[n] != new[n]:
            a, b = json.loads(old[n]), json.loads(new[n])
            keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"run {n}: " + ", ".join(f"{k} saved {a.get(k)!r}, now {b.get(k)!r}" for k in keys[:4]))
    return out


def _clear(out: Path) -> None:
    """--overwrite: delete the files a sweep writes (and only those) in ``out``.

    Each run folder is cleared while holding its lock (the one :class:`~phasescope.outputs.runs.RunFolder`
    takes), and only once every run's lock is held: a run another process is writing (``phasescope
    run --resume`` in it, another sweep) refuses the whole overwrite, deleting nothing."""
    runs = [p for p in sorted((out / "runs").glob("*")) if p.is_dir() and not p.is_symlink()] \
        if (out / "runs").is_dir() else []
    with ExitStack() as held:
        claimed = []
        try:
            for p in runs:
                claimed.append(held.enter_context(locked_folder(p)))
        except BaseException as e:
            for folder in claimed:  # lock files this refused overwrite created
                if folder.lock_created:
                    (folder.path / ".lock").unlink(missing_ok=True)
            if isinstance(e, RunLockedError):  # p: the run folder in use
                pid = f" (pid {e.pid})" if e.pid else ""
                raise SweepError(f"--overwrite refused: the run folder {p} is in use by another phasescope "
                                 f"process{pid}. Nothing was deleted. Wait for it to finish (or stop it) and run "
                                 "the sweep again, or choose another --out.") from None
            if isinstance(e, RunFolderError):
                raise SweepError(f"--overwrite refused: {e} Nothing was deleted.") from None
            raise
        for p in runs:
            clear_run_files(p)
            (p / ".lock").unlink(missing_ok=True)  # still held: a process opening it now finds it locked
            try:
                p.rmdir()
            except OSError:
                pass  # it holds files phasescope did not write: the run will say so
    for p in (out / "status").glob("*.json") if (out / "status").is_dir() else []:
        p.unlink()
    for name in SWEEP_FILES:
        if name != ".sweep.lock":
            (out / name).unlink(missing_ok=True)


def _check(out: Path, spec: SweepSpec, *, resume: bool, overwrite: bool) -> bool:
    """Refuse (:class:`SweepError`) a sweep that cannot go into ``out``, reading only: called
    before anything is created (and again under the sweep lock). True: --overwrite has
    something to delete."""
    saved_path = out / "sweep.json"
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except ValueError as e:
            raise SweepError(f"{saved_path} is corrupt ({e}); start again with --overwrite.") from None
        diffs = _differences(saved, spec)
        if diffs and not overwrite:
            shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            raise SweepError(f"{out} holds a different sweep (from {saved.get('source')}): {shown}. Give the same "
                             "sweep file and options to continue it, another --out for a new sweep, or --overwrite "
                             "to replace it (deletes its runs).")
        return overwrite
    if resume:
        raise SweepError(f"Cannot resume: {out} holds no sweep (no sweep.json). Run without --resume to start.")
    entries = [p.name for p in out.iterdir() if p.name != ".sweep.lock"] if out.is_dir() else []
    if entries and not overwrite:
        raise SweepError(f"{out} already exists and is not a sweep folder (it holds {', '.join(sorted(entries)[:5])}"
                         f"{' ...' if len(entries) > 5 else ''}). Choose another --out.")
    return bool(entries)


def _claim(out: Path, spec: SweepSpec, *, resume: bool, overwrite: bool) -> None:
    if _check(out, spec, resume=resume, overwrite=overwrite):
        _clear(out)
    text = json.dumps(spec.to_dict(), indent=2, default=str) + "\n"
    atomic_write(out / "sweep.json", lambda p: p.write_text(text))


def saved_spec(out: str | Path) -> SweepSpec:
    """The sweep saved in a sweep folder (``--resume`` without the sweep file)."""
    path = Path(out) / "sweep.json"
    if not path.exists():
        raise SweepError(f"Cannot resume: {path} does not exist; give the sweep file (and --out).")
    try:
        return spec_from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError) as e:
        raise SweepError(f"{path} is corrupt ({e}); give the sweep file and --overwrite.") from None


# ---------------------------------------------------------------------- running
def run_sweep(spec: SweepSpec | str | Path, out: str | Path, *, backend: str = "ray", address: str | None = None,
              cpus_per_run: float | None = None, gpus_per_run: float = 0.0, num_cpus: int | None = None,
              retries: int = 3, resume: bool = False, overwrite: bool = False, progress: bool = True,
              guard: Any = None, console: Any = None, connect_timeout: float = CONNECT_TIMEOUT) -> SweepResult:
    """Run every run of ``spec`` into ``out/runs/NAME`` and write sweep.csv, summary.csv, sweep.png.

    ``backend``: ``ray`` (tasks with ``cpus_per_run`` [1] CPUs and ``gpus_per_run`` GPUs each,
    on an embedded local Ray with ``num_cpus`` [all cores], or on the cluster at ``address``;
    a task whose worker dies is retried ``retries`` times and resumes from the run's last
    checkpoint; a cluster not reached within ``connect_timeout`` seconds raises
    :class:`ClusterUnreachable`) or ``local`` (one run after another in this process;
    ``cpus_per_run`` sets torch's threads). Each run uses as many torch threads as it has CPUs.
    Finished runs in ``out`` are skipped and interrupted ones resumed; a different spec in
    ``out`` is refused unless ``overwrite``. Failed runs are recorded and the others go on (see
    :attr:`SweepResult.exit_code`). Raises :class:`SweepError` before anything runs; a sweep
    refused (or a cluster not reached) leaves nothing in ``out`` that was not there before."""
    if backend not in BACKENDS:
        raise SweepError(f"--backend {backend!r}: choose ray or local.")
    if resume and overwrite:
        raise SweepError("--resume and --overwrite contradict each other: choose one.")
    if cpus_per_run is not None and not 0 < cpus_per_run < math.inf:  # written so that NaN is refused too
        raise SweepError(f"--cpus-per-run must be a positive number; got {cpus_per_run}.")
    if not 0 <= gpus_per_run < math.inf:
        raise SweepError(f"--gpus-per-run must be a number >= 0; got {gpus_per_run}.")
    if num_cpus is not None and num_cpus < 1:
        raise SweepError(f"--num-cpus must be at least 1; got {num_cpus}. Leave it out to use all cores.")
    if retries < 0:
        raise SweepError(f"--retries must be >= 0; got {retries}.")
    if not connect_timeout > 0:
        raise SweepError(f"--connect-timeout must be a positive number of seconds; got {connect_timeout}.")
    if backend == "ray":
        import_ray()  # before the folder is touched: say how to install it
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    check_names([r.name for r in spec.runs], spec.source or "the sweep")  # also a spec built in code
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file, not a folder.")
    _check(out, spec, resume=resume, overwrite=overwrite)  # refuse before anything is created
    ray, started = None, False
    if backend == "ray":  # reach the cluster before anything is created, too

        ray, started = start_ray(address, num_cpus, connect_timeout=connect_timeout)
    try:
        return _run(spec, out, backend=backend, ray=ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                    retries=retries, resume=resume, overwrite=overwrite, progress=progress, guard=guard,
                    console=console)
    finally:
        if started:
            ray.shutdown()


def _run(spec: SweepSpec, out: Path, *, backend: str, ray: Any, cpus_per_run: float | None, gpus_per_run: float,
         retries: int, resume: bool, overwrite: bool, progress: bool, guard: Any, console: Any) -> SweepResult:
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out {out}: cannot create the folder ({e.strerror or e}).") from None

    with _SweepLock(out, created) as lock:
        try:
            _claim(out, spec, resume=resume, overwrite=overwrite)
        except BaseException:
            lock.abandon()
            raise
        (out / "runs").mkdir(exist_ok=True)
        (out / "status").mkdir(exist_ok=True)
        session = uuid.uuid4().hex
        view = SweepView([r.name for r in spec.runs], out, session, enabled=progress, console=console)
        skipped, jobs = [], []
        for r in spec.runs:
            done = finished_outcome(run_dir(out, r.name), status_path(out, r.name))
            if done is not None:
                view.outcomes[r.name] = {**done, "name": r.name}
                skipped.append(r.name)
            else:
                jobs.append((r.name, r.config.to_dict(), str(run_dir(out, r.name)), str(status_path(out, r.name))))
        if progress and skipped:
            print(f"{len(skipped)} of {len(spec.runs)} runs already finished in {out}: skipped", flush=True)
        write_tables(spec, out)

        def on_done(outcome: dict) -> None:
            view.done(outcome)
            write_tables(spec, out)

        with view:
            if backend == "local":
                threads = int(cpus_per_run) if cpus_per_run else None

                interrupted = run_local(jobs, session=session, threads=threads, on_done=on_done, guard=guard)
            else:
                interrupted = run_ray(jobs, session=session, cpus_per_run=cpus_per_run or 1.0,
                                      gpus_per_run=gpus_per_run, retries=retries, on_done=on_done,
                                      on_tick=view.tick, ray=ray)
        table, summary = write_tables(spec, out)

        figure = plot_sweep(spec, out)
    outcomes = dict(view.outcomes)
    return SweepResult(out, spec, outcomes, table, summary, interrupted, figure, skipped)
