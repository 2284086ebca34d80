"""Faults with real processes: Ctrl-C, a second Ctrl-C, SIGKILL at random moments, two runs
into one folder. Every assertion is an invariant that must hold whenever the signal lands.

The SIGINT and lock tests start ``python -m phasescope.interfaces.cli`` itself. The repeated SIGKILL
test forks its processes from a fork server that has imported phasescope once (multiprocessing
"forkserver"): each child runs ``phasescope.interfaces.cli.main()`` with the run's arguments, the entry
point's code path, in its own process, and is killed with a real SIGKILL; this saves the
5-7 s of imports per process (torch, and torch._dynamo on the optimiser's first use) that
~20 kills would otherwise cost.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.outputs.runs import is_temporary, read_errors, read_json, read_metrics

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

BASE = ["--dataset", "digits", "--width", "0.5", "--batch-size", "32", "--lr", "0.05", "--fit-samples", "300",
        "--test-samples", "150", "--bootstrap", "50", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phasescope.interfaces.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV, **kw)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process ended ({proc.returncode}) before {path.name} appeared:\n{proc.stdout.read()}"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.01)


def same_metrics(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(read_metrics(a), read_metrics(b))


# ---------------------------------------------------------------------- Ctrl-C
def test_sigint_then_resume_equals_uninterrupted_and_repeated_ctrl_c_keeps_final_files(tmp_path):
    args = [*BASE, "--iterations", "512"]
    full = cli("run", *args, "--out", str(tmp_path / "full"))  # the reference, alongside
    part = cli("run", *args, "--out", str(tmp_path / "part"))
    wait_for(tmp_path / "part" / "state.pt", part)  # first checkpoint written; 512 iterations still to go
    # Ctrl-C, then keep pressing it until the process ends: the later ones land in the final write,
    # which must complete anyway (status and figure).
    while part.poll() is None:
        part.send_signal(signal.SIGINT)
        time.sleep(0.02)
    out = part.stdout.read()
    assert part.returncode == 130, out
    assert "interrupted" in out and "--resume" in out
    assert "(run interrupted)" in out and "final accuracy" not in out
    ph = read_json(tmp_path / "part" / "phases.json")
    assert ph["status"] == "interrupted"
    from PIL import Image

    Image.open(tmp_path / "part" / "curves.png").load()  # complete
    last = ph["checkpoints"][-1]
    assert last < 512 and f"accuracy at iteration {last} (run interrupted)" in " ".join(out.split())

    resumed = subprocess.run([sys.executable, "-m", "phasescope.interfaces.cli", "run", *args, "--out", str(tmp_path / "part"),
                              "--resume", "--quiet"], capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    full_out = full.communicate()[0]
    assert full.returncode == 0, full_out
    # stdout is a pipe, not a terminal: plain progress lines instead of a bar
    assert "training: iteration 512/512 (100%)" in full_out and "training: iteration 52/512 (10%)" in full_out
    same_metrics(tmp_path / "full", tmp_path / "part")
    assert read_json(tmp_path / "part" / "phases.json")["status"] == "complete"


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    out = tmp_path / "run"
    first = cli("run", *BASE, "--iterations", "64", "--quiet", "--out", str(out))
    wait_for(out / "config.json", first)
    first.send_signal(signal.SIGSTOP)  # hold it mid-run (and holding the lock), whatever the machine's speed
    try:
        res = CliRunner().invoke(app, ["run", *BASE, "--iterations", "64", "--quiet", "--out", str(out)])
        res_over = CliRunner().invoke(app, ["run", *BASE, "--iterations", "64", "--quiet", "--out", str(out),
                                            "--overwrite"])
    finally:
        first.send_signal(signal.SIGCONT)
    assert res.exit_code == 2 and "in use by another phasescope process" in res.output, res.output
    assert f"pid {first.pid}" in res.output
    assert res_over.exit_code == 2 and "in use" in res_over.output
    assert first.wait(timeout=120) == 0, first.stdout.read()
    assert read_json(out / "phases.json")["status"] == "complete"


# ---------------------------------------------------------------------- SIGKILL, repeated
def _cli_child(argv: list[str], log: str) -> None:
    """Body of a forked child: the CLI's entry point with ``argv``, output to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["phasescope", *argv]
    from phasescope.interfaces.cli import main

    main()


def check_files(folder: Path) -> None:
    """Every file a run writes that is present parses completely."""
    from PIL import Image

    for name in ("state.pt", "state.prev.pt", "best_features.pt"):
        if (folder / name).exists():
            torch.load(folder / name, map_location="cpu", weights_only=False)
    if (folder / "config.json").exists():
        assert "config" in read_json(folder / "config.json")
    if (folder / "phases.json").exists():
        assert "layers" in read_json(folder / "phases.json")
    if (folder / "metrics.csv").exists():
        read_metrics(folder)
    read_errors(folder)
    for name in ("metrics.parquet", "samples.parquet"):
        if (folder / name).exists():
            pd.read_parquet(folder / name)
    if (folder / "samples.npz").exists():
        with np.load(folder / "samples.npz") as z:
            [z[k] for k in z.files]
    for name in ("curves.png", "samples.png", "few.png"):
        if (folder / name).exists():
            Image.open(folder / name).load()


