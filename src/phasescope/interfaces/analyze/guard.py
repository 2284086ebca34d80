"""The integrity guard: what is wrong with a set of checkpoints, found before anything is measured.

Each checkpoint is read once (memory-mapped) by :func:`scan`: a content hash of its weights
(sha256 over every tensor's key, dtype, shape and bytes, in key order), its keys, shapes and
dtypes against the model's, and whether every floating-point value is finite.
:func:`findings` then compares the checkpoints with each other. The kinds:

==============  =====================================================================  ==========
kind            what                                                                   measured?
==============  =====================================================================  ==========
corrupt         the file cannot be read (truncated, not a checkpoint, pickled code)     skipped
shape           a tensor's shape differs from the model's: the weights do not fit       skipped
non-finite      NaN or inf in the weights: the measurement would be meaningless         skipped
repeated-step   two entries give the same step; the first (by name) is measured         the first
identical       different steps with byte-identical weights (a save that did not        yes
                capture the current model?)
step-mismatch   the step a trainer recorded in the file differs from its name's         yes
order           the recorded steps do not increase with the steps measured              yes
missing-keys    tensors the model has and the file lacks (they keep their initial       yes
                values)
extra-keys      tensors the file has and the model lacks (ignored)                      yes
dtype           a tensor stored in another dtype than the model's (converted)           yes
==============  =====================================================================  ==========

Each finding names its kind, the steps and files, and says what it means; ``--strict``
refuses to measure when there is any.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .load import CheckpointError, align, read_weights
from .discover import recorded_step

SKIPPING = ("corrupt", "shape", "non-finite")  # kinds whose checkpoint is not measured (and a repeated step's others)
KINDS = ("corrupt", "shape", "non-finite", "repeated-step", "identical", "step-mismatch", "order", "missing-keys",
         "extra-keys", "dtype")


@dataclass
class Scan:
    """What one read of a checkpoint found (cached in analyze.pt by file size and mtime)."""

    name: str
    step: int
    sha256: str | None = None
    tensors: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    shapes: list[tuple[str, list, list]] = field(default_factory=list)  # key, in file, in model
    dtypes: list[tuple[str, str, str]] = field(default_factory=list)  # key, in file, in model
    nonfinite: list[str] = field(default_factory=list)
    recorded_step: int | None = None
    prefix: str = ""
    error: str | None = None
    stamp: list | None = None  # (size, mtime_ns) of the file(s) read

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Finding:
    kind: str
    steps: list[int]
    names: list[str]
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def warning(self) -> str:
        """The line for phases.json's ``warnings``, the printed summary and report.html."""
        return f"checkpoint integrity ({self.kind}): {self.message}"


def file_stamp(path: str | Path) -> list:
    """(size, mtime_ns) of a file, or of every file of a folder: unchanged means the same content."""
    p = Path(path)
    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    return [[q.name, q.stat().st_size, q.stat().st_mtime_ns] for q in files]


def tensor_hash(sd: dict[str, torch.Tensor]) -> tuple[str, int]:
    """sha256 over (key, dtype, shape, bytes) of every tensor in key order, and the byte count."""
    h, total = hashlib.sha256(), 0
    for k in sorted(sd):
        t = sd[k]
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        if t.is_quantized or t.is_sparse:
            h.update(repr(t).encode())
            continue
        data = t.view(torch.uint8).numpy() if t.numel() else b""
        h.update(memoryview(data) if len(data) else b"")
        total += len(data)
    return h.hexdigest(), total


def scan(ckpt: dict, reference: dict[str, tuple[list, str]], tied: list[set[str]], *,
         allow_pickle: bool = False) -> Scan:
    """Read ``ckpt`` once and compare it with the model's ``reference`` ({key: (shape, dtype)})."""
    s = Scan(name=ckpt["name"], step=ckpt["step"], stamp=file_stamp(ckpt["path"]))
    try:
        sd, obj = read_weights(ckpt["path"], ckpt["format"], weights=ckpt.get("weights"), allow_pickle=allow_pickle)
    except CheckpointError as e:
        s.error = str(e)
        return s
    s.recorded_step = recorded_step(obj) if obj is not None else ckpt.get("recorded_step")
    if s.recorded_step is None:
        s.recorded_step = ckpt.get("recorded_step")
    sd, s.prefix = align(sd, reference)
    try:
        s.sha256, s.bytes = tensor_hash(sd)
    except Exception as e:  # noqa: BLE001 - storage that cannot be read back: a truncated file
        s.error = f"{ckpt['name']}: its tensors cannot be read ({type(e).__name__}: {e}); the file is corrupt."
        return s
    s.tensors = len(sd)
    present = set(sd)
    for group in tied:  # one of a tied group in the file is all of it
        if present & group:
            present |= group
    s.missing = sorted(k for k in reference if k not in present)
    s.extra = sorted(k for k in sd if k not in reference)
    for k, t in sd.items():
        if k not in reference:
            continue
        shape, dtype = reference[k]
        if list(t.shape) != list(shape):
            s.shapes.append((k, list(t.shape), list(shape)))
        elif str(t.dtype) != dtype:
            s.dtypes.append((k, str(t.dtype).replace("torch.", ""), dtype.replace("torch.", "")))
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                s.nonfinite.append(k)
    del sd, obj
    return s


