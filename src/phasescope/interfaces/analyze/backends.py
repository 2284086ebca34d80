"""Where the checkpoints are measured: here, one after another (``local``), or one Ray task each
(``ray``: the embedded local Ray or a cluster, started and joined by ``phasescope sweep``'s helpers).

A Ray task returns its checkpoint's measurement (rows, per-sample errors, the extensions'
records); one whose worker process dies is retried by Ray ``retries`` times. Tasks are spread
over the nodes (``SPREAD``): each reads its own checkpoint, so reading is spread too.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .measure import measure_checkpoint, warm_up
from .view import AnalyzeView


def run_local(jobs: list[dict], on_done: Callable[[dict], None], view: AnalyzeView) -> bool:
    before = torch.get_num_threads()
    try:
        for job in jobs:
            outcome = measure_checkpoint(job)
            view.done(outcome)
            on_done(outcome)
    except KeyboardInterrupt:
        return True
    finally:
        torch.set_num_threads(before)
    return False


def _slots(ray, cpus: float, gpus: float) -> int:
    try:
        res = ray.cluster_resources()
        n = int(res.get("CPU", 1) // cpus) if cpus else 1 << 30
        if gpus:
            n = min(n, int(res.get("GPU", 0) // gpus))
        return max(1, n)
    except Exception:  # noqa: BLE001 - only for the display
        return 1


def warm_up_ray(ray: Any, config: dict, source: dict, *, count: int, cpus_per_run: float, gpus_per_run: float,
                threads: int | None) -> list:
    """One :func:`~.measure.warm_up` task per Ray slot (at most ``count``), submitted as soon as Ray
    is connected, so that the workers' start, imports, data and the measurement's preparation
    overlap the driver's own preparation and the guard's scan; the checkpoints' tasks queue behind
    them. Returns their refs (never waited for; a failed warm-up only means a cold first job)."""
    try:
        n = min(max(1, count), _slots(ray, cpus_per_run, gpus_per_run))
        task = ray.remote(warm_up).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run or 0, max_retries=0,
                                           scheduling_strategy="SPREAD")
        return [task.remote(config, source, threads) for _ in range(n)]
    except Exception:  # noqa: BLE001 - an optimisation: the analysis goes on without it
        return []


def run_ray(jobs: list[dict], on_done: Callable[[dict], None], view: AnalyzeView, *, ray: Any,
            cpus_per_run: float, gpus_per_run: float, retries: int) -> bool:
    """One task per job on ``ray`` (connected by the caller: ``phasescope sweep``'s start_ray);
    outcomes handed to ``on_done`` as they finish. True when interrupted."""
    view.slots = _slots(ray, cpus_per_run, gpus_per_run)
    task = ray.remote(measure_checkpoint).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run or 0,
                                                  max_retries=retries, retry_exceptions=False,
                                                  scheduling_strategy="SPREAD")
    pending = {task.remote(job): job for job in jobs}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died more often than Ray retries
                    first = str(e).splitlines()[0] if str(e) else ""
                    outcome = {"step": job["checkpoint"]["step"], "name": job["checkpoint"]["name"],
                               "status": "failed", "state": None, "seconds": {},
                               "message": f"{type(e).__name__}: its worker failed {retries + 1} time(s): {first}"}
                view.done(outcome)
                on_done(outcome)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        return True
    return False


def run_jobs(jobs: list[dict], *, backend: str, on_done: Callable[[dict], None], ray: Any = None,
             cpus_per_run: float | None = None, gpus_per_run: float = 0.0, retries: int = 3, progress: bool = True,
             console: Any = None) -> bool:
    """Measure every job on ``backend`` with a live view; True when interrupted (Ctrl-C)."""
    with AnalyzeView(len(jobs), enabled=progress, console=console) as view:
        if not jobs:
            return False
        if backend == "local":
            return run_local(jobs, on_done, view)
        return run_ray(jobs, on_done, view, ray=ray, cpus_per_run=cpus_per_run or 1.0, gpus_per_run=gpus_per_run,
                       retries=retries)
