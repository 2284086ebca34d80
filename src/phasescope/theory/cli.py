"""``phasescope theory``: the single-layer theory from the command line.

A standalone typer app with one command, :func:`theory_command`; the main CLI mounts it
with ``app.command("theory")(theory_command)``, and ``python -m phasescope.theory`` runs
it directly. It parses and prints; :mod:`phasescope.theory` does the work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .experiment import describe, run_theory
from ..data.datamodel import DataModel
from .single_layer import Training
from .sweep import run_sweep, summarise, sweep_values
from ..outputs.figures import fmt_estimate
from ..outputs.runs import RunFolderError

_D, _T = DataModel(), Training()

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Simulate the single-layer theory of the learning phases.")


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds must be integers separated by commas, e.g. 0,1,2; got {text!r}.") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"--ridge {text!r}: give a number >= 0 or auto.") from None


def _sweep_spec(text: str) -> tuple[str, list[str]]:
    if "=" not in text:
        raise typer.BadParameter(f"--sweep must look like PARAM=V1,V2,...; got {text!r}.")
    param, values = text.split("=", 1)
    return param.strip(), [v.strip() for v in values.split(",") if v.strip()]


def theory_command(
    classes: int = typer.Option(_D.num_classes, "--classes", "-K", help="Number of classes K."),
    dim: int = typer.Option(_D.dim, "--dim", "-d", help="Input dimension d."),
    n_train: int = typer.Option(_D.n_train, "--n-train", "-n", help="Training samples (all classes)."),
    n_test: int = typer.Option(_D.n_test, "--n-test", help="Held-out test samples."),
    prototype_strength: float = typer.Option(_D.prototype_strength, help="Per-coordinate RMS of a class prototype."),
    noise: float = typer.Option(_D.noise, help="Per-coordinate std of the Gaussian noise on every sample."),
    atypical_fraction: float = typer.Option(_D.atypical_fraction, help="Share of each class's samples that are atypical."),
    atypical_kind: str = typer.Option(_D.atypical_kind, help="random: a random pattern of the prototype's norm; "
                                      "other: another class's prototype with the label kept."),
    imbalance: float = typer.Option(_D.imbalance, help="Largest / smallest class size (1 = balanced)."),
    iterations: int = typer.Option(_T.iterations, "--iterations", "-T", help="Gradient steps."),
    lr: float = typer.Option(_T.lr, help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, help="Mini-batch size; omit for full-batch gradient descent."),
    init_scale: float = typer.Option(_T.init_scale, help="Initial weights are N(0, init_scale^2 / d)."),
    points_per_octave: int = typer.Option(_T.points_per_octave, help="Checkpoints per doubling of the iteration."),
    precision: str = typer.Option(_T.precision, help="float64, or mixed (float32 products, float64 weights; ~2x faster)."),
    decoder_ridge: str = typer.Option("0", "--ridge", help="Relative ridge of the reconstruction decoder (the "
                                      "tracker's solver): 0 exact least squares, a number, or auto (GCV)."),
    seed: int = typer.Option(0, help="Seed of the data and the initial weights (single run)."),
    sweep: Optional[str] = typer.Option(None, help="Sweep one knob: PARAM=V1,V2,... e.g. atypical_fraction=0,0.05,0.1,0.2,0.3"),
    seeds: str = typer.Option("0,1,2", help="Seeds of every swept value (with --sweep)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the intervals."),
    confidence: float = typer.Option(0.95, help="Level of the intervals."),
    min_effect: float = typer.Option(0.02, help="Relative change below which a significant change is no phase."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: a new folder under runs/)."),
    overwrite: bool = typer.Option(False, help="Replace the run in --out (deletes only the files phasescope wrote)."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Draw curves.png / sweep.png."),
) -> None:
    """Train the single-layer model on the synthetic data model and measure its learning
    phases exactly; or, with --sweep, run several values of one knob over several seeds."""
    console = Console()
    data = DataModel(num_classes=classes, dim=dim, n_train=n_train, n_test=n_test,
                     prototype_strength=prototype_strength, noise=noise, atypical_fraction=atypical_fraction,
                     atypical_kind=atypical_kind, imbalance=imbalance)
    training = Training(iterations=iterations, lr=lr, batch_size=batch_size, init_scale=init_scale,
                        points_per_octave=points_per_octave, precision=precision,
                        decoder_ridge=decoder_ridge if decoder_ridge == "auto" else _number(decoder_ridge))
    try:
        data.validate()
        training.validate()
        if sweep is None:
            _single(console, data, training, seed, out, overwrite, bootstrap, confidence, min_effect, figure)
        else:
            param, values = _sweep_spec(sweep)
            _sweep(console, data, training, param, values, _seeds(seeds), out, overwrite, bootstrap, confidence,
                   min_effect, figure)
    except (ValueError, RunFolderError, FloatingPointError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _single(console, data, training, seed, out, overwrite, bootstrap, confidence, min_effect, figure) -> None:
    console.print(describe(data, training, seed))
    run = run_theory(data, training, seed, out, overwrite=overwrite, bootstrap=bootstrap, confidence=confidence,
                     min_effect=min_effect, figure=figure)
    r = run.result
    table = Table(title="checkpoints (reconstruction: test MSE per coordinate; losses: train)")
    for col in ("iteration", "recon logits", "recon softmax", "loss typical", "loss atypical", "grad share atyp.",
                "train acc"):
        table.add_column(col, justify="right")
    cols = {
        "logits": r.curve("reconstruction_mse", "logits", "test"),
        "softmax": r.curve("reconstruction_mse", "softmax", "test"),
        "typ": r.curve("loss_typical"),
        "acc": r.curve("accuracy"),
    }
    has_atyp = data.atypical_fraction > 0 and (r.metrics.metric == "loss_atypical").any()
    atyp = r.curve("loss_atypical") if has_atyp else None
    share = r.curve("gradient_share_atypical") if has_atyp else None
    for it in r.iterations:
        table.add_row(str(it), f"{cols['logits'][it]:.4f}", f"{cols['softmax'][it]:.4f}", f"{cols['typ'][it]:.3g}",
                      f"{atyp[it]:.3g}" if has_atyp else "-", f"{share[it]:.2f}" if has_atyp else "-",
                      f"{cols['acc'][it]:.3f}")
    console.print(table)
    for layer, p in run.payload["layers"].items():
        spans = ", ".join(f"{q['name']} {q['start']}-{q['end']}" for q in p["phases"])
        console.print(f"[bold]{layer}[/bold]: {spans}; minimum {p['min_value']['value']:.4f} at {p['min_iteration']}; "
                      f"decrease {fmt_estimate(p['relative_decrease'])}, increase {fmt_estimate(p['relative_increase'])}"
                      + ("" if p["increase_significant"] else " (no significant increase)"))
    if has_atyp:
        t = run.payload["turn"]["logits"]
        cross = t["share_crossing_iteration"]
        console.print(f"turn: typical loss at {100 * t['typical_loss_ratio']:.1f}% of its start, atypical at "
                      f"{100 * t['atypical_loss_ratio']:.1f}%; atypical gradient share {t['gradient_share_at_min']:.2f} "
                      "at the minimum, " + (f"reaches 1/2 at iteration {cross}" if cross is not None else "never reaches 1/2"))
    console.print(f"{r.seconds['total']:.1f} s; wrote {run.out}")


def _sweep(console, data, training, param, values, seeds, out, overwrite, bootstrap, confidence, min_effect,
           figure) -> None:
    values = sweep_values(param, values)
    console.print(f"sweep {param} over {values} with seeds {seeds}: {len(values) * len(seeds)} runs")

    def progress(v, s, row):
        console.print(f"  {param}={v} seed {s}: decrease {100 * row['relative_decrease']:.1f}%, "
                      f"increase {100 * row['relative_increase']:.1f}% "
                      f"[{100 * row['relative_increase_ci_low']:.1f}, {100 * row['relative_increase_ci_high']:.1f}], "
                      f"minimum at {row['min_iteration']} ({row['seconds']:.1f} s)")

    res = run_sweep(data, training, param, values, seeds, out, overwrite=overwrite, bootstrap=bootstrap,
                    confidence=confidence, min_effect=min_effect, figure=figure, on_run=progress)
    table = Table(title=f"phase magnitudes of the test reconstruction loss (mean ± sd over {len(seeds)} seeds)")
    for col in (param, "relative decrease", "relative increase", "significant increases", "median minimum"):
        table.add_column(col, justify="right")
    for _, row in summarise(res.table).iterrows():
        sd = lambda v: "" if v != v else f" ± {100 * v:.1f}"  # noqa: E731 (nan when one seed)
        table.add_row(str(row["value"]), f"{100 * row['relative_decrease_mean']:.1f}%{sd(row['relative_decrease_sd'])}",
                      f"{100 * row['relative_increase_mean']:.1f}%{sd(row['relative_increase_sd'])}",
                      f"{int(row['increase_significant'])}/{int(row['seeds'])}", f"{row['min_iteration_median']:g}")
    console.print(table)
    console.print(f"wrote {res.out}")


app.command(name="theory", help="Simulate the single-layer theory of the learning phases.")(theory_command)


def main() -> None:
    app()
