"""``analyze``: measure saved checkpoints into a run folder, as ``phasescope run`` writes it.

Discover the checkpoints -> claim the run folder -> prepare data, extensions and the model
(as ``run`` does) -> the integrity guard reads every checkpoint once (``--strict``: refuse on
any finding) -> one job per checkpoint not yet measured, locally or as Ray tasks (on Ray, a
warm-up task per slot, submitted as soon as Ray is connected, loads the data and prepares the
measurement in the workers while the driver prepares and scans) -> analyze.pt holds every
checkpoint measured before the jobs start; each checkpoint that comes in is appended to
analyze.journal (O(1): a kill loses only the checkpoints in flight), and metrics.csv and
errors.npz are rewritten at most every :data:`CHECKPOINT_SECONDS` -> when all are in:
analyze.pt with every checkpoint (the journal is folded into it), phases, figures,
extensions' files, report.html and phases.json.

Running it again into the same folder measures only the checkpoints it has not measured
(new ones, or ones whose weights changed); measurements of checkpoints deleted since (a
trainer that keeps the last k) are kept.
"""
from __future__ import annotations

import errno
import io
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from ...config import ConfigError, RunConfig
from ...data.text import is_text
from ...run.experiment import config_differences, text_positions, worth_telling
from ...run.models import build_model
from ...run.runfolder import RunWriter, config_document
from ...outputs.runs import (InterruptGuard, RunFolderError, RunWriteError, Wording, atomic_write, read_json,
                             run_writer, write_bytes_to)
from ..sweep.backends import start_ray
from .backends import run_jobs, warm_up_ray
from .discover import Discovery, discover
from .extension import CheckpointAnalysis
from .guard import Finding, Scan, findings, measurable, reference_of, scan, file_stamp
from .load import CheckpointError, Source, build_model_for, hf_model, read_weights, tied_groups
from .measure import forget_data, make_tracker, merge_states, prepare

STATE_FILE = "analyze.pt"
JOURNAL_FILE = "analyze.journal"  # the checkpoints measured since analyze.pt was written, one frame each
CHECKPOINT_SECONDS = 5.0  # metrics.csv and errors.npz rewritten at most this often while checkpoints come in
WRITER = "analyze"  # config.json's integration.source: who wrote the run folder
WORDING = Wording(out="--out", overwrite="--overwrite", resume=None)  # a re-run needs no option
BACKENDS = ("local", "ray")
# Options that do not change what a checkpoint measures (training's, and the device): a re-run may differ in them.
TRAINING_KEYS = ("iterations", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "points_per_octave",
                 "save_checkpoints", "device")


class AnalyzeError(ValueError):
    """Bad input to ``analyze`` (no checkpoints, a folder that holds something else, ...)."""


class IntegrityRefused(AnalyzeError):
    """``strict``: the guard found something; nothing was measured."""

    def __init__(self, found: list[Finding]):
        self.findings = found
        lines = "\n".join(f"  {f.warning()}" for f in found)
        super().__init__(f"--strict: the integrity guard found {len(found)} problem(s); nothing was measured:\n{lines}")


class NothingMeasured(AnalyzeError):
    """No checkpoint could be measured."""


@dataclass
class AnalyzeResult:
    out: Path
    config: RunConfig
    metrics: pd.DataFrame
    payload: dict
    status: str = "complete"
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    outcomes: dict[int, dict] = field(default_factory=dict)  # step -> outcome of this call's jobs
    skipped: list[str] = field(default_factory=list)  # measured by an earlier call
    warm_ups: list[dict] = field(default_factory=list)  # Ray: the warm-up tasks finished by the end (pid, node, seconds)


def measurement_dict(cfg: RunConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in TRAINING_KEYS}


def read_saved(out: Path) -> dict | None:
    """analyze.pt with the checkpoints of analyze.journal added (``journaled``: how many); None
    without analyze.pt (a journal alone belongs to no analysis that can be checked: ignored)."""
    path = Path(out) / STATE_FILE
    if not path.exists():
        return None
    try:
        doc = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise RunFolderError(f"{path} is unreadable ({type(e).__name__}: {e}); run again with --overwrite "
                             "to measure every checkpoint anew.") from None
    entries = read_journal(Path(out) / JOURNAL_FILE)
    for e in entries:  # in the order they came in, as on_done recorded them
        if e.get("state") is not None:
            doc["states"][e["step"]] = e["state"]
        doc["records"][e["step"]] = e["record"]
    doc["journaled"] = len(entries)
    return doc