def test_sigkill_at_random_moments_always_resumes_to_the_uninterrupted_result(tmp_path):
    """Three run folders, side by side, each killed up to 7 times: SIGKILL at a seeded random moment
    0-1 s (0.5-2.5 s for the third) after the process has started training (its config.json is rewritten),
    the third's last kill as soon as its final write has drawn curves.png; each time continued from
    whatever is on disk. After every kill each file present parses completely;
    at the end every folder holds exactly the uninterrupted result (metrics, best features,
    status). The counts of where the kills landed are printed (pytest -s)."""
    args = ["run", *BASE, "--iterations", "128", "--points-per-octave", "8", "--keep-best", "--quiet"]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["phasescope.interfaces.cli", "phasescope.run.experiment", "sklearn.datasets", "matplotlib.pyplot",
                                "pyarrow.parquet", "torch._dynamo", __name__])

    def has_state(out: Path) -> bool:
        return (out / "state.pt").exists() or (out / "state.prev.pt").exists()

    def child(out: Path):
        p = ctx.Process(target=_cli_child, args=([*args, "--out", str(out), *(["--resume"] if has_state(out) else [])],
                                                 str(out.with_suffix(".log"))))
        p.start()
        return p

    def version(path: Path) -> tuple[int, int] | None:  # a restart deletes and rewrites: the inode may recur
        try:
            st = path.stat()
            return st.st_ino, st.st_mtime_ns
        except FileNotFoundError:
            return None

    ref = child(tmp_path / "ref")
    rng = random.Random(20240601)
    n = {"started": 0, "kills": 0, "ended_before_kill": 0, "before_first_checkpoint": 0, "after_a_checkpoint": 0,
         "temporary_file_left": 0, "in_final_write": 0}
    chains = [tmp_path / f"chain-{i}" for i in range(3)]
    active = list(chains)
    for round_ in range(7):
        before = {out: version(out / "config.json") for out in active}
        figure = {out: version(out / "curves.png") for out in active}
        procs = {out: child(out) for out in active}
        n["started"] += len(procs)
        # chains 0 and 1 are killed early and often (mostly in training and checkpoint writes),
        # chain 2 later, and in the last round inside its final write (figures, then the status)
        delays = {out: rng.uniform(0.5, 2.5) if out == chains[2] else rng.uniform(0.0, 1.0) for out in active}
        kill_at: dict[Path, float] = {}
        pending = set(active)
        deadline = time.monotonic() + 120
        while pending:
            assert time.monotonic() < deadline, "children did not start"
            now = time.monotonic()
            for out in list(pending):
                if not procs[out].is_alive():
                    pending.discard(out)
                elif round_ == 6 and out == chains[2]:  # last round: kill it inside its final write
                    if version(out / "curves.png") not in (None, figure[out]):  # first figure just written
                        kill_at[out] = now
                elif out not in kill_at and version(out / "config.json") not in (None, before[out]):
                    kill_at[out] = now + delays[out]  # training has started: the random moment counts from here
                if out in pending and out in kill_at and now >= kill_at[out]:
                    procs[out].kill()  # SIGKILL: no handler runs, nothing is cleaned up
                    pending.discard(out)
            time.sleep(0.005)
        for out, p in procs.items():
            p.join(60)
            if p.exitcode != -signal.SIGKILL:  # it finished before its kill time
                assert p.exitcode == 0, out.with_suffix(".log").read_text()
                n["ended_before_kill"] += 1
                active.remove(out)
                continue
            n["kills"] += 1
            check_files(out)  # nothing torn
            n["temporary_file_left"] += any(is_temporary(f.name) for f in out.iterdir())  # killed mid-write
            n["after_a_checkpoint" if has_state(out) else "before_first_checkpoint"] += 1
            n["in_final_write"] += (out / "curves.png").exists()  # figures are drawn only at the end
    for out in active:  # finish: continue from what is on disk (a chain without a state starts over)
        p = child(out)
        p.join(120)
        assert p.exitcode == 0, out.with_suffix(".log").read_text()
    ref.join(120)
    assert ref.exitcode == 0, (tmp_path / "ref.log").read_text()
    best_ref = torch.load(tmp_path / "ref" / "best_features.pt", weights_only=False)
    for out in chains:
        assert not any(is_temporary(f.name) for f in out.iterdir())  # leftovers of killed writers are gone
        check_files(out)
        same_metrics(tmp_path / "ref", out)
        assert read_json(out / "phases.json")["status"] == "complete"
        best = torch.load(out / "best_features.pt", weights_only=False)
        assert best["iteration"] == best_ref["iteration"]
        assert all(torch.equal(best["state_dict"][k], v) for k, v in best_ref["state_dict"].items())
    print("kill outcomes:", json.dumps(n))
    assert n["kills"] + n["ended_before_kill"] == n["started"] <= 21


def test_corrupt_latest_state_falls_back_to_the_one_before(tmp_path, tiny_cfg):
    from phasescope import run_experiment

    cfg = tiny_cfg.replace(iterations=16)
    full = run_experiment(cfg, tmp_path / "full", progress=False)

    def stop(t, tracker):
        if t == 8:
            raise KeyboardInterrupt

    run_experiment(cfg, tmp_path / "part", progress=False, on_checkpoint=stop)
    state = tmp_path / "part" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # torn, as by a failing disk
    resumed = run_experiment(cfg, tmp_path / "part", resume=True, progress=False)
    assert any("state.pt" in n and "checkpoint before it" in n and "iteration 4" in n for n in resumed.notes), resumed.notes
    pd.testing.assert_frame_equal(full.metrics, resumed.metrics)
    # both unusable: a clear refusal
    for name in ("state.pt", "state.prev.pt"):
        (tmp_path / "part" / name).write_bytes(b"not a state")
    from phasescope.outputs.runs import RunFolderError

    with pytest.raises(RunFolderError, match="state.pt is unusable.*state.prev.pt is unusable.*--overwrite"):
        run_experiment(cfg, tmp_path / "part", resume=True, progress=False)
