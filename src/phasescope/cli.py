"""The ``phasescope`` command line: a thin layer that parses, calls the library, prints.

    phasescope run                      # the main job on the embedded MNIST digits
    phasescope run --model vgg8 --dataset cifar10 --data-dir ~/data --layers features.2,features.4
    phasescope layers --model vgg8      # names of trackable layers
    phasescope report RUN_DIR           # rebuild phases.json and curves.png from files
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape  # help texts hold [defaults] and MODULE[i], not markup
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


def _parse_ridge(text: str | None) -> float | str | list | None:
    """'0.1', 'auto', or a comma-separated list such as '1e-4,1e-3,auto' (a list of several values)."""
    if text is None:
        return text
    values: list = []
    for item in (t.strip() for t in text.split(",")):
        if item == "auto":
            values.append(item)
            continue
        try:
            values.append(float(item))
        except ValueError:
            fail(f"--ridge {text!r}: give a number >= 0 (relative to the mean feature variance), 'auto', or a "
                 "comma-separated list of them such as 1e-4,1e-3,0.01,0.1,1,auto.")
    return values[0] if len(values) == 1 else values


def _parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' or '0-4' (ascending, inclusive); anything else is an error, never a silent default."""
    if text is None:
        return None
    hint = "give a comma-separated list such as 0,1,2 or an ascending range such as 0-4."
    t = text.strip()
    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", t)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a > b:
            fail(f"--seeds {text!r}: the range runs backwards ({a} > {b}); {hint}")
        return list(range(a, b + 1))
    parts = [p.strip() for p in t.split(",")]
    if not t or not all(re.fullmatch(r"\d+", p) for p in parts):
        fail(f"--seeds {text!r}: {hint}")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        fail(f"--seeds {text!r} repeats a seed; each seed runs once into its own seed-N folder.")
    return seeds


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


def accuracy_line(payload: dict, status: str) -> str:
    """'final accuracy: ...' for a finished run; 'accuracy at iteration N (run interrupted): ...'
    when it ended early, so a partial result never reads as a final one."""
    acc = payload.get("final_accuracy", {})
    values = f"train {acc.get('train', float('nan')):.3f}, test {acc.get('test', float('nan')):.3f}"
    if status == "complete":
        return f"final accuracy: {values}"
    checkpoints = payload.get("checkpoints") or []
    if not checkpoints:
        return f"no checkpoint measured (run {status})"
    return f"accuracy at iteration {checkpoints[-1]} (run {status}): {values}"


def print_notes(notes) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {note}")


def print_summary(result) -> None:
    from .report import summary_rows

    table = Table(title=f"learning phases: {result.out}", title_justify="left")
    for col in ("layer", "phases (iterations)", "reconstruction minimum", "relative decrease [95% CI]",
                "relative increase [95% CI]"):
        table.add_column(col)
    for r in summary_rows(result.payload):
        table.add_row(r["layer"], r["phases"], r["minimum"], r["decrease"], r["increase"])
    console.print(table)
    console.print(accuracy_line(result.payload, result.status)
                  + f"   ({result.seconds.get('total', 0):.0f} s, of which measurement "
                  f"{result.seconds.get('measurement', 0):.0f} s)")
    for w in result.payload.get("warnings") or []:
        err.print(f"[bold yellow]warning:[/] {w}")
    from .registry import extension_files, summary_lines

    for line in summary_lines(result.payload):  # every extension's part (transfer, the few, kept weights)
        console.print(line)
    more = [f for f in extension_files() if (result.out / f).exists()]
    console.print(f"outputs: {result.out}/{{config.json, metrics.csv, phases.json, curves.png}}"
                  + (f" + {', '.join(more)}" if more else ""))
    if (result.out / "report.html").exists():
        console.print(f"report: {result.out}/report.html")


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


# ---------------------------------------------------------------------- run: options from RunConfig
# Every RunConfig field marked for the command line becomes an option of `run` with the field's own
# help text and default (one source of both); these read better under another name, or need parsing.
CLI_NAMES = {"relative_ridge": "ridge"}


def _parse_layers(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


CLI_PARSERS = {"relative_ridge": _parse_ridge, "layers": _parse_layers}


def _scalar_type(hint: Any) -> type:
    """int for ``int | None``, float for ``float`` ...: the type Typer parses a field's option as."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else str


def config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter (a Typer option, default None = 'not given') per command-line RunConfig field."""
    hints = typing.get_type_hints(RunConfig)
    params = []
    for f in dataclasses.fields(RunConfig):
        if not f.metadata.get("cli", True):
            continue
        kind = str if f.name in CLI_PARSERS else _scalar_type(hints[f.name])
        default = None if f.default is dataclasses.MISSING else f.default
        shown = "" if default is None or default is False or f"[{default}" in f.metadata["help"] else f" [{default}]"
        flag = "--" + CLI_NAMES.get(f.name, f.name).replace("_", "-")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                        default=typer.Option(None, flag, help=escape(f.metadata["help"] + shown))))
    return params


