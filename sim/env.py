"""Humanoid environment: seeded reset, 30 ms control steps, pushes, fall termination."""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import Layout, fallen, load_model, standing_qpos
from planner_node.robot.observation import build_observation


@dataclass(frozen=True)
class EnvConfig:
    """Reset noise and perturbations. Pushes are root velocity impulses [m/s]."""

    joint_noise_rad: float = 0.02
    vel_noise: float = 0.05           # std of initial joint/root velocity noise
    push_every: int = 0               # control steps between pushes; 0 = never
    push_speed: float = 0.25          # horizontal velocity change of the root [m/s]

    def __post_init__(self):
        for name in ("joint_noise_rad", "vel_noise", "push_speed"):
            if getattr(self, name) < 0:
                raise ValueError(f"EnvConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.push_every < 0:
            raise ValueError(f"EnvConfig.push_every must be >= 0, got {self.push_every}")


class HumanoidEnv:
    """The CMU humanoid at the spec's control period, on raw MuJoCo."""

    def __init__(self, config: EnvConfig = EnvConfig()):
        self.config = config
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.layout = Layout(self.model)
        self._stand_qpos = standing_qpos(self.model, self.layout)
        self.zero_action = self.layout.hold_action(self._stand_qpos[self.layout.qpos_idx])
        self.rng = np.random.default_rng(0)
        self.t = 0
        self.pushes = 0  # since construction (resets keep counting): the viewer marks each

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.rng = np.random.default_rng(seed)
        m, d, cfg = self.model, self.data, self.config
        mujoco.mj_resetData(m, d)
        qpos = self._stand_qpos.copy()
        lo, hi = self.layout.joint_range.T
        qj = qpos[self.layout.qpos_idx] + self.rng.normal(0, cfg.joint_noise_rad, spec.NUM_JOINTS)
        qpos[self.layout.qpos_idx] = np.clip(qj, lo, hi)
        d.qpos[:] = qpos
        d.qvel[:] = self.rng.normal(0, cfg.vel_noise, m.nv)
        # Start the actuator filters at the targets that hold this pose (no start transient).
        d.act[self.layout.act_idx] = self.layout.hold_action(qpos[self.layout.qpos_idx])
        d.ctrl[self.layout.ctrl_idx] = d.act[self.layout.act_idx]
        mujoco.mj_forward(m, d)
        self.t = 0
        return self.observation()

    def observation(self) -> np.ndarray:
        d = self.data
        return build_observation(self.layout, d.qpos, d.qvel, d.act, d.sensordata)

    def get_state(self) -> np.ndarray:
        state = np.empty(mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
        mujoco.mj_getState(self.model, self.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        return state

    def set_state(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(self.model, self.data)

    def push(self, direction_rad: float | None = None, speed: float | None = None) -> None:
        """Horizontal velocity impulse on the floating base (a shove)."""
        ang = self.rng.uniform(0, 2 * np.pi) if direction_rad is None else direction_rad
        v = self.config.push_speed if speed is None else speed
        self.pushes += 1
        self.data.qvel[0] += v * np.cos(ang)
        self.data.qvel[1] += v * np.sin(ang)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """Apply normalized targets for one control period; returns (obs, fallen)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (spec.ACTION_DIM,):
            raise ValueError(f"action must have shape ({spec.ACTION_DIM},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action contains NaN or Inf")
        self.data.ctrl[self.layout.ctrl_idx] = np.clip(a, spec.ACTION_LOW, spec.ACTION_HIGH)
        cfg = self.config
        if cfg.push_every and self.t > 0 and self.t % cfg.push_every == 0:
            self.push()
        mujoco.mj_step(self.model, self.data, nstep=spec.SUBSTEPS)
        # mj_step leaves sensordata computed *before* its last integration (5 ms stale);
        # recompute at the current state, as dm_control does, so obs == f(state) exactly.
        mujoco.mj_forward(self.model, self.data)
        self.t += 1
        return self.observation(), fallen(self.model, self.data, self.layout)
