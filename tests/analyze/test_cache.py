"""What a worker keeps between checkpoints gives what a new tracker would: the per-process cache
(prepared data and extensions, the tracker restarted for each checkpoint), the warm-up that fills
it, and the driver's O(1) bookkeeping per checkpoint (analyze.journal, throttled run-folder writes)."""
import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.interfaces.analyze import analyze
from phasescope.interfaces.analyze import measure as m
from phasescope.interfaces.analyze import run as r
from phasescope.interfaces.analyze.discover import discover
from phasescope.interfaces.analyze.load import Source

from .helpers import save_steps, tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
# per-sample dynamics, reconstructions, a ridge list and the information plane: every restart hook of a run's
# default extensions and of the common optional ones
RICH = dict(samples={"enabled": True}, reconstructions={"enabled": True}, relative_ridge=[1.0, 0.1],
            infoplane={"estimators": ["binning"]})


def jobs(ckpts: Path, cfg) -> list[dict]:
    cfg, *_ = m.prepare(cfg)  # as the driver hands them out: the prepared configuration
    return [{"config": cfg.to_dict(), "source": Source().to_dict(), "checkpoint": c.to_dict(), "threads": 1}
            for c in discover(ckpts).checkpoints]


def same(a, b, path="state"):
    """Two tracker states equal, value by value (timings aside)."""
    if isinstance(a, dict):
        keys = {k for k in a if "timings" not in str(k) and "seconds" not in str(k)}
        assert keys == {k for k in b if "timings" not in str(k) and "seconds" not in str(k)}, path
        for k in keys:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, torch.Tensor)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=path)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b, path


def test_a_restarted_tracker_measures_what_a_new_one_does(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2])
    todo = jobs(ckpts, tiny_cfg(**RICH))
    m.forget_data()
    kept = [m.measure_checkpoint(j) for j in todo]  # one process, one tracker restarted per checkpoint
    prep = m.prepared(todo[0]["config"], todo[0]["source"])
    assert prep.tracker is not None and prep.tracker.restartable()
    fresh = []
    for j in todo:  # a new process per checkpoint, in effect
        m.forget_data()
        fresh.append(m.measure_checkpoint(j))
    m.forget_data()
    for a, b in zip(fresh, kept):
        assert a["status"] == b["status"] == "measured", (a["message"], b["message"])
        same(a["state"], b["state"])


def test_the_cache_serves_the_warm_up_and_the_jobs(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    cfg = tiny_cfg(iterations=7)  # the driver's own iterations differ: they do not make another key
    todo = jobs(ckpts, cfg.replace(iterations=1))
    m.forget_data()
    assert m.warm_up(cfg.to_dict(), Source().to_dict(), threads=1)["ok"]
    built = m.prepared(todo[0]["config"], todo[0]["source"]).tracker
    assert built is not None  # a built-in model: the tracker is built by the warm-up
    out = [m.measure_checkpoint(j) for j in todo]
    assert m.prepared(todo[0]["config"], todo[0]["source"]).tracker is built
    assert all(o["status"] == "measured" for o in out)
    m.forget_data()


def test_a_user_factory_runs_only_for_checkpoints(tmp_path):
    """The warm-up prepares data and extensions but never calls the user's model factory (the kill
    test's factory waits to be killed in the first process that calls it)."""
    cfg = tiny_cfg(model="tests.analyze.slow_model:build")
    m.forget_data()
    res = m.warm_up(cfg.to_dict(), Source().to_dict())
    assert res["ok"] and m.prepared(cfg.to_dict(), Source().to_dict()).tracker is None
    m.forget_data()


def test_a_structure_change_builds_a_new_tracker(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0])
    todo = jobs(ckpts, tiny_cfg())
    m.forget_data()
    m.measure_checkpoint(todo[0])
    prep = m.prepared(todo[0]["config"], todo[0]["source"])
    first = prep.tracker
    prep.structure = ("another model",)
    m.measure_checkpoint(todo[0])
    assert prep.tracker is not first
    m.forget_data()


def test_local_backend_never_imports_ray(tmp_path):
    code = ("import sys; from phasescope.interfaces.analyze.measure import _node_id; "
            "assert _node_id() is None and 'ray' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr


def test_the_run_folder_is_written_throttled_and_complete_at_the_end(tmp_path, monkeypatch):
    from phasescope.run.runfolder import RunWriter

    calls = []
    original = RunWriter.checkpoint
    monkeypatch.setattr(RunWriter, "checkpoint", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    monkeypatch.setattr(r, "CHECKPOINT_SECONDS", 1e9)
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2, 4])
    analyze(ckpts, tiny_cfg(), tmp_path / "out", progress=False)
    assert len(calls) == 1  # the first checkpoint only; the end writes everything
    assert sorted(pd.read_csv(tmp_path / "out" / "metrics.csv").iteration.unique()) == [0, 1, 2, 4]
    assert not (tmp_path / "out" / r.JOURNAL_FILE).exists()  # folded into analyze.pt
    assert sorted(r.read_saved(tmp_path / "out")["states"]) == [0, 1, 2, 4]


def test_a_kill_loses_only_the_checkpoint_in_flight(tmp_path):
    """As a kill -9 leaves the folder: analyze.pt from the start of the call, the journal with the
    checkpoints that came in, the last frame cut short. Running again measures only that one."""
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2, 4])
    out = tmp_path / "out"
    analyze(ckpts, tiny_cfg(), out, progress=False)
    full = pd.read_csv(out / "metrics.csv")
    doc = torch.load(out / r.STATE_FILE, weights_only=False)
    frames = []
    for step in (1, 2):
        buf = io.BytesIO()
        torch.save({"step": step, "state": doc["states"][step], "record": doc["records"][step]}, buf)
        frames.append(struct.pack("<Q", len(buf.getvalue())) + buf.getvalue())
    head = {**doc, "states": {0: doc["states"][0]}, "records": {0: doc["records"][0]}}
    r._save(out, head)
    (out / r.JOURNAL_FILE).write_bytes(frames[0] + frames[1][: len(frames[1]) // 2])  # killed while appending step 2
    assert sorted(r.read_saved(out)["states"]) == [0, 1]
    again = analyze(ckpts, tiny_cfg(), out, progress=False)
    assert sorted(again.outcomes) == [2, 4] and sorted(again.skipped) == ["step-0.pt", "step-1.pt"]
    assert not (out / r.JOURNAL_FILE).exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), full, rtol=1e-5)


def test_overwrite_removes_a_journal(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    out = tmp_path / "out"
    analyze(ckpts, tiny_cfg(), out, progress=False)
    (out / r.JOURNAL_FILE).write_bytes(b"\0" * 3)  # a journal of a killed call, cut short
    assert r.read_saved(out)["journaled"] == 0
    analyze(ckpts, tiny_cfg(), out, progress=False, overwrite=True)
    assert not (out / r.JOURNAL_FILE).exists()


@pytest.mark.parametrize("kind", ["samples", "reconstructions", "ridge_sweep", "infoplane", "transfer"])
def test_every_mergeable_extension_can_restart(kind):
    from phasescope import registry

    assert callable(getattr(registry.get(kind), "restart", None))
