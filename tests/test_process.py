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


def test_busy_cpu_note_only_when_other_jobs_fill_the_cores(monkeypatch):
    assert process.busy_cpu_note(2, load=1.9, cores=2) is not None
    assert "--threads 1" in process.busy_cpu_note(4, load=6.0, cores=4)
    assert process.busy_cpu_note(2, load=1.2, cores=2) is None  # a core to spare
    assert process.busy_cpu_note(1, load=9.0, cores=2) is None  # one thread: nothing to contend
    monkeypatch.setattr(process.os, "getloadavg", lambda: (_ for _ in ()).throw(OSError("no load average")))
    assert process.busy_cpu_note(2) is None  # unknown load: no guess


def test_run_notes_a_busy_cpu_unless_threads_are_given(monkeypatch, tmp_path):
    import torch
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app
    from tests.test_cli import TINY

    monkeypatch.setattr(process.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["run", *TINY, "--iterations", "2", "--no-samples", "--out", str(tmp_path / "a")])
        assert res.exit_code == 0, res.output
        assert "the CPU is busy" in res.output and "--threads 1" in res.output
        res = runner.invoke(app, ["run", *TINY, "--iterations", "2", "--no-samples", "--threads", "2",
                                  "--out", str(tmp_path / "b")])
        assert res.exit_code == 0, res.output
        assert "the CPU is busy" not in res.output  # the user chose
    finally:
        torch.set_num_threads(before)
