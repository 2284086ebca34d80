"""Layers of any model: names with output selectors, what a module returned, logits, dry runs.

A *layer* is a module name from ``model.named_modules()``, optionally followed by
selectors that pick one tensor out of what the module returns:

    features.3            the module's output (a tensor)
    blocks.3[0]           element 0 of a tuple/list output (negative indices count from the end)
    encoder[hidden]       key ``hidden`` of a dict output (or attribute of an output object,
                          e.g. a Hugging Face ``ModelOutput``); quotes around the key are optional
    encoder[states][-1]   selectors chain

:func:`parse_layer` is the one place such names are parsed; :func:`select_output` applies
the selectors and says, naming the layer, what the module returned when they do not
match or the result is no tensor.

The tracker calls the model on a batch of inputs and takes logits from what it returns
(:func:`logits_of`: a tensor, an object with ``.logits``, a dict with ``"logits"``, or the
first element of a tuple). A model whose forward needs keywords is called through a
``forward(model, x)`` function instead (e.g. ``lambda m, x: m(pixel_values=x).logits``).
"""
from __future__ import annotations

import importlib
import inspect
import os
from contextlib import contextmanager
import re
import sys
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ModelError

Forward = Callable[[nn.Module, torch.Tensor], Any]  # (model, x) -> logits or an output holding them


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's own train/eval mode on exit (``model.train(was)`` would set
    them all to the top-level mode, unfreezing a BatchNorm the user had put in eval)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def resolve_layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """Map layer names to modules; an unknown name raises an error listing the valid ones.

    A name may end in output selectors (``blocks.3[0]``, ``encoder[hidden]``): it maps to the
    module before them (parsed by :func:`phasescope.engine.layers.parse_layer`).
    """
    available = dict(model.named_modules())
    base = {n: parse_layer(n)[0] for n in names}
    missing = [n for n in names if base[n] not in available or base[n] == ""]
    if missing:
        blocks = [n for n in available if n.count(".") <= 1 and n]
        raise ModelError(
            f"Unknown layer name(s) {missing}. Trackable layers of this model include: {', '.join(blocks)} "
            "(see `phasescope layers --model NAME`)."
        )
    return {n: available[base[n]] for n in names}

_SELECTOR = re.compile(r"\[([^\[\]]+)\]")
# Modules whose 3-D outputs are (batch, channels, length): their token/position axis is the last one.
CHANNELS_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
                     nn.AdaptiveMaxPool1d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.GroupNorm)
# Parameter-free modules that only reshape or pass data on: never a default layer, not listed.
_TRIVIAL = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity)


def parse_layer(name: str) -> tuple[str, tuple[int | str, ...]]:
    """``'blocks.3[0]'`` -> ``('blocks.3', (0,))``; ``'encoder[hidden]'`` -> ``('encoder', ('hidden',))``."""
    if not isinstance(name, str):
        raise ModelError(f"Layer names are strings such as 'features.3'; got {name!r}.")
    i = name.find("[")
    if i < 0:
        return name, ()
    base, rest = name[:i], name[i:]
    parts = _SELECTOR.findall(rest)
    if "".join(f"[{p}]" for p in parts) != rest:
        raise ModelError(f"Layer {name!r}: write selectors as MODULE[index] or MODULE[key], e.g. 'blocks.3[0]' "
                         "or 'encoder[hidden]'.")
    sel: list[int | str] = []
    for p in parts:
        p = p.strip()
        sel.append(int(p) if re.fullmatch(r"-?\d+", p) else p.strip("'\""))
    return base, tuple(sel)


def describe_value(v: Any, depth: int = 0) -> str:
    """What a module returned, in words: shapes of tensors, the parts of tuples and dicts."""
    if torch.is_tensor(v):
        return f"a tensor of shape {tuple(v.shape)}"
    if v is None:
        return "None"
    if depth >= 2:
        return f"a {type(v).__name__}"
    if isinstance(v, Mapping):
        inner = "; ".join(f"[{k}] {describe_value(x, depth + 1)}" for k, x in v.items())
        return f"a {type(v).__name__} with {len(v)} entr{'y' if len(v) == 1 else 'ies'}: {inner}"
    if isinstance(v, (tuple, list)):
        inner = "; ".join(f"[{i}] {describe_value(x, depth + 1)}" for i, x in enumerate(v))
        return f"a {type(v).__name__} of {len(v)}: {inner}"
    return f"a {type(v).__name__}"


