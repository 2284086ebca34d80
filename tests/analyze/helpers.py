"""Shared pieces of the analyze tests: a tiny measurement configuration on the 8x8 digits and
checkpoint folders written the way training loops write them (no training: seeded models)."""
from __future__ import annotations

from pathlib import Path

import torch

from phasescope import RunConfig
from phasescope.run.models import build_model

# measurement of an untrained 8x8 CNN in well under a second per checkpoint
TINY = dict(dataset="digits", model="cnn", width=0.5, fit_samples=200, test_samples=100, bootstrap=50,
            samples={"enabled": False}, reconstructions={"enabled": False})
TINY_ARGS = ["--dataset", "digits", "--width", "0.5", "--fit-samples", "200", "--test-samples", "100",
             "--bootstrap", "50", "--no-samples", "--no-reconstructions", "--quiet"]


def tiny_cfg(**changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, **changes})


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (1, 8, 8), 10, width=0.5)


def state(seed: int) -> dict[str, torch.Tensor]:
    """A different, valid state_dict per seed (a stand-in for the weights at one step)."""
    return model(seed).state_dict()


def save_steps(folder: Path, steps, name: str = "step-{}.pt", *, wrap=None) -> Path:
    """One torch.save per step, as a plain training loop writes them (``wrap``: e.g. {'model': sd, 'step': N})."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(steps):
        sd = state(i)
        torch.save(wrap(sd, s) if wrap else sd, folder / name.format(s))
    return folder
