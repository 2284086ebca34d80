"""What a user meets when things go wrong around a run: a full disk mid-run, a hostile run-folder
name in `compare --html`, a --model function that raises or exits, `report`/`compare` on folders
that hold no finished run, and a PhaseTracker given too few samples or another tracker's state.
Every test asserts what the user sees: the exit code, the one-line message, the files."""
from __future__ import annotations

import errno
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from phasescope.cli import app
from phasescope.runs import read_json, read_metrics

runner = CliRunner()
RUN = ["run", "--dataset", "digits", "--width", "0.5", "--batch-size", "32", "--iterations", "16",
       "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "20", "--no-samples", "--no-reconstructions",
       "--quiet", "--threads", "1"]
CHECKPOINTS = [0, 1, 2, 4, 8, 16]  # the schedule of RUN


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(output: str) -> str:
    lines = [l for l in output.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


# ---------------------------------------------------------------------- 1. a full disk mid-run
class DiskFills:
    """torch.save that fills the disk at its ``at``-th call: it writes some bytes, then fails as torch
    does on a full disk (its RuntimeError, the OSError(ENOSPC) of the file handle as its context).
    With ``everything``, every later fsync fails too: no file of the run can be written any more."""

    def __init__(self, monkeypatch, at: int, everything: bool = False):
        self.calls, self.at, self.full = 0, at, False
        self._save, self._fsync = torch.save, __import__("os").fsync
        monkeypatch.setattr(torch, "save", self.save)
        if everything:
            monkeypatch.setattr("os.fsync", self.fsync)

    def save(self, obj, f, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.at:
            self.full = True
            f.write(b"PK\x03\x04 partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
        return self._save(obj, f, *args, **kwargs)

    def fsync(self, fd):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._fsync(fd)


def _assert_disk_full_message(res, out):
    assert res.exit_code == 4, res.output
    line = one_line_error(res.output)
    assert f"could not write {out / 'state.pt'}" in line and "disk is full" in line
    assert "Free some space" in line and f"phasescope run --out {out} --resume" in line


def _assert_resume_completes(out, *options: str):
    res = invoke("run", *options, "--out", str(out), "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    ph = read_json(out / "phases.json")
    assert ph["status"] == "complete" and ph["checkpoints"] == CHECKPOINTS
    return read_metrics(out)


def test_disk_full_while_saving_state_exits_4_keeps_checkpoints_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = DiskFills(monkeypatch, at=3)  # the third checkpoint's state.pt does not fit
    res = invoke(*RUN, "--out", str(out))
    _assert_disk_full_message(res, out)
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)  # the second checkpoint's, intact
    assert state["iteration"] == CHECKPOINTS[1]
    assert set(read_metrics(out).iteration) == set(CHECKPOINTS[:3])  # measured before the failed save
    assert read_json(out / "phases.json")["status"] == "failed"  # small files still fit: the status is recorded
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", disk._save)  # space freed
    resumed = _assert_resume_completes(out, *RUN[1:])  # the options given again (all sections compared as saved)
    reference = tmp_path / "reference"
    assert invoke(*RUN, "--out", str(reference)).exit_code == 0
    import pandas as pd

    pd.testing.assert_frame_equal(resumed, read_metrics(reference))  # as if nothing had happened


def test_disk_full_for_every_file_exits_4_and_leaves_the_earlier_files_intact(tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = DiskFills(monkeypatch, at=4, everything=True)
    res = invoke(*RUN, "--out", str(out))
    _assert_disk_full_message(res, out)
    assert torch.load(out / "state.pt", map_location="cpu", weights_only=False)["iteration"] == CHECKPOINTS[2]
    assert set(read_metrics(out).iteration) == set(CHECKPOINTS[:4])  # written before the state that did not fit
    assert not (out / "phases.json").exists()  # no room even for the status
    assert read_json(out / "config.json")["config"]["iterations"] == 16
    monkeypatch.setattr(torch, "save", disk._save)
    monkeypatch.setattr("os.fsync", disk._fsync)
    _assert_resume_completes(out)  # the command the message gives


def test_torch_write_error_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    """torch.save to a path raises a RuntimeError without errno; a disk with no space left means ENOSPC."""
    import os

    from phasescope.runs import RunWriteError, atomic_write

    class Full:
        f_bavail = f_favail = 0

    def torch_fails(p):
        p.write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    (tmp_path / "state.pt").write_bytes(b"old")
    with pytest.raises(RunWriteError) as e:
        atomic_write(tmp_path / "state.pt", torch_fails)
    assert e.value.errno == errno.ENOSPC and e.value.path == tmp_path / "state.pt"
    assert (tmp_path / "state.pt").read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
