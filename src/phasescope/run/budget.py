"""An overhead budget (``--budget F``): measure for at most a fraction F of the training time.

:class:`Budget` is the controller, pure logic on timings (no torch), in three steps:

1. :meth:`Budget.calibrate` times a few training steps and one measurement at the configured
   sizes (both through callables it is given), and :meth:`Budget.choose` decides up front how
   many of the scheduled checkpoints fit in F x (the projected training time); when fewer than a
   floor that still resolves the phases (:func:`floor_checkpoints`) would fit, it halves the fit
   and test sample counts (and pools wide layers to fewer features than fit samples) and times
   one measurement at the smaller sizes, down to :data:`MIN_FIT` / :data:`MIN_TEST`.
2. :meth:`Budget.wants` says whether a scheduled iteration is in the current plan: the kept
   checkpoints are spread evenly (in log iterations) over the schedule, the last iteration always
   among them. The plan never holds an iteration outside the schedule.
3. :meth:`Budget.after_checkpoint` compares what measuring has cost so far (calibration
   included) with F x (the training time projected from the steps timed so far), and thins or
   densifies the checkpoints that remain; each change is recorded.

:class:`BudgetMonitor` plugs the controller into a :class:`~phasescope.engine.tracker.PhaseTracker` as
an extension (it measures nothing): it calls ``after_checkpoint``, keeps the training clock,
saves the controller's state with the tracker's (``--resume``) and writes the ``budget`` section
of phases.json: the calibration, the settings chosen, every adjustment, and the fraction achieved.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..extension import Extension

if TYPE_CHECKING:
    import torch

MIN_FIT = 500  # fewest fit samples the budget chooses (fewer give a decoder that mostly memorises)
MIN_TEST = 250  # fewest test samples (the intervals of the phases widen as 1/sqrt(n))
MIN_CHECKPOINTS = 5  # fewest checkpoints the budget keeps (or all, when the schedule has fewer)
CALIBRATION_STEPS = 5  # training steps timed up front (after one untimed warm-up step)
RECENT = 3  # the cost of a checkpoint is predicted from the mean of the last RECENT ones
MIN_STEPS_FOR_RATE = 16  # below this many steps timed in the run, the calibration's step time is used


def floor_checkpoints(n: int) -> int:
    """Fewest checkpoints of a schedule of ``n`` the budget keeps: half of them (one per two
    octaves of the default schedule), at least :data:`MIN_CHECKPOINTS`, at most ``n``."""
    return min(n, max(MIN_CHECKPOINTS, math.ceil(n / 2)))


def spread(candidates: Sequence[int], k: int, *, anchored: bool) -> list[int]:
    """``k`` of the sorted ``candidates`` spread evenly by position (the schedule is log-spaced,
    so evenly in log iterations), the last one always kept. ``anchored``: a checkpoint was just
    measured before the first candidate, so the first kept is about m/k positions on; else the
    first candidate is kept too."""
    m = len(candidates)
    k = max(0, min(int(k), m))
    if k == 0:
        return []
    if k == m:
        return list(candidates)
    if anchored:
        idx = {math.ceil(j * m / k) - 1 for j in range(1, k + 1)}
    elif k == 1:
        idx = {m - 1}
    else:
        idx = {round(j * (m - 1) / (k - 1)) for j in range(k)}
    return [candidates[i] for i in sorted(idx)]


class Budget:
    """Keeps measuring (calibration included) at or under ``fraction`` of the training time.

    ``schedule``: the scheduled checkpoints (the plan is a subset of them); ``iterations``: the
    run's last iteration; ``sizes``: the configured ``fit_samples``, ``test_samples`` and
    ``max_features`` (the most the budget uses). The decisions are pure functions of the timings
    it is given, so they can be tested without training."""

    def __init__(self, fraction: float, schedule: Sequence[int], iterations: int, sizes: dict[str, int] | None = None):
        if not 0 < fraction < 1:
            raise ValueError(f"budget must be in (0, 1); got {fraction!r}.")
        self.fraction = float(fraction)
        self.schedule = sorted(set(int(i) for i in schedule))
        self.iterations = int(iterations)
        self.sizes = dict(sizes or {})
        self.chosen: dict[str, int] = dict(self.sizes)
        self.floor = floor_checkpoints(len(self.schedule))
        self.calibration: dict[str, Any] = {}
        self.plan: list[int] = list(self.schedule)
        self.measured: list[int] = []
        self.adjustments: list[dict] = []
        self.warnings: list[str] = []
        self.costs: list[float] = []  # seconds of each checkpoint measured
        self.calibration_seconds = 0.0  # what calibrating cost (counted against the budget)
        self.start_iteration = 0

    # ------------------------------------------------------------------ up front
    def calibrate(self, time_steps: Callable[[], float], time_measurement: Callable[[dict], float],
                  *, fixed_sizes: bool = False, max_tries: int = 4) -> dict[str, int]:
        """Time training (``time_steps() -> seconds per step``) and one measurement at the sizes
        chosen (``time_measurement(sizes) -> seconds``), then :meth:`choose`; smaller sizes are
        timed while the floor of checkpoints does not fit (not with ``fixed_sizes``: a resumed
        run keeps its sizes). Returns the sizes chosen."""
        step = float(time_steps())
        sizes, tried = dict(self.sizes), []
        for _ in range(max_tries):
            seconds = float(time_measurement(sizes))
            tried.append({**sizes, "measurement_seconds": seconds})
            spent = step * CALIBRATION_STEPS + sum(t["measurement_seconds"] for t in tried)
            smaller = None if fixed_sizes else self.smaller(sizes, step, seconds, spent)
            if smaller is None:
                break
            sizes = smaller
        # what calibrating cost: the timed steps and measurements (a process's one-time start-up, e.g. the
        # first step's allocations, is not counted: the run would pay it anyway)
        self.calibration_seconds = step * CALIBRATION_STEPS + sum(t["measurement_seconds"] for t in tried)
        self.calibration = {"step_seconds": step, "measurements": tried, "seconds": self.calibration_seconds}
        return self.choose(step, tried[-1]["measurement_seconds"], {k: v for k, v in tried[-1].items()
                                                                   if k != "measurement_seconds"})

    def affordable(self, step_seconds: float, measurement_seconds: float, spent: float = 0.0,
                   trained_seconds: float = 0.0, at: int | None = None) -> int:
        """How many more checkpoints of ``measurement_seconds`` fit: F x (training projected to the
        end) minus what was ``spent`` already, over the cost of one."""
        done = self.start_iteration if at is None else at
        total = trained_seconds + step_seconds * max(0, self.iterations - done)
        room = self.fraction * total - spent
        return max(0, math.floor(room / max(measurement_seconds, 1e-9)))

    def smaller(self, sizes: dict[str, int], step_seconds: float, measurement_seconds: float,
                spent: float = 0.0) -> dict[str, int] | None:
        """Smaller sample counts to time when the floor of checkpoints does not fit at ``sizes``
        after ``spent`` seconds of calibrating (each halving at most roughly halves a measurement;
        halved until the floor is predicted to fit or the minimum is reached), else None."""
        def fits(seconds: float, timing: float = 0.0) -> bool:  # timing: one more calibration measurement
            return self.affordable(step_seconds, seconds, spent=spent + timing) >= self.floor

        if fits(measurement_seconds):
            return None
        out, seconds = dict(sizes), measurement_seconds
        while not fits(seconds, seconds):
            fit, test = out.get("fit_samples"), out.get("test_samples")
            new_fit = max(MIN_FIT, fit // 2) if fit else fit
            new_test = max(MIN_TEST, test // 2) if test else test
            if (new_fit, new_test) == (fit, test):
                break
            shrink = max((new_fit or 0) / max(fit or 1, 1), (new_test or 0) / max(test or 1, 1))
            out.update(fit_samples=new_fit, test_samples=new_test)
            seconds *= shrink
        if out.get("fit_samples") and out.get("max_features"):  # keep clearly fewer features than fit samples
            out["max_features"] = min(out["max_features"], max(1, out["fit_samples"] // 2))
        return None if out == sizes else out

    def choose(self, step_seconds: float, measurement_seconds: float, sizes: dict[str, int]) -> dict[str, int]:
        """The settings for the run from the calibration: ``sizes`` (recorded) and the plan of
        checkpoints (as many as fit, never fewer than the floor: then a warning says so)."""
        self.calibration.setdefault("step_seconds", step_seconds)
        self.calibration["chosen_measurement_seconds"] = measurement_seconds
        self.chosen = dict(sizes)
        todo = [i for i in self.schedule if i >= self.start_iteration and i not in self.measured]
        k = self.affordable(step_seconds, measurement_seconds, self.calibration_seconds)
        keep = max(k, self.floor - len(self.measured))
        self.plan = spread(todo, keep, anchored=bool(self.measured))
        predicted = self._projected_fraction(len(self.plan), measurement_seconds, step_seconds)
        self.calibration["predicted_fraction"] = predicted
        self.calibration["planned_checkpoints"] = len(self.plan)
        if k < self.floor - len(self.measured):
            msg = (f"--budget {self.fraction:g} is too small to measure this run: {keep} checkpoints (the fewest that "
                   f"resolve the phases) at {self._sizes_text()} cost about {keep * measurement_seconds:.1f} s of "
                   f"about {step_seconds * (self.iterations - self.start_iteration):.0f} s of training (fraction "
                   f"{predicted:.3f}); measuring those {keep} anyway. Give a larger --budget, fewer "
                   "--fit-samples/--test-samples or a longer run.")
            self.warnings.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return dict(sizes)

    def _sizes_text(self) -> str:
        s = self.chosen
        return f"{s.get('fit_samples')} fit / {s.get('test_samples')} test samples"

    def _projected_fraction(self, checkpoints: int, measurement_seconds: float, step_seconds: float) -> float:
        training = step_seconds * max(1, self.iterations - self.start_iteration)
        return (self.calibration_seconds + checkpoints * measurement_seconds) / training

    # ------------------------------------------------------------------ as the run goes
    def wants(self, iteration: int) -> bool:
        """Whether ``iteration`` is to be measured (scheduled, planned, not measured yet)."""
        return iteration in self._planned and iteration not in self.measured

    @property
    def plan(self) -> list[int]:
        return self._plan

    @plan.setter
    def plan(self, value: list[int]) -> None:
        self._plan = sorted(int(i) for i in value if int(i) in self.schedule_set)
        self._planned = set(self._plan)

    @property
    def schedule_set(self) -> set[int]:
        return set(self.schedule)

    def after_checkpoint(self, iteration: int, measurement_seconds: float, trained_seconds: float,
                         steps: int | None = None) -> dict | None:
        """Record the checkpoint at ``iteration`` (it cost ``measurement_seconds``; ``trained_seconds``
        of training so far over ``steps`` steps, default ``iteration - start``) and re-plan what
        remains: thin when measuring runs ahead of F x the projected training, densify (back up to
        the schedule) when it lags. Returns the adjustment when the plan changed, else None."""
        self.measured.append(int(iteration))
        self.costs.append(float(measurement_seconds))
        steps = iteration - self.start_iteration if steps is None else steps
        cal = self.calibration.get("step_seconds") or 0.0
        rate = trained_seconds / steps if steps >= MIN_STEPS_FOR_RATE and trained_seconds > 0 else cal
        per = sum(self.costs[-RECENT:]) / len(self.costs[-RECENT:])
        spent = self.calibration_seconds + sum(self.costs)
        k = self.affordable(rate, per, spent, trained_seconds, at=iteration)
        remaining = [i for i in self.schedule if i > iteration]
        before = [i for i in self.plan if i > iteration]
        keep = min(len(remaining), max(k, self.floor - len(self.measured)))
        if keep == len(before):  # the plan still fits: keep it as it is (no reshuffling of the points)
            return None
        after = spread(remaining, keep, anchored=True)
        self.plan = [i for i in self.plan if i <= iteration] + after
        projected_training = trained_seconds + rate * max(0, self.iterations - iteration)
        change = {"after_iteration": int(iteration), "action": "thin" if len(after) < len(before) else "densify",
                  "remaining_before": len(before), "remaining_after": len(after),
                  "spent_seconds": round(spent, 4), "trained_seconds": round(trained_seconds, 4),
                  "projected_training_seconds": round(projected_training, 4),
                  "checkpoint_seconds": round(per, 4),
                  "projected_fraction": round((spent + len(after) * per) / max(projected_training, 1e-9), 4)}
        if k < self.floor - len(self.measured):
            change["note"] = "over budget: kept the fewest checkpoints that resolve the phases"
        self.adjustments.append(change)
        return change

    # ------------------------------------------------------------------ the record
    def summary(self, measurement_seconds: float, training_seconds: float) -> dict:
        """phases.json's ``budget``: what was chosen, each adjustment and the fraction achieved."""
        training = max(training_seconds, 1e-9)
        return {
            "fraction": self.fraction,
            "calibration": self.calibration,
            "chosen": {**self.chosen, "checkpoints_planned": self.calibration.get("planned_checkpoints"),
                       "schedule": self.schedule, "floor": self.floor},
            "adjustments": self.adjustments,
            "measured": sorted(self.measured),
            "skipped": [i for i in self.schedule if i not in self.measured and i <= max(self.measured, default=-1)],
            "measurement_seconds": measurement_seconds,
            "calibration_seconds": self.calibration_seconds,
            "training_seconds": training_seconds,
            "achieved": measurement_seconds / training,
            "achieved_with_calibration": (measurement_seconds + self.calibration_seconds) / training,
            "within": (measurement_seconds + self.calibration_seconds) / training <= self.fraction,
            "warnings": list(self.warnings),
        }

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("calibration", "plan", "measured", "adjustments", "warnings", "costs",
                                              "calibration_seconds")} | {"chosen": self.chosen}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class BudgetMonitor(Extension):
    """The budget inside a tracker: after each checkpoint it hands the controller the checkpoint's
    cost and the training time so far; it measures nothing. ``wrap(on_iteration)`` gives the
    training loop's hook that skips unplanned checkpoints and keeps the training clock (wall time
    since the first iteration, less the time spent in checkpoints: measuring and writing)."""

    name = "budget"

    def __init__(self, budget: Budget):
        self.budget = budget
        self.tracker: Any = None
        self.t0: float | None = None
        self.paused = 0.0
        self.trained_before = 0.0  # a resumed run's training seconds up to its last checkpoint
        self.steps_before = 0
        self.first: int | None = None  # the first iteration of this session's training loop
        self._last: tuple[float, int] | None = None  # training seconds and steps at the last checkpoint

    def setup(self, tracker: Any) -> None:
        self.tracker = tracker

    def training_seconds(self) -> float:
        now = time.perf_counter()
        return self.trained_before + (0.0 if self.t0 is None else now - self.t0 - self.paused)

    def wrap(self, on_iteration: Callable[[Any, int], None]) -> Callable[[Any, int], None]:
        def hook(model: Any, t: int) -> None:
            if self.t0 is None:
                self.t0, self.first = time.perf_counter(), int(t)
            if not self.budget.wants(t):
                return
            t1 = time.perf_counter()
            try:
                on_iteration(model, t)
            finally:
                self.paused += time.perf_counter() - t1
        return hook

    def after_checkpoint(self, ctx: Any) -> None:
        it = ctx.iteration
        seconds = float(self.tracker.timings.get(it, 0.0)) if self.tracker is not None else 0.0
        first = it if self.first is None else self.first
        # the time inside this checkpoint so far is measuring: not training
        trained = self.trained_before + (0.0 if self.t0 is None else
                                         time.perf_counter() - self.t0 - self.paused - seconds)
        self.budget.after_checkpoint(it, seconds, max(0.0, trained), steps=self.steps_before + it - first)
        self._last = (trained, self.steps_before + it - first)
        return None

    def describe(self) -> dict:
        return {"fraction": self.budget.fraction, "calibration": self.budget.calibration,
                "chosen": self.budget.chosen, "plan": self.budget.plan}

    def summarise(self, df: Any, payload: dict) -> dict:
        measured = float(sum(self.tracker.timings.values())) if self.tracker is not None else 0.0
        return {"budget": self.budget.summary(measured, self.training_seconds())}

    def state_dict(self) -> dict:
        trained, steps = self._last or (self.training_seconds(), 0)
        return {"budget": self.budget.state_dict(), "trained_seconds": trained, "steps": steps}

    def load_state_dict(self, state: dict) -> None:
        self.budget.load_state_dict(state["budget"])
        self.trained_before = float(state.get("trained_seconds", 0.0))
        self.steps_before = int(state.get("steps", 0))


