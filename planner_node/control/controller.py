"""One command slot, ROS-free: latest state in, 56 position targets out, on time, never nothing.

The node is a thin shell over this, called once per slot by its command clock (``ControlLoop``).
A slot: take the latest measured state; if it is missing or stale, command the fallback; else
build the observation, submit it to the ``PlanService`` and collect the plan for this slot, waiting
at most until the slot's deadline. The plan's first action was already chosen by the action
filter where the plan was made. When the fresh plan is late (a worker still planning, a hot swap,
a crashed worker) the slot commands the best plan available, shifted by its age in slots: a late
answer to an earlier slot counts, and the command never waits longer than the deadline. Fallback
order: the shifted best plan while it lasts, then holding the last measured pose (the targets
that give zero actuator force there), then the standing pose.

Inline services plan in this thread, so their "wait" is the plan itself: a plan past the deadline
is a miss, and one past the period a command after its slot (``late_commands``). A worker
service plans in another process, so the command goes out by the deadline whatever the planner
does.

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
from planner_node.control.plan_service import InlinePlanService, Planned, PlanService
from planner_node.planning import Planner, PlanRequest
from planner_node.control.state_estimator import MeasuredState, StateEstimator

#: Why a slot commanded a fallback instead of a fresh plan (each a /diagnostics counter).
FALLBACK_REASONS = ("no_state", "stale_state", "no_planner", "observation_non_finite", "planner_error",
                    "filter_error", "plan_rejected", "plan_late", "worker_down")
#: Where each slot's command came from: the fresh plan, the best earlier plan shifted by its age,
#: or a fallback that holds or stands.
COMMAND_SOURCES = ("fresh_plan", "shifted_plan", "fallback")
#: Every counter ``stats()`` reports, zeros included.
COUNTERS = (("ticks", "fallbacks", "deadline_misses", "late_commands", "wall_overruns", "anytime_fallbacks",
             "swaps", "stale_state", "planner_errors", "filter_interventions")
            + tuple(f"commands_{s}" for s in COMMAND_SOURCES)
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
    plan_ms: float            # this slot's time from its start to the command [ms]
    plan: Planned | None = None   # the fresh plan commanded this slot (None: shifted or fallback)


class Controller:
    """``planner`` (run inline, behind ``action_filter``) or ``service`` (a worker) makes the plans."""

    #: How much later in its slot a command may go out than the previous one [s] (real time).
    PHASE_STEP_S = 0.005

    def __init__(self, planner: Planner | None = None, config: ControllerConfig = ControllerConfig(),
                 estimator: StateEstimator | None = None, action_filter: ActionFilter | None = None,
                 service: PlanService | None = None):
        self.config = config
        self._filter = action_filter or PassThrough()
        self.service: PlanService | None = service if service is not None else (
            InlinePlanService(planner, self._filter) if planner is not None else None)
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
        self.plan_age_ms: deque = deque(maxlen=1000)  # per command from a plan: its state's age [ms]
        self._plan: Planned | None = None             # the best plan: the newest that passed the guard
        self._slot_t0: dict[int, float] = {}          # slot -> its start (perf_counter), recent slots
        self._next_slot = 0
        self._last_state: MeasuredState | None = None
        self._realtime = True
        self._missed = False  # this slot's deadline miss is counted already
        self._last_phase_s: float | None = None  # when in its slot the last command went out [s]

    # -- the planner behind the clock --------------------------------------------------------------
    @property
    def planner(self) -> Planner | PlanService | None:
        s = self.service
        return s.planner if isinstance(s, InlinePlanService) else s

    @property
    def action_filter(self) -> ActionFilter:
        """The filter inline plans pass (a worker's filter lives in the worker)."""
        s = self.service
        return s.action_filter if isinstance(s, InlinePlanService) else self._filter

    @action_filter.setter
    def action_filter(self, f: ActionFilter) -> None:
        self._filter = f
        if isinstance(self.service, InlinePlanService):
            self.service.action_filter = f

    def swap_planner(self, planner: Planner) -> None:
        """Called between ticks: the next tick plans with ``planner`` (inline)."""
        self.swap_service(InlinePlanService(planner, self.action_filter))

    def swap_service(self, service: PlanService) -> None:
        """Called between ticks: plans come from ``service`` from the next slot on."""
        self.service = service
        # The best plan stays: it is still the freshest intent for the robot, shifted by its age,
        # should the new planner's first plan be late (holding instead jolted the robot).
        if isinstance(service, InlinePlanService):
            service.action_filter.reset()
        self.counters["swaps"] += 1

    # -- fallbacks and the guard -------------------------------------------------------------------
    def _fallback(self, reason: str, why: str, t0: float, slot: int) -> TickResult:
        self.counters["fallbacks"] += 1
        self.counters[f"fallback_{reason}"] += 1
        return self._first_safe(self._fallback_candidates(slot), f"fallback: {why}", t0, slot)

    def _fallback_candidates(self, slot: int):
        """Lazily, in order: the best plan shifted by its age, hold the last measured pose, stand."""
        if self._plan is not None and 0 < slot - self._plan.slot < len(self._plan.actions):
            yield "shifted_plan", self._plan.actions[slot - self._plan.slot]
        if self._last_state is not None:
            yield "hold", self.estimator.positions_to_action(self._last_state.joint_pos)
        yield "stand", self.stand_action

    def _first_safe(self, candidates, source: str, t0: float, slot: int, plan: Planned | None = None) -> TickResult:
        """The output guard, the last step: the first candidate that passes is the command."""
        for kind, action in candidates:
            action = np.asarray(action, float)
            positions = self.estimator.action_to_positions(action) if action.shape == (spec.ACTION_DIM,) else None
            why = self.guard.check(positions)
            if why is None:
                if kind == "plan":  # only a plan that passes replaces the best one
                    self._plan = plan
                self.counters[{"plan": "commands_fresh_plan", "shifted_plan": "commands_shifted_plan"}.get(
                    kind, "commands_fallback")] += 1
                if kind in ("plan", "shifted_plan"):
                    t_plan = self._slot_t0.get(self._plan.slot)
                    if t_plan is not None:
                        self.plan_age_ms.append((time.perf_counter() - t_plan) * 1e3)
                return self._result(action, positions, source, t0, plan if kind == "plan" else None)
            self.counters[f"guard_{why}"] += 1
            self.counters[f"guard_{why}_{kind}"] += 1
            if kind == "plan":  # the new plan is unusable: fall back (the best plan, shifted, first)
                return self._fallback("plan_rejected", f"plan rejected by the guard ({why})", t0, slot)
        raise AssertionError("unreachable: the standing pose passes the guard (checked at construction)")

    def _result(self, action, positions, source, t0, plan=None) -> TickResult:
        self.estimator.commanded(action, self.config.control_period)
        ms = (time.perf_counter() - t0) * 1e3
        self.latency_ms.append(ms)
        self._last_phase_s = ms / 1e3 if self._realtime else None
        if ms > self.config.deadline_ms:
            # Real time: a plan commanded after the deadline is a miss. Lockstep: the sim waits
            # for us, so it is only a wall-clock overrun (reported, not a miss).
            if not self._realtime:
                self.counters["wall_overruns"] += 1
            elif not self._missed:  # one miss per slot: its plan was late, or its command
                self.counters["deadline_misses"] += 1
        if self._realtime and ms > self.config.control_period * 1e3:
            self.counters["late_commands"] += 1  # published after its slot ended
        return TickResult(positions, action, source, ms, plan)

    # -- one slot ----------------------------------------------------------------------------------
    def tick(self, state: MeasuredState | None, now_s: float, task: str | None = None,
             command: tuple[float, float, float] | None = None, tick_start: float | None = None,
             realtime: bool = True, slot: int | None = None) -> TickResult:
        """``slot``: this command's slot number on the command clock (default: the next one), which
        ages earlier plans. ``realtime=False`` (lockstep sim): wait for the plan without a deadline,
        so the same states give the same commands whatever the machine's load (replay determinism)."""
        t0 = time.perf_counter() if tick_start is None else tick_start
        slot = self._next_slot if slot is None else int(slot)
        self._next_slot = slot + 1
        self._slot_t0[slot] = t0
        for old in [k for k in self._slot_t0 if k < slot - 64]:
            del self._slot_t0[old]
        self._realtime, self._missed = realtime, False
        self.waited = None  # (submitted, collected) on the perf_counter clock, where the tick waited on the planner
        self.counters["ticks"] += 1
        if state is None:
            return self._fallback("no_state", "no state received yet", t0, slot)
        # Lockstep: the sim waits for this command, so its latest state is current however long
        # this tick waited for the CPU (a hot swap's loading, a loaded machine); judging its age
        # by the wall clock would make the commands depend on the machine's load.
        if realtime and now_s - state.stamp_s > self.config.stale_periods * self.config.control_period:
            self.counters["stale_state"] += 1
            return self._fallback("stale_state", f"state is {1e3 * (now_s - state.stamp_s):.0f} ms old", t0, slot)
        if self.service is None:
            return self._fallback("no_planner", "no planner loaded", t0, slot)
        try:
            obs = self.estimator.observe(state)
        except Exception as e:  # noqa: BLE001 - an unusable state must still yield a command
            return self._fallback("observation_non_finite", f"state unusable: {e}", t0, slot)
        if not np.all(np.isfinite(obs)):
            return self._fallback("observation_non_finite", "observation has NaN or Inf", t0, slot)
        self._last_state = state
        if not self.service.alive:
            return self._fallback("worker_down", "the planner worker is down (restarting)", t0, slot)
        deadline = t0 + self.config.deadline_ms / 1e3 if realtime else None
        self.service.submit(slot, PlanRequest(obs=obs, task=task or self.config.task, command=command,
                                              sim_state=self.estimator.sim_state(), deadline=deadline))
        until = deadline
        if realtime and self._last_phase_s is not None:
            # Steady phase: wait at most PHASE_STEP_S longer into the slot than the last command
            # went out, so two commands are never more than a period + PHASE_STEP_S apart (a
            # fresh command at +1 ms after a late one at the deadline made 55 ms gaps), while a
            # consistently slow planner still earns the whole deadline within a few slots.
            until = min(deadline, t0 + self._last_phase_s + self.PHASE_STEP_S)
        t_submitted = time.perf_counter()
        got = self.service.collect(slot, until)
        self.waited = (t_submitted, time.perf_counter())
        if got is None or got.slot != slot:
            # The fresh plan is late: an earlier slot's late answer may be newer than the best plan.
            if (got is not None and got.error is None and len(got.actions)
                    and (self._plan is None or got.slot > self._plan.slot)):
                self._plan = got
            self.counters["deadline_misses"] += 1
            self._missed = True
            return self._fallback("plan_late", "no plan for this slot by its deadline", t0, slot)
        if got.error is not None:
            if got.info.get("filter_error"):
                return self._fallback("filter_error", got.error, t0, slot)
            self.counters["planner_errors"] += 1
            return self._fallback("planner_error", got.error, t0, slot)
        if got.anytime_fallback:
            self.counters["anytime_fallbacks"] += 1
        if got.intervened:
            self.counters["filter_interventions"] += 1
        if got.g is not None:  # a filter that measures each choice (ldm: G of the chosen action)
            self._filter_g.append(float(got.g))
            self.filter_threshold = got.threshold
        return self._first_safe(iter([("plan", got.actions[0])]), "plan", t0, slot, got)

    def stats(self) -> dict:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        age = np.asarray(self.plan_age_ms) if self.plan_age_ms else np.full(1, -1.0)
        out = {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
               "plan_age_p50_ms": float(np.percentile(age, 50)), "plan_age_p99_ms": float(np.percentile(age, 99)),
               "planner_process": self.service.mode if self.service is not None else "none",
               **{k: int(v) for k, v in self.counters.items()}}
        if self._filter_g:  # the chosen actions' G over the recent ticks, and the threshold it was held to
            g = np.asarray(self._filter_g)
            out.update(filter_g_mean=float(g.mean()), filter_g_max=float(g.max()),
                       filter_threshold=float(self.filter_threshold))
        return out
