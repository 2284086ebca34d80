"""Where the runs of a sweep execute: in this process one after another (``local``), or as Ray
tasks (``ray``: an embedded local Ray, or a cluster).

Both call :func:`execute_run`, which decides from the run folder alone what to do (skip a
finished run, resume one with a saved state, start the others), so a task Ray retries after
its worker died resumes from the run's last checkpoint. Each run reports its progress and its
outcome in ``DIR/status/NAME.json`` (pid, iteration, status, message), which the live view
and the tables read. Every file is written atomically.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable

FINISHED = ("complete", "stopped", "diverged")  # results: never computed again
INSTALL_RAY = ('the ray backend needs Ray: pip install "phasescope[ray]" '
               "(or run the sweep in this process, one run after another, with --backend local).")


class RayMissing(RuntimeError):
    pass


def status_path(out: Path, name: str) -> Path:
    from .spec import run_path  # SweepError for a name that would lead outside status/

    return run_path(Path(out) / "status", name, ".json")


def read_status(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def write_status(path: Path, doc: dict) -> None:
    from ..runs import write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), doc)


def finished_outcome(run_dir: Path, spath: Path) -> dict | None:
    """The recorded outcome of a run that has finished (complete, stopped, diverged), else None."""
    from ..experiment import _status_of

    run_dir = Path(run_dir)
    status = _status_of(run_dir) if run_dir.is_dir() else None
    if status not in FINISHED:
        return None
    if status != "diverged" and not ((run_dir / "state.pt").exists() or (run_dir / "state.prev.pt").exists()):
        return None
    doc = read_status(spath) or {}
    if doc.get("status") != status:  # run folder finished but status file older: describe it from the folder
        doc = {"status": status, "message": doc.get("message", "")}
    return {**doc, "skipped": True}


def execute_run(name: str, config: dict, run_dir: str, spath: str, session: str, threads: int | None = None,
                guard: Any = None) -> dict:
    """Run one configuration into ``run_dir`` (skip it when finished, resume it when a state
    exists) and return its outcome: {name, status, message, seconds, iteration, skipped, pid}.
    A diverged run, a bad configuration or any other exception is an outcome, not an error."""
    from ..config import RunConfig
    from ..errors import TrainingDiverged
    from ..experiment import run_experiment

    run_dir, spath = Path(run_dir), Path(spath)
    done = finished_outcome(run_dir, spath)
    if done is not None:
        return {**done, "name": name}
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    previous = read_status(spath) or {}
    attempt = previous.get("attempt", 0) + 1 if previous.get("session") == session else 1
    cfg = RunConfig.from_dict(config)
    has_state = (run_dir / "state.pt").exists() or (run_dir / "state.prev.pt").exists()
    doc = {"name": name, "session": session, "pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt,
           "status": "running", "message": "", "iteration": 0, "iterations": cfg.iterations, "loss": None,
           "started": time.time(), "updated": time.time(), "resumed": has_state}
    write_status(spath, doc)
    last = [0.0]

    def on_step(t: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or t == cfg.iterations:
            last[0] = now
            doc.update(iteration=t, loss=float(loss), updated=time.time())
            try:
                write_status(spath, doc)
            except OSError:
                pass  # progress is best effort; the run's own files are what counts

    t0 = time.perf_counter()
    status, message, seconds = "failed", "", None
    try:
        # a folder without a saved state holds at most a run that never reached its first checkpoint
        overwrite = (not has_state and run_dir.is_dir()
                     and any(p.name != ".lock" for p in run_dir.iterdir()))
        result = run_experiment(cfg, run_dir, resume=has_state, overwrite=overwrite, progress=False,
                                on_step=on_step, guard=guard)
        status, message = result.status, "; ".join(result.notes)
        seconds = result.seconds.get("total")
    except TrainingDiverged as e:
        status, message = "diverged", str(e)
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted before the first checkpoint"
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
        status, message = "failed", f"{type(e).__name__}: {e}"
    if seconds is None:
        seconds = time.perf_counter() - t0
    doc.update(status=status, message=message, seconds=seconds, updated=time.time(), finished=time.time())
    write_status(spath, doc)
    return {**doc, "skipped": False}


# ---------------------------------------------------------------------- backends
Job = tuple[str, dict, str, str]  # name, config dict, run folder, status file


def run_local(jobs: Iterable[Job], *, session: str, threads: int | None, on_done: Callable[[dict], None],
              guard: Any = None) -> bool:
    """One run after another in this process. Returns True when a run was interrupted (Ctrl-C)."""
    import torch

    before = torch.get_num_threads()
    try:
        for name, config, run_dir, spath in jobs:
            outcome = execute_run(name, config, run_dir, spath, session, threads, guard=guard)
            on_done(outcome)
            if outcome["status"] == "interrupted":
                return True
    finally:
        torch.set_num_threads(before)
    return False


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_RAY) from None
    return ray


def start_ray(address: str | None, num_cpus: int | None, num_gpus: float | None = None) -> tuple[Any, bool]:
    """(ray, started): joins ``address`` ('auto', 'ray://host:port') or starts an embedded local Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "warning"}
    if address and address.startswith("ray://"):  # Ray Client: the cluster's own settings apply
        ray.init(address=address)
    elif address:
        ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **({"num_gpus": num_gpus} if num_gpus else {}), **kwargs)
    return ray, True


def run_ray(jobs: list[Job], *, session: str, cpus_per_run: float, gpus_per_run: float, retries: int,
            on_done: Callable[[dict], None], on_tick: Callable[[], None] | None = None, address: str | None = None,
            num_cpus: int | None = None) -> bool:
    """The runs as Ray tasks, ``cpus_per_run``/``gpus_per_run`` each; a task whose worker dies is
    retried ``retries`` times by Ray (and resumes from the run's state); exceptions are outcomes.
    Returns True when interrupted (Ctrl-C: running tasks are cancelled, their runs stay resumable)."""
    ray, started = start_ray(address, num_cpus)
    try:
        threads = max(1, int(cpus_per_run)) if cpus_per_run >= 1 else 1
        task = ray.remote(execute_run).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run or 0,
                                               max_retries=retries, retry_exceptions=False)
        pending = {task.remote(name, config, run_dir, spath, session, threads): (name, spath)
                   for name, config, run_dir, spath in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    name, spath = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the worker died more often than Ray retries
                        doc = read_status(Path(spath)) or {"name": name}
                        doc.update(status="failed", message=f"{type(e).__name__}: the run's worker failed "
                                   f"{retries + 1} time(s): {str(e).splitlines()[0] if str(e) else ''}".strip(),
                                   updated=time.time())
                        write_status(Path(spath), doc)
                        outcome = {**doc, "name": name, "skipped": False}
                    on_done(outcome)
                if on_tick is not None:
                    on_tick()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            try:
                ray.wait(list(pending), num_returns=len(pending), timeout=20)
            except Exception:  # noqa: BLE001
                pass
            return True
        return False
    finally:
        if started:
            ray.shutdown()
