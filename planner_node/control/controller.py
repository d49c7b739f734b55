"""One control tick, ROS-free: latest state in, 56 position targets out, on time, never nothing.

The node is a thin shell over this. A tick: take the latest measured state; if it is missing
or stale, command the fallback; else build the observation, plan with a deadline, let the
``ActionFilter`` choose the action to command (pass-through: the plan's first action). A
planner error or a late plan also falls back. Fallback order: the shifted previous plan while
it lasts, then holding the last measured pose (the targets that give zero actuator force
there), then the standing pose.

Every candidate, plan or fallback, passes the ``OutputGuard`` (finite, inside the joint
ranges) as the last step before it is returned; one that fails is counted by reason and the
next fallback is tried. The standing pose is checked when the controller is built, so some
command always passes. Counters are named in ``COUNTERS`` and always all reported.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from planner_node import spec
from planner_node.control.action_filter import ActionFilter, PassThrough
from planner_node.control.output_guard import GUARD_REASONS, OutputGuard
from planner_node.control.parameters import default
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.control.state_estimator import MeasuredState, StateEstimator

#: Why a tick commanded a fallback instead of a fresh plan (each a /diagnostics counter).
FALLBACK_REASONS = ("no_state", "stale_state", "no_planner", "observation_non_finite", "planner_error",
                    "filter_error", "plan_rejected")
#: Every counter ``stats()`` reports, zeros included.
COUNTERS = (("ticks", "fallbacks", "deadline_misses", "wall_overruns", "anytime_fallbacks", "swaps",
             "stale_state", "planner_errors", "filter_interventions")
            + tuple(f"fallback_{r}" for r in FALLBACK_REASONS)
            + tuple(f"guard_{r}" for r in GUARD_REASONS)
            + tuple(f"guard_{r}_{src}" for r in GUARD_REASONS for src in ("plan", "shifted_plan", "hold", "stand")))


@dataclass(frozen=True)
class ControllerConfig:
    """Filled one-to-one from ROS parameters; errors name the parameter."""

    control_period: float = default("control_period")
    deadline_ms: float = default("deadline_ms")
    stale_periods: float = 2.0
    task: str = default("task")
    fallback: str = default("fallback")

    def __post_init__(self):
        from planner_node.robot.tasks import TASKS
        if abs(self.control_period - spec.CONTROL_PERIOD_S) > 1e-9:
            raise ValueError(f"control_period: {self.control_period} s, but the models run at "
                             f"{spec.CONTROL_PERIOD_S} s (spec)")
        if not 0 < self.deadline_ms <= self.control_period * 1e3:
            raise ValueError(f"deadline_ms: must be in (0, {self.control_period * 1e3:g}], got {self.deadline_ms}")
        if self.stale_periods <= 0:
            raise ValueError(f"stale_periods: must be > 0, got {self.stale_periods}")
        if self.task not in TASKS:
            raise ValueError(f"task: unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        if self.fallback not in ("hold",):
            raise ValueError(f"fallback: unknown fallback {self.fallback!r}; valid: hold")


@dataclass
class TickResult:
    positions: np.ndarray     # (56,) joint position targets [rad], spec order
    action: np.ndarray        # (56,) normalized targets
    source: str               # "plan" or "fallback: <why>"
    plan_ms: float
    plan: Plan | None = None


class Controller:
    def __init__(self, planner: Planner | None, config: ControllerConfig = ControllerConfig(),
                 estimator: StateEstimator | None = None, action_filter: ActionFilter | None = None):
        self.planner, self.config = planner, config
        self.action_filter = action_filter or PassThrough()
        self._filter_g: deque = deque(maxlen=1000)   # G of the filter's recent choices (ldm)
        self.filter_threshold = None
        self.estimator = estimator or StateEstimator()
        lay = self.estimator.layout
        from planner_node.robot.humanoid import standing_qpos
        self.stand_action = lay.hold_action(standing_qpos(self.estimator.model, lay)[lay.qpos_idx])
        self.guard = OutputGuard(lay.joint_range)
        if self.guard.check(self.estimator.action_to_positions(self.stand_action)) is not None:
            raise ValueError("the standing pose fails the output guard: the robot model's joint ranges are wrong")
        self.counters: Counter = Counter({k: 0 for k in COUNTERS})
        self.latency_ms: deque = deque(maxlen=1000)
        self._plan: Plan | None = None
        self._plan_step = 0
        self._last_state: MeasuredState | None = None
        self._realtime = True

    def swap_planner(self, planner: Planner) -> None:
        """Called between ticks: the next tick plans with ``planner``."""
        self.planner = planner
        self._plan, self._plan_step = None, 0
        self.action_filter.reset()
        self.counters["swaps"] += 1

    def _fallback(self, reason: str, why: str, t0: float) -> TickResult:
        self.counters["fallbacks"] += 1
        self.counters[f"fallback_{reason}"] += 1
        return self._first_safe(self._fallback_candidates(), f"fallback: {why}", t0)

    def _fallback_candidates(self):
        """Lazily, in order: shifted previous plan, hold the last measured pose, stand."""
        if self._plan is not None and self._plan_step + 1 < len(self._plan.actions):
            self._plan_step += 1
            yield "shifted_plan", self._plan.actions[self._plan_step]
        if self._last_state is not None:
            yield "hold", self.estimator.positions_to_action(self._last_state.joint_pos)
        yield "stand", self.stand_action

    def _first_safe(self, candidates, source: str, t0: float, plan: Plan | None = None) -> TickResult:
        """The output guard, the last step: the first candidate that passes is the command."""
        for kind, action in candidates:
            action = np.asarray(action, float)
            positions = self.estimator.action_to_positions(action) if action.shape == (spec.ACTION_DIM,) else None
            why = self.guard.check(positions)
            if why is None:
                if kind == "plan":  # only a plan that passes replaces the previous one
                    self._plan, self._plan_step = plan, 0
                return self._result(action, positions, source, t0, plan if kind == "plan" else None)
            self.counters[f"guard_{why}"] += 1
            self.counters[f"guard_{why}_{kind}"] += 1
            if kind == "plan":  # the new plan is unusable: fall back (the previous plan, shifted, first)
                return self._fallback("plan_rejected", f"plan rejected by the guard ({why})", t0)
        raise AssertionError("unreachable: the standing pose passes the guard (checked at construction)")

    def _result(self, action, positions, source, t0, plan=None) -> TickResult:
        self.estimator.commanded(action, self.config.control_period)
        ms = (time.perf_counter() - t0) * 1e3
        self.latency_ms.append(ms)
        if ms > self.config.deadline_ms:
            # Real time: a late command is a deadline miss. Lockstep: the sim waits for us, so
            # it is only a wall-clock overrun (reported, not a miss).
            self.counters["deadline_misses" if self._realtime else "wall_overruns"] += 1
        return TickResult(positions, action, source, ms, plan)

    def tick(self, state: MeasuredState | None, now_s: float, task: str | None = None,
             command: tuple[float, float, float] | None = None, tick_start: float | None = None,
             realtime: bool = True) -> TickResult:
        """``realtime=False`` (lockstep sim): plan without a wall-clock deadline, so the same
        states give the same commands whatever the machine's load (replay determinism)."""
        t0 = time.perf_counter() if tick_start is None else tick_start
        self._realtime = realtime
        self.counters["ticks"] += 1
        if state is None:
            return self._fallback("no_state", "no state received yet", t0)
        # Lockstep: the sim waits for this command, so its latest state is current however long
        # this tick waited for the CPU (a hot swap's loading, a loaded machine); judging its age
        # by the wall clock would make the commands depend on the machine's load.
        if realtime and now_s - state.stamp_s > self.config.stale_periods * self.config.control_period:
            self.counters["stale_state"] += 1
            return self._fallback("stale_state", f"state is {1e3 * (now_s - state.stamp_s):.0f} ms old", t0)
        if self.planner is None:
            return self._fallback("no_planner", "no planner loaded", t0)
        try:
            obs = self.estimator.observe(state)
        except Exception as e:  # noqa: BLE001 - an unusable state must still yield a command
            return self._fallback("observation_non_finite", f"state unusable: {e}", t0)
        if not np.all(np.isfinite(obs)):
            return self._fallback("observation_non_finite", "observation has NaN or Inf", t0)
        self._last_state = state
        try:
            req = PlanRequest(obs=obs, task=task or self.config.task, command=command,
                              sim_state=self.estimator.sim_state(),
                              deadline=t0 + self.config.deadline_ms / 1e3 if realtime else None)
            plan = self.planner.plan(req)
            actions = np.asarray(plan.actions, float)
            if actions.ndim != 2 or len(actions) == 0:
                raise ValueError(f"plan actions have shape {actions.shape}, expected (H, {spec.ACTION_DIM})")
        except Exception as e:  # noqa: BLE001 - any planner failure must still yield a command
            self.counters["planner_errors"] += 1
            return self._fallback("planner_error", f"planner error: {e.__class__.__name__}: {e}", t0)
        if "fallback" in plan.info:
            self.counters["anytime_fallbacks"] += 1
        try:
            chosen = self.action_filter.filter(obs, plan)
        except Exception as e:  # noqa: BLE001 - a filter failure must still yield a (safe) command
            return self._fallback("filter_error", f"action filter error: {e.__class__.__name__}: {e}", t0)
        if chosen.intervened:
            self.counters["filter_interventions"] += 1
        g = chosen.info.get("g")
        if g is not None:  # a filter that measures each choice (ldm: G of the chosen action)
            self._filter_g.append(float(g))
            self.filter_threshold = chosen.info.get("threshold")
        return self._first_safe(iter([("plan", chosen.action)]), "plan", t0, plan)

    def stats(self) -> dict:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        out = {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
               **{k: int(v) for k, v in self.counters.items()}}
        if self._filter_g:  # the chosen actions' G over the recent ticks, and the threshold it was held to
            g = np.asarray(self._filter_g)
            out.update(filter_g_mean=float(g.mean()), filter_g_max=float(g.max()),
                       filter_threshold=float(self.filter_threshold))
        return out
