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
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, check_field, parse_extension, sections

TOP_RESERVED = ("grid", "runs", "preset", "description")
ENTRY_RESERVED = ("name", "preset", "grid")
VALUE_ONLY = ("preset", "model", "dataset", "optimizer", "atypical")  # by value alone: vgg8, not modelvgg8
PATH_KEYS = ("data_dir",)


class SweepError(ConfigError):
    """A sweep file or sweep folder cannot be used; the message names the file, key and fix."""


# ---------------------------------------------------------------------- shipped sweeps
def shipped_dir() -> Path:
    return Path(str(resources.files("phasescope.sweep") / "grids"))


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
def read_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml); or write the file as TOML.") \
                from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"{path}: not valid YAML: {e}") from None
        doc = {} if doc is None else doc
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
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
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return SweepError(f"{src}: unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(known))} "
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
                                 f"got {_type_name(value)} {value!r}.")
            for k, v in value.items():
                check_key_value(f"{key}.{k}", v, where, src)
            return
        owner, name = RunConfig, key
    try:
        check_field(owner, name, value, constraints=False)
    except ConfigError as e:
        raise SweepError(f"{src}: {key} in {where}: {e}") from None


def _check_preset(value: Any, where: str, src: str) -> None:
    from ..presets import PRESETS

    if not isinstance(value, str) or value not in PRESETS:
        raise SweepError(f"{src}: preset {value!r} in {where} is not a preset; choose one of: {', '.join(PRESETS)} "
                         "(see `phasescope presets`).")


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
            raise SweepError(f"{src}: axis {k!r} in {where} must be a list of values, e.g. {k} = [{values!r}]; "
                             f"got {_type_name(values)} {values!r}.")
        if not values:
            raise SweepError(f"{src}: axis {k!r} in {where} is an empty list: the grid would have no runs. "
                             "Give at least one value or remove the axis.")
        for v in values:
            if k == "preset":
                _check_preset(v, f"{where} axis preset", src)
            else:
                check_key_value(k, v, f"{where} axis {k!r}", src)
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{src}: axis {k!r} in {where} repeats a value ({values!r}); each value runs once.")
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
    parts = ([label] if label else []) + [_part(k, assign[k]) for k in keys if k in assign]
    name = "-".join(p for p in parts if p) or "run"
    return name.lstrip(".") or "run"


def expand(doc: dict, src: str, *, base_dir: Path | None = None, overrides: dict | None = None,
           data_dirs: dict[str, str] | None = None) -> tuple[list[PlannedRun], list[str]]:
    """The runs of a parsed sweep file, named and validated."""
    from ..data import DATASETS
    from ..models import MODELS
    from ..presets import PRESETS

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
            raise SweepError(f"--data {ds}=...: {ds!r} is not a dataset; choose one of: {', '.join(DATASETS)}.")

    planned: list[tuple[dict, dict, str | None, set]] = []  # (config dict, assignments, entry label, axes)
    for i, entry in enumerate(entries, 1):
        where = f"[[runs]] entry {i}" + (f" ({entry['name']!r})" if isinstance(entry.get("name"), str) else "")
        keys = {}
        for k, v in entry.items():
            if k in ENTRY_RESERVED:
                continue
            check_key_value(k, v, where, src)
            keys[k] = v
        label = entry.get("name")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise SweepError(f"{src}: name in {where} must be a non-empty string.")
        if "preset" in entry:
            _check_preset(entry["preset"], where, src)
        axes = _flatten_grid(entry["grid"], f"{where} grid", src) if "grid" in entry else {}
        for k, v in grid.items():  # the entry's own axes vary slowest, the top-level grid's fastest
            if k in axes:
                raise SweepError(f"{src}: axis {k!r} is in both [grid] and {where}'s grid; keep one.")
            axes[k] = v
        for k in axes:
            if k in keys:
                raise SweepError(f"{src}: {k!r} is both a key of {where} and a grid axis; keep one.")
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
            planned.append((d, assign, label.strip() if label else None, set(values)))

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
    runs: list[PlannedRun] = []
    seen: dict[str, int] = {}
    for n, (d, a, label, axis_keys) in enumerate(planned):
        keys = [k for k in varying if not label or k in axis_keys]  # a named entry: its name and its grid values
        name = run_name(a, keys, label)
        configuration = run_name(a, [k for k in keys if k != "seed"], label)
        if configuration == "run":
            configuration = Path(src).stem
        if name in seen:
            raise SweepError(f"{src}: two runs get the same name {name!r} (runs {seen[name] + 1} and {n + 1} of the "
                             "expansion): give the [[runs]] entries a distinct `name`, or remove the duplicate.")
        seen[name] = n
        where = f"run {name!r}" + (f" ({', '.join(f'{k}={v}' for k, v in a.items())})" if a else "")
        try:
            cfg = RunConfig.from_dict(d)
        except ConfigError as e:
            raise SweepError(f"{src}: {where}: {e}") from None
        except TypeError as e:
            raise SweepError(f"{src}: {where}: {e}") from None
        if cfg.model not in MODELS:
            raise SweepError(f"{src}: {where}: model {cfg.model!r} is not a model; choose one of: {', '.join(MODELS)}.")
        if cfg.dataset not in DATASETS:
            raise SweepError(f"{src}: {where}: dataset {cfg.dataset!r} is not a dataset; choose one of: "
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
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def parse_assignments(items: list[str], option: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"{option} {item!r}: give KEY=VALUE, e.g. {option} "
                             + ("iterations=512." if option == "--set" else "cifar10=~/data/cifar10."))
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip()) if option == "--set" else v.strip()
    return out


def load_spec(source: str | Path, *, overrides: dict | None = None, data_dirs: dict | None = None) -> SweepSpec:
    """Read, expand and validate a sweep file (or shipped sweep name)."""
    path = resolve_source(source)
    doc = read_file(path)
    src = str(source) if str(source) in shipped() and not Path(source).is_file() else str(path)
    runs, columns = expand(doc, src, base_dir=path.parent.resolve(), overrides=overrides, data_dirs=data_dirs)
    extra = {**(overrides or {}), **({"data": data_dirs} if data_dirs else {})}
    return SweepSpec(str(source), path, str(doc.get("description", "")), runs, columns, extra)


def spec_from_dict(doc: dict) -> SweepSpec:
    """A SweepSpec from a sweep folder's sweep.json (to resume without the sweep file)."""
    runs = [PlannedRun(r["name"], r["configuration"], r.get("assignments") or {}, RunConfig.from_dict(r["config"]))
            for r in doc["runs"]]
    return SweepSpec(doc.get("source", ""), Path(doc.get("source", "")), doc.get("description", ""), runs,
                     list(doc.get("columns") or ["seed"]), doc.get("overrides") or {})