def _save(out: Path, doc: dict) -> None:
    doc = {k: v for k, v in doc.items() if k != "journaled"}
    atomic_write(out / STATE_FILE, write_bytes_to(lambda f: torch.save(doc, f)))  # a full disk names the file


class Journal:
    """analyze.journal: each checkpoint's outcome appended as it comes in, a length-prefixed
    ``torch.save`` frame, flushed and fsynced; the cost does not grow with the checkpoints
    measured before. A frame cut short (a kill while appending) ends the journal when read:
    that checkpoint was in flight. :func:`read_saved` adds the journal to analyze.pt."""

    def __init__(self, path: Path):
        self.path, self.f = Path(path), None

    def append(self, step: int, state: dict | None, record: dict) -> None:
        buf = io.BytesIO()
        torch.save({"step": int(step), "state": state, "record": record}, buf)
        data = buf.getvalue()
        pos = None
        try:
            if self.f is None:
                self.f = open(self.path, "ab")  # noqa: SIM115 - held open while checkpoints come in
            pos = self.f.tell()
            self.f.write(struct.pack("<Q", len(data)) + data)
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as e:  # a full disk: the frames before stay readable; named like atomic_write's failures
            try:
                if pos is not None:
                    self.f.truncate(pos)
            except OSError:
                pass
            raise RunWriteError(self.path, e.errno if e.errno is not None else errno.EIO, e.strerror or str(e)) from e

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def remove(self) -> None:
        """Once analyze.pt holds everything in it."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_journal(path: Path) -> list[dict]:
    """The complete frames of a journal (none when there is no file)."""
    entries: list[dict] = []
    if not Path(path).exists():
        return entries
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            data = f.read(struct.unpack("<Q", head)[0])
            try:
                entries.append(torch.load(io.BytesIO(data), map_location="cpu", weights_only=False))
            except Exception:  # noqa: BLE001 - cut short by a kill: the checkpoint that was in flight
                break
    return entries


def _check_saved(saved: dict, out: Path, ckpt_dir: Path, cfg: RunConfig, source: Source, adjusted: dict) -> None:
    if Path(saved["source"]).resolve() != ckpt_dir.resolve():
        raise AnalyzeError(f"{out} holds the analysis of {saved['source']}, not of {ckpt_dir}. Give that folder, "
                           "another --out, or --overwrite.")
    diffs = config_differences(measurement_dict(RunConfig.from_dict(saved["config"])), measurement_dict(cfg), adjusted)
    how = lambda d: {k: d.get(k) for k in ("kind", "spec")}  # noqa: E731 - allow_pickle is no option of the result
    if how(saved.get("model_source") or {}) != how(source.to_dict()):
        diffs.append(("--model/--hf/--lightning", how(saved.get("model_source") or {}), how(source.to_dict())))
    if diffs:
        lines = "; ".join(f"{name}: saved {a!r}, given {b!r}" for name, a, b in diffs[:6])
        raise ConfigError(f"{out} holds an analysis with other options ({lines}). Give the same options to add new "
                          "checkpoints to it, another --out, or --overwrite to measure every checkpoint anew.")


def _reference_model(source: Source, cfg: RunConfig, data, checkpoints: list[dict]):
    """(model, reference {key: (shape, dtype)}, tied key groups, what the keys are compared with,
    findings of the loading itself). The model is built by name (no weights needed), or from the
    first checkpoint that loads (Hugging Face, Lightning: their structure comes from the files).
    Hugging Face files may use older key names that transformers converts while loading: the
    checkpoints are compared with the first one's file, and transformers' own loading report
    of that one says what it lacks or has besides the model."""
    if source.kind == "model":
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
        return model, reference_of(model), tied_groups(model), "the model", []
    problems = []
    for c in checkpoints:
        try:
            if source.kind == "lightning":
                model = build_model_for(source, cfg, data, c)
                return model, reference_of(model), tied_groups(model), "the model", []
            if c["format"] != "hf":
                raise AnalyzeError(f"{c['name']}: --hf loads Hugging Face folders (config.json and weights); this is "
                                   f"a {c['format']} file. Use --model for it.")
            model, info = hf_model(Path(c["path"]), loading_info=True)
            sd, _ = read_weights(c["path"], "hf", weights=c["weights"])
            reference = {k: (list(v.shape), str(v.dtype)) for k, v in sd.items()}
            del sd
            found = [Finding(kind, [c["step"]], [c["name"]], f"{c['name']}: transformers reports {len(keys)} {what} "
                             f"({', '.join(sorted(keys)[:4])}{' ...' if len(keys) > 4 else ''}).")
                     for kind, keys, what in (("missing-keys", info.get("missing_keys") or (), "tensor(s) of the model "
                                               "missing in the folder (initialised at random when loaded)"),
                                              ("extra-keys", info.get("unexpected_keys") or (), "tensor(s) in the folder "
                                               "that the model does not use")) if keys]
            return model, reference, [], f"{c['name']} (the first checkpoint)", found
        except AnalyzeError:
            raise
        except CheckpointError as e:
            if "loads" in str(e):  # a format --hf/--lightning cannot read at all
                raise AnalyzeError(str(e)) from None
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - corrupt files: the guard names them; try the next one
            problems.append(f"{c['name']}: {type(e).__name__}: {e}")
    raise NothingMeasured("no checkpoint could be loaded: " + "; ".join(problems[:3]))


def analyze(ckpt_dir: str | Path, cfg: RunConfig, out: str | Path | None = None, *, source: Source | None = None,
            backend: str = "local", address: str | None = None, cpus_per_run: float | None = None,
            gpus_per_run: float = 0.0, num_cpus: int | None = None, retries: int = 3, steps_from: str | None = None,
            strict: bool = False, overwrite: bool = False, progress: bool = True, guard: Any = None,
            console: Any = None, on_scan: Callable[[Scan], None] | None = None) -> AnalyzeResult:
    """Measure every checkpoint in ``ckpt_dir`` with ``cfg``'s data and measurement options into
    the run folder ``out`` (see the module docstring).

    ``source``: how the model is built (:class:`~phasescope.interfaces.analyze.load.Source`; default
    ``cfg.model`` by name). ``backend``: ``local`` (one checkpoint after another here;
    ``cpus_per_run`` sets torch's threads) or ``ray`` (one task per checkpoint with
    ``cpus_per_run`` [1] CPUs and ``gpus_per_run`` GPUs, on an embedded local Ray of
    ``num_cpus`` or the cluster at ``address``; a task whose worker dies is retried
    ``retries`` times). ``strict``: refuse (:class:`IntegrityRefused`) on any finding of the
    guard. Raises :class:`AnalyzeError` / :class:`~phasescope.config.ConfigError` /
    :class:`~phasescope.outputs.runs.RunFolderError` before anything is measured."""
    cfg.validate()
    source = source or Source()
    if backend not in BACKENDS:
        raise AnalyzeError(f"--backend {backend!r}: choose local or ray.")
    if cpus_per_run is not None and cpus_per_run <= 0:
        raise AnalyzeError(f"--cpus-per-run must be positive; got {cpus_per_run}.")
    if gpus_per_run < 0 or retries < 0:
        raise AnalyzeError("--gpus-per-run and --retries must be >= 0.")
    if cfg.transfer.keep_best or cfg.transfer.stop_on_increase:
        raise AnalyzeError("--keep-best and --stop-on-increase act during training; phasescope analyze reads "
                           "checkpoints that exist (the one at the reconstruction minimum is in phases.json).")
    ckpt_dir = Path(ckpt_dir).expanduser()
    if out is not None and ckpt_dir.resolve().is_relative_to(Path(out).expanduser().resolve()):
        raise AnalyzeError(f"--out {out} holds the checkpoints ({ckpt_dir}); the run folder is written (and with "
                           "--overwrite cleared) there. Choose another --out, e.g. a sibling folder.")
    found = discover(ckpt_dir, steps_from=steps_from)
    if not found.checkpoints:
        why = "; ".join(f"{s.name}: {s.reason}" for s in found.skipped[:4])
        raise AnalyzeError(f"no checkpoints found in {ckpt_dir}" + (f" ({why})" if why else " (the folder is empty)")
                           + ". Run with --dry-run to see what is read and why.")
    # a folder an earlier analysis wrote is added to (its analyze.pt says what is measured); the
    # writer refuses any other run's folder unless overwrite
    existing = out is not None and not overwrite and run_writer(Path(out)) == WRITER
    name = f"analyze-{cfg.dataset}-{cfg.model if source.kind == 'model' else source.kind}"
    ray, started, warm = (None, False, [])
    if backend == "ray":  # joined before the folder is touched: an unreachable cluster leaves nothing behind
        ray, started = start_ray(address, num_cpus)
        # at once: the workers' imports and data overlap the driver's preparation and the guard's scan
        warm = warm_up_ray(ray, cfg.to_dict(), source.to_dict(), count=len(found.checkpoints),
                           cpus_per_run=cpus_per_run or 1.0, gpus_per_run=gpus_per_run,
                           threads=job_threads(cpus_per_run, backend))
    try:
        with RunWriter.claim(out, name, resume=existing, overwrite=overwrite, writer=WRITER,
                             wording=WORDING) as folder:
            if guard is not None:
                result = _analyze(found, cfg, folder, existing, source, backend, ray, cpus_per_run, gpus_per_run,
                                  retries, strict, progress, guard, console, on_scan)
            else:
                with InterruptGuard() as own:
                    result = _analyze(found, cfg, folder, existing, source, backend, ray, cpus_per_run,
                                      gpus_per_run, retries, strict, progress, own, console, on_scan)
        result.warm_ups = _finished(ray, warm)
        return result
    finally:
        # a warm-up still running is left to finish (cancelling could interrupt a worker's imports);
        # an embedded Ray's shutdown ends it
        forget_data()  # the local backend's dataset is not kept once the analysis is done
        if started:
            ray.shutdown()


def _finished(ray, refs: list) -> list[dict]:
    """The outcomes of the warm-up tasks that have finished (pid, node, seconds, ok, message)."""
    if not refs:
        return []
    try:
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return list(ray.get(done))
    except Exception:  # noqa: BLE001 - only for the record
        return []


def job_threads(cpus_per_run: float | None, backend: str) -> int | None:
    """torch threads of a job: ``cpus_per_run`` (at least 1) when given; one on Ray; else torch's default."""
    return int(cpus_per_run) if cpus_per_run and cpus_per_run >= 1 else (1 if backend == "ray" else None)


