"""Where plans come from, seen by the command clock: submit a request for a slot, collect what
has been planned by a time. ROS-free.

The controller (the command clock) never calls a planner itself. It submits each slot's
``PlanRequest`` to a ``PlanService`` and waits for the answer at most until the slot's deadline.
What it then holds is a ``Planned``: the plan for some slot, its first action already chosen by
the action filter. A plan for an earlier slot is the best plan available when the fresh one is
late, and the controller shifts it by its age.

- ``InlinePlanService``: planner and filter run in the calling thread (the sim's expert, the
  baselines, ``planner_process: inline``). The wait is the plan itself: a slow plan makes a late
  command, as before the worker existed.
- ``planner_node.runtime.plan_worker_client.WorkerPlanService``: the bundle's engines and filter
  in a child process, over shared memory. The command clock waits on a pipe until the deadline,
  then commands whatever it has.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from planner_node.planning import Plan, Planner, PlanRequest, candidate_intents, intent_of


@dataclass
class Planned:
    """One answered request. ``actions`` (H, 56): the plan, its first row the filter's choice.
    ``error``: why planning failed (then ``actions`` is empty)."""

    slot: int
    actions: np.ndarray
    score: float = float("nan")
    anytime_fallback: bool = False   # the planner returned its previous plan, shifted (anytime)
    intervened: bool = False         # the safety filter overrode the planner's first choice
    g: float | None = None           # the filter's G of the chosen action (ldm)
    threshold: float | None = None
    plan_ms: float = 0.0             # planning + filtering time where it ran
    error: str | None = None
    plan: Plan | None = None         # the planner's own Plan (inline only: its info may hold anything)
    info: dict = field(default_factory=dict)


class PlanService(ABC):
    """One planner, behind the command clock."""

    #: "inline" or "worker" (reported in /diagnostics)
    mode = "inline"

    @abstractmethod
    def submit(self, slot: int, request: PlanRequest) -> None:
        """Ask for a plan for ``slot`` from ``request``; never blocks on planning."""

    @abstractmethod
    def collect(self, slot: int, until: float | None) -> Planned | None:
        """The newest answer held once the plan for ``slot`` is in, or at ``until``
        (``time.perf_counter()``; None: wait for it, as lockstep does), whichever is first.
        It may answer an earlier slot, or be None when nothing was ever planned."""

    @property
    def alive(self) -> bool:
        return True

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - optional hook
        """Forget warm starts; reseed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the service holds (a worker process)."""


def filtered_plan(slot: int, planner: Planner, action_filter, request: PlanRequest) -> Planned:
    """Plan, then let the filter choose the first action: the one step every service runs."""
    t0 = time.perf_counter()
    try:
        plan = planner.plan(request)
        actions = np.asarray(plan.actions, float)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"plan actions have shape {actions.shape}, expected (H, 56)")
    except Exception as e:  # noqa: BLE001 - any planner failure becomes a fallback, never a crash
        return Planned(slot, np.zeros((0, 0)), error=f"planner error: {e.__class__.__name__}: {e}",
                       plan_ms=(time.perf_counter() - t0) * 1e3)
    try:
        chosen = action_filter.filter(request.obs, plan)
    except Exception as e:  # noqa: BLE001
        return Planned(slot, np.zeros((0, 0)), error=f"action filter error: {e.__class__.__name__}: {e}",
                       plan_ms=(time.perf_counter() - t0) * 1e3, info={"filter_error": True})
    actions = actions.copy()
    actions[0] = chosen.action
    g = chosen.info.get("g")
    info = {}
    intent, others = intent_of(plan.info.get("predicted_obs")), candidate_intents(plan.info.get("candidate_obs"))
    if intent is not None:  # what the kind predicts of the body (the node's ~/plan_intent, for viewing)
        info["intent"] = intent
        if others is not None and others.shape[1:] == intent.shape:
            info["candidate_intent"] = others
    return Planned(slot, actions, float(plan.score), "fallback" in plan.info, bool(chosen.intervened),
                   None if g is None else float(g), chosen.info.get("threshold"),
                   (time.perf_counter() - t0) * 1e3, plan=plan, info=info)


class InlinePlanService(PlanService):
    """Planner and filter in the caller's thread: ``submit`` plans, ``collect`` returns it."""

    mode = "inline"

    def __init__(self, planner: Planner, action_filter):
        self.planner, self.action_filter = planner, action_filter
        self._last: Planned | None = None

    def submit(self, slot: int, request: PlanRequest) -> None:
        self._last = filtered_plan(slot, self.planner, self.action_filter, request)

    def collect(self, slot: int, until: float | None) -> Planned | None:
        return self._last

    def reset(self, seed: int | None = None) -> None:
        self._last = None
        self.action_filter.reset()
