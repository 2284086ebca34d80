"""The ``phasescope`` command line: a thin layer that parses, calls the library, prints.

    phasescope run                      # the main job on the embedded MNIST digits
    phasescope run --model vgg8 --dataset cifar10 --data-dir ~/data --layers features.2,features.4
    phasescope layers --model vgg8      # names of trackable layers
    phasescope report RUN_DIR           # rebuild phases.json and curves.png from files
    phasescope extensions               # built-in and installed extensions, their options

Exit codes: 0 done, 2 bad input, 3 training diverged, 4 a file could not be written (disk full),
130 interrupted; every error is one line saying what to do.
"""
from __future__ import annotations

import dataclasses
import errno
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape  # help texts hold [defaults] and MODULE[i], not markup
from rich.table import Table

from .integrations.tensorboard import TensorBoardLogger
from .process import busy_cpu_note, entry_point
from ..config import ConfigError, RunConfig, comma_list, expand_extension_specs, flag_of, sections
from ..data import DataError, load_dataset
from ..outputs.compare import NoCheckpoint, available_metrics, load_run, phase_table, plot_compare, run_labels
from ..outputs.figures import summary_rows
from ..outputs.html import write_index, write_report
from ..outputs.rebuild import NotARunFolder, check_run_folder, rebuild
from ..outputs.runs import (
    InterruptGuard, RunFileError, RunFolderError, RunWriteError, atomic_write, locked_folder, writer_pid,
)
from ..registry import check_config, entries, extension_files, summary_lines
from ..run.experiment import check_seeds, resume_config, run_experiment, run_seeds
from ..run.models import ModelError, TOKEN_MODELS, build_model, default_layers, trackable_layers
from ..run.presets import PRESETS, preset_config
from ..run.training import TrainingDiverged

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the learning phases of neural-network classifiers.")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages are never cut mid-word

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 2, 3, 4, 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def write_failed(e: OSError, then: str) -> None:
    """Exit 4 for a file that could not be written (a full disk above all): which file, why, and what
    to do (``then``: the command that continues). Atomic writes left every earlier file intact."""
    path = getattr(e, "path", None) or e.filename or "a file"
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(e.errno)
    reason = e.strerror or str(e)
    fail(f"could not write {path} ({why + ': ' if why else ''}{reason}); every file written before it is intact. "
         f"{'Free some space' if why else 'Fix the cause (space, permissions of the folder)'}, then {then}.",
         EXIT_WRITE_FAILED)


def _continue_run(e: OSError, seeds: str | None) -> str:
    """The command that continues a run after a failed write of one of its files."""
    folder = Path(getattr(e, "path", None) or e.filename or ".").parent
    if seeds is not None:
        top = folder.parent if re.fullmatch(r"seed-\d+", folder.name) else folder
        return f"continue with `phasescope run --seeds {seeds} --out {top} --resume`"
    if (folder / "state.pt").exists() or (folder / "state.prev.pt").exists():
        return f"continue with `phasescope run --out {folder} --resume`"
    return f"run the command again with --out {folder} --overwrite (no checkpoint had been saved)"


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


MAX_SEEDS = 10_000  # one run folder per seed; more is a sweep's job (which has its own --max-runs)


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
        if b - a + 1 > MAX_SEEDS:  # checked before the list is built: 0-100000000 would take minutes and gigabytes
            fail(f"--seeds {text!r} asks for {b - a + 1:,} runs, more than {MAX_SEEDS:,}; give a smaller range, "
                 "or run a sweep (`phasescope sweep`, with --max-runs).")
        return list(range(a, b + 1))
    parts = [p.strip() for p in t.split(",")]
    if not t or not all(re.fullmatch(r"\d+", p) for p in parts):
        fail(f"--seeds {text!r}: {hint}")
    if len(parts) > MAX_SEEDS:
        fail(f"--seeds lists {len(parts):,} seeds, more than {MAX_SEEDS:,}; run a sweep (`phasescope sweep`) instead.")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        fail(f"--seeds {text!r} repeats a seed; each seed runs once into its own seed-N folder.")
    return seeds


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


@dataclasses.dataclass(frozen=True)
class SectionFlag:
    """A command-line option of one field of an extension's options section."""

    param: inspect.Parameter
    section: str
    field: str
    parse: Any = None  # the flag's text -> the value (lists)
    only_on: bool = False  # a flag without --no- form (--keep-best): False means "not given"
    implies: dict = dataclasses.field(default_factory=dict)


def section_flags() -> list[SectionFlag]:
    """One option per field of every extension's options section, generated from the field's
    metadata (flag, help, default; ``config.opt``): no extension's flag is written by hand."""
    out = []
    for section, cls in sections().items():
        if section == "synthetic":  # core data knobs: --synthetic below
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True):
                continue
            hint, flag, help_text = hints[f.name], flag_of(cls, f.name), f.metadata.get("help", "")
            default = None if f.default is dataclasses.MISSING else f.default
            parse, only_on = f.metadata.get("parse"), False
            if hint is bool:
                only_on = "/" not in flag
                annotation, option_default = (bool, False) if only_on else (Optional[bool], None)
                shown = " [on]" if default is True else ""
            elif typing.get_origin(hint) is list:
                annotation, option_default, parse = Optional[str], None, parse or comma_list
                shown = " Comma-separated."
            else:
                annotation, option_default = Optional[_scalar_type(hint)], None
                shown = "" if default is None or default is False or f"[{default}" in help_text else f" [{default}]"
            param = _option(f"{section}__{f.name}", annotation,
                            typer.Option(option_default, *flag.split(" "), help=escape(help_text + shown)))
            out.append(SectionFlag(param, section, f.name, parse, only_on, dict(f.metadata.get("implies") or {})))
    return out


