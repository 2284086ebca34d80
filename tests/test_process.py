"""process.entry_point: derived from the interpreter's __main__, never a flag rebound at run time."""
from __future__ import annotations

import sys
import types
from importlib.machinery import ModuleSpec

from phasescope.interfaces import process


def test_in_process_is_not_the_command():
    assert process.entry_point() is False  # pytest's __main__


def test_python_dash_m_and_the_console_script_are(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = ModuleSpec("phasescope.__main__", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert process.entry_point() is True
    script = types.ModuleType("__main__")  # the console script: `from <the CLI module> import main`
    script.__spec__ = None
    from phasescope.interfaces.cli import main as cli_main
    script.main = cli_main
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert process.entry_point() is True
