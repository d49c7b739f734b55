"""Closed-loop evaluation of any registered planner on a task: returns, falls, speed."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from planner_node.planning import Planner, PlanRequest
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.robot.tasks import get_task


@dataclass
class EpisodeResult:
    seed: int
    ret: float
    length: int
    fell: bool
    wall_s: float
    plan_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = np.asarray(self.plan_ms) if self.plan_ms else np.zeros(1)
        return {"seed": self.seed, "return": self.ret, "length": self.length, "fell": self.fell,
                "wall_s": self.wall_s, "plan_ms_p50": float(np.percentile(p, 50)),
                "plan_ms_p99": float(np.percentile(p, 99))}


def run_episode(env: HumanoidEnv, planner: Planner, task: str, steps: int, seed: int,
                command=None, frame_cb=None) -> EpisodeResult:
    t = get_task(task)
    obs = env.reset(seed)
    planner.reset(seed)
    ret, fell, plan_ms = 0.0, False, []
    t0 = time.perf_counter()
    k = 0
    for k in range(1, steps + 1):
        t1 = time.perf_counter()
        plan = planner.plan(PlanRequest(obs=obs, task=task, command=command, sim_state=env.get_state()))
        plan_ms.append((time.perf_counter() - t1) * 1e3)
        obs, fell = env.step(plan.actions[0])
        ret += float(t.reward(obs, command))
        if frame_cb is not None:
            frame_cb(env)
        if fell:
            break
    return EpisodeResult(seed, ret, k, fell, time.perf_counter() - t0, plan_ms)


def summarize(results: list[EpisodeResult], **extra) -> dict:
    rets = np.array([r.ret for r in results])
    steps = sum(r.length for r in results)
    wall = sum(r.wall_s for r in results)
    return {**extra,
            "mean_return": float(rets.mean()), "std_return": float(rets.std()),
            "mean_length": float(np.mean([r.length for r in results])),
            "fall_rate": float(np.mean([r.fell for r in results])),
            "ctrl_steps_per_s": steps / max(wall, 1e-9),
            "episodes": [r.to_dict() for r in results]}


def evaluate(agent: Planner, task: str, episodes: int, seed: int, steps: int,
             env_config: EnvConfig = EnvConfig(), command=None, progress: bool = True,
             video: str | None = None, **extra) -> dict:
    from tqdm import tqdm

    env = HumanoidEnv(env_config)
    recorder = None
    if video:
        from planner_node.sim.render import VideoRecorder
        recorder = VideoRecorder(env.model, video)
    results = []
    try:
        for i in tqdm(range(episodes), desc=f"eval {getattr(agent, 'name', '?')}/{task}",
                      unit="episode", disable=not progress):
            results.append(run_episode(env, agent, task, steps, seed + i, command,
                                       frame_cb=recorder.add if recorder else None))
    finally:
        if recorder is not None:
            recorder.close()
    return summarize(results, task=task, seed=seed, steps=steps, **extra)


def format_table(rows: list[dict]) -> str:
    head = f"{'planner':<16}{'task':<12}{'return':>18}{'length':>9}{'falls':>7}{'steps/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.get('planner', '?'):<16}{r['task']:<12}"
                     f"{r['mean_return']:>10.2f} ± {r['std_return']:<5.2f}{r['mean_length']:>9.1f}"
                     f"{r['fall_rate']:>7.0%}{r['ctrl_steps_per_s']:>9.2f}")
    return "\n".join(lines)
