"""Measuring one checkpoint (the unit of work of a worker) and putting the checkpoints together.

:func:`measure_checkpoint` is what a Ray task (or the local loop) runs: load the data (cached
per process), build the model with the checkpoint's weights, build a fresh tracker exactly as
``phasescope run`` does (same data, same measurement subsets, same extensions, same seeds),
measure at the checkpoint's step and return the tracker's state: the tidy rows, the per-sample
test errors and the extensions' per-checkpoint records. The decoder and probe are fitted
inside and never leave the worker.

A worker process keeps what does not depend on the weights (:func:`prepared`, keyed by the
job's configuration and model source): the data, the prepared configuration and extensions, and
the tracker itself, whose converted inputs, feature maps, bootstrap weights and the extensions'
choice of samples and statistics of the inputs are reused (:meth:`PhaseTracker.restart
<phasescope.engine.tracker.PhaseTracker.restart>`) for every checkpoint of the same structure; the
2nd..Kth checkpoint in a worker pays only loading and measuring. :func:`warm_up` fills that cache
before the first checkpoint arrives (a Ray slot's first task, while the driver scans).

Every measurement is a function of the weights alone (the tracker works on a frozen,
BatchNorm-recalibrated copy, seeds its bootstrap by the run's seed and forks the RNG), so
measuring checkpoints one by one in any order, on any worker, gives what the live tracker
recorded; :func:`merge_states` concatenates the per-checkpoint states in step order into
the state the live tracker would have after all of them.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ...config import RunConfig
from ...data import load_dataset
from ...data.atypical import apply_atypical
from ...data.text import is_text
from ...engine.layers import causal_lm_forward
from ...registry import run_extensions
from ...run.experiment import _synthetic_knobs, build_tracker, clamp_to_data
from ...run.models import build_model
from ...run.training import resolve_device
from .load import CheckpointError, Source, build_model_for

# extensions whose state follows the convention merge_states relies on (see there)
MERGEABLE = ("samples", "reconstructions", "infoplane", "ridge_sweep", "transfer")
_DATA_CACHE: dict[str, Any] = {}  # one dataset per worker process (the last one asked for)
DATA_KEYS = ("dataset", "data_dir", "train_size", "seed", "download", "num_classes", "context", "synthetic",
             "atypical")


def _data_key(cfg) -> str:
    return json.dumps({k: getattr(cfg, k) for k in DATA_KEYS}, sort_keys=True, default=str)


def _read_data(cfg):
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size, seed=cfg.seed,
                        download=cfg.download, num_classes=cfg.num_classes, context=cfg.context,
                        **_synthetic_knobs(cfg))
    return apply_atypical(data, cfg.atypical, cfg.seed)


def load_data(cfg):
    """The data exactly as ``phasescope run`` prepares it (atypical samples included), cached per process."""
    key = _data_key(cfg)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = _read_data(cfg)
    return _DATA_CACHE[key]


def forget_data() -> None:
    """Drop this process's cached data and prepared measurement (the local backend, once done)."""
    _DATA_CACHE.clear()
    _PREPARED.clear()


def prepare(cfg):
    """(cfg with the sizes the data allow, data to measure on, fresh extensions, what was adjusted):
    the steps of ``experiment._run`` before the model is built, in the same order."""
    data = load_data(cfg)
    changes: dict = {}
    extensions: list = []
    for stage in ("data", "pre-training data"):  # a class-split transfer task splits the data
        cfg, more = clamp_to_data(cfg, data)
        changes.update(more)
        if stage == "data":
            data, extensions = run_extensions(cfg, data, [])
    unknown = [e.name for e in extensions if e.name not in MERGEABLE]
    if unknown:
        raise ValueError(f"phasescope analyze cannot measure {', '.join(unknown)} from saved checkpoints: "
                         "it acts during training (keep_best, stop_on_increase). Drop those options.")
    return cfg, data, extensions, changes