def tensor_paths(v: Any, depth: int = 2) -> list[tuple[str, torch.Tensor]]:
    """Selector suffixes that lead to tensors inside ``v`` (``[0]``, ``[hidden]``, ``[0][1]``)."""
    if torch.is_tensor(v):
        return [("", v)]
    if depth == 0:
        return []
    items = v.items() if isinstance(v, Mapping) else enumerate(v) if isinstance(v, (tuple, list)) else ()
    return [(f"[{k}]{p}", t) for k, x in items for p, t in tensor_paths(x, depth - 1)]


def select_output(layer: str, out: Any, selectors: tuple[int | str, ...] | None = None) -> torch.Tensor:
    """The tensor ``layer`` names in the module's output ``out``; a clear error if there is none."""
    if selectors is None:
        selectors = parse_layer(layer)[1]
    if torch.is_tensor(out) and not selectors:  # the common case, on every forward: nothing to parse
        return out
    base = parse_layer(layer)[0]
    cur = out
    for k in selectors:
        nxt = _pick(cur, k)
        if nxt is _MISSING:
            raise ModelError(f"Layer {layer!r}: the selector [{k}] does not match what module {base!r} returned: "
                             f"{describe_value(out)}.{_suggest(base, out)}")
        cur = nxt
    if not torch.is_tensor(cur):
        got = describe_value(out) if not selectors else f"{describe_value(out)}, and {layer!r} is {describe_value(cur)}"
        raise ModelError(f"Layer {layer!r}: module {base!r} returned {got}; the tracker needs a tensor.{_suggest(base, out)}")
    return cur


_MISSING = object()


def _pick(v: Any, k: int | str) -> Any:
    try:
        if isinstance(v, Mapping):
            if k in v:
                return v[k]
            return _MISSING
        if isinstance(v, (tuple, list)):
            return v[k] if isinstance(k, int) and -len(v) <= k < len(v) else _MISSING
        if isinstance(k, str) and hasattr(v, k):
            return getattr(v, k)
    except (KeyError, IndexError, TypeError):
        pass
    return _MISSING


def _suggest(base: str, out: Any) -> str:
    paths = [(p, t) for p, t in tensor_paths(out) if p]
    if not paths:
        return " Track another module (see `phasescope layers`)."
    shown = ", ".join(f"'{base}{p}' {tuple(t.shape)}" for p, t in paths[:6])
    return f" Choose a tensor with a selector: {shown}."


def logits_of(out: Any) -> torch.Tensor:
    """Logits from what a model's forward returned (tensor, ``.logits``, ``["logits"]``, first of a tuple)."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, Mapping) and torch.is_tensor(out.get("logits")):
        return out["logits"]
    if torch.is_tensor(getattr(out, "logits", None)):
        return out.logits
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    raise ModelError(f"The model returned {describe_value(out)}; the tracker needs logits of shape (batch, classes). "
                     "Pass forward=lambda model, x: ... returning them (e.g. model(pixel_values=x).logits).")


CHANNELS_LAST = "_phasescope_channels_last"  # set on a frozen copy converted by to_channels_last


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` (a frozen copy of ours) with its 4-D parameters in channels-last memory order, and
    marked so that :func:`call_model` hands it its 4-D float inputs in that order too: on a CPU,
    convolutions then run 1.1-1.45x faster (oneDNN), with the same values up to float rounding."""
    model = model.to(memory_format=torch.channels_last)
    setattr(model, CHANNELS_LAST, True)
    return model


def call_model(model: nn.Module, x: torch.Tensor, forward: Forward | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x``, through ``forward(model, x)`` when given (a model marked by
    :func:`to_channels_last` gets 4-D float inputs in channels-last order)."""
    if x.dim() == 4 and x.is_floating_point() and getattr(model, CHANNELS_LAST, False):
        x = x.contiguous(memory_format=torch.channels_last)
    return logits_of(forward(model, x) if forward is not None else model(x))


def causal_lm_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Next-token logits of a Hugging Face causal LM at the last position: ``model(input_ids=x).logits[:, -1]``."""
    return model(input_ids=x).logits[:, -1]


def is_token_data(x: torch.Tensor) -> bool:
    """Windows of token ids: an integer tensor (N, T)."""
    return x.dim() == 2 and not x.dtype.is_floating_point and x.dtype != torch.bool


def transformer_blocks(model: nn.Module) -> list[str]:
    """The blocks of a transformer: the children of its longest ``nn.ModuleList`` of modules of one type
    (``transformer.h.0``, ``transformer.h.1``, ... of a GPT-2)."""
    lists = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and len({type(c) for c in m}) == 1]
    if not lists:
        return []
    name, blocks = max(lists, key=lambda nm: len(nm[1]))
    return [f"{name}.{i}" if name else str(i) for i in range(len(blocks))]


