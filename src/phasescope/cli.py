"""The ``phasescope`` command line: a thin layer that parses, calls the library, prints.

    phasescope run                      # the main job on the embedded MNIST digits
    phasescope run --model vgg8 --dataset cifar10 --data-dir ~/data --layers features.2,features.4
    phasescope layers --model vgg8      # names of trackable layers
    phasescope report RUN_DIR           # rebuild phases.json and curves.png from files
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigError, RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the learning phases of neural-network classifiers.")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages are never cut mid-word

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _parse_knobs(text: str) -> dict:
    """'a=1,b=0.5,c=random' -> {'a': 1, 'b': 0.5, 'c': 'random'}."""
    knobs = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            fail(f"--synthetic {text!r}: give KEY=VALUE pairs separated by commas, e.g. atypical_fraction=0.1,dim=100.")
        k, v = item.split("=", 1)
        for cast in (int, float):
            try:
                knobs[k.strip()] = cast(v)
                break
            except ValueError:
                continue
        else:
            knobs[k.strip()] = v.strip()
    return knobs


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        if "-" in text and "," not in text:
            a, b = text.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {text!r}: give a comma-separated list such as 0,1,2 or a range such as 0-4.")


def transfer_options(transfer: str | None, keep_best: bool, stop_on_increase: bool) -> dict:
    """The RunConfig.transfer section of the transfer flags (validated by the library)."""
    section: dict = {}
    if transfer:
        section["tasks"] = [s.strip() for s in transfer.split(",") if s.strip()]
    if keep_best or stop_on_increase:
        section["keep_best"] = True
    if stop_on_increase:
        section["stop_on_increase"] = True
    return section


def print_transfer(payload: dict) -> None:
    from .transfer import summary_rows

    rows = summary_rows(payload.get("transfer") or {})
    if rows:
        table = Table(title="transfer accuracy (test) [95% CI] @ iteration", title_justify="left")
        for col in ("task", "layer", "at reconstruction minimum", "at transfer peak", "at end",
                    "minimum - end (points)", "peak - minimum (points)"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["task"], r["layer"], r["at_minimum"], r["at_peak"], r["at_end"], r["min_minus_end"],
                          r["peak_minus_min"])
        console.print(table)
        for r in rows:
            console.print(f"  {r['task']} / {r['layer']} (majority class: {r['majority']}): {r['advice']}")
    best = payload.get("best_features")
    if best and best.get("best_iteration") is not None:
        why = (best.get("decision") or {}).get("reason", "")
        console.print(f"best features (reconstruction minimum of {best['layer']}): iteration {best['best_iteration']}"
                      f" -> {best['file']}" + (f"; {why}" if payload.get("status") == "stopped" else ""))


def print_summary(result) -> None:
    from .report import summary_rows

    table = Table(title=f"learning phases: {result.out}", title_justify="left")
    for col in ("layer", "phases (iterations)", "reconstruction minimum", "relative decrease [95% CI]",
                "relative increase [95% CI]"):
        table.add_column(col)
    for r in summary_rows(result.payload):
        table.add_row(r["layer"], r["phases"], r["minimum"], r["decrease"], r["increase"])
    console.print(table)
    acc = result.payload.get("final_accuracy", {})
    console.print(f"final accuracy: train {acc.get('train', float('nan')):.3f}, test {acc.get('test', float('nan')):.3f}"
                  f"   ({result.seconds.get('total', 0):.0f} s, of which measurement "
                  f"{result.seconds.get('measurement', 0):.0f} s)")
    for w in result.payload.get("warnings") or []:
        err.print(f"[bold yellow]warning:[/] {w}")
    print_transfer(result.payload)
    from .samples_report import summary_lines

    for line in summary_lines(result.payload):
        console.print(line)
    console.print(f"outputs: {result.out}/{{config.json, metrics.csv, phases.json, curves.png}}"
                  + (" + samples.{parquet,npz,png}, few.png" if result.payload.get("samples") else ""))


def print_seed_summary(summary: dict) -> None:
    table = Table(title=f"agreement across seeds: {summary['out']}", title_justify="left")
    ag = summary["agreement"]
    for col in ("layer", "seeds", "all three phases", "minimum at", "relative decrease", "relative increase"):
        table.add_column(col)
    for _, r in ag.iterrows():
        table.add_row(r.layer, str(r.seeds), f"{int(r.three_phases)}/{r.seeds}",
                      f"{r.min_iteration_low}-{r.min_iteration_high}",
                      f"{100 * r.relative_decrease_mean:.1f}% ± {100 * (r.relative_decrease_std or 0):.1f}",
                      f"{100 * r.relative_increase_mean:.1f}% ± {100 * (r.relative_increase_std or 0):.1f}")
    console.print(table)
    console.print(f"per seed: {summary['out']}/seeds.csv; curves: {summary['out']}/seeds.png")


@app.command()
def run(
    preset: Optional[str] = typer.Option(None, help="Start from a named configuration (see `phasescope presets`)."),
    seeds: Optional[str] = typer.Option(None, help="Run several seeds, e.g. 0,1,2: one sub-folder each plus a cross-seed summary."),
    dataset: Optional[str] = typer.Option(None, help="Dataset: mnist-digits (embedded, default), digits, cifar10, cifar100, mnist, fashion-mnist, npz, folder."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the standard distribution files, or an .npz file."),
    download: Optional[bool] = typer.Option(None, "--download", help="Fetch the dataset with torchvision (if installed)."),
    synthetic: Optional[str] = typer.Option(None, help="Knobs of --dataset synthetic, e.g. atypical_fraction=0.1,dim=100 (see `phasescope theory --help`)."),
    train_size: Optional[int] = typer.Option(None, help="Use a seeded, class-balanced subset of this many training samples."),
    model: Optional[str] = typer.Option(None, help="Model: cnn (default), mlp, vgg8, ... (see `phasescope layers`), or "
                                        "an import path package.module:function of a callable (input_shape, "
                                        "num_classes) -> nn.Module."),
    width: Optional[float] = typer.Option(None, help="Width multiplier of the model's channels/units."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated module names to track (default: last feature block); "
                                         "MODULE[i] / MODULE[key] picks a tensor from a tuple/dict output."),
    iterations: Optional[int] = typer.Option(None, help="Optimiser steps [4096]."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size [128]."),
    optimizer: Optional[str] = typer.Option(None, help="sgd (momentum) or adam [sgd]."),
    lr: Optional[float] = typer.Option(None, help="Learning rate [0.01]."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum [0.9]."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay [0]."),
    seed: Optional[int] = typer.Option(None, help="Seed of initialisation, batch order and subsets [0]."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or auto [auto]."),
    points_per_octave: Optional[int] = typer.Option(None, help="Checkpoints per doubling of the iteration [1]."),
    fit_samples: Optional[int] = typer.Option(None, help="Training samples the decoder and probe are fitted on [4000]."),
    test_samples: Optional[int] = typer.Option(None, help="Held-out samples they are scored on [2000]."),
    decoder: Optional[str] = typer.Option(None, help="linear (exact ridge, default) or conv (transposed convolutions)."),
    conv_epochs: Optional[int] = typer.Option(None, help="Conv decoder: epoch budget per checkpoint [20]."),
    conv_channels: Optional[int] = typer.Option(None, help="Conv decoder: channels at full resolution [16]."),
    ridge: Optional[float] = typer.Option(None, help="Relative ridge strength of the linear decoder/probe [0.1]."),
    max_features: Optional[int] = typer.Option(None, help="Average-pool spatial layers above this many features [4096]."),
    tokens: Optional[str] = typer.Option(None, help="Layers with (tokens, features) outputs: mean token (default), "
                                         "cls (token 0) or pool (all tokens, pooled to --max-features)."),
    probe: Optional[str] = typer.Option(None, help="ridge (closed form, default) or logistic (L-BFGS)."),
    bn_mode: Optional[str] = typer.Option(None, help="BatchNorm when measuring: recalibrate (default), running, batch."),
    bootstrap: Optional[int] = typer.Option(None, help="Bootstrap resamples for intervals [1000]."),
    samples: Optional[bool] = typer.Option(None, "--samples/--no-samples", help="Per-sample dynamics: who drives the last-layer gradient, learned-at, forgetting [on]."),
    samples_max: Optional[int] = typer.Option(None, help="Follow a seeded random subset of this many fit samples [all]."),
    transfer: Optional[str] = typer.Option(None, help="Transfer tasks probed at every checkpoint, comma-separated: "
                                           "colour, class-split, switch:DATASET[@PATH], npz:PATH."),
    keep_best: bool = typer.Option(False, "--keep-best", help="Save the weights at the reconstruction minimum "
                                   "to best_features.pt in the run folder."),
    stop_on_increase: bool = typer.Option(False, "--stop-on-increase", help="Like --keep-best, and stop training "
                                          "once the reconstruction error rises significantly after its minimum."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: a new folder under runs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch [torch's default]. On a machine busy with "
                                          "other jobs, 1 avoids oversubscription (it can be 20x faster)."),
    tensorboard: Optional[Path] = typer.Option(None, help="Also write every metric and the curves figure to this "
                                               "TensorBoard log folder at each checkpoint (needs phasescope[tensorboard])."),
) -> None:
    """Train a classifier while measuring its learning phases; write a run folder and print a summary."""
    opts = {k: v for k, v in locals().items()
            if k not in ("out", "resume", "overwrite", "quiet", "preset", "seeds", "samples", "samples_max",
                         "transfer", "keep_best", "stop_on_increase", "synthetic", "threads", "tensorboard")}
    opts["relative_ridge"] = opts.pop("ridge")
    opts["transfer"] = transfer_options(transfer, keep_best, stop_on_increase) or None
    if synthetic:
        knobs = _parse_knobs(synthetic)
        opts["synthetic"] = {"data_seed": knobs.pop("data_seed", None), "knobs": knobs}
    sample_opts = {k: v for k, v in (("enabled", samples), ("max_samples", samples_max)) if v is not None}
    opts["samples"] = sample_opts or None
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    from .data import DataError
    from .experiment import run_experiment, run_seeds
    from .models import ModelError
    from .presets import preset_config
    from .runs import RunFolderError
    from .training import TrainingDiverged
    from .transfer import validate_options

    try:
        if opts.get("layers") is not None:
            opts["layers"] = [s.strip() for s in opts["layers"].split(",") if s.strip()]
        cfg = preset_config(preset, opts)
        validate_options(cfg.transfer)  # transfer task names, before any data is loaded
        seed_list = _parse_seeds(seeds)
        if seed_list:
            if tensorboard is not None:
                fail("--tensorboard writes one run's curves; run each seed with --seed N and its own --tensorboard folder.")
            results, summary = run_seeds(cfg, seed_list, out, resume=resume, overwrite=overwrite, progress=not quiet)
            for r in results:
                print_summary(r)
            print_seed_summary(summary)
            return
        result = run_experiment(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet,
                                extensions=_tensorboard(tensorboard))
    except (ConfigError, DataError, ModelError, RunFolderError, FileNotFoundError) as e:
        fail(str(e))
    except TrainingDiverged as e:
        fail(str(e), EXIT_DIVERGED)
    except ValueError as e:
        fail(str(e))
    if result.status == "interrupted":
        err.print(f"[yellow]interrupted:[/] files in {result.out} hold every checkpoint measured so far; "
                  f"continue with `phasescope run --out {result.out} --resume`.")
    print_summary(result)
    if result.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def _tensorboard(log_dir: Path | None) -> list:
    if log_dir is None:
        return []
    try:
        from .integrations.tensorboard import TensorBoardLogger
    except ImportError as e:  # the package, or one it needs, is missing
        fail(f"--tensorboard: {e}")
    try:
        return [TensorBoardLogger(log_dir)]
    except ImportError as e:
        fail(f"--tensorboard: {e}")


@app.command("layers")
def layers_cmd(
    model: str = typer.Option("cnn", help="Model name, or an import path package.module:function of a callable "
                              "(input_shape, num_classes) -> nn.Module."),
    dataset: str = typer.Option("mnist-digits", help="Input shape from this dataset's family."),
    width: float = typer.Option(1.0, help="Width multiplier."),
    input_shape: Optional[str] = typer.Option(None, help="Per-sample input shape instead, e.g. 3,32,32 or 20 "
                                              "(tabular vectors)."),
    num_classes: int = typer.Option(10, help="Classes the model is built for."),
) -> None:
    """List the trackable layer names of a model, with output shapes."""
    from .models import ModelError, build_model, default_layers, trackable_layers

    shape = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "digits": (1, 8, 8)}.get(dataset, (1, 28, 28))
    if input_shape:
        try:
            shape = tuple(int(s) for s in input_shape.replace("x", ",").split(",") if s.strip())
        except ValueError:
            fail(f"--input-shape {input_shape!r}: give sizes separated by commas, e.g. 3,32,32 or 20.")
    try:
        m = build_model(model, shape, num_classes, width)
        default = default_layers(m, shape)
        rows = trackable_layers(m, shape)
    except ModelError as e:
        fail(str(e))
    table = Table(title=f"{model} on {shape} inputs (default layer: {', '.join(default)})", title_justify="left")
    table.add_column("layer")
    table.add_column("output shape")
    table.add_column("features")
    for l in rows:
        table.add_row(l["name"], "x".join(map(str, l["shape"])), str(l["features"]))
    console.print(table)
    if any(len(l["shape"]) == 2 for l in rows):
        console.print("2-D outputs (tokens x features) are measured on the mean token by default: "
                      "--tokens mean|cls|pool.")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `phasescope run`.")) -> None:
    """Rebuild phases.json and curves.png of a run from its metrics.csv and errors.npz."""
    from .report import phases_payload, plot_curves
    from .runs import read_errors, read_json, read_metrics, write_json
    from .phases import detect_phases

    try:
        df = read_metrics(run_dir)
        cfg = read_json(run_dir / "config.json")["config"]
    except FileNotFoundError as e:
        fail(str(e))
    results = {layer: detect_phases(its, E, confidence=cfg["confidence"], n_boot=cfg["bootstrap"],
                                    min_effect=cfg["min_effect"], seed=cfg["seed"])
               for layer, (its, E) in read_errors(run_dir).items() if len(its) >= 2}
    k = (read_json(run_dir / "config.json").get("data") or {}).get("num_classes")
    payload = {**read_json(run_dir / "phases.json"), **phases_payload(results, df, k)} if (run_dir / "phases.json").exists() \
        else phases_payload(results, df, k)
    from .samples_report import rebuild_samples

    rebuild_samples(run_dir, df, payload)  # the samples key and samples.png, when the run has them
    write_json(run_dir / "phases.json", payload)
    plot_curves(df, payload["layers"], run_dir / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
    console.print(f"rebuilt {run_dir}/phases.json and curves.png")


@app.command()
def presets() -> None:
    """List the named configurations for --preset."""
    from .presets import PRESETS

    table = Table(title="presets", title_justify="left")
    table.add_column("name")
    table.add_column("what it runs")
    for name, p in PRESETS.items():
        table.add_row(name, p["about"])
    console.print(table)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders to overlay."),
    out: Path = typer.Option(Path("compare"), help="Folder for compare.png and compare.csv."),
    metric: str = typer.Option("reconstruction_mse", help="Test metric to overlay (e.g. probe_accuracy)."),
) -> None:
    """Overlay the curves of several runs in one figure and one table."""
    from .compare import load_runs, phase_table, plot_compare, run_labels

    try:
        runs = load_runs(run_dirs)
    except FileNotFoundError as e:
        fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs)
    table = phase_table(runs, labels)
    table.to_csv(out / "compare.csv", index=False)
    plot_compare(runs, out / "compare.png", labels, metric=metric)
    t = Table(title=f"{len(runs)} runs", title_justify="left")
    for col in ("run", "layer", "phases", "min at", "decrease", "increase", "test acc"):
        t.add_column(col)
    for _, r in table.iterrows():
        t.add_row(r.run, r.layer, r.phases, str(r.min_iteration), f"{100 * r.relative_decrease:.1f}%",
                  f"{100 * r.relative_increase:.1f}%", f"{r.final_test_accuracy:.3f}" if r.final_test_accuracy else "-")
    console.print(t)
    console.print(f"wrote {out}/compare.png and {out}/compare.csv")


from .theory.cli import theory_command  # noqa: E402

app.command("theory", help="Simulate the single-layer theory of the learning phases (data model + one layer).")(theory_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