def model_forward(source: Source, data) -> Any:
    """How the tracker calls the checkpoints' model: as ``phasescope run`` does (None), or, for a
    Hugging Face causal LM on text (``--hf`` with a text dataset), ``model(input_ids=x).logits[:, -1]``."""
    return causal_lm_forward if source.kind == "hf" and is_text(data) else None


def make_tracker(cfg, model, data, extensions, steps, source: Source | None = None):
    """The tracker of ``phasescope run`` (experiment.build_tracker), scheduled at the checkpoints' ``steps``."""
    device = resolve_device(cfg.device)
    tracker = build_tracker(cfg, model.to(device), data, device, extensions,
                            forward=model_forward(source or Source(), data))
    tracker.schedule = sorted(set(int(s) for s in steps))
    return tracker


# ---------------------------------------------------------------------- what a worker keeps
@dataclass
class Prepared:
    """What a worker process keeps between checkpoints of one configuration: :func:`prepare`'s
    result and the tracker last used (reused while the checkpoints' models have its structure)."""

    cfg: Any
    data: Any
    extensions: list
    tracker: Any = None
    structure: Any = None
    used: bool = False  # the extensions went into a tracker: a new tracker needs new ones

    def tracker_for(self, model, step: int, source: Source):
        """A tracker for ``model``, scheduled at ``step``, in the state a new one would have: the
        kept one restarted when the model has its structure (and every extension can restart),
        else a new one (with new extensions when the old ones were used)."""
        structure = model_structure(model)
        t = self.tracker
        if t is not None and structure == self.structure and t.restart([step]):
            model.to(t.device)
            return t
        self.forget_tracker()
        if self.used:
            self.cfg, self.data, self.extensions, _ = prepare(self.cfg)
        self.used = True
        self.tracker = make_tracker(self.cfg, model, self.data, self.extensions, [step], source)
        self.structure = structure
        return self.tracker

    def forget_tracker(self) -> None:
        """Build the next tracker anew (after a failed measurement nothing of this one is trusted)."""
        self.tracker, self.structure = None, None


_PREPARED: dict[str, Prepared] = {}  # one configuration per worker process (the last one asked for)


