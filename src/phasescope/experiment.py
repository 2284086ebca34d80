"""``run_experiment``: the main job, top to bottom.

Load data -> build the model -> set up the tracker -> train, measuring at log-spaced
checkpoints -> after every checkpoint write metrics.csv, errors.npz, phases.json and
state.pt -> at the end (or on Ctrl-C / divergence) draw curves.png.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .config import RunConfig
from .data import Splits, load_dataset
from .data.base import stratified_subset
from .models import build_model, default_layers
from .phases import PhaseResult
from .report import phases_payload, plot_curves
from .runs import load_state, prepare_out, read_json, save_state, write_errors, write_json, write_metrics
from .samples import sample_extensions
from .schedule import log_schedule
from .tracker import PhaseTracker
from .transfer import from_config as transfer_from_config, keeper_from_config
from .transfer.keeper import StopTraining
from .training import BatchStream, TrainingDiverged, make_optimizer, resolve_device, train


@dataclass
class RunResult:
    out: Path
    config: RunConfig
    metrics: pd.DataFrame
    phases: dict[str, PhaseResult]
    payload: dict
    status: str = "complete"  # complete | interrupted | diverged | stopped (--stop-on-increase)
    seconds: dict[str, float] = field(default_factory=dict)


def measurement_sets(data: Splits, cfg: RunConfig) -> tuple[tuple, tuple]:
    """Seeded, class-balanced fit (training) and test subsets the decoder/probe use."""
    fit = stratified_subset(data.y_train.numpy(), cfg.fit_samples, seed=cfg.seed)
    test = stratified_subset(data.y_test.numpy(), cfg.test_samples, seed=0)  # same test samples for every seed
    return (data.x_train[fit], data.y_train[fit]), (data.x_test[test], data.y_test[test])


def build_tracker(cfg: RunConfig, model: torch.nn.Module, data: Splits, device: torch.device,
                  extensions: Sequence = ()) -> PhaseTracker:
    fit, test = measurement_sets(data, cfg)
    return PhaseTracker(
        model, cfg.layers or default_layers(model, data.input_shape), fit, test,
        schedule=log_schedule(cfg.iterations, cfg.points_per_octave),
        decoder=cfg.decoder, probe=cfg.probe, bn_mode=cfg.bn_mode, relative_ridge=cfg.relative_ridge,
        max_features=cfg.max_features, batch_size=cfg.measure_batch_size, bootstrap=cfg.bootstrap,
        confidence=cfg.confidence, min_effect=cfg.min_effect, device=device, extensions=extensions,
        decoder_options={"epochs": cfg.conv_epochs, "channels": cfg.conv_channels} if cfg.decoder == "conv" else None,
        seed=cfg.seed, tokens=cfg.tokens,
    )


def _synthetic_knobs(cfg: RunConfig) -> dict:
    if cfg.dataset != "synthetic":
        return {}
    s = cfg.synthetic
    return {**s.knobs, **({"data_seed": s.data_seed} if s.data_seed is not None else {})}


def versions() -> dict[str, str]:
    return {"phasescope": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def write_outputs(out: Path, tracker: PhaseTracker, *, figure: bool, title: str | None = None) -> tuple[pd.DataFrame, dict, dict]:
    df = tracker.results()
    phases = tracker.phases()
    payload = phases_payload(phases, df, tracker.num_classes)
    for ext in tracker.extensions:
        if hasattr(ext, "summarise"):
            payload.update(ext.summarise(df, payload))
    write_metrics(out, df)
    write_errors(out, tracker.errors)
    write_json(out / "phases.json", payload)
    if figure and len(df):
        plot_curves(df, payload["layers"], out / "curves.png", title=title)
    for ext in tracker.extensions:  # extensions' own files (samples.parquet, samples.png, ...)
        if hasattr(ext, "write"):
            ext.write(out, df, payload, figure=figure and len(df) > 0)
    return df, phases, payload


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
) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset`` while measuring its learning phases into ``out``."""
    cfg.validate()
    out = prepare_out(Path(out) if out else None, f"{cfg.dataset}-{cfg.model}", resume=resume, overwrite=overwrite)
    if resume:  # the saved configuration wins: a resumed run is the same run
        cfg = RunConfig.from_dict(read_json(out / "config.json")["config"])
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    data = data if data is not None else load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size,
                                                      seed=cfg.seed, download=cfg.download,
                                                      **_synthetic_knobs(cfg))
    data, transfer = transfer_from_config(cfg, data)  # class-split replaces the pre-training data
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width).to(device)
    extensions = [*extensions, *transfer, *sample_extensions(cfg, data, extensions)]  # per-sample dynamics, unless disabled
    tracker = build_tracker(cfg, model, data, device, extensions)
    keeper = keeper_from_config(cfg, tracker)  # --keep-best: weights at the reconstruction minimum
    optimizer = make_optimizer(cfg, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
    start = 0
    if resume:
        state = load_state(out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["stream"])
        tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["rng"])
        if keeper is not None and state.get("keeper"):
            keeper.load_state_dict(state["keeper"])
        start = state["iteration"]
    write_json(out / "config.json", {
        "config": cfg.to_dict(), "data": data.describe(), "measurement": tracker.describe(),
        "model": {"name": cfg.model, "parameters": sum(p.numel() for p in model.parameters()),
                  "device": str(device)},
        "versions": versions(),
        **({"transfer": transfer[0].describe()} if transfer else {}),
    })
    title = f"{cfg.model} on {cfg.dataset} (seed {cfg.seed})"

    def checkpoint(m: torch.nn.Module, t: int) -> None:
        if tracker.maybe_measure(m, t) is None:
            return
        decision = keeper.update(m, t) if keeper is not None else None
        if decision is not None and decision.new_best:
            keeper.save(out / "best_features.pt", model=cfg.model, config=cfg.to_dict())
        write_outputs(out, tracker, figure=False)
        save_state(out, {"iteration": t, "model": m.state_dict(), "optimizer": optimizer.state_dict(),
                         "stream": stream.state_dict(), "tracker": tracker.state_dict(),
                         "rng": torch.get_rng_state(), "keeper": keeper.state_dict() if keeper else None})
        if on_checkpoint is not None:
            on_checkpoint(t, tracker)
        if decision is not None and decision.stop:
            raise StopTraining(decision)

    status = "complete"
    bar = _progress(progress, cfg.iterations, start)
    try:
        with bar:
            task = bar.add_task("training", total=cfg.iterations, completed=start, loss=float("nan"))

            def step(t: int, loss: float) -> None:
                bar.update(task, completed=t, loss=loss)

            train(model, optimizer, stream, cfg.iterations, device, start=start, on_iteration=checkpoint, on_step=step)
    except KeyboardInterrupt:
        status = "interrupted"
    except StopTraining:
        status = "stopped"
    except TrainingDiverged:
        status = "diverged"
        df, phases, payload = write_outputs(out, tracker, figure=True, title=title)
        raise
    finally:
        if status != "diverged":
            df, phases, payload = write_outputs(out, tracker, figure=True, title=title)
    seconds = {"total": time.perf_counter() - t0, "measurement": float(sum(tracker.timings.values()))}
    payload["status"] = status
    if keeper is not None:
        payload["best_features"] = {**keeper.describe(), "file": "best_features.pt"}
    payload["seconds"] = seconds
    write_json(out / "phases.json", payload)
    return RunResult(out, cfg, df, phases, payload, status, seconds)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def _progress(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=False)


