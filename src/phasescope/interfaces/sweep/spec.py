"""Sweep files: parse, expand into runs, name them, validate every run before anything starts.

A sweep file (TOML; YAML when PyYAML is installed) holds

* a base configuration: any :class:`~phasescope.config.RunConfig` key at the top level
  (sections such as ``[samples]`` as tables), optionally ``preset = "NAME"`` and a
  ``description``;
* ``[grid]``: axes, each a key with a list of values; the runs are their cartesian product;
* ``[[runs]]``: hand-listed configurations (keys on top of the base, an optional ``preset``,
  ``name`` and a ``[runs.grid]`` of their own). The top-level grid is crossed with every
  entry; without entries it is crossed with the base.

Values override in this order: RunConfig defaults < preset < base keys < entry keys < grid
values < command-line ``--set``. Every expanded configuration is validated (types, choices,
RunConfig.validate) before a run starts; an error names the file, the key and the run.

Run names become folders (``DIR/runs/NAME``) and files (``DIR/status/NAME.json``), so they have
one vocabulary (:data:`NAME_RULE`): a name the file gives that does not fit is refused, and the
generated parts of a name are made to fit. A sweep is also bounded: it may expand to at most
``max_runs`` runs (:data:`MAX_RUNS`, ``--max-runs``), counted from the axes before anything is
expanded, and YAML aliases (which can multiply a small file into gigabytes) are refused.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import reprlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ...config import ConfigError, RunConfig, check_field, parse_extension, sections
from ...registry import check_config
from ...run.models import ModelError, check_model_name
from ...run.presets import PRESETS

TOP_RESERVED = ("grid", "runs", "preset", "description")
ENTRY_RESERVED = ("name", "preset", "grid")
VALUE_ONLY = ("preset", "model", "dataset", "optimizer", "atypical")  # by value alone: vgg8, not modelvgg8
PATH_KEYS = ("data_dir",)
MAX_RUNS = 10_000  # runs a sweep may expand to unless --max-runs raises it


class SweepError(ConfigError):
    """A sweep file or sweep folder cannot be used; the message names the file, key and fix."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def short(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters, for error messages that quote what the file holds."""
    return _REPR.repr(value)


def cut(text: Any, limit: int = 80) -> str:
    """``str(text)`` cut to ``limit`` characters (with ``...``)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------- run names
MAX_NAME = 100
NAME_RULE = ("letters, digits and - _ . = + only (no '/', spaces or other characters, not starting with '.'), "
             f"at most {MAX_NAME} characters")
_NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")  # ASCII only: the same name on every file system
_OUTSIDE = re.compile(r"[^A-Za-z0-9._=+-]")


def valid_name(name: Any) -> bool:
    """Whether ``name`` may name a run folder: see :data:`NAME_RULE`. Such a name holds no path
    separator, is not ``.`` or ``..`` and stays far below file systems' name limits (with ``.json``)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and _NAME.fullmatch(name) is not None


def fit_name(text: str) -> str:
    """A generated name made valid: characters outside the vocabulary become ``_``, leading dots
    are dropped, and a name longer than MAX_NAME keeps its start plus ``-`` and 8 hex digits of
    a hash of the whole text (deterministic: the same sweep file gives the same names)."""
    name = _OUTSIDE.sub("_", text).lstrip(".") or "run"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = name[:MAX_NAME - 9] + "-" + digest
    return name


def check_names(names: list[str], src: str = "the sweep") -> None:
    """Refuse (SweepError) a run name outside the vocabulary, or two runs whose names are equal
    or differ only in case (one folder on macOS and Windows). Every run is checked before any starts."""
    seen: dict[str, tuple[int, str]] = {}
    for n, name in enumerate(names, 1):
        if not valid_name(name):
            raise SweepError(f"{src}: run {n} has the name {short(name)}, which is not a valid run name: use "
                             f"{NAME_RULE}.")
        key = name.lower()
        if key in seen:
            m, other = seen[key]
            same = "the same name" if other == name else "names that differ only in case"
            raise SweepError(f"{src}: runs {m} ({other!r}) and {n} ({name!r}) have {same}, which would share one "
                             "folder (folder names ignore case on macOS and Windows): give the [[runs]] entries "
                             "distinct names, or remove the duplicate.")
        seen[key] = (n, name)


