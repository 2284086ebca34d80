"""Which checkpoints a folder holds, at which training step, in which format.

Only the folder's own entries are looked at (not deeper): files with a weights suffix, and
sub-folders that hold weights (a Hugging Face ``save_pretrained``/Trainer folder such as
``checkpoint-500/``, or a folder such as ``step1000/`` or ``iter_0004096/`` with one weights file).

The step of each comes from, in this order:

1. ``--steps-from REGEX``: its named group ``step`` (or first group) on the entry's name;
2. the name: ``step-1000.pt``, ``step1000``, ``global_step1000``, ``epoch=3-step=1200.ckpt``,
   ``checkpoint-500/``, ``iter_0004096``, ``it1000``, or a bare number (``1000.pt``);
3. what the trainer recorded: ``trainer_state.json``'s ``global_step`` (Hugging Face), the
   ``global_step`` of a Lightning ``.ckpt`` or the ``global_step``/``step``/``iteration`` of
   a saved dict. A recorded step that contradicts the name is a finding of the guard.

Entries that are no checkpoint, or whose step cannot be told, are listed as skipped with
the reason (``phasescope analyze --dry-run`` prints both lists).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

SUFFIXES = {".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "lightning", ".safetensors": "safetensors"}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
              "pytorch_model.bin.index.json")
# Step patterns on a file or folder name (without suffix), most specific first; an epoch alone is no step.
NAME_PATTERNS = (
    re.compile(r"(?:^|[^a-z])(?:global_)?step[=_-]?(\d+)", re.I),
    re.compile(r"(?:^|[^a-z])checkpoint[=_-](\d+)", re.I),
    re.compile(r"(?:^|[^a-z])it(?:er|eration)?[=_-]?(\d+)", re.I),
    re.compile(r"^(\d+)$"),
)
RECORDED_KEYS = ("global_step", "step", "iteration")  # keys of a saved dict that record its step


class DiscoveryError(ValueError):
    """The checkpoint folder cannot be read as asked (missing, or a bad --steps-from)."""


@dataclass
class Checkpoint:
    step: int
    path: str  # the file, or the folder of a Hugging Face checkpoint
    format: str  # torch | lightning | safetensors | hf
    name: str  # the entry of the checkpoint folder it came from
    step_from: str  # name | regex | trainer_state.json | global_step | ...
    name_step: int | None = None  # the step its name says, when it says one
    recorded_step: int | None = None  # the step the trainer recorded, when read
    weights: str | None = None  # hf: the weights file inside the folder

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    name: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Discovery:
    folder: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def step_from_name(name: str) -> int | None:
    stem = name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pattern in NAME_PATTERNS:
        m = pattern.search(stem)
        if m:
            return int(m.group(1))
    return None


def compile_steps_from(regex: str | None) -> re.Pattern | None:
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise DiscoveryError(f"--steps-from {regex!r} is not a regular expression ({e}).") from None
    if pattern.groups == 0:
        raise DiscoveryError(f"--steps-from {regex!r} has no group: put the step number in a group, e.g. "
                             r"'ckpt_(\d+)' or '(?P<step>\d+)'.")
    return pattern


def _regex_step(pattern: re.Pattern, name: str) -> int | None:
    m = pattern.search(name)
    if not m:
        return None
    text = m.group("step") if "step" in pattern.groupindex else m.group(1)
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def trainer_state_step(folder: Path) -> int | None:
    """``global_step`` of a Hugging Face ``trainer_state.json`` in ``folder``, when there is one."""
    try:
        doc = json.loads((folder / "trainer_state.json").read_text())
        step = doc.get("global_step")
        return int(step) if isinstance(step, int) and not isinstance(step, bool) else None
    except (OSError, ValueError, AttributeError):
        return None


def recorded_step(obj) -> int | None:
    """The step a loaded checkpoint dict records about itself (Lightning: ``global_step``)."""
    if not isinstance(obj, dict):
        return None
    for key in RECORDED_KEYS:
        v = obj.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return int(v)
        if hasattr(v, "item") and getattr(v, "numel", lambda: 0)() == 1 and not v.is_floating_point():
            return int(v.item())
    return None


def _file_recorded_step(path: Path, fmt: str) -> int | None:
    """Read the recorded step of a torch/Lightning file (memory-mapped; weights_only: never runs code)."""
    if fmt not in ("torch", "lightning"):
        return None
    try:
        return recorded_step(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # noqa: BLE001 - unreadable here: the guard names the problem
        return None


def _folder_weights(folder: Path) -> tuple[str | None, str | None, str]:
    """(format, weights file, why not) of a checkpoint folder."""
    if (folder / "config.json").exists():
        for name in HF_WEIGHTS:
            if (folder / name).exists():
                return "hf", name, ""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not p.name.startswith("."))
    if len(files) == 1:
        return SUFFIXES[files[0].suffix.lower()], files[0].name, ""
    if not files:
        return None, None, "a folder without a weights file (.pt, .pth, .bin, .ckpt, .safetensors or a Hugging Face folder)"
    return None, None, (f"a folder with {len(files)} weights files ({', '.join(p.name for p in files[:4])}); "
                        "point phasescope at one checkpoint per file or folder")


def discover(ckpt_dir: str | Path, *, steps_from: str | None = None) -> Discovery:
    """The checkpoints of ``ckpt_dir``, sorted by step, and the entries skipped with their reason."""
    folder = Path(ckpt_dir).expanduser()
    if not folder.exists():
        raise DiscoveryError(f"{folder} does not exist; give the folder that holds the saved checkpoints.")
    if not folder.is_dir():
        raise DiscoveryError(f"{folder} is a file; give the folder that holds the checkpoints (one file or "
                             "sub-folder per checkpoint).")
    pattern = compile_steps_from(steps_from)
    found = Discovery(str(folder))
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name.startswith("."):
            continue  # hidden and temporary files (an interrupted save)
        weights = None
        if entry.is_dir():
            fmt, weights, why = _folder_weights(entry)
            if fmt is None:
                found.skipped.append(Skipped(name + "/", why))
                continue
            path = entry if fmt == "hf" else entry / weights
        elif entry.suffix.lower() in SUFFIXES:
            fmt, path = SUFFIXES[entry.suffix.lower()], entry
        else:
            found.skipped.append(Skipped(name, f"not a checkpoint file (suffix {entry.suffix or 'none'}; "
                                               "looked for .pt, .pth, .bin, .ckpt, .safetensors and folders)"))
            continue
        shown = name + ("/" if entry.is_dir() else "")
        name_step = step_from_name(name)
        recorded = trainer_state_step(entry) if entry.is_dir() else None
        if pattern is not None:
            step, how = _regex_step(pattern, name), "--steps-from"
            if step is None:
                found.skipped.append(Skipped(shown, f"--steps-from {steps_from!r} does not match its name"))
                continue
        elif name_step is not None:
            step, how = name_step, "name"
        else:
            if recorded is None:
                recorded = _file_recorded_step(Path(path), fmt)
            if recorded is None:
                found.skipped.append(Skipped(shown, "no step in its name (e.g. step-1000, checkpoint-500, iter_0004096) "
                                                    "and none recorded in it; give --steps-from REGEX"))
                continue
            step = recorded
            how = "trainer_state.json" if entry.is_dir() and trainer_state_step(entry) is not None else "global_step"
        found.checkpoints.append(Checkpoint(step=int(step), path=str(path), format=fmt, name=shown, step_from=how,
                                            name_step=name_step, recorded_step=recorded,
                                            weights=weights if fmt == "hf" else None))
    found.checkpoints.sort(key=lambda c: (c.step, c.name))
    return found
