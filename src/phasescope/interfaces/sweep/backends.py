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
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .spec import run_path
from ...config import RunConfig
from ...errors import TrainingDiverged
from ...outputs.runs import write_json
from ...run.experiment import _status_of, run_experiment

FINISHED = ("complete", "stopped", "diverged")  # results: never computed again
INSTALL_RAY = ('the ray backend needs Ray: pip install "phasescope[ray]" '
               "(or run the sweep in this process, one run after another, with --backend local).")


class RayMissing(RuntimeError):
    pass


def status_path(out: Path, name: str) -> Path:
    return run_path(Path(out) / "status", name, ".json")


def read_status(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def write_status(path: Path, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), doc)


def finished_outcome(run_dir: Path, spath: Path) -> dict | None:
    """The recorded outcome of a run that has finished (complete, stopped, diverged), else None."""
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
    run_dir, spath = Path(run_dir), Path(spath)
    done = finished_outcome(run_dir, spath)
    if done is not None:
        return {**done, "name": name}
    if threads:
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
        import ray  # lazy: optional dependency (ray)
    except ImportError:
        raise RayMissing(INSTALL_RAY) from None
    return ray


CONNECT_TIMEOUT = 30.0  # seconds to reach and join a Ray cluster (--connect-timeout)
START_A_CLUSTER = ("Start one with `ray start --head` (then --address auto), check the address, or run the sweep "
                   "in this process with --backend local.")