def run_path(folder: str | Path, name: str, suffix: str = "") -> Path:
    """``folder/NAME{suffix}``, refused (SweepError) unless it lies directly inside ``folder``
    whatever ``name`` holds: the last guard before a run's folder or status file is written."""
    folder = Path(folder)
    path = folder / f"{name}{suffix}"
    base = os.path.abspath(folder)
    if not valid_name(name) or os.path.dirname(os.path.abspath(path)) != base:
        raise SweepError(f"run name {short(name)} would not be a folder inside {folder}: a run name holds "
                         f"{NAME_RULE}.")
    return path


# ---------------------------------------------------------------------- shipped sweeps
def shipped_dir() -> Path:
    return Path(str(resources.files("phasescope.interfaces.sweep") / "grids"))


def shipped() -> dict[str, Path]:
    """Sweep files that ship with phasescope: name -> path."""
    return {p.stem: p for p in sorted(shipped_dir().glob("*.toml"))}


def resolve_source(source: str | Path) -> Path:
    """A path to a sweep file, or the name of a shipped sweep."""
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if str(source) in shipped():
        return shipped()[str(source)]
    if p.exists():
        raise SweepError(f"{p} is not a file; give a sweep file (.toml, .yaml) or a shipped sweep's name.")
    names = ", ".join(shipped())
    raise SweepError(f"{source}: no such sweep file, and not a shipped sweep (shipped: {names}; "
                     "see `phasescope sweep --list`).")


# ---------------------------------------------------------------------- reading
class _YamlAlias(Exception):
    def __init__(self, alias: str, line: int):
        super().__init__(alias)
        self.alias, self.line = alias, line


def _no_alias_loader(yaml: Any) -> type:
    """PyYAML's SafeLoader refusing aliases (``*name``, ``<<: *name``): a few hundred bytes of
    nested aliases expand to billions of nodes (the "billion laughs"), so a sweep file has none."""

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _YamlAlias(f"*{event.anchor}", event.start_mark.line + 1)
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # lazy: optional dependency (pyyaml): YAML sweep files only
        except ImportError:
            raise SweepError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml); or write the file as TOML.") \
                from None
        try:
            doc = yaml.load(text, Loader=_no_alias_loader(yaml))  # noqa: S506 - a SafeLoader subclass
        except _YamlAlias as e:
            raise SweepError(f"{path}: line {e.line}: YAML aliases ({cut(e.alias, 40)}) are not allowed in sweep "
                             "files (they can multiply a small file into gigabytes); write the values out, or use "
                             "[grid] and [[runs]] to repeat settings.") from None
        except yaml.YAMLError as e:
            raise SweepError(f"{path}: not valid YAML: {cut(e, 400)}") from None
        doc = {} if doc is None else doc
    else:
        try:
            import tomllib  # lazy: tomllib is Python 3.11+, else the tomli backport
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # lazy: tomllib is Python 3.11+, else the tomli backport
            except ImportError:
                raise SweepError("reading TOML sweep files needs Python 3.11+ or `pip install tomli`.") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SweepError(f"{path}: not valid TOML: {e}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: the file must hold a table of keys (base configuration, [grid], [[runs]]); "
                         f"got a {type(doc).__name__}.")
    return doc


# ---------------------------------------------------------------------- value checks
_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
EXTENSION_KEYS = ("extension", "extensions")  # extensions = ["NAME", "NAME:KEY=VALUE,..."], as --extension


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _known_keys() -> list[str]:
    """Every key of a configuration: RunConfig's fields and every section (the extensions' included)."""
    return list(dict.fromkeys([*_FIELDS, *sections(), "extension"]))


def _unknown(key: str, known: list[str], where: str, src: str) -> SweepError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {short(close[0])}?" if close else ""
    return SweepError(f"{src}: unknown key {short(key)} in {where}.{hint} Valid keys: {', '.join(sorted(known))} "
                      "(see `phasescope run --help` and `phasescope extensions`), plus preset, description, [grid] "
                      "and [[runs]].")


