"""``phasescope sweep``: the command (mounted on the main app by :func:`register`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import ClusterUnreachable, RayMissing, SweepError, load_spec, run_sweep, saved_spec
from ..process import entry_point as _entry_point
from .spec import MAX_RUNS, load_spec, parse_assignments, read_file, shipped
from ...outputs.runs import InterruptGuard

console = Console()
err = Console(stderr=True, soft_wrap=True)
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def register(app: typer.Typer) -> None:
    """Mount ``phasescope sweep`` on ``app`` (whether the process is the command itself, so that a
    Ctrl-C stays ignored after the sweep has been interrupted: :func:`phasescope.interfaces.process.entry_point`)."""
    app.command("sweep")(sweep)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _exit_now(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Say ``message`` and end the process at once: Ray's connection attempt, still running in a
    thread, can hang or abort Python's normal exit (its atexit shutdown, its C++ threads)."""
    try:
        fail(message, code)
    except typer.Exit:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _list() -> None:
    t = Table(title="shipped sweeps (phasescope sweep NAME --out DIR)", title_justify="left")
    for col in ("name", "runs", "what it runs"):
        t.add_column(col)
    for name, path in shipped().items():
        try:
            n = str(len(load_spec(name).runs))
        except Exception as e:  # noqa: BLE001 - e.g. a data_dir only this machine lacks
            n = f"? ({e})"
        t.add_row(name, n, str(read_file(path).get("description", "")))
    console.print(t)


def _dry_run(spec) -> None:
    t = Table(title=f"{len(spec.runs)} runs of {spec.source}", title_justify="left")
    t.add_column("run")
    for c in spec.columns:
        t.add_column(c)
    t.add_column("iterations")
    for r in spec.runs:
        t.add_row(r.name, *(str(spec.value(r, c)) for c in spec.columns), str(r.config.iterations))
    console.print(t)


def _print_result(result) -> None:
    s = result.summary
    t = Table(title=f"sweep {result.out}: per configuration and layer (mean ± sd across seeds)", title_justify="left")
    for col in ("configuration", "layer", "finished", "all three phases", "minimum at", "relative decrease",
                "relative increase", "test accuracy"):
        t.add_column(col)

    def pct(r, m):
        mean, sd = r[f"{m}_mean"], r[f"{m}_sd"]
        if mean != mean:
            return "-"
        return f"{100 * mean:.1f}%" + (f" ± {100 * sd:.1f}" if sd == sd else "")

    for _, r in s.iterrows():
        acc = r["final_test_accuracy_mean"]
        t.add_row(str(r.configuration), str(r.layer if r.layer == r.layer and r.layer is not None else "-"),
                  f"{r.finished}/{r.runs}", f"{r.three_phases}/{r.finished}",
                  "-" if r.min_iteration_mean != r.min_iteration_mean else f"{r.min_iteration_mean:.0f}",
                  pct(r, "relative_decrease"), pct(r, "relative_increase"),
                  "-" if acc != acc else f"{acc:.3f}")
    console.print(t)
    for name, o in result.failed.items():
        err.print(f"[bold red]{o['status']}:[/] {escape(name)}: {escape(o.get('message') or '(no message)')}")
    console.print(f"outputs: {result.out}/{{sweep.csv, summary.csv{', sweep.png' if result.figure else ''}}}, "
                  f"runs in {result.out}/runs/")


def sweep(
    file: Optional[str] = typer.Argument(None, help="A sweep file (.toml; .yaml with PyYAML) or the name of a "
                                         "shipped sweep (see --list)."),
    out: Optional[Path] = typer.Option(None, help="Sweep folder \\[sweeps/NAME]. Running the same sweep into it "
                                       "again continues it."),
    backend: str = typer.Option("ray", help="ray: runs in parallel as Ray tasks (pip install \"phasescope\\[ray]\"); "
                                "local: one after another in this process."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT "
                                          "\\[$RAY_ADDRESS, else an embedded local Ray]."),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", help="Seconds to reach and join the cluster at "
                                          "--address before giving up [30]."),
    cpus_per_run: Optional[float] = typer.Option(None, help="CPUs per run (Ray task resource and torch threads) "
                                                 "[1; local backend: torch's default]."),
    gpus_per_run: float = typer.Option(0.0, help="GPUs per run (Ray task resource; fractions share a GPU) [0]."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the embedded local Ray \\[all cores]."),
    retries: int = typer.Option(3, help="Ray: times a run is retried when its worker process dies (it resumes "
                                "from its last checkpoint) [3]."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE set on every run, e.g. --set "
                                             "iterations=512 (repeatable; TOML values)."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="DATASET=PATH: data_dir of the runs on that "
                                             "dataset, e.g. --data cifar10=~/data/cifar10_subset.npz (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep in --out (the file may be omitted: "
                                "sweep.json is used). Without it, an existing sweep folder is continued too."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the sweep in --out (deletes its runs)."),
    list_: bool = typer.Option(False, "--list", help="List the shipped sweeps with their run counts."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded runs and exit."),
    max_runs: int = typer.Option(MAX_RUNS, "--max-runs", help="Refuse a sweep file that expands to more runs "
                                 "than this (counted before expanding)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live view."),
) -> None:
    """Run a grid of configurations (locally or on Ray), resumable; write one table over all runs.

    Exit code: 0 all runs finished; 1 some failed; 3 some diverged and none failed otherwise;
    2 bad input; 130 interrupted (run it again to continue)."""
    if list_:
        _list()
        return
    try:
        overrides = _assignments(set_ or [], "--set")
        data_dirs = _assignments(data or [], "--data")
        if file is None:
            if not (resume and out is not None):
                fail("give a sweep file or a shipped sweep's name (see `phasescope sweep --list`), or --resume "
                     "--out DIR to continue a sweep.")
            if overrides or data_dirs:
                fail("--set and --data change the runs: give the sweep file too.")
            spec = saved_spec(out)
        else:
            spec = load_spec(file, overrides=overrides, data_dirs=data_dirs, max_runs=max_runs)
        if dry_run:
            _dry_run(spec)
            return
        if out is None:
            out = Path("sweeps") / Path(str(file)).stem
        with InterruptGuard(ignore_after=_entry_point()) as guard:
            result = run_sweep(spec, out, backend=backend, address=address, cpus_per_run=cpus_per_run,
                               gpus_per_run=gpus_per_run, num_cpus=num_cpus, retries=retries, resume=resume,
                               overwrite=overwrite, progress=not quiet, guard=guard, console=console,
                               connect_timeout=connect_timeout)
    except (RayMissing, ClusterUnreachable, SweepError, ValueError) as e:  # ConfigError is a ValueError
        if getattr(e, "stuck", False) and _entry_point():
            _exit_now(str(e))
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted: finished runs and every checkpoint are kept; continue with the same command "
             f"(or `phasescope sweep --resume --out {out}`).", EXIT_INTERRUPTED)
    except ConnectionError as e:  # an OSError, but the network's (Ray's cluster), not the disk's
        fail(f"lost the connection to the Ray cluster: {e}. Check it (`ray status`), then run the same command "
             "again to continue the sweep.", 1)
    except OSError as e:
        fail(f"could not read or write a file: {e}. Check the disk space and permissions of --out.")
    _print_result(result)
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/] continue with the same command or `phasescope sweep --resume --out "
                  f"{result.out}`.")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _assignments(items: list[str], option: str) -> dict:
    return parse_assignments(items, option)
