"""An overhead budget (``--budget F``): measure for about a fraction F of the training time.

:class:`Budget` is the controller, pure logic on timings (no torch), in three steps:

1. :meth:`Budget.calibrate` times training steps in a few short rounds (the fastest round is
   taken: a load spike in one round does not count) and one measurement at the configured sizes
   (both through callables it is given), and :meth:`Budget.choose` decides up front how many
   checkpoints fit in F x (the projected training time); when fewer than a floor that still
   resolves the phases (:func:`floor_checkpoints`) would fit, the measurement is timed once more
   when the rounds disagreed (load while calibrating; the faster of the two counts) and, if the
   floor still does not fit, it halves the fit and
   test sample counts (and pools wide layers to fewer features than fit samples) and times one
   measurement at the smaller sizes, down to :data:`MIN_FIT` / :data:`MIN_TEST`.
2. :meth:`Budget.wants` says whether an iteration is in the current plan. The plan is drawn from
   the *candidates*: the configured schedule plus, when the run gives room, log-spaced points
   between its points (up to :data:`DENSIFY` x the points per octave, :func:`densified_schedule`).
   The configured points come first: extra points are planned only when every remaining
   configured point is; kept points are spread evenly in log iterations, the last iteration
   always among them.
3. :meth:`Budget.after_checkpoint` projects the fraction of the current plan from what measuring
   has cost so far (calibration included), the cost of the recent checkpoints (their median) and
   the training time projected from the run's own clock (blended with the calibration's step time
   while few steps are timed). Only when that projection leaves a band around F (hysteresis,
   :data:`BAND`) does it re-plan what remains, aiming at F: thinning or densifying (also beyond
   the configured schedule); each change is recorded.

:class:`BudgetMonitor` plugs the controller into a :class:`~phasescope.engine.tracker.PhaseTracker` as
an extension (it measures nothing): it calls ``after_checkpoint``, keeps the training clock,
saves the controller's state with the tracker's (``--resume``) and writes the ``budget`` section
of phases.json: the calibration, the settings chosen, every adjustment, and the fraction achieved.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .training import BatchStream, make_optimizer
from ..extension import Extension
from ..engine.schedule import log_schedule
from ..registry import run_extensions

MIN_FIT = 500  # fewest fit samples the budget chooses (fewer give a decoder that mostly memorises)
MIN_TEST = 250  # fewest test samples (the intervals of the phases widen as 1/sqrt(n))
MIN_CHECKPOINTS = 5  # fewest checkpoints the budget keeps (or all, when the schedule has fewer)
CALIBRATION_ROUNDS = 3  # rounds of training steps timed up front (after one untimed warm-up step) ...
CALIBRATION_STEPS = 3  # ... of this many steps each; the fastest round's mean is the step time
RECENT = 5  # the cost of a checkpoint is predicted from the median of the last RECENT ones
PRIOR_STEPS = 8  # the calibration's step time counts as this many steps of the run's own clock
UNSTEADY = 1.3  # rounds further apart than this: the one measurement timed is timed again before shrinking
BAND = 0.2  # the plan changes only when its projected fraction leaves F x (1 -+ BAND)
DENSIFY = 2  # the plan may hold up to this many times the configured points per octave


def floor_checkpoints(n: int) -> int:
    """Fewest checkpoints of a schedule of ``n`` the budget keeps: half of them (one per two
    octaves of the default schedule), at least :data:`MIN_CHECKPOINTS`, at most ``n``."""
    return min(n, max(MIN_CHECKPOINTS, math.ceil(n / 2)))


def densified_schedule(iterations: int, points_per_octave: int = 1, factor: int = DENSIFY) -> list[int]:
    """The candidates of a budgeted run: the configured ``log_schedule(iterations,
    points_per_octave)`` and the points of ``factor`` x as many per octave (a superset: every
    configured point is among them)."""
    return sorted(set(log_schedule(iterations, points_per_octave)) | set(log_schedule(iterations, factor * points_per_octave)))


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


def _evenly(candidates: Sequence[int], k: int) -> list[int]:
    """``k`` of the sorted ``candidates`` at evenly spaced positions (centred: no end favoured)."""
    m = len(candidates)
    if k >= m:
        return list(candidates)
    return [candidates[i] for i in sorted({int((j + 0.5) * m / k) for j in range(max(0, k))})]


def pick(configured: Sequence[int], extra: Sequence[int], k: int, *, anchored: bool) -> list[int]:
    """``k`` checkpoints, the ``configured`` ones first (:func:`spread`); only when all of them
    are kept, ``k - len(configured)`` of the ``extra`` candidates, evenly among them."""
    if k <= len(configured):
        return spread(configured, k, anchored=anchored)
    return sorted([*configured, *_evenly(extra, k - len(configured))])


class Budget:
    """Keeps measuring (calibration included) near ``fraction`` of the training time, at or under it
    as far as the timings predict.

    ``schedule``: the configured checkpoints; ``candidates``: what the plan may hold (a superset of
    the schedule, e.g. :func:`densified_schedule`; default the schedule: never beyond it);
    ``iterations``: the run's last iteration; ``sizes``: the configured ``fit_samples``,
    ``test_samples`` and ``max_features`` (the most the budget uses); ``band``: the hysteresis
    (the plan changes when its projected fraction leaves ``fraction x (1 -+ band)``). The
    decisions are pure functions of the timings it is given, so they can be tested without
    training."""

    def __init__(self, fraction: float, schedule: Sequence[int], iterations: int, sizes: dict[str, int] | None = None,
                 *, candidates: Sequence[int] | None = None, band: float = BAND):
        if not 0 < fraction < 1:
            raise ValueError(f"budget must be in (0, 1); got {fraction!r}.")
        self.fraction = float(fraction)
        self.band = float(band)
        self.schedule = sorted(set(int(i) for i in schedule))
        self.candidates = sorted(set(self.schedule) | set(int(i) for i in (candidates or ())))
        self._configured = set(self.schedule)
        self._candidate_set = set(self.candidates)
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
    def calibrate(self, time_steps: Callable[[], float | Sequence[float]], time_measurement: Callable[[dict], float],
                  *, fixed_sizes: bool = False, max_tries: int = 4) -> dict[str, int]:
        """Time training (``time_steps() ->`` seconds per step of each round timed, or one number)
        and one measurement at the sizes chosen (``time_measurement(sizes) -> seconds``), then
        :meth:`choose`. The step time planned with is the fastest round's (robust to a load spike; the
        run's own clock corrects it as the run goes); the sample counts, which cannot grow back, are
        decided on the median round's. When the floor of checkpoints does not fit at the
        configured sizes and the rounds disagreed (more than :data:`UNSTEADY` x apart: the machine
        was disturbed) the measurement is timed once more (the faster counts); then smaller sizes
        are timed while the floor does not fit (not with ``fixed_sizes``: a resumed run keeps its
        sizes), the calibration's own cost counted at the rates found (a spike's sunk seconds do
        not shrink the samples; they count against the budget as the run goes). Returns the sizes
        chosen."""
        given = time_steps()
        rounds = [float(given)] if isinstance(given, (int, float)) else [float(r) for r in given]
        step = min(rounds)
        sizing_step = statistics.median(rounds)  # the sizes cannot grow back: they answer a typical step, not the best
        unsteady = max(rounds) > UNSTEADY * step  # the rounds disagree: the machine was disturbed while timing
        steps_cost = sum(rounds) * CALIBRATION_STEPS  # what timing them cost (each round: CALIBRATION_STEPS steps)
        sizes, tried = dict(self.sizes), []

        def nominal() -> float:  # calibrating's cost without a spike: each timing at the fastest of its sizes (the
            same = lambda t: min(u["measurement_seconds"] for u in tried  # noqa: E731  sizes answer the rates,
                                 if all(u.get(k) == t.get(k) for k in self.sizes))  # not a spike's sunk seconds)
            return sizing_step * len(rounds) * CALIBRATION_STEPS + sum(same(t) for t in tried)

        for _ in range(max_tries):
            seconds = float(time_measurement(sizes))
            tried.append({**sizes, "measurement_seconds": seconds})
            smaller = None if fixed_sizes else self.smaller(sizes, sizing_step, seconds, nominal())
            if smaller is not None and len(tried) == 1 and unsteady:  # a spike must not shrink the samples: again
                again = float(time_measurement(sizes))
                tried.append({**sizes, "measurement_seconds": again, "repeat": True})
                seconds = min(seconds, again)
                smaller = self.smaller(sizes, sizing_step, seconds, nominal())
            if smaller is None:
                break
            sizes = smaller
        # what calibrating cost: the timed steps and measurements (a process's one-time start-up, e.g. the
        # first step's allocations, is not counted: the run would pay it anyway)
        self.calibration_seconds = steps_cost + sum(t["measurement_seconds"] for t in tried)
        last = [t for t in tried if {k: t[k] for k in sizes if k in t} == sizes]
        chosen_seconds = min(t["measurement_seconds"] for t in last) if last else tried[-1]["measurement_seconds"]
        self.calibration = {"step_seconds": step, "step_rounds": rounds, "measurements": tried,
                            "seconds": self.calibration_seconds, "nominal_seconds": nominal(),
                            "sizing_step_seconds": sizing_step}
        return self.choose(step, chosen_seconds, dict(sizes))

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

    def _pick(self, after: int | None, k: int) -> list[int]:
        """``k`` of the candidates after iteration ``after`` (None: from the start), configured first."""
        rest = [i for i in self.candidates if (after is None or i > after) and i not in self.measured]
        return pick([i for i in rest if i in self._configured], [i for i in rest if i not in self._configured], k,
                    anchored=after is not None)

    def choose(self, step_seconds: float, measurement_seconds: float, sizes: dict[str, int]) -> dict[str, int]:
        """The settings for the run from the calibration: ``sizes`` (recorded) and the plan of
        checkpoints (as many as fit, the configured ones first, never fewer than the floor: then a
        warning says so)."""
        self.calibration.setdefault("step_seconds", step_seconds)
        self.calibration["chosen_measurement_seconds"] = measurement_seconds
        self.chosen = dict(sizes)
        k = self.affordable(step_seconds, measurement_seconds, self.calibration_seconds)
        keep = max(k, self.floor - len(self.measured))
        self.plan = self._pick(None, keep)
        predicted = self._projected_fraction(len(self.plan), measurement_seconds, step_seconds)
        self.calibration["predicted_fraction"] = predicted
        self.calibration["planned_checkpoints"] = len(self.plan)
        self.calibration["planned_beyond_schedule"] = len([i for i in self.plan if i not in self._configured])
        nominal = self.calibration.get("nominal_seconds", self.calibration_seconds)  # a spike's sunk seconds aside
        sizing = self.calibration.get("sizing_step_seconds", step_seconds)  # as the sizes were decided
        if self.affordable(sizing, measurement_seconds, nominal) < self.floor - len(self.measured):
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
        """Whether ``iteration`` is to be measured (a candidate, planned, not measured yet)."""
        return iteration in self._planned and iteration not in self.measured

    @property
    def plan(self) -> list[int]:
        return self._plan

    @plan.setter
    def plan(self, value: list[int]) -> None:
        self._plan = sorted(int(i) for i in value if int(i) in self._candidate_set)
        self._planned = set(self._plan)

    @property
    def schedule_set(self) -> set[int]:
        return set(self.schedule)

    def step_estimate(self, trained_seconds: float, steps: int) -> float:
        """Seconds per training step: the run's own clock (``trained_seconds`` over ``steps``), with
        the calibration's step time counted as :data:`PRIOR_STEPS` steps (so a few noisy steps do
        not decide alone); from :data:`PRIOR_STEPS` steps on, a clock more than :data:`UNSTEADY` x
        away from the calibration replaces it (the calibration was disturbed, or the load changed)."""
        cal = float(self.calibration.get("step_seconds") or 0.0)
        own = trained_seconds / steps if steps > 0 and trained_seconds > 0 else None
        if not cal:
            return own or 0.0
        if own is not None and steps >= PRIOR_STEPS and not 1 / UNSTEADY <= own / cal <= UNSTEADY:
            return own  # the run's clock disagrees with the calibration (disturbed by load): the clock counts
        return (PRIOR_STEPS * cal + max(0.0, trained_seconds)) / (PRIOR_STEPS + max(0, steps))

    def cost_estimate(self) -> float:
        """Seconds per checkpoint: the median of the last :data:`RECENT` measured, the calibration's
        timing among them while fewer than 3 are (one or two noisy checkpoints do not decide alone)."""
        cal = self.calibration.get("chosen_measurement_seconds")
        recent = self.costs[-RECENT:] + ([float(cal)] if cal and len(self.costs) < 3 else [])
        return float(statistics.median(recent)) if recent else 0.0

    def after_checkpoint(self, iteration: int, measurement_seconds: float, trained_seconds: float,
                         steps: int | None = None) -> dict | None:
        """Record the checkpoint at ``iteration`` (it cost ``measurement_seconds``; ``trained_seconds``
        of training so far over ``steps`` steps, default ``iteration - start``) and, when the
        current plan's projected fraction is outside ``F x (1 -+ band)``, re-plan what remains
        aiming at F: thin, or densify (beyond the configured schedule, up to the candidates).
        Returns the adjustment when the plan changed, else None."""
        self.measured.append(int(iteration))
        self.costs.append(float(measurement_seconds))
        steps = iteration - self.start_iteration if steps is None else steps
        rate = self.step_estimate(trained_seconds, steps)
        per = self.cost_estimate()
        spent = self.calibration_seconds + sum(self.costs)
        projected_training = max(trained_seconds + rate * max(0, self.iterations - iteration), 1e-9)
        before = [i for i in self.plan if i > iteration]
        projected = (spent + len(before) * per) / projected_training
        if abs(projected - self.fraction) <= self.band * self.fraction:
            return None  # near enough to F: keep the plan as it is (no reshuffling on noise)
        k = self.affordable(rate, per, spent, trained_seconds, at=iteration)
        remaining = [i for i in self.candidates if i > iteration]
        # the run's last iteration is always measured, however far over budget (its end state and phases)
        keep = min(len(remaining), max(k, self.floor - len(self.measured), 1))
        if keep == len(before):  # nothing to change (at the floor, or every candidate planned)
            return None
        if keep > len(before):  # densify only as far as the run's own clock agrees (points remain for later)
            if steps < PRIOR_STEPS:
                return None
            own = self.affordable(min(rate, trained_seconds / steps), per, spent, trained_seconds, at=iteration)
            keep = min(keep, max(len(before), own))
            if keep == len(before):
                return None
        after = self._pick(iteration, keep)
        self.plan = [i for i in self.plan if i <= iteration] + after
        change = {"after_iteration": int(iteration), "action": "thin" if len(after) < len(before) else "densify",
                  "remaining_before": len(before), "remaining_after": len(after),
                  "beyond_schedule": len([i for i in after if i not in self._configured]),
                  "spent_seconds": round(spent, 4), "trained_seconds": round(trained_seconds, 4),
                  "step_seconds": round(rate, 6), "projected_training_seconds": round(projected_training, 4),
                  "checkpoint_seconds": round(per, 4), "projected_fraction_before": round(projected, 4),
                  "projected_fraction": round((spent + len(after) * per) / projected_training, 4)}
        if k < self.floor - len(self.measured):
            change["note"] = "over budget: kept the fewest checkpoints that resolve the phases"
        self.adjustments.append(change)
        return change

    # ------------------------------------------------------------------ the record
    def summary(self, measurement_seconds: float, training_seconds: float) -> dict:
        """phases.json's ``budget``: what was chosen, each adjustment and the fraction achieved."""
        training = max(training_seconds, 1e-9)
        with_calibration = (measurement_seconds + self.calibration_seconds) / training
        return {
            "fraction": self.fraction,
            "band": [self.fraction * (1 - self.band), self.fraction * (1 + self.band)],
            "calibration": self.calibration,
            "chosen": {**self.chosen, "checkpoints_planned": self.calibration.get("planned_checkpoints"),
                       "schedule": self.schedule, "floor": self.floor, "candidates": self.candidates},
            "adjustments": self.adjustments,
            "measured": sorted(self.measured),
            "skipped": [i for i in self.schedule if i not in self.measured and i <= max(self.measured, default=-1)],
            "beyond_schedule": sorted(i for i in self.measured if i not in self._configured),
            "measurement_seconds": measurement_seconds,
            "calibration_seconds": self.calibration_seconds,
            "training_seconds": training_seconds,
            "achieved": measurement_seconds / training,
            "achieved_with_calibration": with_calibration,
            "within": with_calibration <= self.fraction,
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
    step in each of :data:`CALIBRATION_ROUNDS` rounds (a few steps of a copy of the model and optimiser on a copy of the batch stream: the run's
    weights, batches and random numbers are untouched) and seconds of one measurement of the
    initial model at given sizes (a throwaway tracker, with the configuration's extensions made
    afresh from ``source``, the data before the extensions, for those sizes)."""
    def time_steps() -> list[float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            m = copy.deepcopy(model).train()
            opt = make_optimizer(cfg, m.parameters())
            stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
            times = []
            for _ in range(CALIBRATION_ROUNDS * CALIBRATION_STEPS + 1):  # the first step warms up: not counted
                t0 = time.perf_counter()
                xb, yb = stream.next()
                loss = F.cross_entropy(m(xb.to(device)), yb.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
        timed = times[1:]
        return [sum(timed[r * CALIBRATION_STEPS:(r + 1) * CALIBRATION_STEPS]) / CALIBRATION_STEPS
                for r in range(CALIBRATION_ROUNDS)]

    trackers: dict[tuple, Any] = {}  # one throwaway tracker per sizes: timing the same sizes again skips its set-up

    def time_measurement(sizes: dict) -> float:
        key = tuple(sorted(sizes.items()))
        if key not in trackers:
            sized = cfg.replace(**sizes)
            extensions = run_extensions(sized, source, ())[1]
            trackers[key] = [build_tracker(sized, model, data, device, extensions), 0]
        tracker, n = trackers[key]
        trackers[key][1] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            tracker.measure(model, n)  # the initial model, at iteration 0 and then 1, 2 (a throwaway record)
            return time.perf_counter() - t0

    return time_steps, time_measurement


def plan_budget(cfg: Any, model: "torch.nn.Module", data: Any, device: "torch.device",
                build_tracker: Callable[..., Any], *, source: Any, resume: bool = False) -> tuple[BudgetMonitor, Any, dict]:
    """``phasescope run --budget F``: the monitor to add to the tracker's extensions, the
    configuration with the sample counts and pooling chosen, and what was changed
    ({option: {"requested", "used", "why"}}, as config.json's ``adjusted`` records). A resumed run
    keeps its settings and continues the saved controller (restored with the tracker's state).
    The run's tracker is to be built with the budget's candidates as its schedule
    (``monitor.budget.candidates``): the budget decides which of them are measured."""
    sizes = {"fit_samples": cfg.fit_samples if cfg.fit_samples is not None else len(data.y_train),
             "test_samples": cfg.test_samples if cfg.test_samples is not None else len(data.y_test),
             "max_features": cfg.max_features}
    budget = Budget(cfg.budget, log_schedule(cfg.iterations, cfg.points_per_octave), cfg.iterations, sizes,
                    candidates=densified_schedule(cfg.iterations, cfg.points_per_octave))
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