def _analyze(found: Discovery, cfg: RunConfig, folder: RunWriter, existing: bool, source: Source, backend: str,
             ray, cpus_per_run, gpus_per_run, retries, strict, progress, guard, console, on_scan) -> AnalyzeResult:
    out, ckpt_dir = folder.path, Path(found.folder)
    notes = list(folder.notes)
    saved = read_saved(out) if existing else None
    checkpoints = [c.to_dict() for c in found.checkpoints]
    cfg = cfg.replace(iterations=max(1, max(c["step"] for c in checkpoints),
                                     *((int(s) for s in saved["states"]) if saved else ())))
    cfg, data, extensions, adjusted = prepare(cfg)
    if saved is not None:
        _check_saved(saved, out, ckpt_dir, cfg, source, (read_json(out / "config.json") if (out / "config.json").exists()
                                                          else {}).get("adjusted") or {})
    notes += worth_telling(adjusted)
    model, reference, tied, against, load_findings = _reference_model(source, cfg, data, checkpoints)

    scans = _scan_all(checkpoints, (saved or {}).get("scans", {}), reference, tied, source, on_scan)
    found_problems = load_findings + findings(scans, checkpoints, against)
    if strict and found_problems:
        raise IntegrityRefused(found_problems)
    to_measure = measurable(scans, found_problems)
    states: dict[int, dict] = dict((saved or {}).get("states", {}))
    records: dict[int, dict] = dict((saved or {}).get("records", {}))
    journaled = (saved or {}).get("journaled", 0)  # checkpoints of an interrupted call, not yet in analyze.pt
    jobs, skipped = _plan(to_measure, checkpoints, states, records, notes, ckpt_dir)
    if not jobs and not states:
        raise NothingMeasured(f"none of the {len(checkpoints)} checkpoints in {ckpt_dir} can be measured: "
                              + "; ".join(f.warning() for f in found_problems[:3]))

    steps = sorted(set(states) | {c["step"] for c in jobs})
    tracker = make_tracker(cfg, model, data, extensions, steps, source)
    notes += [n for n in tracker.notes]
    # Everything is validated: only now may an overwritten folder's files go (a re-run keeps them).
    analysis = {"source": WRITER, "checkpoints": str(ckpt_dir.resolve()), "model_source": source.to_dict(),
                "discovered": checkpoints, "skipped_entries": [s.to_dict() for s in found.skipped]}
    model_name = cfg.model if source.kind == "model" else f"{source.kind}:{type(model).__name__}"
    text = {"measured_windows": text_positions(data, cfg)} if is_text(data) else {}  # as phasescope run records
    folder.start(config_document(
        cfg.to_dict(), data={**data.describe(), **text}, measurement=tracker.describe(),
        model={"name": model_name, "parameters": sum(p.numel() for p in model.parameters()),
               "device": str(tracker.device)},
        adjusted=adjusted or None, integration=analysis),
        title=f"{model_name} on {cfg.dataset}: checkpoints of {ckpt_dir.name}")
    summary = CheckpointAnalysis()
    tracker.extensions.append(summary)  # its phases.json section and the guard's warnings
    doc = {"version": 1, "source": analysis["checkpoints"], "model_source": source.to_dict(), "config": cfg.to_dict(),
           "states": states, "records": records, "scans": {s.name: s.to_dict() for s in scans}}
    outcomes: dict[int, dict] = {}
    failures: dict[int, str] = {}
    sha = {s.step: s.sha256 for s in to_measure}
    journal = Journal(out / JOURNAL_FILE)
    if jobs or journaled:  # analyze.pt holds everything so far; the journal starts empty
        with guard.protect():
            _save(out, doc)
            journal.remove()
    written = {"at": None, "pending": False}  # when the run folder's files were last written

    def on_done(o: dict) -> None:
        outcomes[o["step"]] = o
        rec = {k: o.get(k) for k in ("name", "status", "message", "seconds", "pid", "host", "node")}
        if o["status"] == "measured":
            states[o["step"]] = o["state"]
            rec["sha256"] = sha[o["step"]]
        else:
            failures[o["step"]] = o["message"]
        records[o["step"]] = rec
        with guard.protect():  # a Ctrl-C waits until this checkpoint is recorded
            journal.append(o["step"], o["state"] if o["status"] == "measured" else None, rec)
            written["pending"] = written["pending"] or o["status"] == "measured"
            now = time.monotonic()
            if written["pending"] and (written["at"] is None or now - written["at"] >= CHECKPOINT_SECONDS):
                _load(tracker, states)  # metrics.csv and errors.npz: the first checkpoint, then throttled
                folder.checkpoint(tracker)
                written.update(at=time.monotonic(), pending=False)

    threads = job_threads(cpus_per_run, backend)
    job_args = [{"config": cfg.to_dict(), "source": source.to_dict(), "checkpoint": c, "threads": threads}
                for c in jobs]
    if progress and skipped:
        print(f"{len(skipped)} of {len(to_measure)} checkpoints already measured in {out}: skipped", flush=True)
    status = "complete"
    try:
        interrupted = run_jobs(job_args, backend=backend, on_done=on_done, ray=ray, cpus_per_run=cpus_per_run,
                               gpus_per_run=gpus_per_run, retries=retries, progress=progress, console=console)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        _load(tracker, states)  # the status written on the way out (RunWriter.close) counts every checkpoint in
        raise
    finally:
        journal.close()
    if interrupted:
        status = "interrupted"
        guard.interrupted = True
    if not states:
        status = "failed"
    _load(tracker, states)
    if jobs or journaled:  # every checkpoint in analyze.pt; the journal is folded into it
        with guard.protect():
            _save(out, doc)
            journal.remove()
    summary.summary = _summary(found, source, scans, found_problems, states, records, failures, outcomes)
    with guard.closing():
        df, _, payload = folder.finish(tracker, status, figure=bool(states))
    if status == "failed":
        raise NothingMeasured("no checkpoint could be measured: " + "; ".join(
            f"step {k}: {v}" for k, v in sorted(failures.items())[:3]))
    return AnalyzeResult(out, cfg, df, payload, status, payload.get("seconds", {}), notes, found_problems, outcomes,
                         skipped)


