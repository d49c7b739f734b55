"""IDQL's runtime planner (numpy + one engine, no torch): one call of the ``policy`` graph per
tick (the denoising steps unrolled, the critic's advantages of every sample's first action),
the choice among the samples (``idql_select``), then the chunk policy's blending and posture
term. Reproduces ``planner_node.models.idql.IDQLPlanner``."""
from __future__ import annotations

import numpy as np

from planner_node import spec
from planner_node.planning import Plan, PlanRequest
from planner_node.runtime.bundle_planner import BundlePlanner
from planner_node.runtime.chunk import ChunkExecution, policy_inputs
from planner_node.runtime.idql_select import check_settings, choose, plan_info


class RuntimeIDQLPlanner(BundlePlanner):
    name = kind = "idql"

    def __init__(self, bundle, **kw):
        super().__init__(bundle, **kw)
        kc = self.kind_config
        self.tasks = list(kc["tasks"])
        self.task_weights = check_settings(self.params, self.H, self.tasks, int(kc["diffusion_steps"]))
        if self.params["steps"] != kc["sample_steps"]:
            raise ValueError(f"{self.bundle.root}: steps={self.params['steps']!r}, but the bundle's graph runs "
                             f"{kc['sample_steps']} denoising steps (unrolled): export with --set steps=N instead")
        self.expectile = float(kc["expectile"])
        engines = self.engines("policy")
        n = int(self.params["samples"])
        if n not in engines:
            raise ValueError(f"{self.bundle.root}: samples={n}, but the bundle's graphs draw {sorted(engines)}: "
                             "export with --samples N instead")
        self.engine = engines[n]
        self.execution = ChunkExecution(self.params)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        if hasattr(self, "execution"):   # the base class resets before __init__ made it
            self.execution.reset()

    def plan(self, request: PlanRequest) -> Plan:
        n = int(self.params["samples"])
        noise = self.rng.standard_normal((n, self.H * spec.ACTION_DIM), dtype=np.float32)
        obs = self.norm_obs(request.obs, 1)
        task, cmd = policy_inputs(obs, self.tasks, request.task, request.command, self.task_weights)
        out = self.engine.run({"noise": noise, "obs": obs, "task": task, "command": cmd})
        chunks = self.unnorm_act(out["actions"].astype(np.float64))
        adv = out["advantage"].astype(np.float64)
        i = choose(adv, self.params, self.rng, self.expectile)
        return Plan(self.execution(chunks[i], request.obs), float(adv[i]), info=plan_info(chunks, adv))