def model_structure(model) -> tuple:
    """What a tracker built for ``model`` depends on besides the data: its class, its tensors'
    names, shapes and dtypes, its device (never the values of its weights)."""
    p = next(model.parameters(), None)
    return (type(model).__module__, type(model).__qualname__, str(p.device) if p is not None else "cpu",
            tuple((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()))


def cache_key(config: dict, source: dict) -> str:
    """The key of :data:`_PREPARED`: the configuration (``iterations`` aside: it only sets a default
    schedule, which every checkpoint's own step replaces) and the model's source."""
    return json.dumps({"config": {k: v for k, v in config.items() if k != "iterations"}, "source": source},
                      sort_keys=True, default=str)


def prepared(config: dict, source: dict) -> Prepared:
    """:func:`prepare` of ``config``, cached per process; the key is also that of the prepared
    configuration (a job's configuration is the driver's prepared one: the cache serves both)."""
    key = cache_key(config, source)
    if key not in _PREPARED:
        _PREPARED.clear()
        cfg, data, extensions, _ = prepare(RunConfig.from_dict(config))
        _PREPARED[key] = _PREPARED[cache_key(cfg.to_dict(), source)] = Prepared(cfg, data, extensions)
    return _PREPARED[key]


def warm_up(config: dict, source: dict, threads: int | None = None) -> dict:
    """Fill this process's cache before its first checkpoint: imports, the data, the prepared
    configuration and extensions and, for a built-in model (built from the seed, as the driver's
    reference; a user's factory runs only for checkpoints), the tracker with everything of it
    that does not depend on the weights. Never raises: a checkpoint's own job reports problems."""
    t0 = time.perf_counter()
    out = {"pid": os.getpid(), "node": _node_id(), "ok": False, "message": "", "started": time.time()}
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = prepared(config, source)
            src = Source.from_dict(source)
            if src.kind == "model" and ":" not in str(prep.cfg.model) and prep.tracker is None:
                torch.manual_seed(prep.cfg.seed)
                model = build_model(prep.cfg.model, prep.data.input_shape, prep.data.num_classes, prep.cfg.width)
                prep.tracker_for(model, 0, src)
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - the jobs meet the same problem and report it per checkpoint
        out["message"] = f"{type(e).__name__}: {e}"
    out["seconds"] = time.perf_counter() - t0
    return out


def measure_checkpoint(job: dict) -> dict:
    """Measure one checkpoint. ``job``: config (RunConfig dict), source (:class:`Source` dict),
    checkpoint (discovery dict: step, path, format, name, weights), threads. Returns
    {step, name, status (measured | failed), message, state, seconds, pid, host, node, started
    (wall-clock time)}; an error is an outcome, never an exception (a dead worker is Ray's to
    retry). The worker's cache (:func:`prepared`) supplies data, extensions and the tracker."""
    t0 = time.perf_counter()
    ckpt = job["checkpoint"]
    out = {"step": ckpt["step"], "name": ckpt["name"], "status": "failed", "message": "", "state": None,
           "pid": os.getpid(), "host": socket.gethostname(), "node": _node_id(), "started": time.time()}
    if job.get("threads"):
        torch.set_num_threads(max(1, int(job["threads"])))
    try:
        with warnings.catch_warnings():  # the driver has said what there is to say (feature counts, ...)
            warnings.simplefilter("ignore")
            source = Source.from_dict(job["source"])
            prep = prepared(job["config"], job["source"])
            model = build_model_for(source, prep.cfg, prep.data, ckpt)
            t1 = time.perf_counter()
            tracker = prep.tracker_for(model, int(ckpt["step"]), source)
            try:
                tracker.measure(model, int(ckpt["step"]))
            except BaseException:
                prep.forget_tracker()
                raise
        del model
        out.update(status="measured", state=tracker.state_dict(),
                   seconds={"load": t1 - t0, "measure": time.perf_counter() - t1})
    except CheckpointError as e:
        out["message"] = str(e)
    except Exception as e:  # noqa: BLE001 - one checkpoint's failure is recorded; the others go on
        out["message"] = f"{type(e).__name__}: {e}"
    out.setdefault("seconds", {"load": time.perf_counter() - t0, "measure": 0.0})
    return out


def _node_id() -> str | None:
    """The Ray node this runs on; None outside Ray (ray is never imported for it)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    try:
        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not in a Ray worker
        pass
    return None


# ---------------------------------------------------------------------- putting checkpoints together
def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if all(isinstance(k, int) for k in (*a, *b)):  # keyed by iteration: the union
            return {**a, **b}
        return {k: (_merge(a[k], b[k]) if k in a and k in b else (b[k] if k in b else a[k])) for k in {**a, **b}}
    if isinstance(a, list) and isinstance(b, list):  # per-checkpoint records in checkpoint order
        return a + b
    return b  # settings and "the latest checkpoint's" values (e.g. typicality at the end)


def merge_states(states: dict[int, dict]) -> dict:
    """The tracker state after all checkpoints of ``states`` ({step: state of that checkpoint
    alone}), as the live tracker would hold it after measuring them in step order.

    The convention every extension in :data:`MERGEABLE` follows: what accumulates per
    checkpoint is a list in checkpoint order or a dict keyed by the (int) iteration, at any
    depth below string keys; anything else is a setting or "the latest checkpoint's" value."""
    merged: dict | None = None
    for step in sorted(states):
        merged = states[step] if merged is None else _merge(merged, states[step])
    if merged is None:
        return {"rows": [], "errors": {}, "timings": {}, "decisions": {}, "extensions": {}}
    last = states[max(states)].get("settings")
    if last is not None:  # the settings of a tracker that measured exactly these checkpoints
        merged["settings"] = {**last, "schedule": sorted(int(s) for s in states)}
    return merged
