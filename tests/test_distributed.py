"""A measurement sharded across torch.distributed ranks equals one process's, and never hangs.

Two kinds of tests:

* in-process: two ranks forked from the test process (gloo, CPU, a file store), seconds each;
* ``distributed``-marked: the real launchers (``torchrun --standalone --nproc_per_node 2``, Lightning's
  ``strategy="ddp"``) run the scripts in tests/distributed_scripts; each writes a run folder (rank 0)
  that must equal what one process writes. Each takes 20-60 s (two Python start-ups, torch imports).
"""
from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn

from phasescope import PhaseTracker
from phasescope.data import load_dataset
from phasescope.errors import NonFiniteActivations, RankFailed
from phasescope.engine.measure.distributed import Shard
from phasescope.engine.measure.ridge import StreamingRidge
from phasescope.run.models import build_model
from phasescope.samples import SampleDynamics
from phasescope.stopping import BestFeaturesKeeper

SCRIPTS = Path(__file__).parent / "distributed_scripts"
SRC = Path(__file__).parents[1] / "src"


# ---------------------------------------------------------------------- two forked ranks
def _rank_main(fn, rank: int, world: int, store: str, queue) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        out = ("ok", fn(rank))
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        out = ("error", type(e).__name__, str(e), traceback.format_exc())
    queue.put((rank, out))
    time.sleep(0.5)  # the other rank may still be reading this one's last message
    os._exit(0)  # no pytest teardown in a forked child