def dry_run(model: nn.Module, names: list[str], input_shape: tuple[int, ...],
            forward: Forward | None = None, *,
            dtype: torch.dtype | None = None) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """Per-sample output shape of each named layer and of the logits, from one forward pass
    over two zero inputs in eval mode (every submodule's mode restored afterwards); ``dtype``
    of the inputs (``torch.long`` for token ids) [float32].

    Raises :class:`ModelError` naming the layer when a selector does not match or a layer
    returns no tensor or never runs, and when the model does not run on ``input_shape``.
    """
    modules = resolve_layers(model, names)
    shapes: dict[str, tuple[int, ...]] = {}
    problems: dict[str, ModelError] = {}

    def hook(n: str):
        def f(_m, _i, o):
            try:
                shapes[n] = tuple(select_output(n, o).shape[1:])
            except ModelError as e:  # raised after the forward: a hook's exception would read as the model's
                problems.setdefault(n, e)
        return f

    hooks = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        logits = dry_forward(model, input_shape, forward, dtype, hint=" Give data shaped as the model expects.")
    finally:
        for h in hooks:
            h.remove()
    if problems:
        raise next(iter(problems.values()))
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ModelError(f"Layer(s) {missing} did not run in a forward pass of the model, so there is nothing to "
                         "measure: the forward never calls them, or they sit inside a fused fast path (e.g. the "
                         "submodules of nn.TransformerEncoderLayer in eval mode); track the enclosing module instead.")
    if logits.dim() != 2 or logits.shape[0] != 2:  # dry_forward's batch of two
        raise ModelError(f"The model's output has shape {tuple(logits.shape)} for a batch of 2; the "
                         "tracker needs logits of shape (batch, classes).")
    return shapes, tuple(logits.shape[1:])


def _trace(model: nn.Module, input_shape: tuple[int, ...], forward: Forward | None = None,
           dtype: torch.dtype | None = None) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Forward start/end events of every submodule in one dry pass, and each one's (last) output."""
    events: list[tuple[str, str]] = []
    outputs: dict[str, Any] = {}

    def pre(n):
        return lambda _m, _i: events.append(("start", n))

    def post(n):
        def hook(_m, _i, o) -> None:  # returns None: a forward hook's return value would replace the output
            events.append(("end", n))
            outputs[n] = o
        return hook

    handles = []
    for n, m in model.named_modules():
        if n:
            handles += [m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n))]
    try:
        dry_forward(model, input_shape, forward, dtype)
    finally:
        for h in handles:
            h.remove()
    return events, outputs


def dry_forward(model: nn.Module, input_shape: tuple[int, ...], forward: Forward | None = None,
                dtype: torch.dtype | None = None, hint: str = "") -> Any:
    """The model's output on two all-zero samples of ``input_shape``, in eval mode without gradients
    (its train/eval modes restored); a forward that fails (or exits) raises :class:`ModelError`."""
    with torch.no_grad(), preserved_modes(model):
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros(2, *input_shape, device=p.device if p is not None else "cpu", dtype=dtype)
        try:
            return call_model(model, x, forward)
        except ModelError:
            raise
        except (Exception, SystemExit) as e:  # shapes/dtypes that do not fit the model; a forward that exits
            raise ModelError(f"The model does not run on inputs of shape {tuple(input_shape)} (per sample): "
                             f"{_first_line(e)}.{hint}") from e


