"""phasescope sweep: what it does to folders other processes hold, and to folders of a sweep
that never started (an unreachable Ray cluster, a refused --out). Runs use the local backend and
seconds-long runs on scikit-learn's 8x8 digits; the Ray tests start no cluster."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app

runner = CliRunner()
BASE = 'dataset="digits"\niterations=32\nfit_samples=300\ntest_samples=200\nbootstrap=100\n'
SRC = str(Path(__file__).resolve().parents[1] / "src")


def sweep_file(tmp_path, body="[grid]\nseed = [0]\n", name="n.toml"):
    p = tmp_path / name
    p.write_text(BASE + textwrap.dedent(body))
    return p


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` with its size, mtime and inode: what "left intact" means
    (a lock file: its inode; whoever takes a lock writes its pid into it)."""
    return {str(p.relative_to(folder)): (p.stat().st_ino,) if p.name.endswith(".lock") else
            (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def env_for_child(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


# ---------------------------------------------------------------------- --overwrite and run locks
@pytest.fixture
def lock_holder():
    """Start a process that holds a run folder's lock (as `phasescope run` does while it writes)."""
    children = []

    def hold(folder: Path) -> subprocess.Popen:
        code = ("import sys\nfrom phasescope.outputs.runs import locked_folder\n"
                f"with locked_folder({str(folder)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=env_for_child())
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield hold
    for child in children:
        child.stdin.close()
        child.wait(timeout=30)


def fake_sweep_folder(out: Path, spec) -> None:
    """A sweep folder as a finished sweep leaves it (sweep.json, runs/NAME with the files a run
    writes, status/NAME.json), without the seconds of training."""
    from phasescope.outputs.runs import write_json

    (out / "runs").mkdir(parents=True)
    (out / "status").mkdir()
    write_json(out / "sweep.json", spec.to_dict())
    for r in spec.runs:
        run = out / "runs" / r.name
        run.mkdir()
        write_json(run / "config.json", {"config": r.config.to_dict()})
        write_json(run / "phases.json", {"status": "complete"})
        (run / "metrics.csv").write_text("iteration,layer,split,metric,value,ci_low,ci_high\n")
        (run / "state.pt").write_bytes(b"state")
        (run / ".lock").write_text("")
        write_json(out / "status" / f"{r.name}.json", {"name": r.name, "status": "complete"})
    (out / "sweep.csv").write_text("run\n" + "".join(f"{r.name}\n" for r in spec.runs))


def test_overwrite_refuses_a_run_folder_locked_by_another_process(tmp_path, lock_holder):
    from phasescope.interfaces.sweep import load_spec

    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n")
    out = tmp_path / "SW"
    fake_sweep_folder(out, load_spec(path))
    before = snapshot(out)
    holder = lock_holder(out / "runs" / "seed1")  # e.g. `phasescope run --out SW/runs/seed1 --resume`

    res = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--backend", "local", "--quiet", "--overwrite"])
    assert res.exit_code == 2, res.output
    assert str(out / "runs" / "seed1") in res.output and f"pid {holder.pid}" in res.output
    assert "Nothing was deleted" in res.output and "Traceback" not in res.output
    assert snapshot(out) == before  # seed0 (not held) is left alone too: nothing is deleted before all locks are ours


# ---------------------------------------------------------------------- unreachable Ray clusters
def sweep_cli(args, *, timeout=60, **env):
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "phasescope", "sweep", *args], capture_output=True, text=True,
                         timeout=timeout, env=env_for_child(**env))
    return res, time.monotonic() - t0


def assert_refused_cleanly(message: str, out: Path, *expected: str) -> None:
    for text in expected:
        assert text in message, message
    assert "ray start --head" in message and "--backend local" in message
    assert "disk" not in message and "Traceback" not in message
    assert not out.exists()


def test_unreachable_address_fails_fast_and_leaves_no_folder(tmp_path):
    """In a process of its own: before, Ray retried 127.0.0.1:1 for more than 10 minutes."""
    pytest.importorskip("ray")
    out = tmp_path / "DIR"
    res, seconds = sweep_cli([str(sweep_file(tmp_path)), "--address", "127.0.0.1:1", "--out", str(out), "--quiet"])
    assert res.returncode == 2, res.stderr
    assert seconds < 60
    assert_refused_cleanly(res.stderr, out, "could not reach a Ray cluster at 127.0.0.1:1")


def test_unreachable_ray_client_address_fails_fast_and_leaves_no_folder(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "DIR"
    t0 = time.monotonic()
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path)), "--address", "ray://127.0.0.1:1", "--out", str(out),
                              "--quiet"])
    assert res.exit_code == 2 and time.monotonic() - t0 < 60, res.output
    assert_refused_cleanly(res.output, out, "could not reach a Ray cluster at ray://127.0.0.1:1")


