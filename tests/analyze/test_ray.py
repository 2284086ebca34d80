"""phasescope analyze on Ray: tasks spread over a 2-node cluster give the local numbers; a worker
killed (SIGKILL) in the middle of a checkpoint is retried by Ray. Needs phasescope[ray]."""
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from phasescope.interfaces.analyze import analyze  # noqa: E402

from .helpers import save_steps, tiny_cfg  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    """Ray's worker processes import phasescope and the test's model factory from this checkout."""
    paths = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    ckpts = save_steps(root / "ckpts", [0, 1, 2, 4])
    analyze(ckpts, tiny_cfg(), root / "out", progress=False)
    return ckpts, pd.read_csv(root / "out" / "metrics.csv")


def test_two_node_cluster_spreads_the_checkpoints(tmp_path, local, monkeypatch):
    from ray.cluster_utils import Cluster

    ckpts, expected = local
    barrier = tmp_path / "barrier"  # see slow_model.build_together: both nodes hold a checkpoint at once
    barrier.mkdir()
    monkeypatch.setenv("PHASESCOPE_TEST_BARRIER", str(barrier))
    monkeypatch.setenv("PHASESCOPE_TEST_DRIVER_PID", str(os.getpid()))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        result = analyze(ckpts, tiny_cfg(model="tests.analyze.slow_model:build_together"), tmp_path / "out",
                         backend="ray", address=cluster.address, cpus_per_run=1, progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(result.outcomes) == [0, 1, 2, 4]
    assert len({o["node"] for o in result.outcomes.values()}) == 2
    assert len({w["node"] for w in result.warm_ups}) == 2  # a warm-up per slot, spread too
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "metrics.csv"), expected, rtol=1e-5)


def test_a_killed_worker_is_retried(tmp_path, local, monkeypatch):
    ckpts, expected = local
    marker = tmp_path / "victim.pid"
    monkeypatch.setenv("PHASESCOPE_TEST_KILL_MARKER", str(marker))
    monkeypatch.setenv("PHASESCOPE_TEST_DRIVER_PID", str(os.getpid()))
    killed = []

    def kill() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    cfg = tiny_cfg(model="tests.analyze.slow_model:build")
    result = analyze(ckpts, cfg, tmp_path / "out", backend="ray", num_cpus=2, cpus_per_run=1, retries=2,
                     progress=False)
    killer.join(timeout=5)
    assert killed, "no worker reached the model factory"
    assert sorted(result.outcomes) == [0, 1, 2, 4]
    assert all(o["status"] == "measured" for o in result.outcomes.values())
    assert killed[0] not in {o["pid"] for o in result.outcomes.values()}  # its checkpoint ran again elsewhere
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "metrics.csv"), expected, rtol=1e-5)


def test_an_unreachable_cluster_is_exit_2_and_leaves_nothing(tmp_path, local):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    from .helpers import TINY_ARGS

    ckpts, _ = local
    res = CliRunner().invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--backend", "ray", "--address",
                                   "127.0.0.1:9", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "127.0.0.1:9" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