def section_options(kw: dict[str, Any]) -> dict[str, dict]:
    """{section: {field: value}} of the section flags given in ``kw`` (what `run` received)."""
    out: dict[str, dict] = {}
    for sf in section_flags():
        v = kw.get(sf.param.name)
        if v is None or (sf.only_on and v is False):
            continue
        section = out.setdefault(sf.section, {})
        section[sf.field] = sf.parse(v) if sf.parse is not None else v
        for key, value in sf.implies.items():
            section.setdefault(key, value)
    return out


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


def run_parameters() -> list[inspect.Parameter]:
    """The options of `run`: the preset and seeds, every configuration field, the extensions'
    options (generated from their sections) and --extension, the folder's."""
    return [
        _option("preset", Optional[str], typer.Option(None, help="Start from a named configuration (see `phasescope presets`).")),
        _option("seeds", Optional[str], typer.Option(None, help="Run several seeds, e.g. 0,1,2 or 0-4: one sub-folder each "
                                                            "plus a cross-seed summary.")),
        *config_parameters(),
        _option("synthetic", Optional[str], typer.Option(None, help="Knobs of --dataset synthetic, e.g. "
                                                                "atypical_fraction=0.1,dim=100 (see `phasescope theory --help`).")),
        *(sf.param for sf in section_flags()),
        _option("extension", Optional[list[str]], typer.Option(None, "--extension", help=escape(
            "Turn on an extension, built-in or installed, with options: NAME or NAME:KEY=VALUE,KEY=VALUE (lists: "
            "a+b). Repeatable. `phasescope extensions` lists them."))),
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
    preset, seeds, synthetic = kw["preset"], kw["seeds"], kw["synthetic"]
    out, resume, overwrite, quiet = kw["out"], kw["resume"], kw["overwrite"], kw["quiet"]
    threads, tensorboard = kw["threads"], kw["tensorboard"]
    if synthetic:
        knobs = _parse_knobs(synthetic)
        opts["synthetic"] = {"data_seed": knobs.pop("data_seed", None), "knobs": knobs}
    opts.update(section_options(kw))  # --samples-max, --transfer, --info-plane, ...: {section: {field: value}}
    if threads is not None:
        if threads < 1:
            fail(f"--threads must be at least 1; got {threads}. Leave it out for torch's default.")

        torch.set_num_threads(threads)
    elif (busy := busy_cpu_note(torch.get_num_threads())) is not None:
        err.print(f"[yellow]note:[/] {escape(busy)}")

    # Ctrl-C: the first ends the run after the checkpoint being written (exit 130); later ones are ignored
    # so that the final files are always complete.
    with InterruptGuard(ignore_after=entry_point()) as guard:
        try:
            if kw["extension"]:  # NAME[:KEY=VALUE,...]: the names, and the options merged into their sections
                opts.update(expand_extension_specs({**opts, "extensions": list(kw["extension"])}))
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
        except RunWriteError as e:  # a full disk: the checkpoints before it are kept
            write_failed(e, _continue_run(e, seeds))
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
        return [TensorBoardLogger(log_dir)]
    except ImportError as e:  # tensorboard (an optional extra) is missing
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
    from ..data import DATASETS  # lazy: DATASETS is computed on access, from the datasets registered so far

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
    notes: list[str] = []
    if not run_dir.is_dir():
        fail(f"{run_dir} does not exist or is not a folder; give a run folder written by `phasescope run`.")
    pid = writer_pid(run_dir)
    if pid:
        fail(f"{run_dir} is in use by another phasescope process (pid {pid}): report rewrites the files of a "
             f"finished run. Wait for the run to end; `phasescope compare {run_dir}` shows its checkpoints so far.")
    try:
        check_run_folder(run_dir)  # before taking the lock: nothing is written into a folder that holds no run
    except (NotARunFolder, RunFileError) as e:
        fail(str(e))
    try:
        with locked_folder(run_dir):  # not while a run is writing the folder
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
    except RunWriteError as e:
        write_failed(e, "run the same command again")
    except OSError as e:
        fail(f"could not read or write a file of {run_dir}: {e}")
    for note in notes:
        err.print(f"[yellow]note:[/] {note}")
    if html:
        try:
            console.print(f"wrote {write_report(run_dir, notes=notes)}")
        except RunWriteError as e:
            write_failed(e, "run the same command again")


@app.command()
def presets() -> None:
    """List the named configurations for --preset."""
    table = Table(title="presets", title_justify="left")
    table.add_column("name")
    table.add_column("what it runs")
    for name, p in PRESETS.items():
        table.add_row(name, p["about"])
    console.print(table)


@app.command("extensions")
def extensions_cmd() -> None:
    """List the extensions, built-in and installed (plug-ins): options with defaults, and files."""
    table = Table(title="extensions: turn one on with `phasescope run --extension NAME[:KEY=VALUE,...]`",
                  title_justify="left", show_lines=True)
    for col in ("name", "from", "options [default]", "files"):
        table.add_column(col)
    listed: dict[str, str] = {}  # options section -> the extension it was listed with
    for e in entries():
        cls = e.cls
        options = []
        if cls.options is not None and cls.options.section in listed:
            options.append(f"the {cls.options.section} section's (listed with {listed[cls.options.section]})")
        elif cls.options is not None:
            listed[cls.options.section] = cls.name
            for f in dataclasses.fields(cls.options):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                options.append(f"{cls.options.section}.{f.name} = {default!r} ({flag_of(cls.options, f.name)}): "
                               f"{f.metadata.get('help', '')}")
        table.add_row(escape(cls.name), f"{escape(e.origin)}\n{escape(e.source)}",
                      escape("\n".join(options) or "-"), escape("\n".join(cls.files) or "-"))
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
    runs, notes = [], []
    seen: dict[Path, Path] = {}
    for d in run_dirs:  # the same folder twice (r1 ./r1/) would count one run twice in the table and seed means
        if d.resolve() in seen:
            first = seen[d.resolve()]
            notes.append((f"{d} is given more than once" if str(d) == str(first) else
                          f"{d} is the same folder as {first}") + "; it is compared once.")
        else:
            seen[d.resolve()] = d
    run_dirs = list(seen.values())
    try:
        for d in run_dirs:
            try:
                runs.append(load_run(d))
            except NoCheckpoint as e:  # a run folder, but nothing measured yet
                notes.append(f"{e} Left out.")
    except (FileNotFoundError, RunFileError) as e:
        fail(str(e))
    labels = run_labels(runs) if runs else []
    table = phase_table(runs, labels) if runs else None
    for run, label in zip(runs, labels):
        rows = int((table.run == label).sum()) if table is not None and len(table) else 0
        notes += partial_notes(run, rows)
    print_notes(notes)
    if table is None or table.empty:
        fail("nothing to compare: none of these runs has phases yet (they need at least two measured checkpoints; "
             "see the notes above). Nothing was written; compare again once the runs have measured more.")
    try:
        available = available_metrics(runs)
        if metric not in available:
            fail(f"--metric {metric!r} is not in these runs' metrics.csv. Choose one of: {', '.join(available)}.")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is a file, not a folder. Give a folder for compare.png and compare.csv.")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "compare.csv", lambda p: table.to_csv(p, index=False))
        plot_compare(runs, out / "compare.png", labels, metric=metric)
    except RunWriteError as e:
        write_failed(e, "run the same command again")
    except OSError as e:
        fail(f"could not write to --out {out}: {e}")
    t = Table(title=f"{len(runs)} runs", title_justify="left")
    for col in ("run", "layer", "phases", "min at", "decrease", "increase", "test acc", "status"):
        t.add_column(col)
    for _, r in table.iterrows():
        t.add_row(r.run, r.layer, r.phases, str(r.min_iteration), f"{100 * r.relative_decrease:.1f}%",
                  f"{100 * r.relative_increase:.1f}%", f"{r.final_test_accuracy:.3f}" if r.final_test_accuracy else "-",
                  f"partial ({r.status})" if r.partial else r.status)
    console.print(t)
    console.print(f"wrote {out}/compare.png and {out}/compare.csv")
    if html:
        try:
            console.print(f"wrote {write_index(runs, out, labels, metric)}")
        except RunWriteError as e:
            write_failed(e, "run the same command again")


def partial_notes(run, rows: int) -> list[str]:
    """What `compare` says about a run that has not ended as planned, or that gives no row."""
    checkpoints = run.phases.get("checkpoints") or []
    if not run.partial and rows:
        return []
    if not rows:
        return [f"{run.path} has no phases yet ({len(checkpoints)} checkpoint(s) measured; phases need at least "
                "two): left out of the table."]
    state = {"running": "is still running", "no final status": "has no final status (the run was killed, or is "
             "written by a process on another machine)"}.get(run.run_status, f"ended early ({run.run_status})")
    return [f"{run.path} {state}: its rows are from the {len(checkpoints)} checkpoints measured so far "
            f"(iterations {checkpoints[0]} to {checkpoints[-1]}) and marked partial."]


from ..theory.cli import theory_command  # noqa: E402

app.command("theory", help="Simulate the single-layer theory of the learning phases (data model + one layer).")(theory_command)

from .sweep.cli import register as _register_sweep  # noqa: E402

_register_sweep(app)  # phasescope sweep

from .analyze.cli import register as _register_analyze  # noqa: E402

_register_analyze(app, sys.modules[__name__])  # phasescope analyze: run's options


def main() -> None:
    app()  # commands ask process.entry_point() whether this process is the command itself


if __name__ == "__main__":
    main()