def check_key_value(key: str, value: Any, where: str, src: str) -> None:
    """Raise a SweepError naming ``key`` when it is not a configuration key or ``value`` has the wrong
    type (:func:`phasescope.config.check_field`, the one validator; choices and ranges are checked
    when each run's configuration is built, so that message names the run)."""
    every = sections()
    if key in EXTENSION_KEYS:
        specs = [value] if isinstance(value, str) else value
        if not isinstance(specs, list) or not all(isinstance(v, str) for v in specs):
            raise SweepError(f"{src}: {key} in {where} must be a list of extension names (NAME or NAME:KEY=VALUE,...), "
                             f"e.g. [\"samples\"]; got {_type_name(value)} {value!r}.")
        try:
            for spec in specs:
                parse_extension(spec)
        except ConfigError as e:
            raise SweepError(f"{src}: {key} in {where}: {e}") from None
        return
    if "." in key:  # a section option, e.g. samples.enabled
        sec, sub = key.split(".", 1)
        if sec not in every:
            raise _unknown(key, _known_keys(), where, src)
        if sub not in {f.name for f in dataclasses.fields(every[sec])}:
            raise _unknown(key, [f"{sec}.{f.name}" for f in dataclasses.fields(every[sec])], where, src)
        owner, name = every[sec], sub
    else:
        if key not in _FIELDS and key not in every:
            raise _unknown(key, _known_keys(), where, src)
        if key in every:
            if not isinstance(value, dict):
                raise SweepError(f"{src}: {key} in {where} must be a table of {key} options (e.g. [{key}]); "
                                 f"got {_type_name(value)} {short(value)}.")
            for k, v in value.items():
                check_key_value(f"{key}.{k}", v, where, src)
            return
        owner, name = RunConfig, key
    try:
        check_field(owner, name, value, constraints=False)
    except ConfigError as e:
        raise SweepError(f"{src}: {key} in {where}: {cut(e, 400)}") from None


def _check_preset(value: Any, where: str, src: str) -> None:
    if not isinstance(value, str) or value not in PRESETS:
        raise SweepError(f"{src}: preset {short(value)} in {where} is not a preset; choose one of: "
                         f"{', '.join(PRESETS)} (see `phasescope presets`).")


def _flatten_grid(grid: Any, where: str, src: str) -> dict[str, list]:
    """{axis: values}; a section table in a grid ([grid.samples]) becomes dotted axes."""
    if not isinstance(grid, dict):
        raise SweepError(f"{src}: {where} must be a table of axes (key = [values, ...]); got {_type_name(grid)}.")
    if not grid:
        raise SweepError(f"{src}: {where} is empty; give at least one axis, e.g. seed = [0, 1, 2], or remove it.")
    axes: dict[str, list] = {}
    for k, v in grid.items():
        if isinstance(v, dict) and k in sections():
            for sk, sv in v.items():
                axes[f"{k}.{sk}"] = sv
        else:
            axes[k] = v
    for k, values in axes.items():
        if not isinstance(values, list):
            raise SweepError(f"{src}: axis {short(k)} in {where} must be a list of values, e.g. "
                             f"{cut(k)} = [{short(values)}]; got {_type_name(values)} {short(values)}.")
        if not values:
            raise SweepError(f"{src}: axis {short(k)} in {where} is an empty list: the grid would have no runs. "
                             "Give at least one value or remove the axis.")
        for v in values:
            if k == "preset":
                _check_preset(v, f"{where} axis preset", src)
            else:
                check_key_value(k, v, f"{where} axis {short(k)}", src)
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{src}: axis {short(k)} in {where} repeats a value ({short(values)}); "
                             "each value runs once.")
    return axes


# ---------------------------------------------------------------------- the expanded sweep
@dataclass
class PlannedRun:
    name: str
    configuration: str  # the name without the seed: runs of one configuration differ only in the seed
    assignments: dict[str, Any]  # what the file set for this run (preset, entry keys, grid values)
    config: RunConfig

    def to_dict(self) -> dict:
        return {"name": self.name, "configuration": self.configuration, "assignments": self.assignments,
                "config": self.config.to_dict()}


@dataclass
class SweepSpec:
    source: str  # the file as given (path or shipped name)
    path: Path
    description: str
    runs: list[PlannedRun]
    columns: list[str]  # configuration columns of the tables: the keys that differ between runs
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": 1, "source": self.source, "description": self.description, "overrides": self.overrides,
                "columns": self.columns, "runs": [r.to_dict() for r in self.runs]}

    def fingerprint(self) -> str:
        """What must be equal for a sweep folder to continue: the runs' names and configurations."""
        return json.dumps([[r.name, r.config.to_dict()] for r in self.runs], sort_keys=True, default=str)

    def value(self, run: PlannedRun, column: str) -> Any:
        if column == "preset":
            return run.assignments.get("preset")
        d = run.config.to_dict()
        for part in column.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d


