"""Which extensions exist: the built-in ones and those installed as plug-ins.

The built-in extensions are the modules of the :mod:`phasescope.extensions` package, loaded with
importlib on first use: those whose order matters are listed as import strings (:data:`BUILTIN`),
every other module of the package is found there (:func:`discovered`), so that a new built-in is
one module and nothing else; installed ones come from the ``phasescope.extensions`` entry-point
group of any distribution::

    [project.entry-points."phasescope.extensions"]
    mean_activation = "mypkg.meanact:MeanActivation"

A plug-in that cannot be loaded (import error, not an Extension, a name already taken) gives a
warning naming it and is left out: it never breaks phasescope. This module is low-level: it
imports only the :class:`~phasescope.extension.Extension` base and the exceptions, never a
concrete extension, so any module may ask it. Everything else about an extension is declared on
its class (``options``, ``from_config``, ``files``, ``figures``, ``report_template``, ...); the
functions below only ask every class in turn:

    extensions()           the classes, in registry order (built-in first, then installed)
    get(name)              one class by its ``name`` (ConfigError with the closest names)
    option_sections()      {config.json key: Section class}, shared sections once
    run_extensions(cfg, data, given)   what a run's configuration asks for
    summary_lines / report_context / extension_figures / extension_files / rebuild_extensions
"""
from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from .errors import ConfigError
from .extension import Extension, RunSetup

GROUP = "phasescope.extensions"  # the entry-point group of installed extensions
# Built-in extensions in registry order: the order they are built for a run (a transfer task
# may split the data the others then see), measured, summarised and listed.
BUILTIN = (
    "phasescope.extensions.transfer.probes:TransferProbes",
    "phasescope.extensions.samples.extension:SampleDynamics",
    "phasescope.extensions.reconstructions:Reconstructions",
    "phasescope.extensions.infoplane:InfoPlane",
    "phasescope.extensions.stopping:BestFeaturesKeeper",
    "phasescope.extensions.ridge_sweep:RidgeSweep",
    "phasescope.interfaces.analyze.extension:CheckpointAnalysis",  # phasescope analyze: its summary, its warnings
)
PACKAGE = "phasescope.extensions"  # the built-ins' package: its modules not in BUILTIN are found there


@dataclass(frozen=True)
class Entry:
    cls: type[Extension]
    origin: str  # "built-in", or the distribution that installed it ("name version")
    source: str  # where it was loaded from: module:Class


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def discovered() -> list[str]:
    """Import strings (``module:Class``) of the built-in extensions that :data:`BUILTIN` does not
    list: every Extension subclass defined, with a ``name`` of its own, in a top-level module or
    package of :data:`PACKAGE` that no :data:`BUILTIN` entry lives in (and whose name does not start
    with ``_``), by module name, then in the order the module defines them. They come after the
    listed ones in registry order. A module that fails to import raises: it is phasescope's own."""
    package = importlib.import_module(PACKAGE)
    listed = {target.partition(":")[0][len(PACKAGE) + 1:].split(".")[0] for target in BUILTIN}
    out = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in listed or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        out += [f"{module.__name__}:{attr}" for attr, obj in vars(module).items()
                if isinstance(obj, type) and issubclass(obj, Extension) and obj.__module__ == module.__name__
                and "name" in vars(obj)]
    return out