def _section_help(section: type, name: str) -> str:
    return escape(next(f.metadata["help"] for f in dataclasses.fields(section) if f.name == name))


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


def run_parameters() -> list[inspect.Parameter]:
    """The options of `run`: the preset and seeds, every configuration field, the plug-ins' flags, the folder's."""
    from .config import InfoPlaneOptions, ReconstructionsOptions, SamplesOptions, TransferOptions

    return [
        _option("preset", Optional[str], typer.Option(None, help="Start from a named configuration (see `phasescope presets`).")),
        _option("seeds", Optional[str], typer.Option(None, help="Run several seeds, e.g. 0,1,2 or 0-4: one sub-folder each "
                                                            "plus a cross-seed summary.")),
        *config_parameters(),
        _option("synthetic", Optional[str], typer.Option(None, help="Knobs of --dataset synthetic, e.g. "
                                                                "atypical_fraction=0.1,dim=100 (see `phasescope theory --help`).")),
        _option("samples", Optional[bool], typer.Option(None, "--samples/--no-samples",
                                                        help=_section_help(SamplesOptions, "enabled") + " [on]")),
        _option("samples_max", Optional[int], typer.Option(None, help=_section_help(SamplesOptions, "max_samples"))),
        _option("reconstructions", Optional[bool], typer.Option(None, "--reconstructions/--no-reconstructions",
                help=_section_help(ReconstructionsOptions, "enabled") + " [on]")),
        _option("transfer", Optional[str], typer.Option(None, help=_section_help(TransferOptions, "tasks")
                                                        + " Comma-separated.")),
        _option("info_plane", Optional[str], typer.Option(None, "--info-plane",
                help=_section_help(InfoPlaneOptions, "estimators") + " Comma-separated.")),
        _option("keep_best", bool, typer.Option(False, "--keep-best", help=_section_help(TransferOptions, "keep_best"))),
        _option("stop_on_increase", bool, typer.Option(False, "--stop-on-increase",
                                                       help=_section_help(TransferOptions, "stop_on_increase"))),
        _option("out", Optional[Path], typer.Option(None, help="Run folder (default: a new folder under runs/).")),
        _option("resume", bool, typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint; "
                                             "options given must match the saved ones.")),
        _option("overwrite", bool, typer.Option(False, "--overwrite", help="Replace the run in --out: deletes only the "
                                                "files phasescope writes, and nothing if the folder holds other files.")),
        _option("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bar.")),
        _option("threads", Optional[int], typer.Option(None, help="CPU threads for torch \\[torch's default]. On a machine "
                                                       "busy with other jobs, 1 avoids oversubscription (it can be 20x faster).")),
        _option("tensorboard", Optional[Path], typer.Option(None, help="Also write every metric and the curves figure to "
                "this TensorBoard log folder at each checkpoint (needs phasescope\\[tensorboard]).")),
    ]