def test_auto_address_without_a_cluster_fails_fast_and_leaves_no_folder(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_tmp = tmp_path / "raytmp"  # where Ray records the cluster that `ray start` started last
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # a cluster that has stopped since
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    out = tmp_path / "DIR"
    t0 = time.monotonic()
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path)), "--address", "auto", "--out", str(out), "--quiet"])
    assert res.exit_code == 2 and time.monotonic() - t0 < 60, res.output
    assert_refused_cleanly(res.output, out, "could not reach a Ray cluster at auto", "127.0.0.1:1")


def test_a_silent_server_at_the_address_hits_the_connect_timeout(tmp_path):
    """Something listens at the address but never answers as Ray's GCS: ray.init would wait for
    minutes; --connect-timeout bounds it."""
    import socket

    pytest.importorskip("ray")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    out = tmp_path / "DIR"
    try:
        res, seconds = sweep_cli([str(sweep_file(tmp_path)), "--address", address, "--connect-timeout", "2",
                                  "--out", str(out), "--quiet"])
    finally:
        server.close()
    assert res.returncode == 2, res.stderr
    assert seconds < 30
    assert_refused_cleanly(res.stderr, out, f"could not reach a Ray cluster at {address}", "within 2 s")


def test_a_grpc_server_that_is_no_ray_cluster_hits_the_connect_timeout(tmp_path):
    """A gRPC server without Ray's services passes the handshake, and ray.init then retries for
    about 20 s: the command still ends at --connect-timeout, with exit code 2 and no folder."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")
    pytest.importorskip("ray")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    out = tmp_path / "DIR"
    try:
        res, seconds = sweep_cli([str(sweep_file(tmp_path)), "--address", f"127.0.0.1:{port}", "--connect-timeout",
                                  "3", "--out", str(out), "--quiet"])
    finally:
        server.stop(None)
    assert res.returncode == 2, res.stderr
    assert seconds < 30
    assert_refused_cleanly(res.stderr, out, f"could not reach a Ray cluster at 127.0.0.1:{port}", "within 3 s")


def test_connect_timeout_must_be_positive(tmp_path):
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path)), "--address", "auto", "--connect-timeout", "0",
                              "--out", str(tmp_path / "DIR")])
    assert res.exit_code == 2 and "--connect-timeout" in res.output
    assert not (tmp_path / "DIR").exists()


# ---------------------------------------------------------------------- refused sweeps leave nothing behind
def test_a_sweep_refused_by_an_existing_run_folder_leaves_it_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    (run / "metrics.csv").write_text("iteration,layer,split,metric,value,ci_low,ci_high\n")
    before = sorted(p.name for p in run.iterdir())
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path)), "--out", str(run), "--backend", "local", "--quiet"])
    assert res.exit_code == 2 and "not a sweep folder" in res.output, res.output
    assert sorted(p.name for p in run.iterdir()) == before  # no .sweep.lock


def test_resume_into_a_new_folder_is_refused_and_creates_nothing(tmp_path):
    out = tmp_path / "new" / "sweep"
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--resume", "--backend",
                              "local", "--quiet"])
    assert res.exit_code == 2 and "Cannot resume" in res.output, res.output
    assert not (tmp_path / "new").exists()
