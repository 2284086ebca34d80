"""Old import paths of modules that moved: ``import phasescope.infoplane`` still works.

A meta-path finder maps each old name (and its submodules) to the new module and makes the import
return the *same* module object, so ``phasescope.infoplane is phasescope.extensions.infoplane`` and
``monkeypatch.setattr("phasescope.infoplane.x", ...)`` patches the real module. The first import of
an old name gives a DeprecationWarning naming the new path. Installed by ``phasescope/__init__``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {  # old module (and its submodules) -> new module
    "phasescope.samples": "phasescope.extensions.samples",
    "phasescope.transfer": "phasescope.extensions.transfer",
    "phasescope.reconstructions": "phasescope.extensions.reconstructions",
    "phasescope.infoplane": "phasescope.extensions.infoplane",
    "phasescope.ridge_sweep": "phasescope.extensions.ridge_sweep",
    "phasescope.stopping": "phasescope.extensions.stopping",
    "phasescope.layers": "phasescope.engine.layers",
    "phasescope.stats": "phasescope.engine.stats",
    "phasescope.schedule": "phasescope.engine.schedule",
    "phasescope.phases": "phasescope.engine.phases",
    "phasescope.settings": "phasescope.engine.settings",
    "phasescope.diagnostics": "phasescope.engine.diagnostics",
    "phasescope.measure": "phasescope.engine.measure",
    "phasescope.tracker": "phasescope.engine.tracker",
    "phasescope.runs": "phasescope.outputs.runs",
    "phasescope.report": "phasescope.outputs.figures",
    "phasescope.html": "phasescope.outputs.html",
    "phasescope.compare": "phasescope.outputs.compare",
    "phasescope.rebuild": "phasescope.outputs.rebuild",
    "phasescope.models": "phasescope.run.models",
    "phasescope.training": "phasescope.run.training",
    "phasescope.presets": "phasescope.run.presets",
    "phasescope.runfolder": "phasescope.run.runfolder",
    "phasescope.experiment": "phasescope.run.experiment",
    "phasescope.gpt": "phasescope.run.gpt",
    "phasescope.budget": "phasescope.run.budget",
    "phasescope.cli": "phasescope.interfaces.cli",
    "phasescope.sweep": "phasescope.interfaces.sweep",
    "phasescope.integrations": "phasescope.interfaces.integrations",
    "phasescope.analyze": "phasescope.interfaces.analyze",
    "phasescope.theory.datamodel": "phasescope.data.datamodel",
}


def new_name(name: str) -> str | None:
    """The new name of module ``name`` when it moved, else None."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module of the new one (imported first, once)."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        warnings.warn(f"{spec.name} is now {self.new}; import it from there.", DeprecationWarning, stacklevel=2)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._real_spec  # the import system set the old name's spec; the module keeps its own


class MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder first on sys.meta_path (before the path finder would find nothing, or a copy)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
