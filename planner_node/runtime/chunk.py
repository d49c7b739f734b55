"""The action-chunk policy's runtime planner (numpy + one engine, no torch): one call of the
``policy`` graph per tick; the ensemble's mean chunk is the plan. Reproduces
``planner_node.models.chunk.ChunkPlanner``."""
from __future__ import annotations

import numpy as np

from planner_node.planning import Plan, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.bundle_planner import BundlePlanner

COMMAND_DIM = 3   # (vx [m/s], vy [m/s], wz [rad/s]) in the root frame; zeros for tasks without one


def policy_inputs(obs_z: np.ndarray, tasks: list[str], task: str, command) -> tuple[np.ndarray, np.ndarray]:
    """The task's one-hot (n, n_tasks) and the command (n, 3) for ``len(obs_z)`` rows, as the
    policy reads them; an unknown task or a malformed command is refused by name (shared by the
    reference and the runtime planner)."""
    if task not in tasks:
        get_task(task)   # an unknown name: KeyError naming it and the valid ones
        raise ValueError(f"task {task!r}: this policy was trained on {', '.join(tasks)}")
    n = len(obs_z)
    onehot = np.zeros((n, len(tasks)), np.float32)
    onehot[:, tasks.index(task)] = 1.0
    cmd = np.zeros(COMMAND_DIM, np.float32) if command is None else np.asarray(command, np.float32)
    if cmd.shape != (COMMAND_DIM,) or not np.all(np.isfinite(cmd)):
        raise ValueError(f"command: expected {COMMAND_DIM} finite numbers, got {command!r}")
    return onehot, np.tile(cmd, (n, 1))


class RuntimeChunkPlanner(BundlePlanner):
    """One ``policy`` graph call per plan (well under a millisecond on one core: no anytime
    fallback is needed, so none is kept)."""

    name = kind = "chunk"

    def __init__(self, bundle, **kw):
        super().__init__(bundle, **kw)
        self.batch, self.engine = self._fit(self.engines("policy"), 1)
        self.tasks = list(self.kind_config["tasks"])

    def plan(self, request: PlanRequest) -> Plan:
        obs = self.norm_obs(request.obs, self.batch)
        task, cmd = policy_inputs(obs, self.tasks, request.task, request.command)
        z = self.engine.run({"obs": obs, "task": task, "command": cmd})["actions"][0]
        return Plan(self.unnorm_act(z.astype(np.float64)), 0.0)