def reference_of(model: torch.nn.Module) -> dict[str, tuple[list, str]]:
    return {k: (list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}


def _steps(scans: list[Scan]) -> list[int]:
    return [s.step for s in scans]


def _keys(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _span(scans: list[Scan], n: int = 6) -> str:
    steps = sorted(set(_steps(scans)))
    shown = ", ".join(map(str, steps[:n])) + (f" ... {steps[-1]}" if len(steps) > n else "")
    return f"step{'s' if len(steps) > 1 else ''} {shown}"


def findings(scans: list[Scan], checkpoints: list[dict], against: str = "the model") -> list[Finding]:
    """Every finding of the guard over ``scans`` (one per checkpoint, in the order of
    ``checkpoints``: by step, then name). Repeated steps are reported here; which entries are
    measured is :func:`measurable`'s decision."""
    out: list[Finding] = []

    def add(kind: str, group: list[Scan], message: str) -> None:
        out.append(Finding(kind, sorted(set(_steps(group))), [s.name for s in group], message))

    for s in scans:
        if s.error:
            add("corrupt", [s], f"{s.error} Skipped; the other checkpoints are measured.")
    ok = [s for s in scans if not s.error]
    by_step: dict[int, list[Scan]] = {}
    for s in ok:
        by_step.setdefault(s.step, []).append(s)
    for step, group in sorted(by_step.items()):
        if len(group) > 1:
            same = len({s.sha256 for s in group}) == 1
            add("repeated-step", group, f"step {step} comes from {len(group)} entries ({', '.join(s.name for s in group)}), "
                f"{'with identical weights' if same else 'with DIFFERENT weights'}; {group[0].name} is measured, the "
                "others are skipped.")
    firsts = [g[0] for _, g in sorted(by_step.items())]
    by_hash: dict[str, list[Scan]] = {}
    for s in firsts:
        by_hash.setdefault(s.sha256, []).append(s)
    for group in by_hash.values():
        if len(group) > 1:
            add("identical", group, f"{_span(group)} ({', '.join(s.name for s in group[:4])}) hold byte-identical "
                f"weights (sha256 {group[0].sha256[:12]}): training did not change them, or the saves did not capture "
                "the current model.")
    for s in firsts:
        if s.recorded_step is not None and s.recorded_step != s.step:
            add("step-mismatch", [s], f"{s.name} is taken as step {s.step} but records step {s.recorded_step} "
                "(global_step): the name or --steps-from disagrees with what the trainer saved.")
    recorded = [s for s in firsts if s.recorded_step is not None]
    for a, b in zip(recorded, recorded[1:]):
        if b.recorded_step <= a.recorded_step:
            add("order", [a, b], f"{a.name} (step {a.step}) records step {a.recorded_step} and {b.name} (step {b.step}) "
                f"records {b.recorded_step}: the recorded steps do not increase with the steps (restarted or "
                "overwritten saves?).")
    for kind, attr, say in (
        ("shape", "shapes", lambda s: f"{s.name}: {len(s.shapes)} tensor(s) have another shape than in {against} "
                                      f"({_keys([f'{k} {tuple(a)} vs {tuple(b)}' for k, a, b in s.shapes], 3)}); the "
                                      "weights do not fit: skipped."),
        ("non-finite", "nonfinite", lambda s: f"{s.name}: NaN or inf in {len(s.nonfinite)} tensor(s) "
                                              f"({_keys(s.nonfinite)}): training had diverged; skipped."),
    ):
        for s in firsts:
            if getattr(s, attr):
                add(kind, [s], say(s))
    for kind, attr, what in (("missing-keys", "missing", "lack {n} tensor(s) {against} has ({keys}): those keep the "
                                                         "model's initial values when measured"),
                             ("extra-keys", "extra", "hold {n} tensor(s) {against} lacks ({keys}): ignored"),
                             ("dtype", "dtypes", "store {n} tensor(s) in another dtype than {against} ({keys}): "
                                                 "converted on loading")):
        groups: dict[str, list[Scan]] = {}
        for s in firsts:
            values = getattr(s, attr)
            if values:
                label = _keys([v if isinstance(v, str) else f"{v[0]} {v[1]} vs {v[2]}" for v in values])
                groups.setdefault(f"{len(values)}\0{label}", []).append(s)
        for key, group in groups.items():
            n, label = key.split("\0", 1)
            add(kind, group, f"{_span(group)} " + what.format(n=n, keys=label, against=against) + ".")
    return out


def measurable(scans: list[Scan], found: list[Finding]) -> list[Scan]:
    """The scans to measure: not corrupt, fitting, finite, and the first entry of each step."""
    skip = {name for f in found if f.kind in SKIPPING for name in f.names}
    seen: set[int] = set()
    out = []
    for s in scans:
        if s.name in skip or s.error or s.step in seen:
            continue
        seen.add(s.step)
        out.append(s)
    return out
