"""phasescope sweep on a real local Ray (2 workers): a run whose worker is killed (SIGKILL)
mid-training is retried by Ray, resumes from its last checkpoint and ends with the same
metrics as an undisturbed sweep. Needs phasescope[ray]; skipped without it."""
import json
import os
import signal
import textwrap
import threading
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from phasescope.interfaces.sweep import load_spec, run_sweep  # noqa: E402

SWEEP = textwrap.dedent("""\
    dataset = "mnist-digits"
    width = 0.5
    iterations = 160
    fit_samples = 1000
    test_samples = 500
    bootstrap = 100
    samples = { enabled = false }
    reconstructions = { enabled = false }

    [grid]
    seed = [0, 1]
    """)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def kill_when_running(out, name, after_iteration, killed):
    """Kill -9 the worker process of run ``name`` once it has a checkpoint and is past ``after_iteration``."""
    status, state = out / "status" / f"{name}.json", out / "runs" / name / "state.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            doc = {}
        if doc.get("status") == "running" and doc.get("iteration", 0) >= after_iteration and state.exists():
            os.kill(doc["pid"], signal.SIGKILL)
            killed.append((doc["pid"], doc["iteration"]))
            return
        time.sleep(0.05)


def test_killed_worker_is_retried_and_resumes_to_the_same_metrics(tmp_path, local_ray):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    spec = load_spec(path)
    calm = run_sweep(spec, tmp_path / "calm", backend="ray", cpus_per_run=1, progress=False)
    assert calm.exit_code == 0
    out = tmp_path / "killed"
    killed = []
    killer = threading.Thread(target=kill_when_running, args=(out, "seed1", 40, killed), daemon=True)
    killer.start()
    result = run_sweep(spec, out, backend="ray", cpus_per_run=1, progress=False, retries=2)
    killer.join(timeout=5)
    assert killed, "the run finished before it could be killed"
    assert result.exit_code == 0, result.outcomes
    status = json.loads((out / "status" / "seed1.json").read_text())
    assert status["attempt"] == 2 and status["resumed"] is True and status["pid"] != killed[0][0]
    assert json.loads((out / "status" / "seed0.json").read_text())["attempt"] == 1
    for name in ("seed0", "seed1"):
        pd.testing.assert_frame_equal(pd.read_csv(out / "runs" / name / "metrics.csv"),
                                      pd.read_csv(tmp_path / "calm" / "runs" / name / "metrics.csv"))
    drop = ["seconds", "message"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "sweep.csv").drop(columns=drop),
                                  pd.read_csv(tmp_path / "calm" / "sweep.csv").drop(columns=drop))
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(tmp_path / "calm" / "summary.csv"))