def _set(d: dict, key: str, value: Any) -> None:
    if key in EXTENSION_KEYS:  # names (with options) of extensions to turn on: RunConfig.from_dict reads them
        d["extensions"] = list(dict.fromkeys([*(d.get("extensions") or []), *([value] if isinstance(value, str) else value)]))
    elif "." in key:
        sec, sub = key.split(".", 1)
        d[sec] = {**(d.get(sec) or {}), sub: value}
    else:
        d[key] = value


def _resolve_paths(d: dict, base: Path | None) -> dict:
    d = dict(d)
    for k in PATH_KEYS:
        if isinstance(d.get(k), str):
            p = Path(d[k]).expanduser()
            if not p.is_absolute() and base is not None:
                p = base / p
            d[k] = str(p.resolve())
    return d


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        s = repr(v)
    elif isinstance(v, list):
        s = "+".join(_fmt(x) for x in v)
    elif isinstance(v, dict):
        s = "+".join(f"{k}{_fmt(x)}" for k, x in v.items())
    else:
        s = str(v).replace(":", "")  # KIND:F values (atypical) read as KINDF: label-noise0.1
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", s)


def _part(key: str, value: Any) -> str:
    if key in VALUE_ONLY:
        return _fmt(value)
    return f"{key.split('.')[-1] if '.' in key else key}{_fmt(value)}"


def run_name(assign: dict[str, Any], keys: list[str], label: str | None = None) -> str:
    """``label`` (a valid name the file gave) and the values of ``keys``, made a valid name (:func:`fit_name`)."""
    parts = ([label] if label else []) + [_part(k, assign[k]) for k in keys if k in assign]
    return fit_name("-".join(p for p in parts if p))


def _axis_lengths(grid: Any) -> dict[str, int]:
    """{axis: number of values} of a grid table as the file holds it, before any value is checked."""
    if not isinstance(grid, dict):
        return {}
    out = {}
    for k, v in grid.items():
        if isinstance(v, dict) and k in sections():
            out.update({f"{k}.{sk}": len(sv) for sk, sv in v.items() if isinstance(sv, list)})
        elif isinstance(v, list):
            out[k] = len(v)
    return out


def count_runs(doc: dict) -> int:
    """How many runs a parsed sweep file expands to, from its axes' lengths alone (nothing is
    expanded): the [grid]'s product, times the sum over [[runs]] entries of their own grids' products."""
    top = math.prod(_axis_lengths(doc.get("grid")).values())
    entries = doc.get("runs")
    if not isinstance(entries, list):
        return top
    return top * sum(math.prod(_axis_lengths(e.get("grid")).values()) for e in entries if isinstance(e, dict))


def _check_size(doc: dict, src: str, max_runs: int) -> None:
    total = count_runs(doc)
    if total <= max_runs:
        return
    digits = len(str(total))
    shown = f"{total:,}" if digits <= 15 else f"about 10^{digits - 1}"
    axes = _axis_lengths(doc.get("grid"))
    parts = [f"[grid] {' x '.join(f'{cut(k, 30)} {n:,}' for k, n in list(axes.items())[:6])}"
             + (" x ..." if len(axes) > 6 else "")] if axes else []
    if isinstance(doc.get("runs"), list):
        parts.append(f"{len(doc['runs']):,} [[runs]] entries with their grids")
    raise SweepError(f"{src}: the sweep expands to {shown} runs ({'; '.join(parts)}), more than the limit of "
                     f"{max_runs:,}. Make the grid smaller, or raise the limit with --max-runs N.")


def _check_model(model: str) -> None:
    """The model check of ``phasescope run`` (a built-in name or an import path), without building it."""
    try:
        check_model_name(model)
    except ModelError as e:
        raise ConfigError(str(e)) from None