def _installed() -> list[Entry]:
    out = []
    try:
        points = metadata.entry_points(group=GROUP)
    except Exception as e:  # noqa: BLE001  broken metadata of some distribution: no plug-ins, a warning
        warnings.warn(f"phasescope extensions: installed plug-ins could not be listed ({e}).", RuntimeWarning,
                      stacklevel=3)
        return out
    for ep in points:
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else "installed"
        try:
            cls = ep.load()
        except Exception as e:  # noqa: BLE001  a broken plug-in is left out, never fatal
            warnings.warn(f"phasescope extension plug-in {ep.name!r} ({ep.value}, from {origin}) could not be loaded "
                          f"and is left out: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=3)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Extension)):
            warnings.warn(f"phasescope extension plug-in {ep.name!r} ({ep.value}, from {origin}) is left out: it is "
                          "not a subclass of phasescope.extension.Extension.", RuntimeWarning, stacklevel=3)
            continue
        out.append(Entry(cls, origin, ep.value))
    return out


_LOCK = threading.RLock()  # one thread loads; another waits for it
_LOADING: set[int] = set()  # threads loading now: a re-entrant call is an error, not a half registry


@functools.cache
def _entries() -> tuple[Entry, ...]:
    with _LOCK:
        me = threading.get_ident()
        if me in _LOADING:
            raise RuntimeError("phasescope's extension registry was asked for while it loads the extensions: an "
                               "extension module must not use it (or a deprecated name that needs it) at import "
                               "time.")
        _LOADING.add(me)
        try:
            return _load_entries()
        finally:
            _LOADING.discard(me)


def _load_entries() -> tuple[Entry, ...]:
    entries: dict[str, Entry] = {}
    for target in (*BUILTIN, *discovered()):
        cls = _load(target)
        if cls.name in entries:
            raise RuntimeError(f"built-in extensions {entries[cls.name].source} and {target} share the name {cls.name!r}.")
        entries[cls.name] = Entry(cls, "built-in", target)
    sections = {c.options.section: c for e in entries.values() if (c := e.cls).options is not None}
    for e in _installed():
        taken = entries.get(e.cls.name)
        if taken is not None:
            if taken.cls is not e.cls:
                warnings.warn(f"phasescope extension plug-in {e.source} (from {e.origin}) is left out: the name "
                              f"{e.cls.name!r} is taken by {taken.source} ({taken.origin}).", RuntimeWarning,
                              stacklevel=2)
            continue
        opts = e.cls.options
        if opts is not None and opts.section in sections and sections[opts.section].options is not opts:
            warnings.warn(f"phasescope extension plug-in {e.source} (from {e.origin}) is left out: its options "
                          f"section {opts.section!r} is taken by {sections[opts.section].__name__}.", RuntimeWarning,
                          stacklevel=2)
            continue
        entries[e.cls.name] = e
        if opts is not None:
            sections.setdefault(opts.section, e.cls)
    return tuple(entries.values())


def clear_cache() -> None:
    """Forget the loaded extensions (after installing a plug-in in a running process, or in tests)."""
    _entries.cache_clear()
    _sections.cache_clear()


def entries() -> tuple[Entry, ...]:
    """Every extension with where it came from, in registry order."""
    return _entries()


def extensions() -> tuple[type[Extension], ...]:
    """Every extension class: the built-in ones, then the installed ones."""
    return tuple(e.cls for e in _entries())


def find(name: str) -> type[Extension] | None:
    return next((e.cls for e in _entries() if e.cls.name == name), None)


def get(name: str) -> type[Extension]:
    """The extension class named ``name``; a ConfigError with the closest names otherwise."""
    cls = find(name)
    if cls is None:
        names = [e.cls.name for e in _entries()]
        close = difflib.get_close_matches(str(name), names, n=1)
        raise ConfigError(f"Unknown extension {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                          + f" Known: {', '.join(names)}; `phasescope extensions` lists the built-in and installed "
                          "ones with their options.")
    return cls


def origin(cls: type[Extension]) -> str:
    """"built-in", or the distribution that installed ``cls``."""
    return next((e.origin for e in _entries() if e.cls is cls), "given")


def is_builtin(cls: type[Extension]) -> bool:
    return origin(cls) == "built-in"


@functools.cache
def _sections() -> tuple[tuple[str, Any], ...]:
    out: dict[str, Any] = {}
    for cls in extensions():
        if cls.options is not None:
            out.setdefault(cls.options.section, cls.options)
    return tuple(out.items())


def option_sections() -> dict[str, Any]:
    """{config.json key: Section class} of every extension with options (one entry per section,
    however many extensions read it: the transfer probes and the best-features keeper share one)."""
    return dict(_sections())


def section_extensions(section: str) -> tuple[type[Extension], ...]:
    """The extension classes that read the options section ``section``."""
    return tuple(c for c in extensions() if c.options is not None and c.options.section == section)


def extension_files() -> list[str]:
    """Every file an extension may write in a run folder, in registry order."""
    return list(dict.fromkeys(f for cls in extensions() for f in cls.files))


# ---------------------------------------------------------------------- a run
def parse_value(text: str) -> Any:
    """An option value of ``--extension NAME:KEY=VALUE``: true/false, none, an int, a float, else
    the text; ``a+b+c`` is a list of such values."""
    t = str(text).strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    if "+" in t:
        return [parse_value(v) for v in t.split("+") if v.strip()]
    return t


def run_extensions(cfg: Any, data: Any, given: Sequence = ()) -> tuple[Any, list]:
    """The data to pre-train on (a transfer task may split it) and every extension of ``cfg``
    after the ``given`` ones (an extension of a kind already given is not added again): each
    class's ``from_config``, in registry order."""
    setup = RunSetup(cfg, data, list(given))
    out = list(given)
    for cls in extensions():
        if any(getattr(e, "name", None) == cls.name for e in setup.given):
            continue
        out += cls.from_config(setup)
    return setup.data, out


def check_config(cfg: Any) -> None:
    """What the extensions can check in a configuration before any data is loaded (e.g. transfer task names)."""
    for cls in extensions():
        cls.check_config(cfg)


def create(item: Any) -> Any:
    """An extension instance from ``item``: an instance as it is, or ``"NAME[:KEY=VALUE,...]"``
    made with the class's constructor (for callbacks that take names)."""
    if not isinstance(item, str):
        return item
    name, _, rest = item.partition(":")
    cls = get(name.strip())
    kwargs = {}
    for part in filter(None, (t.strip() for t in rest.split(","))):
        if "=" not in part:
            raise ConfigError(f"extension {item!r}: give options as KEY=VALUE pairs separated by commas.")
        k, v = part.split("=", 1)
        kwargs[k.strip()] = parse_value(v)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"extension {item!r} cannot be made from its name ({e}); pass an instance, e.g. "
                          f"{cls.__name__}(...).") from None


