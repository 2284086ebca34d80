"""``phasescope analyze CKPT_DIR``: the command (mounted on the main app by :func:`register`).

Its data, model, layer and measurement options are ``phasescope run``'s own (generated from
the same RunConfig fields, with the same help and defaults); the training options are left out.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from ...config import ConfigError, RunConfig, expand_extension_specs
from ...data import DataError
from ...outputs.runs import InterruptGuard, RunFileError, RunFolderError, RunWriteError, read_json, run_writer
from ...run.experiment import config_differences
from ...run.models import ModelError
from ...run.presets import PRESETS, preset_config
from ..process import entry_point as _entry_point
from ..sweep.backends import ClusterUnreachable, RayMissing
from ..sweep.cli import _exit_now
from .discover import DiscoveryError, discover
from .load import Source
from .run import TRAINING_KEYS, WRITER, AnalyzeError, NothingMeasured, analyze

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
# run's options that mean the same for saved checkpoints (the rest are training's); the extensions'
# options (generated from their sections) and --extension are all taken, as run takes them
RUN_OPTIONS = ("preset", "dataset", "data_dir", "context", "download", "train_size", "num_classes", "atypical", "model",
               "width", "layers", "seed", "device", "fit_samples", "test_samples", "decoder", "conv_epochs",
               "conv_channels", "relative_ridge", "max_features", "tokens", "token_window", "probe", "bn_mode", "bn_samples", "measure_batch_size",
               "bootstrap", "confidence", "min_effect", "synthetic", "extension", "out", "overwrite", "quiet", "threads")
_cli: Any = None  # phasescope.interfaces.cli, handed over by register(): its options, parsers and printers are run's


def register(app: typer.Typer, cli: Any) -> None:
    """Mount ``phasescope analyze`` on ``app``. ``cli`` is the module phasescope.interfaces.cli (given, not
    imported: it imports this one); whether the process is the command itself: ``process.entry_point()``."""
    global _cli
    _cli = cli
    analyze_command.__signature__ = inspect.Signature(parameters())
    analyze_command.__annotations__ = {p.name: p.annotation for p in analyze_command.__signature__.parameters.values()}
    app.command("analyze")(analyze_command)


def _opt(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


def parameters() -> list[inspect.Parameter]:
    run = {p.name: p for p in _cli.run_parameters()}
    return [
        inspect.Parameter("ckpt_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                          default=typer.Argument(..., help="Folder of saved checkpoints: files (step-1000.pt, "
                                                 "epoch=3-step=1200.ckpt, *.safetensors) or folders (checkpoint-500/)." )),
        *(run[n] for n in RUN_OPTIONS if n in run),
        *(sf.param for sf in _cli.section_flags()),
        _opt("hf", bool, typer.Option(False, "--hf", help="The checkpoints are Hugging Face folders (save_pretrained, "
                                      "Trainer's checkpoint-N/): load each with from_pretrained (local files only).")),
        _opt("lightning", Optional[str], typer.Option(None, help="pkg.mod:Class of the LightningModule that saved the "
                                                      ".ckpt files: load each with Class.load_from_checkpoint.")),
        _opt("steps_from", Optional[str], typer.Option(None, help="Regular expression whose group (or group 'step') is "
                                                       "the step in each file or folder name \\[step-N, checkpoint-N, "
                                                       "iter_N, epoch=E-step=N, N; else the recorded global_step].")),
        _opt("allow_pickle", bool, typer.Option(False, "--allow-pickle", help="Also read files that hold pickled "
                                                "Python objects (whole modules): they can run code, so only for files "
                                                "you trust. Otherwise torch.load(weights_only=True).")),
        _opt("strict", bool, typer.Option(False, "--strict", help="Refuse (exit 2) when the integrity guard finds "
                                          "anything: identical weights, repeated or contradictory steps, missing, "
                                          "extra or misshapen keys, dtype changes, non-finite weights, corrupt files.")),
        _opt("dry_run", bool, typer.Option(False, "--dry-run", help="List the checkpoints found (step, entry, format) "
                                           "and what was skipped and why; measure nothing.")),
        _opt("backend", str, typer.Option("local", help="local: one checkpoint after another here; ray: one Ray task "
                                          "per checkpoint (pip install \"phasescope\\[ray]\").")),
        _opt("address", Optional[str], typer.Option(None, help="Ray cluster to join: auto, or ray://HOST:PORT \\[an "
                                                    "embedded local Ray]. The checkpoints must be readable there.")),
        _opt("cpus_per_run", Optional[float], typer.Option(None, help="CPUs per checkpoint (Ray task resource and "
                                                           "torch threads) [1; local: torch's default].")),
        _opt("gpus_per_run", float, typer.Option(0.0, help="GPUs per checkpoint (Ray; fractions share a GPU) [0].")),
        _opt("num_cpus", Optional[int], typer.Option(None, help="CPUs of the embedded local Ray \\[all cores].")),
        _opt("retries", int, typer.Option(3, help="Ray: times a checkpoint is retried when its worker dies [3].")),
    ]


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    _cli.err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _options(kw: dict) -> tuple[dict, Any]:
    """The RunConfig options given on the command line (None: not given), parsed as `run` parses them."""
    CLI_PARSERS, _parse_knobs = _cli.CLI_PARSERS, _cli._parse_knobs
    fields = [n for n in RUN_OPTIONS if n not in ("preset", "synthetic", "extension", "out", "overwrite", "quiet",
                                                  "threads")]
    opts = {k: (CLI_PARSERS[k](kw[k]) if k in CLI_PARSERS and kw[k] is not None else kw[k]) for k in fields}
    if kw["synthetic"]:
        knobs = _parse_knobs(kw["synthetic"])
        opts["synthetic"] = {"data_seed": knobs.pop("data_seed", None), "knobs": knobs}
    opts.update(_cli.section_options(kw))  # --samples-max, --transfer, --info-plane, ...
    if kw.get("extension"):  # NAME[:KEY=VALUE,...], as run takes it
        opts.update(expand_extension_specs({**opts, "extensions": list(kw["extension"])}))
    return opts, kw["preset"]


def _config(kw: dict, out: Path | None):
    """The configuration: the options given (on a preset); when ``out`` holds an analysis, its saved
    configuration, after checking that the options given agree with it (so a re-run needs none)."""
    opts, preset = _options(kw)
    cfg = preset_config(preset, opts)
    if out is None or kw["overwrite"] or run_writer(out) != WRITER:
        return cfg, None
    doc = read_json(out / "config.json")
    given = {**(PRESETS[preset]["config"] if preset else {}), **{k: v for k, v in opts.items() if v is not None}}
    given = {k: v for k, v in given.items() if k not in TRAINING_KEYS}
    diffs = config_differences(doc["config"], given, doc.get("adjusted"))
    if diffs:
        lines = "\n".join(f"  {name}: saved {a!r}, given {b!r}" for name, a, b in diffs)
        raise ConfigError(f"{out} holds an analysis with other options:\n{lines}\nDrop these options (the saved ones "
                          "are used) to add new checkpoints to it, or choose another --out (or --overwrite).")
    return RunConfig.from_dict({**doc["config"], **{k: v for k, v in opts.items() if k in TRAINING_KEYS and v is not None}}), \
        (doc.get("integration") or {}).get("model_source")


def _dry_run(found) -> None:
    console = _cli.console
    t = Table(title=f"{len(found.checkpoints)} checkpoint(s) in {found.folder}", title_justify="left")
    for col in ("step", "entry", "format", "step from", "recorded step"):
        t.add_column(col)
    for c in found.checkpoints:
        t.add_row(str(c.step), escape(c.name), c.format + (f" ({c.weights})" if c.weights else ""), c.step_from,
                  "-" if c.recorded_step is None else str(c.recorded_step))
    console.print(t)
    if found.skipped:
        s = Table(title=f"skipped ({len(found.skipped)})", title_justify="left")
        s.add_column("entry")
        s.add_column("why")
        for k in found.skipped:
            s.add_row(escape(k.name), escape(k.reason))
        console.print(s)
    steps = [c.step for c in found.checkpoints]
    repeated = sorted({x for x in steps if steps.count(x) > 1})
    if repeated:
        console.print(f"steps found more than once: {', '.join(map(str, repeated))} (the first entry is measured)")
    console.print("dry run: nothing was read beyond names and recorded steps, nothing measured. The integrity guard "
                  "reads every checkpoint when you run without --dry-run.")


def analyze_command(**kw: Any) -> None:
    """Measure the learning phases of a training run that already exists, from its saved checkpoints.

    Each checkpoint is measured on its own (decoder and probe fitted at it), locally or in parallel on
    Ray, after an integrity guard has read every checkpoint; the run folder is the one `phasescope run`
    writes. Running it again into the same --out measures only checkpoints that are new.
    Exit code: 0 measured; 1 no checkpoint could be measured; 2 bad input or --strict refused;
    130 interrupted (run it again to continue)."""
    err, print_notes, print_summary = _cli.err, _cli.print_notes, _cli.print_summary
    ckpt_dir, out = kw["ckpt_dir"], kw["out"]
    if kw["hf"] and kw["lightning"]:
        fail("--hf and --lightning name two ways to build the model: give one.")
    if (kw["hf"] or kw["lightning"]) and kw["model"]:
        fail("--model builds the model by name; --hf and --lightning build it from the checkpoints: give one.")
    if kw["threads"] is not None:
        torch.set_num_threads(max(1, kw["threads"]))
    try:
        if kw["dry_run"]:
            _dry_run(discover(ckpt_dir, steps_from=kw["steps_from"]))
            return
        cfg, saved_source = _config(kw, out)
        if kw["hf"]:
            source = Source("hf", None, kw["allow_pickle"])
        elif kw["lightning"]:
            source = Source("lightning", kw["lightning"], kw["allow_pickle"])
        elif saved_source and not kw["model"]:
            source = Source.from_dict({**saved_source, "allow_pickle": kw["allow_pickle"]})  # never implied
        else:
            source = Source("model", None, kw["allow_pickle"])
        with InterruptGuard(ignore_after=_entry_point()) as guard:
            result = analyze(ckpt_dir, cfg, out, source=source, backend=kw["backend"], address=kw["address"],
                             cpus_per_run=kw["cpus_per_run"], gpus_per_run=kw["gpus_per_run"], num_cpus=kw["num_cpus"],
                             retries=kw["retries"], steps_from=kw["steps_from"], strict=kw["strict"],
                             overwrite=kw["overwrite"], progress=not kw["quiet"], guard=guard, console=_cli.console)
    except ClusterUnreachable as e:  # before the folder was touched
        if getattr(e, "stuck", False) and _entry_point():
            _exit_now(str(e))  # Ray's connection thread could hang Python's exit
        fail(str(e))
    except NothingMeasured as e:
        fail(str(e), EXIT_FAILED)
    except RunWriteError as e:  # a full disk: every checkpoint measured before it is in analyze.pt
        _cli.write_failed(e, "run the same command again: it measures only the checkpoints not yet in analyze.pt")
    except (AnalyzeError, DiscoveryError, ConfigError, DataError, ModelError, RunFolderError, RunFileError,
            RayMissing, FileNotFoundError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted before any checkpoint was measured; run the same command again.", EXIT_INTERRUPTED)
    except ConnectionError as e:  # an OSError, but the network's (the Ray cluster), not the disk's
        fail(f"lost the connection to the Ray cluster: {e}. Check it (`ray status`), then run the same command "
             "again: checkpoints measured so far are kept.", EXIT_FAILED)
    except OSError as e:
        fail(f"could not read or write a file: {e}. Check the disk space and permissions of --out.")
    except ValueError as e:
        fail(str(e))
    print_notes(result.notes)
    print_summary(result)
    if result.status == "interrupted":
        err.print(f"[yellow]interrupted:[/] every checkpoint measured so far is in {result.out}; run the same command "
                  f"(with --out {result.out}) to measure the others.")
        raise typer.Exit(EXIT_INTERRUPTED)

