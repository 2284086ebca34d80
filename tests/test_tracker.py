import numpy as np
import pandas as pd
import pytest
import torch

from phasescope import PhaseTracker, log_schedule
from phasescope.config import RunConfig
from phasescope.data import load_dataset
from phasescope.run.models import ModelError, build_model
from phasescope.run.training import BatchStream, make_optimizer, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def fresh(digits, seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", digits.input_shape, 10, width=0.5)


def make_tracker(model, digits, **kw):
    return PhaseTracker(model, ["features.1", "features.3"], (digits.x_train[:400], digits.y_train[:400]),
                        (digits.x_test[:200], digits.y_test[:200]), schedule=log_schedule(32), bootstrap=100, **kw)


def run_training(digits, tracker=None, iterations=32):
    cfg = RunConfig(lr=0.05, batch_size=32)
    model = fresh(digits)
    opt = make_optimizer(cfg, model.parameters())
    stream = BatchStream(digits.x_train, digits.y_train, 32, seed=0)
    hook = (lambda m, t: tracker.maybe_measure(m, t)) if tracker is not None else None
    train(model, opt, stream, iterations, torch.device("cpu"), on_iteration=hook)
    return model, torch.get_rng_state()


def test_tracking_never_changes_training(digits):
    """Same weights and the same global RNG stream whether or not the tracker measures."""
    torch.manual_seed(123)
    plain, rng_plain = run_training(digits)
    torch.manual_seed(123)
    tracker = make_tracker(fresh(digits), digits)
    tracked, rng_tracked = run_training(digits, tracker)
    assert tracker.measured == log_schedule(32)
    for (k, a), b in zip(plain.state_dict().items(), tracked.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(rng_plain, rng_tracked)


def test_results_are_tidy_and_complete(digits):
    tracker = make_tracker(fresh(digits), digits)
    run_training(digits, tracker, iterations=8)
    df = tracker.results()
    assert list(df.columns) == ["iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"]
    assert set(df.metric) >= {"reconstruction_mse", "probe_accuracy", "probe_loss", "accuracy", "loss"}
    assert set(df.layer) == {"features.1", "features.3", "model"}
    test_rec = df[(df.metric == "reconstruction_mse") & (df.split == "test")]
    assert (test_rec.ci_low <= test_rec.value).all() and (test_rec.value <= test_rec.ci_high).all()
    assert sorted(df.iteration.unique()) == [0, 1, 2, 4, 8]
    its, E = tracker.error_matrix("features.3")
    assert E.shape == (5, 200)
    np.testing.assert_allclose(E.mean(1), test_rec[test_rec.layer == "features.3"].sort_values("iteration").value, rtol=1e-5)
    assert set(tracker.phases()) == {"features.1", "features.3"}


def test_measurement_is_deterministic(digits):
    model = fresh(digits)
    a = make_tracker(model, digits)
    b = make_tracker(model, digits)
    pd.testing.assert_frame_equal(pd.DataFrame(a.measure(model, 0)), pd.DataFrame(b.measure(model, 0)))


def test_unknown_layer_lists_valid_names(digits):
    with pytest.raises(ModelError, match="features.0"):
        PhaseTracker(fresh(digits), ["features.99"], (digits.x_train, digits.y_train), (digits.x_test, digits.y_test))


def test_state_dict_round_trip(digits):
    model = fresh(digits)
    t1 = make_tracker(model, digits)
    t1.measure(model, 0)
    t1.measure(model, 1)
    t2 = make_tracker(model, digits)
    t2.load_state_dict(t1.state_dict())
    pd.testing.assert_frame_equal(t1.results(), t2.results())
    assert not t2.should_measure(1) and t2.should_measure(2)


def test_accepts_dataloaders_and_logistic_probe(digits):
    ds = torch.utils.data.TensorDataset(digits.x_train[:300], digits.y_train[:300])
    loader = torch.utils.data.DataLoader(ds, batch_size=64)
    model = fresh(digits)
    t = PhaseTracker(model, ["features.3"], loader, (digits.x_test[:100], digits.y_test[:100]),
                     schedule=[0], probe="logistic", bootstrap=50)
    rows = pd.DataFrame(t.measure(model, 0))
    acc = rows[(rows.metric == "probe_accuracy") & (rows.split == "train")].value.item()
    assert 0.1 < acc <= 1.0


def test_bn_modes_differ_early_and_are_recorded(digits):
    model = fresh(digits)
    vals = {}
    for mode in ("recalibrate", "running", "batch"):
        t = make_tracker(model, digits, bn_mode=mode)
        rows = pd.DataFrame(t.measure(model, 0))
        vals[mode] = rows[(rows.metric == "reconstruction_mse") & (rows.split == "test")].value.tolist()
        assert t.describe()["bn_mode"] == mode
    assert vals["recalibrate"] != vals["running"]


def test_conv_decoder_path_records_budget_and_convergence(digits):
    model = fresh(digits)
    t = PhaseTracker(model, ["features.1"], (digits.x_train[:200], digits.y_train[:200]),
                     (digits.x_test[:100], digits.y_test[:100]), schedule=[0], decoder="conv", bootstrap=50,
                     decoder_options={"epochs": 2, "channels": 4})
    rows = pd.DataFrame(t.measure(model, 0))
    assert set(rows.metric) >= {"reconstruction_mse", "decoder_epochs", "decoder_converged"}
    rec = rows[(rows.metric == "reconstruction_mse") & (rows.split == "test")].value.item()
    assert 0 < rec < 2.0


def test_extensions_see_the_decoders_reconstructions(digits):
    """ctx.reconstruct gives the decoder's outputs, whose error is the recorded per-sample error."""
    seen = {}

    class Peek:
        name = "peek"

        def measure(self, ctx):
            rows = torch.arange(5)
            rec = ctx.reconstruct("features.3", rows)
            x = ctx.test_x[rows].reshape(5, -1)
            seen[ctx.iteration] = ((rec - x) ** 2).mean(1).double().numpy()
            return []

    model = fresh(digits)
    tracker = make_tracker(model, digits, extensions=[Peek()])
    tracker.measure(model, 0)
    np.testing.assert_allclose(seen[0], tracker.errors["features.3"][0][:5], rtol=1e-5)


def test_sharded_intervals_split_by_sample_size_equal_one_process(digits):
    """Sharded, each rank bootstraps some sample sizes and one all-reduce shares them: every rank ends
    with the intervals one process computes (simulated here: each rank's part, then their sum)."""
    from contextlib import nullcontext

    tracker = make_tracker(fresh(digits), digits)
    rng = np.random.default_rng(0)
    values = [rng.normal(size=40), rng.random(60), rng.normal(size=40), rng.random(1), rng.normal(size=60)]
    parts = []
    for rank in range(2):
        class FakeShard:  # each rank's contribution, before the sum over ranks
            world, agree = 2, staticmethod(lambda what: nullcontext())

            def all_reduce(self, tensors, what=""):
                return tensors

        shard = FakeShard()
        shard.rank = rank
        tracker._shard = shard
        parts.append(np.array(tracker._shared_estimates(values)))
    tracker._shard = None
    assert all(np.count_nonzero(np.nan_to_num(p[:, 0], nan=1.0)) < len(values) for p in parts)  # really split
    np.testing.assert_allclose(parts[0] + parts[1], np.array(tracker._bootstrap.estimate_all(values)), rtol=1e-12, equal_nan=True)