def run_seeds(cfg: RunConfig, seeds: Sequence[int], out: str | Path | None = None, *, resume: bool = False,
              overwrite: bool = False, progress: bool = True, data: Splits | None = None) -> tuple[list[RunResult], dict]:
    """Run ``cfg`` once per seed into ``out/seed-N`` and write the cross-seed summary to ``out``:
    seeds.csv (phases per seed and layer), agreement.csv, aggregate.csv (mean/sd per checkpoint), seeds.png."""
    from .compare import aggregate, load_runs, phase_table, plot_seeds, seed_agreement

    out = prepare_out(Path(out) if out else None, f"{cfg.dataset}-{cfg.model}-seeds", resume=False,
                      overwrite=True if (resume or overwrite) else False)
    results = []
    for s in seeds:
        sub = out / f"seed-{s}"
        again = resume and (sub / "state.pt").exists()
        if again and (sub / "phases.json").exists() and read_json(sub / "phases.json").get("status") == "complete":
            continue  # finished earlier
        results.append(run_experiment(cfg.replace(seed=int(s)), sub, resume=again, overwrite=overwrite,
                                      progress=progress, data=None if data is None else data))
    runs = load_runs([out / f"seed-{s}" for s in seeds])
    table = phase_table(runs, labels=[f"seed {r.config['seed']}" for r in runs])
    agreement = seed_agreement(table)
    table.to_csv(out / "seeds.csv", index=False)
    agreement.to_csv(out / "agreement.csv", index=False)
    aggregate(runs).to_csv(out / "aggregate.csv", index=False)
    plot_seeds(runs, out / "seeds.png", title=f"{cfg.model} on {cfg.dataset}, seeds {', '.join(map(str, seeds))}")
    return results, {"table": table, "agreement": agreement, "out": out}