# ---------------------------------------------------------------------- the run's timers (torch)
def run_timers(cfg: Any, model: "torch.nn.Module", data: Any, device: "torch.device",
               build_tracker: Callable[..., Any], source: Any) -> tuple[Callable[[], float], Callable[[dict], float]]:
    """The two timers :meth:`Budget.calibrate` needs for ``phasescope run``: seconds per training
    step (a few steps of a copy of the model and optimiser on a copy of the batch stream: the run's
    weights, batches and random numbers are untouched) and seconds of one measurement of the
    initial model at given sizes (a throwaway tracker, with the configuration's extensions made
    afresh from ``source``, the data before the extensions, for those sizes)."""
    import copy

    import torch
    import torch.nn.functional as F

    from ..registry import run_extensions
    from .training import BatchStream, make_optimizer

    def time_steps() -> float:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            m = copy.deepcopy(model).train()
            opt = make_optimizer(cfg, m.parameters())
            stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
            times = []
            for _ in range(CALIBRATION_STEPS + 1):  # the first step warms up (allocations): not counted
                t0 = time.perf_counter()
                xb, yb = stream.next()
                loss = F.cross_entropy(m(xb.to(device)), yb.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
        return sum(times[1:]) / CALIBRATION_STEPS

    def time_measurement(sizes: dict) -> float:
        sized = cfg.replace(**sizes)
        extensions = run_extensions(sized, source, ())[1]
        tracker = build_tracker(sized, model, data, device, extensions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            tracker.measure(model, 0)
            return time.perf_counter() - t0

    return time_steps, time_measurement


def plan_budget(cfg: Any, model: "torch.nn.Module", data: Any, device: "torch.device",
                build_tracker: Callable[..., Any], *, source: Any, resume: bool = False) -> tuple[BudgetMonitor, Any, dict]:
    """``phasescope run --budget F``: the monitor to add to the tracker's extensions, the
    configuration with the sample counts and pooling chosen, and what was changed
    ({option: {"requested", "used", "why"}}, as config.json's ``adjusted`` records). A resumed run
    keeps its settings and continues the saved controller (restored with the tracker's state)."""
    from ..engine.schedule import log_schedule

    sizes = {"fit_samples": cfg.fit_samples if cfg.fit_samples is not None else len(data.y_train),
             "test_samples": cfg.test_samples if cfg.test_samples is not None else len(data.y_test),
             "max_features": cfg.max_features}
    budget = Budget(cfg.budget, log_schedule(cfg.iterations, cfg.points_per_octave), cfg.iterations, sizes)
    if resume:
        return BudgetMonitor(budget), cfg, {}
    chosen = budget.calibrate(*run_timers(cfg, model, data, device, build_tracker, source))
    changes = {k: {"requested": sizes[k], "used": v,
                   "why": f"--budget {cfg.budget:g}: {k.replace('_', '-')} {v} instead of {sizes[k]} (calibration: "
                          f"{budget.calibration['step_seconds'] * 1e3:.1f} ms per step, "
                          f"{budget.calibration['measurements'][0]['measurement_seconds']:.2f} s per measurement)"}
               for k, v in chosen.items() if v != sizes[k] and v != getattr(cfg, k)}
    if changes:
        cfg = cfg.replace(**{k: c["used"] for k, c in changes.items()})
    return BudgetMonitor(budget), cfg, changes
