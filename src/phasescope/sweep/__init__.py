"""``phasescope sweep``: a grid of runs, locally or on Ray, resumable, with one table over all runs.

    from phasescope.sweep import load_spec, run_sweep
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
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs import atomic_write, clear_run_files
from .backends import INSTALL_RAY, RayMissing, finished_outcome, status_path
from .spec import PlannedRun, SweepError, SweepSpec, check_names, load_spec, shipped, spec_from_dict
from .tables import run_dir, write_tables

__all__ = ["run_sweep", "load_spec", "shipped", "SweepSpec", "PlannedRun", "SweepError", "SweepResult",
           "RayMissing", "INSTALL_RAY", "EXIT_FAILED", "EXIT_DIVERGED_ONLY"]

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
    def __init__(self, out: Path):
        self.path = Path(out) / ".sweep.lock"
        self.fd: int | None = None

    def __enter__(self) -> "_SweepLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
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
    """--overwrite: delete the files a sweep writes (and only those) in ``out``."""
    for p in sorted((out / "runs").glob("*")) if (out / "runs").is_dir() else []:
        if p.is_dir() and not p.is_symlink():
            clear_run_files(p)
            (p / ".lock").unlink(missing_ok=True)
            try:
                p.rmdir()
            except OSError:
                pass  # it holds files phasescope did not write: the run will say so
    for p in (out / "status").glob("*.json") if (out / "status").is_dir() else []:
        p.unlink()
    for name in SWEEP_FILES:
        if name != ".sweep.lock":
            (out / name).unlink(missing_ok=True)


def _claim(out: Path, spec: SweepSpec, *, resume: bool, overwrite: bool) -> None:
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
        if overwrite:
            _clear(out)
    else:
        if resume:
            raise SweepError(f"Cannot resume: {out} holds no sweep (no sweep.json). Run without --resume to start.")
        entries = [p.name for p in out.iterdir() if p.name != ".sweep.lock"]
        if entries and not overwrite:
            raise SweepError(f"{out} already exists and is not a sweep folder (it holds {', '.join(sorted(entries)[:5])}"
                             f"{' ...' if len(entries) > 5 else ''}). Choose another --out.")
        if entries:
            _clear(out)
    text = json.dumps(spec.to_dict(), indent=2, default=str) + "\n"
    atomic_write(saved_path, lambda p: p.write_text(text))


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
              guard: Any = None, console: Any = None) -> SweepResult:
    """Run every run of ``spec`` into ``out/runs/NAME`` and write sweep.csv, summary.csv, sweep.png.

    ``backend``: ``ray`` (tasks with ``cpus_per_run`` [1] CPUs and ``gpus_per_run`` GPUs each,
    on an embedded local Ray with ``num_cpus`` [all cores], or on the cluster at ``address``;
    a task whose worker dies is retried ``retries`` times and resumes from the run's last
    checkpoint) or ``local`` (one run after another in this process; ``cpus_per_run`` sets
    torch's threads). Each run uses as many torch threads as it has CPUs. Finished runs in
    ``out`` are skipped and interrupted ones resumed; a different spec in ``out`` is refused
    unless ``overwrite``. Failed runs are recorded and the others go on (see
    :attr:`SweepResult.exit_code`). Raises :class:`SweepError` before anything runs."""
    if backend not in BACKENDS:
        raise SweepError(f"--backend {backend!r}: choose ray or local.")
    if resume and overwrite:
        raise SweepError("--resume and --overwrite contradict each other: choose one.")
    if cpus_per_run is not None and cpus_per_run <= 0:
        raise SweepError(f"--cpus-per-run must be positive; got {cpus_per_run}.")
    if gpus_per_run < 0:
        raise SweepError(f"--gpus-per-run must be >= 0; got {gpus_per_run}.")
    if retries < 0:
        raise SweepError(f"--retries must be >= 0; got {retries}.")
    if backend == "ray":
        from .backends import import_ray

        import_ray()  # before the folder is touched: say how to install it
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    check_names([r.name for r in spec.runs], spec.source or "the sweep")  # also a spec built in code
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file, not a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out {out}: cannot create the folder ({e.strerror or e}).") from None
    from .view import SweepView

    with _SweepLock(out):
        _claim(out, spec, resume=resume, overwrite=overwrite)
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
                from .backends import run_local

                interrupted = run_local(jobs, session=session, threads=threads, on_done=on_done, guard=guard)
            else:
                from .backends import run_ray

                interrupted = run_ray(jobs, session=session, cpus_per_run=cpus_per_run or 1.0,
                                      gpus_per_run=gpus_per_run, retries=retries, on_done=on_done,
                                      on_tick=view.tick, address=address, num_cpus=num_cpus)
        table, summary = write_tables(spec, out)
        from .figure import plot_sweep

        figure = plot_sweep(spec, out)
    outcomes = dict(view.outcomes)
    return SweepResult(out, spec, outcomes, table, summary, interrupted, figure, skipped)
