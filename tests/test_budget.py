"""The overhead budget (``--budget F``): the controller's decisions on synthetic timings, the
configuration field, and one short real run that records the fraction achieved."""
import json
import warnings

import pytest

from phasescope import RunConfig
from phasescope.run.budget import MIN_FIT, MIN_TEST, Budget, floor_checkpoints, spread
from phasescope.config import ConfigError
from phasescope.engine.schedule import log_schedule

SIZES = {"fit_samples": 4000, "test_samples": 1000, "max_features": 4096}
SCHEDULE = log_schedule(4096)  # 14 checkpoints: 0, 1, 2, 4, ..., 4096


def budget(fraction=0.05, schedule=SCHEDULE, iterations=4096):
    return Budget(fraction, schedule, iterations, dict(SIZES))


def run_through(b, step, cost, *, cost_at=None):
    """Play a run: every step takes ``step`` s, every checkpoint ``cost`` s (or cost_at(iteration));
    returns the iterations measured."""
    for it in b.schedule:
        if b.wants(it):
            b.after_checkpoint(it, cost_at(it) if cost_at else cost, trained_seconds=step * it, steps=it)
    return b.measured


# ---------------------------------------------------------------------- pure decisions
def test_spread_keeps_the_last_and_never_leaves_the_candidates():
    c = [1, 2, 4, 8, 16, 32, 64]
    assert spread(c, 7, anchored=True) == c and spread(c, 10, anchored=False) == c
    assert spread(c, 0, anchored=True) == []
    for k in range(1, 8):
        for anchored in (True, False):
            s = spread(c, k, anchored=anchored)
            assert len(s) == k and s[-1] == 64 and set(s) <= set(c) and s == sorted(s)
    assert spread(c, 3, anchored=False)[0] == 1  # unanchored: the first candidate is kept
    assert spread(c, 3, anchored=True)[0] != 1  # anchored (just measured before it): spaced from there


pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a warning only where a test expects one


def test_everything_fits_when_measuring_is_cheap():
    b = budget()
    sizes = b.calibrate(lambda: 0.03, lambda s: 0.01)  # 14 x 0.01 s << 0.05 x 123 s
    assert sizes == SIZES and b.plan == SCHEDULE and b.warnings == []
    assert run_through(b, 0.03, 0.01) == SCHEDULE and b.adjustments == []
    s = b.summary(14 * 0.01, 0.03 * 4096)
    assert s["within"] and s["achieved"] == pytest.approx(0.14 / (0.03 * 4096))


def test_thins_up_front_and_stays_within_the_budget():
    b = budget()
    sizes = b.calibrate(lambda: 0.04, lambda s: 0.8)  # room 0.05 x 164 s = 8.2 s: 9 of 14 after calibrating
    assert sizes == SIZES  # the floor fits at full size: the checkpoints are thinned, the samples kept
    assert floor_checkpoints(14) <= len(b.plan) < 14 and b.plan[0] == 0 and b.plan[-1] == 4096
    measured = run_through(b, 0.04, 0.8)
    assert set(measured) <= set(SCHEDULE) and measured[-1] == 4096
    assert b.calibration_seconds + 0.8 * len(measured) <= 0.05 * 0.04 * 4096 + 1e-9


def test_thins_what_remains_when_checkpoints_cost_more_than_calibrated():
    b = budget()
    b.calibrate(lambda: 0.03, lambda s: 0.3)  # everything seemed to fit ...
    assert b.plan == SCHEDULE
    measured = run_through(b, 0.03, 0.6)  # ... but each checkpoint costs twice that
    assert len(measured) < len(SCHEDULE) and measured[-1] == 4096
    assert b.adjustments and b.adjustments[0]["action"] == "thin"
    first = b.adjustments[0]
    assert {"after_iteration", "remaining_before", "remaining_after", "projected_fraction"} <= set(first)
    assert first["remaining_after"] < first["remaining_before"]
    assert (b.calibration_seconds + sum(b.costs)) / (0.03 * 4096) <= 0.05 + 1e-9