def foreign_default_layer(model: nn.Module, input_shape: tuple[int, ...], forward: Forward | None = None,
                          dtype: torch.dtype | None = None) -> str:
    """The default layer of a model that is not one of phasescope's: what feeds its classifier.

    The classifier is the last ``nn.Linear`` to run. The default is the last module to finish
    its forward before that Linear starts, that is not one of its ancestors and not a
    parameter-free reshaping module (Flatten, Unflatten, Dropout, Identity), and that returns
    a tensor: the representation the classifier reads (e.g. a ViT's final LayerNorm, or the
    trunk of a CNN, whose output is its last block's). Without an ``nn.Linear``: the last
    module to finish.
    """
    events, outputs = _trace(model, input_shape, forward, dtype)
    modules = dict(model.named_modules())
    starts = [i for i, (kind, n) in enumerate(events) if kind == "start" and isinstance(modules[n], nn.Linear)]
    head = events[starts[-1]][1] if starts else None
    ended = [n for kind, n in events[: starts[-1] if starts else len(events)] if kind == "end"]
    parts = (head or "").split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    for n in reversed(ended):
        if n in ancestors or isinstance(modules[n], _TRIVIAL) or not torch.is_tensor(outputs.get(n)):
            continue
        return n
    if head is not None:
        return head
    raise ModelError("Could not find a layer to track by default; name one with layers=[...] (see `phasescope layers`).")


def foreign_trackable_layers(model: nn.Module, input_shape: tuple[int, ...],
                             forward: Forward | None = None, dtype: torch.dtype | None = None) -> list[dict]:
    """Every module that runs in a forward pass (in the order it starts), with its output shape;
    modules returning tuples/dicts are listed once per tensor inside, with the selector."""
    events, outputs = _trace(model, input_shape, forward, dtype)
    modules = dict(model.named_modules())
    rows = []
    for n in dict.fromkeys(n for kind, n in events if kind == "start"):
        if isinstance(modules[n], _TRIVIAL) or n not in outputs:
            continue
        for path, t in tensor_paths(outputs[n]):
            shape = list(t.shape[1:])
            rows.append({"name": n + path, "shape": shape, "features": int(torch.Size(shape).numel()),
                         "module": type(modules[n]).__name__})
    return rows


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (``SystemExit(code)`` for an exit)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_model_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable ``'package.module:function'`` names (the current directory is importable)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"--model {spec!r}: give a built-in name or an import path 'package.module:function'.")
    if os.getcwd() not in sys.path:  # as `python -m` would: a module in the working directory can be named
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelError(f"--model {spec!r}: cannot import {mod_name!r} ({e}). Run from the folder that holds it "
                         "or install it.") from e
    except (Exception, SystemExit) as e:  # the module's own code failed (or exited) while it was imported
        raise ModelError(f"--model {spec!r}: importing {mod_name!r} failed: {_first_line(e)}. "
                         "Fix the module (import it in Python to see the full error).") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"--model {spec!r}: {mod_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"--model {spec!r}: {attr!r} is not callable; give a function (input_shape, num_classes) "
                         "-> nn.Module or an nn.Module class.")
    return obj


def build_foreign(spec: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
    """Call the user's factory with ``(input_shape, num_classes)`` (and ``width=`` when not 1)."""
    factory = load_model_factory(spec)
    kwargs = {}
    if width != 1.0:
        try:
            accepts = "width" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepts = False
        if not accepts:
            raise ModelError(f"--width {width}: {spec!r} takes no width argument; drop --width or add a width "
                             "parameter to it.")
        kwargs["width"] = width
    name = getattr(factory, "__qualname__", None) or spec.partition(":")[2]
    try:
        inspect.signature(factory).bind(tuple(input_shape), num_classes, **kwargs)
    except TypeError as e:  # a signature the call cannot match
        raise ModelError(f"--model {spec!r}: {name} cannot be called as {name}(input_shape, num_classes"
                         f"{', width=...' if kwargs else ''}): {e}. Give it those parameters.") from None
    except ValueError:  # no signature to inspect (some builtins): the call below says what is wrong
        pass
    try:
        model = factory(tuple(input_shape), num_classes, **kwargs)
    except (Exception, SystemExit) as e:  # the user's code: one line naming it, never a traceback or a silent exit
        fix = ("return the model instead of exiting" if isinstance(e, SystemExit)
               else "call it in Python to see the full error")
        raise ModelError(f"--model {spec!r}: {name}{(tuple(input_shape), num_classes)} failed: {_first_line(e)}. "
                         f"Fix {name} ({fix}).") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model
