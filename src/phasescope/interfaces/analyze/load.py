"""Reading a checkpoint's weights and building the model they belong to.

Weights are read without running code from the file: ``torch.load(weights_only=True)``
(a whole pickled module only with ``allow_pickle``), ``safetensors``, Hugging Face's own
``from_pretrained`` (local files only) and Lightning's ``load_from_checkpoint``. Files are
memory-mapped where torch supports it (``mmap=True``; safetensors always), so a worker never
holds more than the one checkpoint it measures, and only the pages it reads.

Where the saved keys carry a prefix the model lacks (Lightning's ``model.``, DDP's ``module.``)
or lack one it has, :func:`align` finds the prefix that matches the most keys and applies it.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...engine.layers import load_model_factory
from ...run.models import build_model

WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file."""


@dataclass
class Source:
    """How the model of the checkpoints is built: ``model`` (``--model``: a built-in name or
    pkg.mod:fn, given the weights), ``hf`` (``from_pretrained`` of each folder) or ``lightning``
    (``CLASS.load_from_checkpoint`` of each ``.ckpt``, ``spec`` = pkg.mod:Class)."""

    kind: str = "model"
    spec: str | None = None
    allow_pickle: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Source":
        return cls(**d)



# ---------------------------------------------------------------------- reading weights
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def extract_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a state_dict itself, a module's, or the one under a
    usual key (``state_dict`` of Lightning, ``model``/``model_state_dict`` of training loops)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in WEIGHT_KEYS:
            v = obj.get(key)
            if isinstance(v, nn.Module):
                return v.state_dict()
            if _is_state_dict(v):
                return v
        # a state_dict with a few non-tensor entries (e.g. a saved step) is still one
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}
        if tensors and len(tensors) >= len(obj) - 3:
            return tensors
        raise CheckpointError(f"{name}: holds no weights: a dict with keys {sorted(map(str, obj))[:8]} and no "
                              f"state_dict under any of {', '.join(WEIGHT_KEYS)}.")
    raise CheckpointError(f"{name}: holds a {type(obj).__name__}, not a state_dict or a module.")


def torch_load(path: Path, *, allow_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU, memory-mapped, tensors only unless ``allow_pickle``."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # a legacy (non-zip) file cannot be mapped: read it whole
                raise
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise CheckpointError(f"{Path(path).name}: cannot be unpickled ({str(e).splitlines()[0]}).") from None
        raise CheckpointError(f"{Path(path).name}: holds Python objects besides tensors (a whole pickled module?), "
                              "which torch.load(weights_only=True) refuses to run. If you trust the file, pass "
                              "--allow-pickle.") from None


def _read_file(path: Path, fmt: str, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], Any]:
    if fmt == "safetensors" or path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file  # lazy: optional dependency (safetensors)
        except ImportError:
            raise CheckpointError(f"{path.name}: reading .safetensors needs the safetensors package: "
                                  "pip install 'phasescope[safetensors]'.") from None

        return dict(load_file(str(path), device="cpu")), None
    obj = torch_load(path, allow_pickle=allow_pickle)
    return extract_state_dict(obj, path.name), obj


def read_weights(path: str | Path, fmt: str, *, weights: str | None = None,
                 allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], Any]:
    """(state_dict, the loaded object for its metadata) of one checkpoint. Raises
    :class:`CheckpointError` naming the file for anything unreadable (truncated, not a
    checkpoint, pickled code without ``allow_pickle``)."""
    path = Path(path)
    shown = path.name if fmt != "hf" else f"{path.name}/{weights}"
    try:
        if fmt != "hf":
            return _read_file(path, fmt, allow_pickle)
        if weights.endswith(".index.json"):  # sharded: every shard of this one checkpoint
            index = json.loads((path / weights).read_text())
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                sd.update(_read_file(path / shard, "hf", allow_pickle)[0])
            return sd, None
        return _read_file(path / weights, "hf", allow_pickle)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, safetensors, json, OS errors: a corrupt file
        raise CheckpointError(f"{shown}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                              "the file is corrupt, truncated or not a checkpoint.") from None


# ---------------------------------------------------------------------- matching keys
def _prefixes(keys, depth: int = 3) -> set[str]:
    out = set()
    for k in keys:
        parts = k.split(".")
        for i in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:i]) + ".")
    return out