def run(**kw: Any) -> None:
    """Train a classifier while measuring its learning phases; write a run folder and print a summary."""
    fields = [p.name for p in config_parameters()]
    opts = {k: (CLI_PARSERS[k](kw[k]) if k in CLI_PARSERS and kw[k] is not None else kw[k]) for k in fields}
    preset, seeds, synthetic, info_plane = kw["preset"], kw["seeds"], kw["synthetic"], kw["info_plane"]
    samples, samples_max, reconstructions = kw["samples"], kw["samples_max"], kw["reconstructions"]
    transfer, keep_best, stop_on_increase = kw["transfer"], kw["keep_best"], kw["stop_on_increase"]
    out, resume, overwrite, quiet = kw["out"], kw["resume"], kw["overwrite"], kw["quiet"]
    threads, tensorboard = kw["threads"], kw["tensorboard"]
    opts["transfer"] = transfer_options(transfer, keep_best, stop_on_increase) or None
    if synthetic:
        knobs = _parse_knobs(synthetic)
        opts["synthetic"] = {"data_seed": knobs.pop("data_seed", None), "knobs": knobs}
    if info_plane:
        opts["infoplane"] = {"estimators": [e.strip() for e in info_plane.split(",") if e.strip()]}
    sample_opts = {k: v for k, v in (("enabled", samples), ("max_samples", samples_max)) if v is not None}
    opts["samples"] = sample_opts or None
    opts["reconstructions"] = None if reconstructions is None else {"enabled": reconstructions}
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    from .data import DataError
    from .experiment import check_seeds, resume_config, run_experiment, run_seeds
    from .models import ModelError
    from .presets import PRESETS, preset_config
    from .runs import InterruptGuard, RunFileError, RunFolderError
    from .training import TrainingDiverged
    from .registry import check_config

    # Ctrl-C: the first ends the run after the checkpoint being written (exit 130); later ones are ignored
    # so that the final files are always complete.
    with InterruptGuard(ignore_after=_ENTRY_POINT) as guard:
        try:
            cfg = preset_config(preset, opts)
            check_config(cfg)  # e.g. transfer task names, before any data is loaded
            seed_list = _parse_seeds(seeds)
            if seed_list is not None:
                check_seeds(seed_list)
            if resume:
                if out is None:
                    fail("--resume needs --out RUN_DIR: the folder of the run to continue.")
                # options given on the command line (or by --preset) must agree with the saved ones
                given = {**(PRESETS[preset]["config"] if preset else {}), **{k: v for k, v in opts.items() if v is not None}}
                cfg = resume_config(out, given, seeds=seed_list is not None) or cfg
            if seed_list is not None:
                if tensorboard is not None:
                    fail("--tensorboard writes one run's curves; run each seed with --seed N and its own "
                         "--tensorboard folder.")
                results, summary = run_seeds(cfg, seed_list, out, resume=resume, overwrite=overwrite, progress=not quiet,
                                             guard=guard)
                for r in results:
                    print_notes(r.notes)
                    print_summary(r)
                if summary.get("interrupted"):
                    err.print(f"[yellow]interrupted:[/] finished seeds and every checkpoint measured so far are in "
                              f"{summary['out']}; continue with `phasescope run --seeds {seeds} --out {summary['out']} --resume`.")
                    raise typer.Exit(EXIT_INTERRUPTED)
                print_seed_summary(summary)
                return
            result = run_experiment(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet, guard=guard,
                                    extensions=_tensorboard(tensorboard))
        except (ConfigError, DataError, ModelError, RunFolderError, RunFileError, FileNotFoundError) as e:
            fail(str(e))
        except TrainingDiverged as e:
            fail(f"{e} The run folder records status 'diverged'.", EXIT_DIVERGED)
        except KeyboardInterrupt:
            fail("interrupted before training started: no checkpoint of this run was measured (finished runs "
                 "are kept). Run the same command again; a folder without a checkpoint is restarted.",
                 EXIT_INTERRUPTED)
        except OSError as e:
            fail(f"could not read or write a file: {e}. Check the disk space and permissions of --out.")
        except ValueError as e:
            fail(str(e))
        print_notes(result.notes)
        if result.status == "interrupted":
            err.print(f"[yellow]interrupted:[/] files in {result.out} hold every checkpoint measured so far; "
                      f"continue with `phasescope run --out {result.out} --resume`.")
        print_summary(result)
        if result.status == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


run.__signature__ = inspect.Signature(run_parameters())
run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
run = app.command()(run)


