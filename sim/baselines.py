"""Trivial baselines behind the Planner interface."""
from __future__ import annotations

import numpy as np

from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.robot.humanoid import Layout, load_model, standing_qpos


class ZeroPlanner(Planner):
    """Hold the standing posture: the position targets that give zero force at the start pose."""

    name = "zero"

    def __init__(self, horizon: int = 1, **_):
        model = load_model()
        layout = Layout(model)
        self.hold = layout.hold_action(standing_qpos(model, layout)[layout.qpos_idx])
        self.horizon = horizon

    def plan(self, request: PlanRequest) -> Plan:
        return Plan(np.tile(self.hold, (self.horizon, 1)), score=0.0)