def align(sd: dict[str, torch.Tensor], model_keys) -> tuple[dict[str, torch.Tensor], str]:
    """``sd`` with the prefix removed (or added) that makes the most keys match ``model_keys``,
    and what was done ('' when nothing; 'strip model.' / 'add model.')."""
    want = set(model_keys)
    best, how, score = sd, "", sum(k in want for k in sd)
    for p in _prefixes(sd):
        n = sum(1 for k in sd if k.startswith(p) and k[len(p):] in want)
        if n > score:
            best, how, score = {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}, f"strip {p}", n
    for p in _prefixes(want):
        n = sum(1 for k in sd if p + k in want)
        if n > score:
            best, how, score = {(p + k if p + k in want else k): v for k, v in sd.items()}, f"add {p}", n
    return best, how


def tied_groups(model: nn.Module) -> list[set[str]]:
    """Keys of ``model.state_dict()`` that share storage (tied weights: one of them suffices in a file)."""
    by_ptr: dict[tuple, set[str]] = {}
    for k, v in model.state_dict(keep_vars=False).items():
        if v.numel():
            by_ptr.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), set()).add(k)
    return [g for g in by_ptr.values() if len(g) > 1]


# ---------------------------------------------------------------------- building the model
def hf_model(folder: Path, *, loading_info: bool = False):
    """``from_pretrained`` of a local folder (an image classifier, else a causal language model, else
    the bare model); with ``loading_info``, also transformers' own report of missing, unexpected and
    misshapen keys (its files may use older key names that it converts while loading)."""
    try:
        from transformers import (  # lazy: optional dependency (transformers)
            AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageClassification)
        from transformers.utils import logging as hf_logging  # lazy: optional dependency (transformers)
    except ImportError:
        raise CheckpointError("--hf needs transformers: pip install 'phasescope[transformers]'.") from None
    hf_logging.disable_progress_bar()  # one bar per checkpoint in a worker's log says nothing
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    for auto in (AutoModelForImageClassification, AutoModelForCausalLM, AutoModel):
        try:
            model, info = auto.from_pretrained(folder, local_files_only=True, config=config, output_loading_info=True)
            return (model, info) if loading_info else model
        except ValueError as e:  # this Auto class does not know the configuration: the next one
            if "Unrecognized configuration class" not in str(e):
                raise
    raise CheckpointError(f"{folder.name}: transformers has no image classifier, causal LM or model class for its "
                          f"config ({type(config).__name__}).")


def _lightning_model(spec: str, path: Path, allow_pickle: bool) -> nn.Module:
    cls = load_model_factory(spec)
    if not hasattr(cls, "load_from_checkpoint"):
        raise CheckpointError(f"--lightning {spec!r} is not a LightningModule class (it has no load_from_checkpoint).")
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=not allow_pickle, strict=False)
    except TypeError as e:
        raise CheckpointError(f"{path.name}: {spec} cannot be built from the checkpoint ({e}); call "
                              "self.save_hyperparameters() in its __init__ so that the checkpoint records its "
                              "arguments, or give --model pkg.mod:fn that builds it.") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path.name}: holds Python objects besides tensors (e.g. in its hyper_parameters), "
                              "which torch.load(weights_only=True) refuses; pass --allow-pickle if you trust it.") from None


def build_model_for(source: Source, cfg, data, ckpt) -> nn.Module:
    """The model of ``ckpt``, with its weights loaded (on the CPU).

    ``model``: built like ``phasescope run`` builds it (seeded), then the aligned state_dict
    is loaded (keys the file lacks keep their initial values; the guard reports them);
    ``hf``: ``from_pretrained`` of the folder; ``lightning``: ``load_from_checkpoint``."""
    path = Path(ckpt["path"])
    if source.kind == "hf":
        if ckpt["format"] != "hf":
            raise CheckpointError(f"{ckpt['name']}: --hf loads Hugging Face folders (config.json and weights); this "
                                  f"is a {ckpt['format']} file. Use --model for it.")
        return hf_model(path)
    if source.kind == "lightning":
        if ckpt["format"] != "lightning":
            raise CheckpointError(f"{ckpt['name']}: --lightning loads Lightning .ckpt files; this is a "
                                  f"{ckpt['format']} checkpoint. Use --model for it.")
        return _lightning_model(source.spec, path, source.allow_pickle)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    sd, _ = read_weights(path, ckpt["format"], weights=ckpt.get("weights"), allow_pickle=source.allow_pickle)
    sd, _ = align(sd, model.state_dict().keys())
    try:
        model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        raise CheckpointError(f"{ckpt['name']}: its weights do not fit --model {cfg.model} "
                              f"({str(e).splitlines()[-1].strip()}).") from None
    del sd
    return model