def expand(doc: dict, src: str, *, base_dir: Path | None = None, overrides: dict | None = None,
           data_dirs: dict[str, str] | None = None, max_runs: int = MAX_RUNS) -> tuple[list[PlannedRun], list[str]]:
    """The runs of a parsed sweep file, named and validated; SweepError when the file expands to
    more than ``max_runs`` runs (counted before anything is expanded)."""
    from ...data import DATASETS  # lazy: DATASETS is computed on access, from the datasets registered so far

    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise SweepError(f"--max-runs must be a positive integer; got {short(max_runs)}.")
    _check_size(doc, src, max_runs)
    overrides = dict(overrides or {})
    data_dirs = dict(data_dirs or {})
    base = {}
    for k, v in doc.items():
        if k in TOP_RESERVED:
            continue
        check_key_value(k, v, "the base configuration", src)
        base[k] = v
    if "description" in doc and not isinstance(doc["description"], str):
        raise SweepError(f"{src}: description must be a string.")
    base_preset = doc.get("preset")
    if base_preset is not None:
        _check_preset(base_preset, "the base configuration", src)
    grid = _flatten_grid(doc["grid"], "[grid]", src) if "grid" in doc else {}
    entries = doc.get("runs")
    if entries is None:
        if not grid:
            raise SweepError(f"{src}: the file defines no runs: add a [grid] (e.g. seed = [0, 1, 2]) or [[runs]] "
                             "tables.")
        entries = [{}]
    elif not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SweepError(f"{src}: runs must be a list of tables ([[runs]] entries), at least one.")
    for k, v in overrides.items():
        check_key_value(k, v, "--set", "the command line")
    for ds in data_dirs:
        if ds not in DATASETS:
            raise SweepError(f"--data {cut(ds)}=...: {short(ds)} is not a dataset; choose one of: "
                             f"{', '.join(DATASETS)}.")

    planned: list[tuple[dict, dict, str | None, set]] = []  # (config dict, assignments, entry label, axes)
    for i, entry in enumerate(entries, 1):
        where = f"[[runs]] entry {i}" + (f" ({short(entry['name'])})" if isinstance(entry.get("name"), str) else "")
        keys = {}
        for k, v in entry.items():
            if k in ENTRY_RESERVED:
                continue
            check_key_value(k, v, where, src)
            keys[k] = v
        label = entry.get("name")
        if label is not None:
            if not isinstance(label, str) or not label.strip():
                raise SweepError(f"{src}: name in {where} must be a non-empty string.")
            label = label.strip()
            if not valid_name(label):
                raise SweepError(f"{src}: name {short(label)} of [[runs]] entry {i} is not a valid run name (it "
                                 f"becomes a folder in DIR/runs): use {NAME_RULE}.")
        if "preset" in entry:
            _check_preset(entry["preset"], where, src)
        axes = _flatten_grid(entry["grid"], f"{where} grid", src) if "grid" in entry else {}
        for k, v in grid.items():  # the entry's own axes vary slowest, the top-level grid's fastest
            if k in axes:
                raise SweepError(f"{src}: axis {short(k)} is in both [grid] and {where}'s grid; keep one.")
            axes[k] = v
        for k in axes:
            if k in keys:
                raise SweepError(f"{src}: {short(k)} is both a key of {where} and a grid axis; keep one.")
            if k in overrides:  # --set would give every run of the axis the same value (and the same name)
                raise SweepError(f"--set {cut(k, 40)}={cut(overrides[k], 40)}: {cut(k, 40)} is a grid axis of {src}, so "
                                 "every run of that axis would get the same value. Drop the --set, or edit the "
                                 "axis in the file.")
        for combo in itertools.product(*axes.values()) if axes else [()]:
            values = dict(zip(axes, combo))
            preset = values.get("preset", entry.get("preset", base_preset))
            d = RunConfig().to_dict()
            if preset is not None:
                d.update(PRESETS[preset]["config"])
            for k, v in {**_resolve_paths(base, base_dir), **_resolve_paths(keys, base_dir)}.items():
                _set(d, k, v)
            for k, v in values.items():
                if k != "preset":
                    _set(d, k, v if k not in PATH_KEYS else _resolve_paths({k: v}, base_dir)[k])
            for k, v in _resolve_paths(overrides, Path.cwd()).items():
                _set(d, k, v)
            if d.get("dataset") in data_dirs and "data_dir" not in overrides:
                d["data_dir"] = str(Path(data_dirs[d["dataset"]]).expanduser().resolve())
            assign = {**({"preset": preset} if ("preset" in entry or "preset" in values) else {}),
                      **keys, **values}
            planned.append((d, assign, label, set(values)))

    # names: what the file sets that differs between the runs (by the value the run gets), in the
    # order preset, entry keys and entry axes, top-level axes
    order: list[str] = []
    for _, a, _, _ in planned:
        order += [k for k in a if k not in order and k not in grid and k != "preset"]
    order = ["preset"] + order + list(grid)

    def effective(d: dict, a: dict, k: str) -> str:
        v = a.get("preset") if k == "preset" else _flat(d).get(k)
        return json.dumps(v, sort_keys=True, default=str)

    varying = [k for k in order if len({effective(d, a, k) for d, a, _, _ in planned}) > 1]
    named: list[tuple[str, str]] = []  # (name, configuration) of every run
    for d, a, label, axis_keys in planned:
        keys = [k for k in varying if not label or k in axis_keys]  # a named entry: its name and its grid values
        configuration = run_name(a, [k for k in keys if k != "seed"], label)
        named.append((run_name(a, keys, label), Path(src).stem if configuration == "run" else configuration))
    check_names([name for name, _ in named], src)  # every name (vocabulary, no two alike ignoring case) first
    runs: list[PlannedRun] = []
    for (name, configuration), (d, a, _, _) in zip(named, planned):
        where = f"run {name!r}" + (f" ({', '.join(f'{k}={cut(v, 40)}' for k, v in a.items())})" if a else "")
        try:  # what `phasescope run` checks before it starts (RunConfig.from_dict, the model, check_config)
            cfg = RunConfig.from_dict(d)
            _check_model(cfg.model)
            check_config(cfg)
        except (ConfigError, TypeError) as e:
            raise SweepError(f"{src}: {where}: {cut(e, 400)}") from None
        if cfg.dataset not in DATASETS:
            raise SweepError(f"{src}: {where}: dataset {short(cfg.dataset)} is not a dataset; choose one of: "
                             f"{', '.join(DATASETS)}.")
        if cfg.data_dir is not None and not Path(cfg.data_dir).exists():
            raise SweepError(f"{src}: {where}: data_dir {cfg.data_dir} does not exist. Give the data with "
                             f"--data {cfg.dataset}=PATH (or --set data_dir=PATH).")
        runs.append(PlannedRun(name, configuration, a, cfg))
    # table columns: what the file varies, then any other configuration key that differs between runs
    columns = list(varying)
    if len(runs) > 1:
        flat = [_flat(r.config.to_dict()) for r in runs]
        for k in flat[0]:
            if k not in columns and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1:
                columns.append(k)
    if "seed" not in columns:
        columns.append("seed")
    return runs, columns


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in sections():
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def parse_value(text: str) -> Any:
    """A --set value: TOML syntax when it parses (512, 0.01, true, ["a", "b"]), else the plain string."""
    try:
        import tomllib  # lazy: tomllib is Python 3.11+, else the tomli backport
    except ImportError:  # Python 3.10
        import tomli as tomllib  # lazy: tomllib is Python 3.11+, else the tomli backport
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def parse_assignments(items: list[str], option: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"{option} {short(item)}: give KEY=VALUE, e.g. {option} "
                             + ("iterations=512." if option == "--set" else "cifar10=~/data/cifar10."))
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip()) if option == "--set" else v.strip()
    return out


