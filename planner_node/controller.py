"""One control tick, ROS-free: latest state in, 56 position targets out, on time, never nothing.

The node is a thin shell over this. A tick: take the latest measured state; if it is missing
or stale, command the fallback; else build the observation, plan with a deadline, and
command the plan's first action. A planner error or a late plan also falls back. Fallback
order: the shifted previous plan while it lasts, then holding the last measured pose (the
targets that give zero actuator force there), then the standing pose.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from planner_node import spec
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.state_estimator import MeasuredState, StateEstimator


@dataclass(frozen=True)
class ControllerConfig:
    """Filled one-to-one from ROS parameters; errors name the parameter."""

    control_period: float = spec.CONTROL_PERIOD_S
    deadline_ms: float = 25.0
    stale_periods: float = 2.0
    task: str = "stand"
    fallback: str = "hold"

    def __post_init__(self):
        from planner_node.sim.tasks import TASKS
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
                 estimator: StateEstimator | None = None):
        self.planner, self.config = planner, config
        self.estimator = estimator or StateEstimator()
        lay = self.estimator.layout
        from planner_node.sim.humanoid import standing_qpos
        self.stand_action = lay.hold_action(standing_qpos(self.estimator.model, lay)[lay.qpos_idx])
        self.counters: Counter = Counter()
        self.latency_ms: deque = deque(maxlen=1000)
        self._plan: Plan | None = None
        self._plan_step = 0
        self._last_state: MeasuredState | None = None
        self._realtime = True

    def swap_planner(self, planner: Planner) -> None:
        """Called between ticks: the next tick plans with ``planner``."""
        self.planner = planner
        self._plan, self._plan_step = None, 0
        self.counters["swaps"] += 1

    def _fallback(self, why: str, t0: float) -> TickResult:
        self.counters["fallbacks"] += 1
        if self._plan is not None and self._plan_step + 1 < len(self._plan.actions):
            self._plan_step += 1
            action = self._plan.actions[self._plan_step]
        elif self._last_state is not None:
            action = self.estimator.positions_to_action(self._last_state.joint_pos)
        else:
            action = self.stand_action
        return self._result(action, f"fallback: {why}", t0)

    def _result(self, action, source, t0, plan=None) -> TickResult:
        action = np.clip(np.asarray(action, float), spec.ACTION_LOW, spec.ACTION_HIGH)
        self.estimator.commanded(action, self.config.control_period)
        ms = (time.perf_counter() - t0) * 1e3
        self.latency_ms.append(ms)
        if ms > self.config.deadline_ms:
            # Real time: a late command is a deadline miss. Lockstep: the sim waits for us, so
            # it is only a wall-clock overrun (reported, not a miss).
            self.counters["deadline_misses" if self._realtime else "wall_overruns"] += 1
        return TickResult(self.estimator.action_to_positions(action), action, source, ms, plan)

    def tick(self, state: MeasuredState | None, now_s: float, task: str | None = None,
             command: tuple[float, float, float] | None = None, tick_start: float | None = None,
             realtime: bool = True) -> TickResult:
        """``realtime=False`` (lockstep sim): plan without a wall-clock deadline, so the same
        states give the same commands whatever the machine's load (replay determinism)."""
        t0 = time.perf_counter() if tick_start is None else tick_start
        self._realtime = realtime
        self.counters["ticks"] += 1
        if state is None:
            return self._fallback("no state received yet", t0)
        if now_s - state.stamp_s > self.config.stale_periods * self.config.control_period:
            self.counters["stale_state"] += 1
            return self._fallback(f"state is {1e3 * (now_s - state.stamp_s):.0f} ms old", t0)
        if self.planner is None:
            return self._fallback("no planner loaded", t0)
        try:
            obs = self.estimator.observe(state)
            self._last_state = state
            req = PlanRequest(obs=obs, task=task or self.config.task, command=command,
                              sim_state=self.estimator.sim_state(),
                              deadline=t0 + self.config.deadline_ms / 1e3 if realtime else None)
            plan = self.planner.plan(req)
        except Exception as e:  # noqa: BLE001 - any planner failure must still yield a command
            self.counters["planner_errors"] += 1
            return self._fallback(f"planner error: {e.__class__.__name__}: {e}", t0)
        if "fallback" in plan.info:
            self.counters["anytime_fallbacks"] += 1
        self._plan, self._plan_step = plan, 0
        return self._result(plan.actions[0], "plan", t0, plan)

    def stats(self) -> dict:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        return {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
                **{k: int(v) for k, v in self.counters.items()}}
