"""Which part of a learned planner fails, proposals or scoring? (simulation only)

``ScoredPlanner`` wraps a learned reference planner (any kind with ``candidates(request)``:
its sampled plans or final beam, with the model's own scores) and chooses among the *same*
candidates in one of three ways:

* ``model``: by the model's scores (what the planner does on its own);
* ``critic``: by the model's scores plus gamma^H V(predicted last state) of a trained task
  critic (``models/critic.py``), which foresees falls the plan's horizon does not reach;
* ``critic_q``: by the critic's Q(s, a) of each candidate's first action at the real state (MPC
  executes only that action; Q needs no predicted state);
* ``oracle``: by rolling each candidate out in the true simulator from the true state and
  summing the task's reward (not deployable: it needs the simulator's state);
* ``oracle+continuation``: the oracle, with the previous chosen plan shifted one control step
  as one more candidate.

If the oracle column is much better than the model column, the scoring is what fails; if even
``oracle+continuation`` falls, the proposals themselves must get better.
"""
from __future__ import annotations

import mujoco
import numpy as np
from mujoco import rollout

from planner_node import spec
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.robot.humanoid import Layout, load_model
from planner_node.robot.observation import build_observation
from planner_node.robot.tasks import get_task

MODES = ("model", "critic", "critic_q", "oracle", "oracle+continuation")


class TrueRollout:
    """Task reward of action sequences, executed on the true (executed) model from a state."""

    def __init__(self, threads: int = 2):
        self.model = load_model()
        self.layout = Layout(self.model)
        self._datas = [mujoco.MjData(self.model) for _ in range(threads)]
        self._pool = rollout.Rollout(nthread=threads)

    def returns(self, state: np.ndarray, actions: np.ndarray, task: str, command=None) -> np.ndarray:
        m, lay = self.model, self.layout
        n, h = actions.shape[:2]
        ctrl = np.zeros((n, h, m.nu))
        ctrl[..., lay.ctrl_idx] = np.clip(actions, spec.ACTION_LOW, spec.ACTION_HIGH)
        ctrl = np.repeat(ctrl, spec.SUBSTEPS, axis=1)  # zero-order hold per control period
        states, _ = self._pool.rollout(m, self._datas, np.tile(state, (n, 1)), ctrl)
        idx = np.arange(spec.SUBSTEPS - 1, states.shape[1], spec.SUBSTEPS)  # end of each period
        # Observations exactly as the environment makes them: sensors recomputed at the state
        # reached (a rollout's sensordata is from before its last integration, 5 ms stale).
        d = self._datas[0]
        obs = np.empty((n, h, spec.OBS_DIM))
        for i in range(n):
            for j, k in enumerate(idx):
                mujoco.mj_setState(m, d, states[i, k], mujoco.mjtState.mjSTATE_FULLPHYSICS)
                d.ctrl[:] = ctrl[i, k]
                mujoco.mj_forward(m, d)
                obs[i, j] = build_observation(lay, d.qpos, d.qvel, d.act, d.sensordata)
        # Rewards are gated by `healthy`: a candidate that falls stops earning.
        reward = get_task(task).reward(obs, command)
        return np.where(np.isfinite(reward), reward, 0.0).sum(axis=1)

    def close(self) -> None:
        self._pool.close()


class ScoredPlanner(Planner):
    def __init__(self, inner: Planner, mode: str = "model", threads: int = 2, critic: str | None = None):
        if mode not in MODES:
            raise ValueError(f"--score must be one of {', '.join(MODES)}, got {mode!r}")
        if not hasattr(inner, "candidates"):
            raise ValueError(f"planner {getattr(inner, 'name', inner)!r} does not expose its candidates")
        self.inner, self.mode = inner, mode
        self.name = f"{inner.name}[{mode}]"
        self.oracle = TrueRollout(threads) if mode.startswith("oracle") else None
        self.critic = None
        if mode.startswith("critic"):
            if not critic:
                raise ValueError("critic scoring needs a trained critic: --critic RUN (planner train-critic)")
            from planner_node.models.critic import Critic
            self.critic = Critic(critic, threads=1)
        self._prev: np.ndarray | None = None
        self.continuation_chosen = 0
        self.ticks = 0

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
        self._prev = None

    def plan(self, request: PlanRequest) -> Plan:
        c = self.inner.candidates(request)
        act, score = c.actions, c.scores
        self.ticks += 1
        if self.mode == "critic_q":
            q = self.critic.q_values(request.obs, act[:, 0], request.task)
            best = int(np.argmax(q))
            return Plan(act[best], float(q[best]))
        if self.mode in ("model", "critic"):
            if self.critic is not None and not np.isfinite(c.final_obs).all():
                raise ValueError(f"planner {getattr(self.inner, 'name', self.inner)!r} predicts no states to score "
                                 "with the critic's V; use --score critic_q (Q of each candidate's first action)")
            if self.critic is not None:
                from planner_node.models.critic import score_with_critic
                score = score_with_critic(score, c.final_obs, c.horizon, self.critic, request.task)
            best = int(np.argmax(score))
            return Plan(act[best], float(score[best]))
        if request.sim_state is None:
            raise ValueError("oracle scoring needs the simulator's state (PlanRequest.sim_state)")
        cands = act
        if self.mode == "oracle+continuation" and self._prev is not None:
            cands = np.concatenate([act, self._prev[None]], axis=0)
        true = self.oracle.returns(request.sim_state, cands, request.task, request.command)
        best = int(np.argmax(true))
        if best == len(act):
            self.continuation_chosen += 1
        chosen = cands[best]
        self._prev = np.concatenate([chosen[1:], chosen[-1:]], axis=0)  # shifted one control step
        return Plan(chosen, float(true[best]), info={"model_score": float(score[min(best, len(act) - 1)])})

    def close(self) -> None:
        if self.oracle is not None:
            self.oracle.close()