# Input shapes of the datasets whose shape is fixed by their distribution format (no files are
# read for `phasescope layers`); datasets shaped by the user's files or knobs are loaded.
FIXED_SHAPES = {"mnist-digits": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "shakespeare": (64,)}


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
    dataset: str = typer.Option("mnist-digits", help="Input shape from this dataset."),
    data_dir: Optional[str] = typer.Option(None, help="For npz and folder datasets: the data, to read the input shape."),
    width: float = typer.Option(1.0, help="Width multiplier."),
    input_shape: Optional[str] = typer.Option(None, help="Per-sample input shape instead, e.g. 3,32,32 or 20 "
                                              "(tabular vectors)."),
    num_classes: int = typer.Option(10, help="Classes the model is built for."),
) -> None:
    """List the trackable layer names of a model, with output shapes."""
    from .data import DATASETS, DataError, load_dataset
    from .models import TOKEN_MODELS, ModelError, build_model, default_layers, trackable_layers

    try:
        if input_shape:
            try:
                shape = tuple(int(s) for s in input_shape.replace("x", ",").split(",") if s.strip())
            except ValueError:
                fail(f"--input-shape {input_shape!r}: give sizes separated by commas, e.g. 3,32,32 or 20.")
        elif dataset not in DATASETS:
            fail(f"Unknown dataset {dataset!r}. Choose one of: {', '.join(sorted(DATASETS))}.")
        else:
            shape = FIXED_SHAPES.get(dataset) or tuple(load_dataset(dataset, data_dir=data_dir).input_shape)
        m = build_model(model, shape, num_classes, width)
        default = default_layers(m, shape)
        rows = trackable_layers(m, shape)
    except (ModelError, DataError, FileNotFoundError) as e:
        fail(str(e))
    table = Table(title=f"{model} on {shape} inputs (default layer: {', '.join(default)})", title_justify="left")
    table.add_column("layer")
    table.add_column("output shape")
    table.add_column("features")
    for l in rows:
        table.add_row(l["name"], "x".join(map(str, l["shape"])), str(l["features"]))
    console.print(table)
    if any(len(l["shape"]) == 2 for l in rows):
        text = len(shape) == 1 and model in TOKEN_MODELS  # token ids in: measured where the model predicts
        console.print(f"2-D outputs (tokens x features) are measured on the {'last' if text else 'mean'} token by "
                      "default: --tokens mean|cls|last|pool.")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder written by `phasescope run`."),
    html: bool = typer.Option(False, "--html", help="Also write report.html: one self-contained page (figures "
                              "embedded, no network); for an interrupted or older run it shows what exists."),
) -> None:
    """Rebuild phases.json, curves.png and the extensions' parts of a run from its files."""
    from .rebuild import NotARunFolder, check_run_folder, rebuild
    from .runs import RunFileError, RunFolderError, locked_folder

    notes: list[str] = []
    if not run_dir.is_dir():
        fail(f"{run_dir} does not exist or is not a folder; give a run folder written by `phasescope run`.")
    try:
        with locked_folder(run_dir):  # not while a run is writing the folder
            check_run_folder(run_dir)
            rebuild(run_dir)
        console.print(f"rebuilt {run_dir}/phases.json and the figures")
        if not (run_dir / "errors.npz").exists():
            notes.append("errors.npz is missing (an older or interrupted run): the phases are kept as stored.")
    except NotARunFolder as e:
        fail(str(e))
    except (RunFileError, FileNotFoundError) as e:
        if not html:  # a missing, corrupt or truncated file: say which, change nothing
            fail(str(e))
        notes.append(f"nothing was rebuilt: {e}")  # the HTML report still shows what the folder holds
    except RunFolderError as e:
        fail(str(e))
    except OSError as e:
        fail(f"could not read or write a file of {run_dir}: {e}")
    for note in notes:
        err.print(f"[yellow]note:[/] {note}")
    if html:
        from .html import write_report

        console.print(f"wrote {write_report(run_dir, notes=notes)}")


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
    html: bool = typer.Option(False, "--html", help="Also write index.html: a sortable summary table, the curves, "
                              "seeds overlaid per configuration, links to each run's report.html."),
) -> None:
    """Overlay the curves of several runs in one figure and one table."""
    from .compare import load_runs, phase_table, plot_compare, run_labels, available_metrics
    from .runs import RunFileError, atomic_write

    try:
        runs = load_runs(run_dirs)
        available = available_metrics(runs)
        if metric not in available:
            fail(f"--metric {metric!r} is not in these runs' metrics.csv. Choose one of: {', '.join(available)}.")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is a file, not a folder. Give a folder for compare.png and compare.csv.")
        out.mkdir(parents=True, exist_ok=True)
        labels = run_labels(runs)
        table = phase_table(runs, labels)
        atomic_write(out / "compare.csv", lambda p: table.to_csv(p, index=False))
        plot_compare(runs, out / "compare.png", labels, metric=metric)
    except (FileNotFoundError, RunFileError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"could not write to --out {out}: {e}")
    t = Table(title=f"{len(runs)} runs", title_justify="left")
    for col in ("run", "layer", "phases", "min at", "decrease", "increase", "test acc"):
        t.add_column(col)
    for _, r in table.iterrows():
        t.add_row(r.run, r.layer, r.phases, str(r.min_iteration), f"{100 * r.relative_decrease:.1f}%",
                  f"{100 * r.relative_increase:.1f}%", f"{r.final_test_accuracy:.3f}" if r.final_test_accuracy else "-")
    console.print(t)
    console.print(f"wrote {out}/compare.png and {out}/compare.csv")
    if html:
        from .html import write_index

        console.print(f"wrote {write_index(runs, out, labels, metric)}")


from .theory.cli import theory_command  # noqa: E402

app.command("theory", help="Simulate the single-layer theory of the learning phases (data model + one layer).")(theory_command)

from .sweep.cli import register as _register_sweep  # noqa: E402

_register_sweep(app, lambda: _ENTRY_POINT)  # phasescope sweep


_ENTRY_POINT = False  # True in the `phasescope` process itself (not when the app is invoked in-process)


def main() -> None:
    global _ENTRY_POINT
    _ENTRY_POINT = True
    app()


if __name__ == "__main__":
    main()
