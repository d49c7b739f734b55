"""The small ROS-free Planner interface and its name-keyed registry (lazy imports).

A planner maps (observation, task) to a chunk of actions with a score. The node, the
bridge, the evaluator, benchmarks and tests call only this interface. Registry entries
are "module:Class" strings so that choosing one planner never imports another's
dependencies (a deployment image needs no torch).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from planner_node import spec
from planner_node.kinds import KINDS


#: What a plan's predicted observations say about the body, per step (``intent_of``): height [m],
#: world z in the root frame, velocimeter [m/s] and gyro [rad/s] (root frame). Enough to draw where
#: the planner thinks the base goes, and how high, without sending 224 numbers a step.
INTENT_BLOCKS = ("body_height", "world_zaxis", "sensors_velocimeter", "sensors_gyro")


INTENT_INDEX = np.concatenate([np.arange(spec.OBS_SLICES[b].start, spec.OBS_SLICES[b].stop) for b in INTENT_BLOCKS])
INTENT_DIM = len(INTENT_INDEX)
#: The most candidates whose predicted states a plan passes on for viewing (the best-scored first).
MAX_CANDIDATES = 8


def intent_of(predicted_obs) -> np.ndarray | None:
    """(T, INTENT_DIM) from a plan's predicted observations (T, 224), row 0 the state planned
    from; None where there are none, or they are not finite (nothing of them is then shown)."""
    if predicted_obs is None:
        return None
    obs = np.asarray(predicted_obs, float)
    if obs.ndim != 2 or obs.shape[1] <= INTENT_INDEX.max() or not np.all(np.isfinite(obs)):
        return None
    return obs[:, INTENT_INDEX]


def candidate_intents(candidate_obs) -> np.ndarray | None:
    """(K, T, INTENT_DIM) of the other candidates' predicted observations (K, T, 224), best
    first, at most MAX_CANDIDATES, leaving out any that is not finite; None where there are none."""
    if candidate_obs is None:
        return None
    rows = [intent_of(o) for o in list(candidate_obs)[:MAX_CANDIDATES]]
    rows = [r for r in rows if r is not None]
    return np.stack(rows) if rows and len({r.shape for r in rows}) == 1 else None


@dataclass
class Plan:
    """Actions (H, 56) in [-1, 1] to execute from now, the plan's score, and diagnostics.
    ``info["predicted_obs"]`` (T, 224), where a kind predicts states: the observations it expects
    along the plan, row 0 the state it planned from (the node publishes their ``intent_of``);
    ``info["candidate_obs"]`` (K, T, 224): the same for the best other candidates it weighed."""

    actions: np.ndarray
    score: float
    info: dict = field(default_factory=dict)


@dataclass
class Candidates:
    """Every plan a learned planner's search ends with (its sampled plans, or its final beam):
    actions (N, H, 56), the model's scores (N,) (its objective), the predicted last observation
    of each (N, 224), their code tokens, and the predicted steps the scores sum over. What
    ``planner eval --score`` chooses among in other ways (``sim/oracle.py``)."""

    actions: np.ndarray
    scores: np.ndarray
    final_obs: np.ndarray
    tokens: np.ndarray
    horizon: int

    def first_actions(self) -> dict:
        """What a plan's ``info["candidates"]`` carries for an action filter: every candidate's
        first action (N, 56) and its score (N,)."""
        return {"first_actions": np.asarray(self.actions[:, 0]), "scores": np.asarray(self.scores)}


@dataclass(frozen=True)
class PlanRequest:
    """What a planner sees at one tick.

    ``obs``: the 224-D observation. ``task``: a name from ``planner_node.robot.tasks``.
    ``command``: the task's target twist (vx, vy, wz) if it takes one. ``sim_state``: the
    full MuJoCo physics state, given only to ground-truth planners (the expert).
    ``deadline``: absolute ``time.perf_counter()`` by which an anytime planner returns.
    """

    obs: np.ndarray
    task: str = "stand"
    command: tuple[float, float, float] | None = None
    sim_state: np.ndarray | None = None
    deadline: float | None = None


class Planner(ABC):
    """Receding-horizon planner: ``reset`` at episode start, then ``plan`` every tick."""

    name: str = "planner"

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - optional hook
        """Forget warm starts; reseed the planner's random draws."""

    @abstractmethod
    def plan(self, request: PlanRequest) -> Plan:
        """Return a plan; its first action is what to command now."""


#: name -> "module:Class": the baselines here, and every learned kind's reference planner from
#: its registry record (``planner_node.kinds``).
PLANNERS: dict[str, str] = {
    "zero": "planner_node.sim.baselines:ZeroPlanner",
    "mppi": "planner_node.sim.mppi:MPPIPlanner",
    **{name: k.reference for name, k in KINDS.items()},
}
#: Planners that need a trained checkpoint (``--checkpoint RUN``).
LEARNED = tuple(KINDS)


def planner_class(name: str) -> type[Planner]:
    if name not in PLANNERS:
        raise KeyError(f"unknown planner {name!r}; valid planners: {', '.join(PLANNERS)}")
    module, cls = PLANNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)