class ClusterUnreachable(RuntimeError):
    """The Ray cluster at ``--address`` cannot be reached or joined (raised before the sweep
    folder is touched). A ConnectionError of Ray's is an OSError; this is not, so it is never
    mistaken for a problem with the disk. ``stuck``: Ray's connection attempt is still running
    in a thread of this process, which Python may not be able to exit cleanly (the command
    exits with os._exit)."""

    stuck = False


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``; None when malformed."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        return None
    return host, int(port)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` seconds, else why not.
    Ray itself would retry an unreachable address for many minutes."""
    try:
        socket.create_connection((host, port), timeout=max(timeout, 0.1)).close()
        return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def _speaks_grpc(host: str, port: int, timeout: float) -> bool:
    """Whether host:port completes a gRPC (HTTP/2) handshake within ``timeout`` seconds, as Ray's
    GCS and Ray Client server do; a port where something else listens never does. True when it
    cannot be told (no grpcio; a cluster with TLS, which this plain probe cannot open)."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    try:
        import grpc  # lazy: optional dependency (grpcio, comes with ray)
    except ImportError:
        return True
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=max(timeout, 0.1))
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def _target(address: str) -> tuple[str, str]:
    """The host:port that ``address`` stands for, and how it was found ('' when given as is).
    ``auto`` is what Ray would pick: $RAY_ADDRESS, else the cluster the last `ray start` recorded
    (RAY_TMPDIR/ray/ray_current_cluster), else a GCS process running on this machine."""
    if address != "auto":
        return address, ""
    try:
        from ray._private.services import get_ray_address_from_environment  # lazy: optional dependency (ray)
    except ImportError:  # another Ray version: ray.init resolves it (under the deadline)
        return address, ""
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise ClusterUnreachable("could not reach a Ray cluster at auto: no running Ray cluster was found on this "
                                 f"machine. {START_A_CLUSTER}") from None
    try:
        from ray._private.utils import read_ray_address  # lazy: optional dependency (ray)

        recorded = read_ray_address()
    except Exception:  # noqa: BLE001 - private API of one Ray version
        recorded = None
    how = ("from RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else
           "recorded by the last `ray start` on this machine" if recorded == found else "found on this machine")
    return str(found), how


def check_address(address: str, timeout: float, label: str | None = None) -> None:
    """Raise :class:`ClusterUnreachable` unless a gRPC server (a Ray cluster, as far as can be told
    without joining it) answers at ``address`` (auto, HOST:PORT or ray://HOST:PORT) within
    ``timeout`` seconds; ``label`` names the address in messages."""
    deadline = time.monotonic() + timeout
    target, how = _target(address)
    label = label or address
    shown = label if target == address else f"{label} ({target}, {how})"
    if target == "auto":
        return
    hp = _host_port(target)
    if hp is None:
        raise ClusterUnreachable(f"--address {shown}: not an address; give auto, HOST:PORT or ray://HOST:PORT.")
    host, port = hp
    why = _probe(host, port, timeout)
    if why is not None:
        try:  # Ray connects to this machine's own IP for a localhost address: a GCS may listen only there
            from ray._private.services import resolve_ip_for_localhost  # lazy: optional dependency (ray)

            own = resolve_ip_for_localhost(host)
        except Exception:  # noqa: BLE001 - private API of one Ray version
            own = host
        if own == host or _probe(own, port, max(deadline - time.monotonic(), 0.1)) is not None:
            raise ClusterUnreachable(f"could not reach a Ray cluster at {shown}: {why}. {START_A_CLUSTER}")
        host = own
    if not _speaks_grpc(host, port, max(deadline - time.monotonic(), 0.1)):
        raise ClusterUnreachable(f"could not reach a Ray cluster at {shown}: something listens there but did not "
                                 f"answer as a Ray cluster within {timeout:g} s (--connect-timeout). "
                                 f"{START_A_CLUSTER}")


def _init_within(ray, timeout: float, shown: str, limit: float, **kwargs) -> None:
    """``ray.init(**kwargs)`` within ``timeout`` seconds (what is left of ``limit``, the
    --connect-timeout named in the message): Ray waits for minutes on an address where
    something listens that does not answer as a Ray cluster. It runs in a daemon thread; on a
    timeout that thread is left behind (the command exits right after)."""
    box: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    class _NotMainThread(logging.Filter):  # Ray's note that SIGTERM keeps Python's default handler
        def filter(self, record: logging.LogRecord) -> bool:
            return "not the main thread" not in record.getMessage()

    quiet = _NotMainThread()
    log = logging.getLogger("ray._private.worker")
    log.addFilter(quiet)
    try:
        thread = threading.Thread(target=init, name="ray-init", daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        log.removeFilter(quiet)
    if thread.is_alive():
        stuck = ClusterUnreachable(f"could not reach a Ray cluster at {shown}: it did not answer as one within "
                                   f"{limit:g} s (--connect-timeout). {START_A_CLUSTER}")
        stuck.stuck = True
        raise stuck
    error = box.get("error")
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        first += "" if first.endswith((".", "!", "?")) else "."
        raise ClusterUnreachable(f"could not join the Ray cluster at {shown}: {first} Check the address and the "
                                 "messages above, or run the sweep in this process with --backend local.") from error


def start_ray(address: str | None, num_cpus: int | None, num_gpus: float | None = None,
              connect_timeout: float = CONNECT_TIMEOUT) -> tuple[Any, bool]:
    """(ray, started): joins ``address`` ('auto', 'HOST:PORT', 'ray://HOST:PORT'; $RAY_ADDRESS
    when None) or starts an embedded local Ray. Joining fails with :class:`ClusterUnreachable`
    within ``connect_timeout`` seconds (plus the probe) when the cluster cannot be reached."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "warning"}
    label = address
    if not address and os.environ.get("RAY_ADDRESS"):  # ray.init would join that cluster
        address = os.environ["RAY_ADDRESS"]
        label = f"{address} (from RAY_ADDRESS)"
    if address:  # an unreachable address fails here within connect_timeout; ray.init would retry for minutes
        deadline = time.monotonic() + connect_timeout
        check_address(address, connect_timeout, label)
        left = max(deadline - time.monotonic(), 1.0)
        if address.startswith("ray://"):  # Ray Client: the cluster's own settings apply
            _init_within(ray, left, label, connect_timeout, address=address)
        else:
            _init_within(ray, left, label, connect_timeout, address=address,
                         **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **({"num_gpus": num_gpus} if num_gpus else {}), **kwargs)
    return ray, True


def run_ray(jobs: list[Job], *, session: str, cpus_per_run: float, gpus_per_run: float, retries: int,
            on_done: Callable[[dict], None], on_tick: Callable[[], None] | None = None, address: str | None = None,
            num_cpus: int | None = None, ray: Any = None) -> bool:
    """The runs as Ray tasks, ``cpus_per_run``/``gpus_per_run`` each; a task whose worker dies is
    retried ``retries`` times by Ray (and resumes from the run's state); exceptions are outcomes.
    Returns True when interrupted (Ctrl-C: running tasks are cancelled, their runs stay resumable).
    ``ray``: the module, already connected by :func:`start_ray` (else it is started here)."""
    ray, started = (ray, False) if ray is not None else start_ray(address, num_cpus)
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