def run_ranks(fn, tmp_path: Path, world: int = 2, timeout: float = 60.0) -> dict[int, tuple]:
    """``fn(rank)`` on ``world`` forked ranks of a gloo group; {rank: ("ok", result) or ("error", type, message, tb)}."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    store = str(tmp_path / f"store-{time.monotonic_ns()}")
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, store, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, tuple] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"ranks {sorted(set(range(world)) - set(results))} hung for {timeout:.0f} s")
            try:
                rank, out = queue.get(timeout=left)
            except Exception:
                continue
            results[rank] = out
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return results


def ok(results: dict[int, tuple]) -> list:
    bad = {r: out for r, out in results.items() if out[0] != "ok"}
    assert not bad, "\n".join(out[3] for out in bad.values())
    return [results[r][1] for r in sorted(results)]


# ---------------------------------------------------------------------- the ridge statistics
def test_streaming_ridge_all_reduce_solves_on_every_rank_what_one_process_solves(tmp_path):
    g = torch.Generator().manual_seed(0)
    H = torch.randn(300, 12, generator=g) * 3 + 5  # far from zero: each rank's own shift differs
    T = H @ torch.randn(12, 4, generator=g) + 0.1 * torch.randn(300, 4, generator=g)
    one = StreamingRidge(0.1, dtype=torch.float64)
    for i in range(0, 300, 50):
        one.partial_fit(H[i : i + 50], {"t": T[i : i + 50]})
    one.solve()
    shares = {0: slice(0, 100), 1: slice(100, 300), 2: slice(300, 300)}  # rank 2 saw nothing

    def fn(rank):
        s = StreamingRidge(0.1, dtype=torch.float64)
        rows = shares[rank]
        for i in range(rows.start, rows.stop, 50):
            s.partial_fit(H[i : i + 50], {"t": T[i : i + 50]})
        if s.n == 0:
            s.allocate(12, {"t": 4})
        s.all_reduce().solve()
        return s.n, s.coef_["t"], s.intercept_["t"], s.train_mse_["t"]

    for n, coef, intercept, mse in ok(run_ranks(fn, tmp_path, world=3)):
        assert n == 300
        torch.testing.assert_close(coef, one.coef_["t"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(intercept, one.intercept_["t"], rtol=1e-10, atol=1e-12)
        assert mse == pytest.approx(one.train_mse_["t"], rel=1e-10)


def test_shares_are_whole_batches_and_rank_0_holds_the_first():
    class Fake(Shard):
        def __init__(self, rank, world, batch):  # no process group needed for the arithmetic
            self.rank, self.world, self.batch_size = rank, world, batch

    assert Fake(0, 2, 64).counts(300) == [128, 172]  # boundaries 0, 64, ..., 256, 300: 128 is nearest to 150
    assert Fake(0, 2, 500).counts(1024) == [500, 524]  # the short last batch counts for its 24 samples
    assert Fake(0, 2, 500).counts(4000) == [2000, 2000]
    assert Fake(0, 2, 500).counts(300) == [300, 0]  # one batch: the second rank measures nothing
    assert Fake(0, 2, 500).counts(0) == [0, 0]
    assert Fake(0, 4, 64).counts(100) == [64, 0, 0, 36]  # boundaries 0, 64, 100: nearest to 25, 50, 75, 100
    assert Fake(0, 3, 10).counts(95) == [30, 30, 35]
    assert [Fake(r, 3, 10).share(95) for r in range(3)] == [slice(0, 30), slice(30, 60), slice(60, 95)]
    for n, world, batch in [(1, 3, 8), (7, 2, 3), (1000, 8, 64), (65, 2, 64)]:
        counts = Fake(0, world, batch).counts(n)
        assert sum(counts) == n and counts[0] >= min(batch, n) and all(c >= 0 for c in counts)
        assert all(s % batch == 0 or s == n for s in np.cumsum(counts))  # whole batches


# ---------------------------------------------------------------------- the tracker
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trained(name: str, steps: int = 6) -> nn.Module:
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.num_classes, width=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for t in range(steps):
        rows = torch.arange(t * 32, t * 32 + 32)
        loss = nn.functional.cross_entropy(model(data.x_train[rows]), data.y_train[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _measure(model, digits, its=(0, 1, 2), distributed="auto", **kw):
    layers = kw.pop("layers", ["features.2", "features.3"])
    kw = {"batch_size": 64, "bn_samples": 150, "bootstrap": 100, **kw}
    tracker = PhaseTracker(model, layers, (digits.x_train[:200], digits.y_train[:200]),
                           (digits.x_test[:100], digits.y_test[:100]), list(its), distributed=distributed, **kw)
    for it in its:
        tracker.measure(model, it)
    return tracker


def _same_results(a: PhaseTracker, b: PhaseTracker) -> None:
    ra, rb = a.results(), b.results()
    pd.testing.assert_frame_equal(ra, rb, check_exact=False, rtol=1e-5, atol=0)
    for n in a.layers:
        for it in a.errors[n]:
            np.testing.assert_allclose(a.errors[n][it], b.errors[n][it], rtol=1e-5)
    assert {n: r.to_dict() for n, r in a.phases().items()} == {n: r.to_dict() for n, r in b.phases().items()}


@pytest.mark.parametrize("case", [
    pytest.param(dict(model="cnn", extensions=True), id="cnn-batchnorm-extensions"),
    pytest.param(dict(model="mlp", probe="logistic", relative_ridge="auto", cache=0), id="mlp-logistic-unkept"),
    pytest.param(dict(model="mlp", cache=0, extensions=True), id="mlp-streamed-scores"),
    pytest.param(dict(model="cnn", decoder="conv", decoder_options={"epochs": 2}, layers=["features.1"]), id="conv"),
])
def test_two_ranks_measure_what_one_process_measures(case, digits, tmp_path, monkeypatch):
    """Fit shares of 128/72 samples, test shares 64/36 (batches of 64): uneven."""
    case = dict(case)
    model = _trained(case.pop("model"))
    if case.pop("cache", None) is not None:  # fit features not kept: the train scores stream a second forward
        monkeypatch.setattr("phasescope.engine.tracker.CACHE_BYTES", 0)

    def build(**more):
        kw = dict(case)
        if kw.pop("extensions", False):
            kw["extensions"] = [SampleDynamics(), BestFeaturesKeeper(n_boot=50)]
            kw["relative_ridge"] = [0.1, 1.0]  # a RidgeSweep too
        return {**kw, **more}

    one = _measure(model, digits, distributed=False, **build())

    def fn(rank):
        t = _measure(model, digits, **build())
        return t.results(), t.errors, {n: r.to_dict() for n, r in t.phases().items()}, t.decisions

    for results, errors, phases, decisions in ok(run_ranks(fn, tmp_path)):
        pd.testing.assert_frame_equal(one.results(), results, check_exact=False, rtol=1e-5, atol=0)
        for n in one.layers:
            for it in one.errors[n]:
                np.testing.assert_allclose(errors[n][it], one.errors[n][it], rtol=1e-5)
        assert phases == {n: r.to_dict() for n, r in one.phases().items()}
        assert decisions == one.decisions


def test_a_rank_with_an_empty_share_takes_part(digits, tmp_path):
    """With batches of 500, 200 fit and 100 test samples are one batch each: rank 1 measures nothing."""
    model = _trained("cnn")
    one = _measure(model, digits, its=(0,), distributed=False, batch_size=500)
    results = ok(run_ranks(lambda r: _measure(model, digits, its=(0,), batch_size=500).results(), tmp_path))
    for df in results:
        pd.testing.assert_frame_equal(one.results(), df, check_exact=False, rtol=1e-5, atol=0)


def test_sync_batchnorm_and_ddp_are_measured_as_their_local_module(digits, tmp_path):
    model = _trained("cnn")
    one = _measure(model, digits, its=(0,), distributed=False)

    def fn(rank):
        ddp = nn.parallel.DistributedDataParallel(_trained("cnn"))
        by_ddp = _measure(ddp, digits, its=(0,))  # layer names are the module's own, without "module."
        # SyncBatchNorm (which DDP accepts on GPUs only) recalibrates with this rank's batches in the frozen copy.
        sync = nn.SyncBatchNorm.convert_sync_batchnorm(_trained("cnn"))
        by_sync = _measure(sync, digits, its=(0,))
        return by_ddp.results(), by_sync.results(), {type(m).__name__ for m in sync.modules() if "Norm" in type(m).__name__}

    for by_ddp, by_sync, kinds in ok(run_ranks(fn, tmp_path)):
        pd.testing.assert_frame_equal(one.results(), by_ddp, check_exact=False, rtol=1e-5, atol=0)
        pd.testing.assert_frame_equal(one.results(), by_sync, check_exact=False, rtol=1e-5, atol=0)
        assert kinds == {"SyncBatchNorm"}  # the live model keeps its SyncBatchNorm layers


# ---------------------------------------------------------------------- failures: all ranks raise, none hangs
def _failing_forward(bad_rank: int, what: str):
    state = {"armed": False}

    def forward(m, x):
        logits = m(x)
        if state["armed"] and dist.get_rank() == bad_rank:
            if what == "nan":
                return logits * float("nan")
            raise RuntimeError(f"injected failure on rank {bad_rank}")
        return logits

    return state, forward


@pytest.mark.parametrize("what", ["raise", "nan"])
def test_a_rank_failing_makes_every_rank_raise(what, digits, tmp_path):
    model = _trained("cnn")

    def fn(rank):
        state, forward = _failing_forward(1, what)
        tracker = PhaseTracker(model, ["features.3"], (digits.x_train[:200], digits.y_train[:200]),
                               (digits.x_test[:100], digits.y_test[:100]), [0, 1], batch_size=64, bootstrap=50,
                               forward=forward)
        tracker.measure(model, 0)
        state["armed"] = True
        tracker.measure(model, 1)

    t0 = time.monotonic()
    results = run_ranks(fn, tmp_path)
    assert time.monotonic() - t0 < 30
    assert all(out[0] == "error" for out in results.values()), results
    if what == "raise":
        assert results[1][1:3] == ("RuntimeError", "injected failure on rank 1")
        assert results[0][1] == RankFailed.__name__
        assert "rank 1 of 2 failed" in results[0][2] and "injected failure on rank 1" in results[0][2]
    else:  # the other rank reads it as the divergence it is, naming the rank
        assert {out[1] for out in results.values()} == {NonFiniteActivations.__name__}
        assert "on rank 1" in results[0][2]


def test_a_rank_that_never_measures_makes_the_others_raise_after_the_timeout(digits, tmp_path):
    model = _trained("mlp")

    def fn(rank):
        if rank == 1:
            time.sleep(6)  # alive, but never measuring
            return None
        tracker = PhaseTracker(model, ["features.3"], (digits.x_train[:200], digits.y_train[:200]),
                               (digits.x_test[:100], digits.y_test[:100]), [0], batch_size=64, bootstrap=50,
                               distributed_timeout=2)
        tracker.measure(model, 0)

    results = run_ranks(fn, tmp_path)
    assert results[0][1] == RankFailed.__name__
    assert "did not answer within 2 s" in results[0][2] and "distributed=False" in results[0][2]


# ---------------------------------------------------------------------- arguments
def test_distributed_argument_is_checked(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, width=0.5)
    with pytest.raises(ValueError, match="distributed='yes'"):
        PhaseTracker(model, ["features.3"], (digits.x_train[:200], digits.y_train[:200]),
                     (digits.x_test[:50], digits.y_test[:50]), [0], distributed="yes")
    tracker = PhaseTracker(model, ["features.3"], (digits.x_train[:200], digits.y_train[:200]),
                           (digits.x_test[:50], digits.y_test[:50]), [0], distributed=True, bootstrap=10)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        tracker.measure(model, 0)
    assert not tracker.measured


def test_an_fsdp_model_is_refused_with_a_message(digits, tmp_path):
    def fn(rank):
        from torch.distributed.fsdp import fully_shard

        model = build_model("mlp", digits.input_shape, digits.num_classes, width=0.5)
        fully_shard(model)
        try:
            PhaseTracker(model, ["features.3"], (digits.x_train[:50], digits.y_train[:50]),
                         (digits.x_test[:50], digits.y_test[:50]), [0])
        except ValueError as e:
            return str(e)
        return "accepted"

    (message,) = ok(run_ranks(fn, tmp_path, world=1))
    assert "cannot measure an FSDP model" in message


# ---------------------------------------------------------------------- the real launchers
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore"}


def _torchrun(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPTS / script), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _python(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def same_run_folder(a: Path, b: Path) -> None:
    """The measurement files of two run folders agree: every metric to 1e-5 relative, errors, phases."""
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    pd.testing.assert_frame_equal(ma, mb, check_exact=False, rtol=1e-5, atol=0)
    ea, eb = np.load(a / "errors.npz"), np.load(b / "errors.npz")
    assert sorted(ea.files) == sorted(eb.files)
    for k in ea.files:
        np.testing.assert_allclose(ea[k], eb[k], rtol=1e-5)
    pa, pb = json.loads((a / "phases.json").read_text()), json.loads((b / "phases.json").read_text())
    assert pa["layers"].keys() == pb["layers"].keys()
    for n in pa["layers"]:
        assert [p["name"] for p in pa["layers"][n]["phases"]] == [p["name"] for p in pb["layers"][n]["phases"]]
        assert pa["layers"][n]["min_iteration"] == pb["layers"][n]["min_iteration"]
    assert pa["status"] == pb["status"]


@pytest.mark.distributed
def test_own_loop_under_torchrun_writes_the_run_folder_of_one_process(tmp_path):
    """The script's rank 0 also measures with distributed=False: the one-process reference, same weights."""
    _check(_torchrun("own_loop.py", str(tmp_path)))
    same_run_folder(tmp_path / "single", tmp_path / "run")
    for f in ("samples.npz", "reconstructions.npz", "errors_ridge.npz", "best_features.pt"):  # extensions' files
        assert (tmp_path / "run" / f).exists(), f
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # the same rows, phases and decisions on every rank
    assert ranks[0]["decisions"] == json.loads((tmp_path / "single" / "decisions.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} == {"run", "single", "rank0.json", "rank1.json"}  # rank 1 wrote no more


@pytest.mark.distributed
def test_one_rank_raising_under_torchrun_stops_both_with_a_message(tmp_path):
    t0 = time.monotonic()
    proc = _torchrun("own_loop.py", str(tmp_path), "--fail-rank", "1", timeout=90)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 60
    errors = {r: (tmp_path / f"rank{r}.error").read_text() for r in range(2)}
    assert errors[1].startswith("RuntimeError: injected failure on rank 1")
    assert errors[0].startswith("RankFailed: rank 1 of 2 failed") and "injected failure on rank 1" in errors[0]


def _records(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).sort_values(["iteration", "layer", "split", "metric"]).reset_index(drop=True)


@pytest.mark.distributed
def test_lightning_ddp_callback_shards_logs_once_and_resumes_on_every_rank(tmp_path):
    pytest.importorskip("lightning.pytorch", reason="Lightning is not installed")
    _check(_python("lightning_ddp.py", str(tmp_path), timeout=180))  # Lightning starts the second process
    # the sharded callback's run folder is the one rank 0 alone writes with distributed=False
    same_run_folder(tmp_path / "single", tmp_path / "sharded")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["sharded"] == ranks[1]["sharded"] and ranks[1]["single"] is None
    # the logger got each checkpoint once, from rank 0
    assert not (tmp_path / "log_rank1.jsonl").exists()
    logged = [json.loads(line)["step"] for line in (tmp_path / "log_rank0.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 4, 8, 16, 0, 1, 2, 4, 8, 16, 24, 32][: len(logged)] or logged[-2:] == [24, 32]
    # resumed from the checkpoint at step 16 on both ranks: earlier checkpoints restored, not measured again
    for r in ranks:
        assert r["resumed"] == ranks[0]["resumed"]
        assert {k: v for k, v in r["resumed_timings"].items() if int(k) <= 16} == ranks[0]["first_timings"]
        assert sorted(map(int, r["resumed_timings"])) == [0, 1, 2, 4, 8, 16, 24, 32]
    early = lambda rows: _records([r for r in rows if r["iteration"] <= 16])  # noqa: E731
    pd.testing.assert_frame_equal(early(ranks[1]["resumed"]), _records(ranks[0]["sharded"]))


@pytest.mark.distributed
def test_hugging_face_callback_under_torchrun_shards_logs_once_and_resumes_on_every_rank(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")
    _check(_torchrun("hf_ddp.py", str(tmp_path), timeout=180))
    same_run_folder(tmp_path / "single", tmp_path / "sharded")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["sharded"] == ranks[1]["sharded"] and ranks[1]["single"] is None
    assert ranks[0]["logged"] == 10 * 6 and ranks[1]["logged"] == 0  # 10 metrics x 6 steps, "phasescope/" prefix
    assert ranks[0]["resumed"] == ranks[1]["resumed"]  # both read checkpoint-8's state
    early = lambda rows: _records([r for r in rows if r["iteration"] <= 8])  # noqa: E731
    pd.testing.assert_frame_equal(early(ranks[0]["resumed"]), early(ranks[0]["sharded"]))
    assert sorted({r["iteration"] for r in ranks[1]["resumed"]}) == [0, 1, 2, 4, 8, 16]