def test_densifies_again_when_training_turns_out_slower_but_never_beyond_the_schedule():
    b = budget()
    b.calibrate(lambda: 0.02, lambda s: 0.45)  # room 0.05 x 82 s = 4.1 s: 7 checkpoints after calibrating
    planned = len(b.plan)
    assert planned < len(SCHEDULE)
    measured = run_through(b, 0.1, 0.45)  # training is 5x slower than calibrated: room for all
    assert any(a["action"] == "densify" for a in b.adjustments)
    assert len(measured) > planned and set(measured) <= set(SCHEDULE) and len(set(measured)) == len(measured)
    assert all(a["remaining_after"] <= len([i for i in SCHEDULE if i > a["after_iteration"]]) for a in b.adjustments)


def test_smaller_samples_when_even_the_floor_does_not_fit_then_a_clear_warning():
    b = budget()
    timed = []

    def measurement(sizes):
        timed.append(dict(sizes))
        return 2.0 * (sizes["fit_samples"] + sizes["test_samples"]) / 5000  # 2 s at full size

    with pytest.warns(RuntimeWarning, match="too small to measure"):
        sizes = b.calibrate(lambda: 0.001, measurement)  # 4 s of training: nothing fits
    assert timed[0] == SIZES and len(timed) >= 2  # the smaller sizes were timed too
    assert sizes["fit_samples"] == MIN_FIT and sizes["test_samples"] == MIN_TEST
    assert sizes["max_features"] <= sizes["fit_samples"] // 2
    assert len(b.plan) == floor_checkpoints(len(SCHEDULE))  # still enough checkpoints for the phases
    assert b.warnings and "anyway" in b.warnings[0]
    measured = run_through(b, 0.001, 0.6)
    assert len(measured) == floor_checkpoints(len(SCHEDULE))  # never thinned below the floor
    assert not b.summary(0.6 * len(measured), 4.096)["within"]


def test_samples_shrink_only_as_far_as_needed():
    b = budget()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sizes = b.calibrate(lambda: 0.03, lambda s: 1.6 * (s["fit_samples"] + s["test_samples"]) / 5000)
    assert MIN_FIT < sizes["fit_samples"] < 4000 and b.warnings == []


def test_state_round_trip():
    b = budget()
    b.calibrate(lambda: 0.04, lambda s: 0.8)
    b.after_checkpoint(0, 0.8, 0.0, steps=0)
    c = budget()
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert c.plan == b.plan and c.measured == [0] and not c.wants(0)
    assert [c.wants(i) for i in SCHEDULE] == [b.wants(i) for i in SCHEDULE]


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.5, -0.1, float("nan"), float("inf")])
def test_budget_must_be_a_fraction(bad):
    with pytest.raises(ConfigError, match="budget"):
        RunConfig(budget=bad).validate()
    with pytest.raises(ConfigError, match="budget"):
        RunConfig.from_dict({"budget": bad})


def test_budget_field_defaults_to_none_and_round_trips():
    assert RunConfig().budget is None
    cfg = RunConfig.from_dict({"budget": 0.05})
    assert cfg.budget == 0.05 and RunConfig.from_dict(cfg.to_dict()).budget == 0.05
    with pytest.raises(ConfigError, match="budget"):
        RunConfig.from_dict({"budget": "5%"})


def test_cli_has_the_flag():
    from phasescope.interfaces.cli import config_parameters

    assert "budget" in [p.name for p in config_parameters()]


# ---------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_short_run_with_a_budget_records_the_fraction(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="too small to measure"):  # 128 iterations are far too short for 5%
        res = CliRunner().invoke(app, ["run", "--budget", "0.05", "--iterations", "128", "--threads", "1",
                                       "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads((out / "phases.json").read_text())
    b = payload["budget"]
    assert b["fraction"] == 0.05
    assert b["achieved"] == pytest.approx(b["measurement_seconds"] / b["training_seconds"])
    assert b["measurement_seconds"] == pytest.approx(payload["seconds"]["measurement"])
    assert b["calibration"]["step_seconds"] > 0 and b["calibration"]["measurements"]
    assert set(b["measured"]) <= set(b["chosen"]["schedule"]) and b["measured"][-1] == 128
    assert len(b["measured"]) >= b["chosen"]["floor"]
    # it says so (also on the terminal), and measures the fewest checkpoints that resolve the phases anyway
    assert b["warnings"] and "too small" in res.output and not b["within"]
    assert payload["layers"]["features.3"]["phases"]  # the phases are still found
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["budget"] == 0.05
    assert config["config"]["fit_samples"] == b["chosen"]["fit_samples"]
    if b["chosen"]["fit_samples"] != 4000:
        assert config["adjusted"]["fit_samples"]["requested"] == 4000
