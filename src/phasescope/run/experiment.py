"""``run_experiment``: the main job, top to bottom.

Claim the run folder (lock; refuse what would lose a result) -> load data -> build the
model -> set up the tracker -> (only now) clear an overwritten folder and write config.json
(the folder is written by :class:`~phasescope.run.runfolder.RunWriter`, the writer of every run) -> train, measuring at log-spaced checkpoints -> after every checkpoint write metrics.csv,
errors.npz, the extensions' files, phases.json and state.pt (Ctrl-C is held until the
checkpoint is complete) -> at the end (or on Ctrl-C, stop or divergence) draw the figures
and record the run's ``status`` in phases.json (further Ctrl-C are ignored meanwhile).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .budget import plan_budget
from ..config import ConfigError, RunConfig, flag_of, sections
from ..data import Splits, load_dataset
from ..data import subsets
from ..data.atypical import MASK_FILE, apply_atypical, mask_arrays
from ..data.text import is_text, window_offsets
from ..outputs.html import write_index_quietly
from .models import build_model, default_layers, token_layers
from ..engine.phases import PhaseResult
from ..registry import run_extensions
from .runfolder import RunWriter, config_document, versions, write_checkpoint, write_outputs  # noqa: F401
from ..outputs.runs import (
    CHECKPOINTS, InterruptGuard, ResumeMismatch, RunFolder, RunFolderError, atomic_write, clear_run_files,
    load_state, read_json, write_bytes_to, write_npz,
)
from ..engine.schedule import log_schedule
from ..engine.settings import MeasureSettings
from ..engine.tracker import PhaseTracker
from ..errors import StopTraining
from .training import BatchStream, TrainingDiverged, make_optimizer, resolve_device, train
from ..outputs.compare import aggregate, load_runs, phase_table, plot_seeds, seed_agreement

DEFAULTS = RunConfig()  # what a run uses for every option not given


@dataclass
class RunResult:
    out: Path
    config: RunConfig
    metrics: pd.DataFrame
    phases: dict[str, PhaseResult]
    payload: dict
    status: str = "complete"  # complete | interrupted | diverged | stopped (--stop-on-increase)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # adjustments and recoveries worth telling the user


# ---------------------------------------------------------------------- measurement subsets
def measurement_sets(data: Splits, cfg: RunConfig) -> tuple[tuple, tuple]:
    """Seeded, class-balanced fit (training) and test subsets the decoder/probe use (data.subsets)."""
    return subsets.measurement_sets(data, cfg.fit_samples, cfg.test_samples, cfg.seed)


def clamp_to_data(cfg: RunConfig, data: Splits) -> tuple[RunConfig, dict[str, dict]]:
    """``cfg`` with the batch size and sample counts that the data allow, and what was changed
    ({option: {"requested", "used", "why"}}), so config.json records the values used."""
    n_train, n_test = len(data.y_train), len(data.y_test)
    changes: dict[str, dict] = {}

    def clamp(key: str, option: str, available: int, what: str) -> None:
        v = getattr(cfg, key)
        if v is not None and v > available:
            changes[key] = {"requested": v, "used": available,
                            "why": f"{option} {v} is more than the {available} {what}; using {available}"}
    clamp("batch_size", "--batch-size", n_train, "training samples")
    clamp("fit_samples", "--fit-samples", n_train, "training samples")
    clamp("test_samples", "--test-samples", n_test, "test samples")
    for key, option, n in (("fit_samples", "--fit-samples", n_train), ("test_samples", "--test-samples", n_test)):
        v = getattr(cfg, key)
        k = len(np.unique((data.y_train if key == "fit_samples" else data.y_test).numpy()))
        if v is not None and v < k and v < n:
            raise ConfigError(f"{option} {v} is smaller than the number of classes ({k}): the class-balanced "
                              f"subset needs at least one sample per class. Give {option} {k} or more.")
    if changes:
        cfg = cfg.replace(**{k: c["used"] for k, c in changes.items()})
    return cfg, changes


def worth_telling(changes: dict[str, dict]) -> list[str]:
    """The notes of :func:`clamp_to_data`'s adjustments to values the user chose: config.json records
    every adjustment, but a default larger than the data (``--test-samples 2000`` on the 1,000 test
    digits of the default run) is not news."""
    return [c["why"] for k, c in changes.items() if c["requested"] != getattr(DEFAULTS, k, None)]


def build_tracker(cfg: RunConfig, model: torch.nn.Module, data: Splits, device: torch.device,
                  extensions: Sequence = (), *, forward: Any = None,
                  schedule: Sequence[int] | None = None) -> PhaseTracker:
    """The run's tracker. ``forward(model, x)``: how a model that is not phasescope's own is called
    (``phasescope analyze --hf`` of a causal LM: :func:`~phasescope.engine.layers.causal_lm_forward`,
    every transformer block tracked by default). ``schedule``: the iterations it may measure
    (default the configured log schedule; ``--budget`` gives its candidates, a superset, and
    decides which are measured)."""
    fit, test = measurement_sets(data, cfg)
    text = is_text(data)  # windows of token ids: the decoder reconstructs their last token(s)
    token_options = {"target": "tokens", "vocab_size": data.info["vocab_size"]} if text else {}
    dtype = data.x_train.dtype if text else None
    if cfg.layers:
        layers = cfg.layers
    elif text and forward is not None:  # a foreign language model: every block, as the GPT's
        layers = token_layers(model, data.input_shape, forward, dtype=dtype)
    else:
        layers = default_layers(model, data.input_shape, forward, dtype=dtype)
    return PhaseTracker(
        model, layers, fit, test,
        schedule=log_schedule(cfg.iterations, cfg.points_per_octave) if schedule is None else list(schedule),
        settings=MeasureSettings.from_config(cfg, **token_options),
        num_classes=data.num_classes, device=device, extensions=extensions, forward=forward,
        distributed=False,  # the run trains its own model in this process: it measures it here too
    )


def text_positions(data: Splits, cfg: RunConfig) -> dict:
    """Where the measured windows of a text dataset are (config.json's ``data.measured_windows``)."""
    fit, test = subsets.measurement_indices(data, cfg.fit_samples, cfg.test_samples, cfg.seed)
    return {"about": "offsets of the measured windows in the training text (fit) and the held-out text (test): a "
                     "window covers tokens offset..offset+context-1; the position measured is its last, and its "
                     "label is token offset+context",
            "fit": window_offsets(data, fit, "train"), "test": window_offsets(data, test, "test")}


def _synthetic_knobs(cfg: RunConfig) -> dict:
    if cfg.dataset != "synthetic":
        return {}
    s = cfg.synthetic
    return {**s.knobs, **({"data_seed": s.data_seed} if s.data_seed is not None else {})}


# ---------------------------------------------------------------------- resuming: same options only
def option_names() -> dict[str, str]:
    """Configuration keys -> the flag that sets them, for resume-mismatch messages: every section's
    fields from their metadata (``config.flag_of``), and the core keys named otherwise on the CLI."""
    names = {"synthetic.knobs": "--synthetic", "synthetic.data_seed": "--synthetic data_seed=",
             "relative_ridge": "--ridge", "extensions": "--extension"}
    for section, cls in sections().items():
        for f in dataclasses.fields(cls):
            names.setdefault(f"{section}.{f.name}", flag_of(cls, f.name))
    return names


def section_keys() -> tuple[str, ...]:
    """The typed sections (synthetic and the extensions'), compared option by option."""
    return tuple(sections())


def __getattr__(name: str) -> Any:  # the constants of earlier versions, now derived
    if name == "OPTION_NAMES":
        return option_names()
    if name == "SECTION_KEYS":
        return section_keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _option_name(key: str) -> str:
    return option_names().get(key, "--" + key.replace(".", "-").replace("_", "-"))


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "data_dir" and a is not None and b is not None:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    norm = lambda v: json.loads(json.dumps(v, default=str))  # tuples -> lists, as saved
    return norm(a) == norm(b)


def config_differences(saved: dict, given: dict, adjusted: dict | None = None) -> list[tuple[str, Any, Any]]:
    """(option, saved value, given value) for each option in ``given`` (RunConfig keys; the typed
    sections compared key by key) that differs from ``saved``. A value the run adjusted to the data
    (``adjusted``, from config.json) matches when the given value is the one originally requested."""
    adjusted = adjusted or {}
    out = []

    sections = section_keys()

    def walk(prefix: str, s: dict, g: dict) -> None:
        for k, v in g.items():
            key = f"{prefix}{k}"
            sv = s.get(k) if isinstance(s, dict) else None
            if isinstance(v, dict) and (isinstance(sv, dict) or sv is None) and key in sections:
                walk(key + ".", sv or {}, v)
            elif not _same(key, sv, v) and not (key in adjusted and _same(key, adjusted[key].get("requested"), v)):
                out.append((_option_name(key), sv, v))

    if "extra" in saved:  # config.json of an earlier version: compare in today's terms
        saved = RunConfig.from_dict(saved).to_dict()
    walk("", saved, given)
    return out


def _saved_config(folder: Path) -> tuple[dict, dict]:
    path = folder / "config.json"
    if not path.exists():
        if (folder / "state.pt").exists() or (folder / "state.prev.pt").exists():
            raise RunFolderError(f"Cannot resume: {path} does not exist, so the run's configuration is unknown. "
                                 "Start again with --overwrite.")
        raise RunFolderError(f"Cannot resume: {folder} holds no run (no config.json; a run killed while starting "
                             "leaves this). Run the same command without --resume to start it.")
    doc = read_json(path)
    if "config" not in doc:
        raise RunFolderError(f"Cannot resume: {path} holds no 'config' section; it is not a phasescope run folder.")
    return doc["config"], doc.get("adjusted") or {}


def resume_config(out: str | Path, given: dict, *, seeds: bool = False) -> RunConfig | None:
    """The saved configuration of the run in ``out``, after checking that the options the user
    gave (``given``: RunConfig keys -> values, only those given) agree with it.

    Raises :class:`~phasescope.outputs.runs.ResumeMismatch` listing each differing option. With
    ``seeds`` (a ``--seeds`` folder), the first ``seed-N/config.json`` is the reference, the
    seed excepted; None when no seed has started yet."""
    out = Path(out)
    if not out.is_dir():
        raise RunFolderError(f"Cannot resume: {out} does not exist. Start a new run (without --resume).")
    folder = out
    if seeds:
        subs = sorted((p for p in out.glob("seed-*") if (p / "config.json").exists()), key=lambda p: p.name)
        if not subs:
            return None
        folder = subs[0]
        given = {k: v for k, v in given.items() if k != "seed"}
    saved, adjusted = _saved_config(folder)
    diffs = config_differences(saved, given, adjusted)
    if diffs:
        raise ResumeMismatch(out, diffs)
    return RunConfig.from_dict(saved)


def save_weights(out: Path, iteration: int, model: torch.nn.Module) -> Path:
    """``checkpoints/step-N.pt``: the model's state_dict at checkpoint N (``--save-checkpoints``), on
    the CPU, written atomically, so that ``phasescope analyze`` can measure the run again from files."""
    folder = Path(out) / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # through a file handle, as state.pt: a full disk surfaces as OSError naming the file
    return atomic_write(folder / f"step-{int(iteration)}.pt", write_bytes_to(lambda f: torch.save(state, f)))


def _status_of(folder: Path) -> str | None:
    try:
        return read_json(folder / "phases.json").get("status")
    except Exception:
        return None


# ---------------------------------------------------------------------- the main job
def run_experiment(
    cfg: RunConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extensions: Sequence = (),
    data: Splits | None = None,
    on_checkpoint: Callable[[int, PhaseTracker], None] | None = None,
    guard: InterruptGuard | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset`` while measuring its learning phases into ``out``.

    ``out`` must be new or empty, unless ``resume`` (continue from its last saved state; the
    configuration must match the saved one) or ``overwrite`` (replace a previous run: only
    phasescope's files are deleted, and only once the configuration, data and model are
    known to be good). A folder whose run ended before its first checkpoint is started
    again without either. Raises :class:`~phasescope.outputs.runs.RunFolderError` (folder in use,
    not writable, would lose a result), :class:`~phasescope.config.ConfigError` (including
    :class:`~phasescope.outputs.runs.ResumeMismatch`), and :class:`TrainingDiverged` after writing.
    Ctrl-C ends the run with status ``interrupted`` after the checkpoint being written is
    complete; ``guard`` is the caller's installed :class:`~phasescope.outputs.runs.InterruptGuard`
    (the CLI's), else the run installs its own. ``on_step(iteration, loss)`` is called after
    every optimiser step (``phasescope sweep`` reports each run's progress with it).
    """
    cfg.validate()
    with RunWriter.claim(out, f"{cfg.dataset}-{cfg.model}", resume=resume, overwrite=overwrite) as folder:
        if guard is not None:
            return _run(cfg, folder, progress=progress, extensions=extensions, data=data, on_checkpoint=on_checkpoint,
                        guard=guard, on_step=on_step)
        with InterruptGuard() as own:
            return _run(cfg, folder, progress=progress, extensions=extensions, data=data,
                        on_checkpoint=on_checkpoint, guard=own, on_step=on_step)


def _run(cfg: RunConfig, folder: RunWriter, *, progress: bool, extensions: Sequence, data: Splits | None,
         on_checkpoint: Callable[[int, PhaseTracker], None] | None, guard: InterruptGuard,
         on_step: Callable[[int, float], None] | None = None) -> RunResult:
    out = folder.path
    notes = list(folder.notes)
    adjusted: dict = {}
    if folder.mode == "resume":  # the same run: the options must be the saved ones
        saved, adjusted = _saved_config(out)
        diffs = config_differences(saved, cfg.to_dict(), adjusted)
        if diffs:
            raise ResumeMismatch(out, diffs)
        cfg = RunConfig.from_dict(saved)
    device = resolve_device(cfg.device)
    data = data if data is not None else load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size,
                                                      seed=cfg.seed, download=cfg.download,
                                                      num_classes=cfg.num_classes, context=cfg.context,
                                                      **_synthetic_knobs(cfg))
    data = apply_atypical(data, cfg.atypical, cfg.seed)  # --atypical: training split only, seeded
    changes: dict = {}
    source, given = data, list(extensions)  # what the extensions are made from (again, for --budget's sizes)
    for stage in ("data", "pre-training data"):  # sizes the data allow; a class-split transfer task splits it
        cfg, more = clamp_to_data(cfg, data)
        changes.update(more)
        if stage == "data":
            data, extensions = run_extensions(cfg, data, extensions)
    adjusted = {**adjusted, **changes}
    notes += worth_telling(changes)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width).to(device)
    budget = None
    if cfg.budget is not None:  # --budget: sizes from a short calibration; checkpoints thinned as the run goes

        budget, cfg, more = plan_budget(cfg, model, data, device, build_tracker, source=source,
                                        resume=folder.mode == "resume")
        if more:  # the extensions, made for the sample counts chosen
            extensions = run_extensions(cfg, source, given)[1]
        adjusted = {**adjusted, **more}
        notes += [c["why"] for c in more.values()] + budget.budget.warnings
        extensions = [*extensions, budget]
    tracker = build_tracker(cfg, model, data, device, extensions,
                            schedule=None if budget is None else budget.budget.candidates)
    optimizer = make_optimizer(cfg, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
    start = 0
    if folder.mode == "resume":
        state, note = load_state(out, repair=True)
        if note:
            notes.append(note)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["stream"])
        tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["rng"])
        start = state["iteration"]
    # Everything is validated: only now may a previous run's files go (--overwrite, restart); an
    # earlier session's status goes too (rewritten when this one ends).
    folder.start(config_document(
        cfg.to_dict(),
        data={**data.describe(), **({"measured_windows": text_positions(data, cfg)} if is_text(data) else {})},
        measurement=tracker.describe(),
        model={"name": cfg.model, "parameters": sum(p.numel() for p in model.parameters()), "device": str(device)},
        adjusted=adjusted), title=f"{cfg.model} on {cfg.dataset} (seed {cfg.seed})")
    if (atypical := mask_arrays(data)) is not None:  # --atypical made samples atypical
        write_npz(out / MASK_FILE, atypical)

    def checkpoint(m: torch.nn.Module, t: int) -> None:
        if tracker.maybe_measure(m, t) is None:
            return
        with guard.protect():  # a Ctrl-C waits until this checkpoint's files are all written
            if cfg.save_checkpoints:  # before the state: a resumed run never lacks a measured checkpoint's weights
                save_weights(out, t, m)
            # what is new (summaries when the run ends) and the state to resume from
            folder.checkpoint(tracker, {"iteration": t, "model": m.state_dict(), "optimizer": optimizer.state_dict(),
                                        "stream": stream.state_dict(), "tracker": tracker.state_dict(),
                                        "rng": torch.get_rng_state()})
        if on_checkpoint is not None:
            on_checkpoint(t, tracker)
        if tracker.stop is not None:  # an extension (--stop-on-increase) decided to stop
            raise StopTraining(tracker.stop)

    if budget is not None:  # skips the checkpoints the budget leaves out; keeps its training clock
        checkpoint = budget.wrap(checkpoint)
    status, diverged = "complete", None
    try:
        bar = _progress(progress, cfg.iterations, start)
        with bar:
            task = bar.add_task("training", total=cfg.iterations, completed=start, loss=float("nan"))

            def step(t: int, loss: float) -> None:
                bar.update(task, completed=t, loss=loss)
                if on_step is not None:
                    on_step(t, loss)

            train(model, optimizer, stream, cfg.iterations, device, start=start, on_iteration=checkpoint, on_step=step,
                  warmup=cfg.warmup)
    except KeyboardInterrupt:
        status = "interrupted"
        guard.interrupted = True  # further Ctrl-C are ignored: the files must be completed
    except StopTraining:
        status = "stopped"
    except TrainingDiverged as e:
        status, diverged = "diverged", e
    except BaseException:
        with guard.closing():
            try:
                folder.finish(tracker, "failed")
            except Exception:  # noqa: BLE001  the original error matters more; the checkpoint files are complete
                pass
        raise
    with guard.closing():  # the run is ending: Ctrl-C is ignored until its last files (report.html too) are written
        df, phases, payload = folder.finish(tracker, status)
    if diverged is not None:
        raise diverged
    return RunResult(out, cfg, df, phases, payload, status, payload["seconds"], notes)



class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


class PlainProgress:
    """Progress for a stdout that is not a terminal (nohup, CI logs): one plain line every
    ``every`` of the iterations (10%) with the iteration, the loss and the elapsed time."""

    def __init__(self, total: int, start: int = 0, every: float = 0.1, stream=None):
        self.total, self.start = total, start
        self.step = max(1, math.ceil(total * every))
        self.next = (start // self.step + 1) * self.step
        self.stream = stream if stream is not None else sys.stdout
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.start:
            self._print(f"training: resuming at iteration {self.start}/{self.total}")
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, task, *, completed: int, loss: float = float("nan"), **k) -> None:
        if completed >= self.next or completed == self.total:
            self.next = (completed // self.step + 1) * self.step
            self._print(f"training: iteration {completed}/{self.total} ({100 * completed / self.total:.0f}%), "
                        f"loss {loss:.4f}, {time.perf_counter() - self.t0:.0f} s")


def _progress(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return _NoProgress()
    if not sys.stdout.isatty():  # rich would draw nothing useful into a log file
        return PlainProgress(total, start)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # lazy: only on a terminal

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=False)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. 0,1,2.")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be >= 0; got {seeds}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a seed; each seed runs once into its own seed-N folder.")
    return seeds


def run_seeds(cfg: RunConfig, seeds: Sequence[int], out: str | Path | None = None, *, resume: bool = False,
              overwrite: bool = False, progress: bool = True, data: Splits | None = None,
              guard: InterruptGuard | None = None) -> tuple[list[RunResult], dict]:
    """Run ``cfg`` once per seed into ``out/seed-N`` and write the cross-seed summary to ``out``:
    seeds.csv (phases per seed and layer), agreement.csv, aggregate.csv (mean/sd per checkpoint), seeds.png.

    With ``resume``, finished seeds are skipped and interrupted ones continued. An interrupted
    seed ends the loop (the summary is then not written; ``summary["interrupted"]`` is True)."""
    seeds = check_seeds(seeds)
    cfg.validate()
    results: list[RunResult] = []
    with RunFolder.claim(out, f"{cfg.dataset}-{cfg.model}-seeds", resume=resume, overwrite=overwrite,
                         seeds=True) as folder:
        out = folder.path
        for s in seeds:
            sub = out / f"seed-{s}"
            has_state = (sub / "state.pt").exists() or (sub / "state.prev.pt").exists()
            if resume and has_state and _status_of(sub) in ("complete", "stopped"):
                continue  # finished earlier
            r = run_experiment(cfg.replace(seed=int(s)), sub, resume=resume and has_state, overwrite=overwrite,
                               progress=progress, data=data, guard=guard)
            folder.prepared = True  # a seed has written: keep the folder whatever happens next
            results.append(r)
            if r.status == "interrupted":
                return results, {"out": out, "interrupted": True}
        if overwrite:  # seed-N folders of an earlier, longer seed list
            for p in out.glob("seed-*"):
                if p.is_dir() and p.name not in {f"seed-{s}" for s in seeds}:
                    clear_run_files(p)
                    (p / ".lock").unlink(missing_ok=True)
                    try:
                        p.rmdir()
                    except OSError:
                        pass
        runs = load_runs([out / f"seed-{s}" for s in seeds])
        table = phase_table(runs, labels=[f"seed {r.config['seed']}" for r in runs])
        agreement = seed_agreement(table)
        atomic_write(out / "seeds.csv", lambda p: table.to_csv(p, index=False))
        atomic_write(out / "agreement.csv", lambda p: agreement.to_csv(p, index=False))
        agg = aggregate(runs)
        atomic_write(out / "aggregate.csv", lambda p: agg.to_csv(p, index=False))
        plot_seeds(runs, out / "seeds.png", title=f"{cfg.model} on {cfg.dataset}, seeds {', '.join(map(str, seeds))}")
        write_index_quietly(runs, out, [f"seed {r.config['seed']}" for r in runs])  # index.html
        folder.prepared = True
    return results, {"table": table, "agreement": agreement, "out": out, "interrupted": False}
