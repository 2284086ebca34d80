"""One single-layer run written as a run folder, like ``phasescope run`` writes one:

    config.json   data model, training, seed, measurement settings, versions
    metrics.csv   tidy: iteration, layer, split, metric, value, ci_low, ci_high
                  layers: logits, softmax (reconstruction from each), model (losses, accuracies,
                  gradient shares, prototype angles)
    errors.npz    per-sample test reconstruction errors per output layer
    phases.json   phases of each output layer with intervals, and the turn summary
    curves.png    reconstruction loss, typical vs atypical loss, atypical gradient share
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..outputs.figures import phases_payload
from ..run.runfolder import RunWriter, versions as _versions
from ..outputs.runs import Wording, write_errors, write_json, write_metrics
from .analysis import turn_summary
from ..data.datamodel import DataModel
from .figures import plot_theory_curves
from .single_layer import OUTPUT_LAYERS, TheoryResult, Training, simulate

PRIMARY_LAYER = "logits"
WORDING = Wording(resume=None)  # --out, --overwrite; a theory run cannot be continued


def claim(out: str | Path | None, name: str, *, overwrite: bool) -> RunWriter:
    """The run folder, claimed like ``phasescope run``'s: locked while written, a folder holding
    another run refused unless ``overwrite`` (which deletes only phasescope's files)."""
    return RunWriter.claim(Path(out) if out else None, name, overwrite=overwrite, writer="theory", wording=WORDING)


@dataclass
class TheoryRun:
    out: Path
    result: TheoryResult
    payload: dict


def measurement_settings(bootstrap: int, confidence: float, min_effect: float) -> dict:
    return {
        "decoder": "exact affine least squares from the layer's outputs to the input, fitted on the training split",
        "outputs": list(OUTPUT_LAYERS), "primary": PRIMARY_LAYER,
        "inputs": "normalised with the training split's global mean and std",
        "error_unit": "squared error per input coordinate",
        "bootstrap": bootstrap, "confidence": confidence, "min_effect": min_effect,
    }


def versions() -> dict:
    return _versions()


def payload(result: TheoryResult) -> dict:
    """The phases.json document of one run."""
    doc = phases_payload(result.phases, result.metrics)
    doc["primary_layer"] = PRIMARY_LAYER
    doc["turn"] = {name: turn_summary(result.metrics, p) for name, p in result.phases.items()}
    doc["seconds"] = result.seconds
    return doc


def run_theory(data: DataModel, training: Training, seed: int = 0, out: str | Path | None = None, *,
               overwrite: bool = False, bootstrap: int = 1000, confidence: float = 0.95, min_effect: float = 0.02,
               figure: bool = True) -> TheoryRun:
    """Simulate one single-layer run and write its run folder (a new one under runs/ by default)."""
    data.validate()
    training.validate()
    with claim(out, "theory", overwrite=overwrite) as folder:
        out = folder.path
        folder.start({
            "kind": "theory", "data_model": data.to_dict(), "training": training.to_dict(), "seed": seed,
            "measurement": measurement_settings(bootstrap, confidence, min_effect), "versions": versions(),
        })
        result = simulate(data, training, seed, bootstrap=bootstrap, confidence=confidence, min_effect=min_effect)
        doc = payload(result)
        write_metrics(out, result.metrics)
        write_errors(out, result.errors_by_iteration())
        write_json(out / "phases.json", doc)
        if figure:
            plot_theory_curves(result.metrics, doc["layers"], out / "curves.png",
                               title=describe(data, training, seed, sep="\n"), atypical_fraction=data.atypical_fraction)
    return TheoryRun(out, result, doc)


def describe(data: DataModel, training: Training, seed: int | None = None, sep: str = ", ") -> str:
    """A title: the knobs that matter most (``sep="\\n"`` splits data and training over two lines)."""
    kind = "" if data.atypical_fraction == 0 else f" ({data.atypical_kind})"
    batch = "full batch" if training.batch_size is None else f"batch {training.batch_size}"
    s = (f"single layer: K={data.num_classes}, d={data.dim}, n={data.n_train}, noise {data.noise:g}, "
         f"atypical {data.atypical_fraction:g}{kind}{sep}lr {training.lr:g}, {batch}")
    return s + (f", seed {seed}" if seed is not None else "")