def _load(tracker, states: dict[int, dict]) -> None:
    """The driver's tracker holds the checkpoints measured so far (its schedule: exactly those,
    so that a checkpoint whose measurement failed leaves no gap the tracker would refuse)."""
    tracker.schedule = sorted(int(s) for s in states)
    tracker.load_state_dict(merge_states(states))


def _scan_all(checkpoints: list[dict], cached: dict, reference, tied, source: Source, on_scan) -> list[Scan]:
    """The guard's read of every checkpoint; a file unchanged since the last call (same size and
    mtime) keeps that call's scan instead of being read again."""
    scans = []
    for c in checkpoints:
        old = cached.get(c["name"])
        fresh = not (old and not old.get("error") and old.get("stamp") == file_stamp(c["path"])
                     and old.get("step") == c["step"])  # a failed read is tried again (--allow-pickle now?)
        s = scan(c, reference, tied, allow_pickle=source.allow_pickle) if fresh else Scan(**old)
        scans.append(s)
        if on_scan is not None:
            on_scan(s)
    return scans


def _plan(to_measure: list[Scan], checkpoints: list[dict], states: dict, records: dict, notes: list[str],
          ckpt_dir: Path) -> tuple[list[dict], list[str]]:
    """(jobs, names skipped): checkpoints measured by an earlier call with the same weights (same
    hash) are skipped; one whose weights changed is measured again (its old state dropped)."""
    by_name = {c["name"]: c for c in checkpoints}
    jobs, skipped = [], []
    for s in to_measure:
        rec = records.get(s.step)
        if s.step in states and rec and rec.get("sha256") == s.sha256:
            skipped.append(s.name)
            continue
        if s.step in states:
            notes.append(f"step {s.step} ({s.name}) has other weights than when it was measured: measured again")
            states.pop(s.step)
        jobs.append(by_name[s.name])
    gone = sorted(set(states) - {s.step for s in to_measure})
    if gone:
        notes.append(f"steps {', '.join(map(str, gone))} were measured earlier and are no longer in {ckpt_dir}: "
                     "their measurements are kept")
    return jobs, skipped


def _summary(found: Discovery, source: Source, scans: list[Scan], found_problems: list[Finding], states: dict,
             records: dict, failures: dict, outcomes: dict) -> dict:
    """phases.json's ``analyze`` section: where the checkpoints came from, what became of each,
    the guard's findings and the lines they add to ``warnings``."""
    problems = [f.warning() for f in found_problems]
    problems += [f"checkpoint measurement failed at step {k} ({records[k]['name']}): {v}"
                 for k, v in sorted(failures.items())]
    return {
        "source": str(Path(found.folder).resolve()),
        "model_source": source.to_dict(),
        "checkpoints": [{"step": s.step, "name": s.name, "sha256": s.sha256,
                         "status": "measured" if s.step in states and records.get(s.step, {}).get("name") == s.name
                         else ("failed" if s.step in failures else "skipped")} for s in scans],
        "measured": sorted(int(k) for k in states),
        "measured_now": sorted(int(k) for k, o in outcomes.items() if o["status"] == "measured"),
        "skipped_entries": [s.to_dict() for s in found.skipped],
        "findings": [f.to_dict() for f in found_problems],
        "failed": {int(k): v for k, v in failures.items()},
        "warnings": problems,
    }