# ---------------------------------------------------------------------- what a run folder shows
def summary_lines(payload: dict) -> list:
    """Every extension's lines for the printed summary (from phases.json)."""
    return [line for cls in extensions() for line in cls.summary_lines(payload)]


def report_context(payload: dict, notes: list[str] | None = None) -> dict:
    """Every extension's entries of report.html's template context (from phases.json). With
    ``notes``, an extension whose part of phases.json is malformed is left out with a note."""
    out: dict = {}
    for cls in extensions():
        try:
            out.update(cls.report_context(payload))
        except Exception as e:  # noqa: BLE001  a report never fails on what one section holds
            if notes is None:
                raise
            notes.append(f"The {cls.name} section was left out: phases.json's part could not be read "
                         f"({type(e).__name__}: {e}).")
    return out


def extension_figures(payload: dict) -> dict[str, tuple[str, str, bool]]:
    """Every extension's figure: file -> (report section, caption, whether this run should have drawn it)."""
    return {name: (section, caption, cls.figures_expected(payload))
            for cls in extensions() for name, (section, caption) in cls.figures.items()}


def rebuild_extensions(run_dir, df, payload: dict) -> dict:
    """Every extension's phases.json entries, recomputed from the run folder's files."""
    out: dict = {}
    for cls in extensions():
        out.update(cls.rebuild(run_dir, df, {**payload, **out}))
    return out


def __getattr__(name: str) -> Any:
    if name == "EXTENSIONS":  # the tuple of earlier versions
        return extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