def load_spec(source: str | Path, *, overrides: dict | None = None, data_dirs: dict | None = None,
              max_runs: int = MAX_RUNS) -> SweepSpec:
    """Read, expand and validate a sweep file (or shipped sweep name) of at most ``max_runs`` runs."""
    path = resolve_source(source)
    doc = read_file(path)
    src = str(source) if str(source) in shipped() and not Path(source).is_file() else str(path)
    runs, columns = expand(doc, src, base_dir=path.parent.resolve(), overrides=overrides, data_dirs=data_dirs,
                           max_runs=max_runs)
    extra = {**(overrides or {}), **({"data": data_dirs} if data_dirs else {})}
    return SweepSpec(str(source), path, str(doc.get("description", "")), runs, columns, extra)


def spec_from_dict(doc: dict) -> SweepSpec:
    """A SweepSpec from a sweep folder's sweep.json (to resume without the sweep file)."""
    runs = [PlannedRun(r["name"], r["configuration"], r.get("assignments") or {}, RunConfig.from_dict(r["config"]))
            for r in doc["runs"]]
    check_names([r.name for r in runs], "sweep.json")
    return SweepSpec(doc.get("source", ""), Path(doc.get("source", "")), doc.get("description", ""), runs,
                     list(doc.get("columns") or ["seed"]), doc.get("overrides") or {})
