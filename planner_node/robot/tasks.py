"""Tasks as pure functions of observations (numpy, vectorized over leading axes).

The simulator, the expert, the learned planners and the evaluator all score with this
code, so a planner's predicted observations are judged exactly like real ones.
Rewards are per control step. Every task is gated by ``healthy`` (upright and high
enough), so a fallen robot earns ~0 whatever it does.

Velocities are taken in the *heading frame*: the root's forward and left axes projected
onto the horizontal plane (using ``world_zaxis``), so tasks do not depend on torso pitch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from planner_node import spec
from planner_node.spec import obs_block

#: world_zaxis at the standing pose (the root frame is pitched ~8.7 deg there).
UPRIGHT_ZAXIS = np.array([0.0, 0.98856, -0.15083])
STAND_HEIGHT = 1.10      # [m] root height when standing settled
FALLEN_HEIGHT = 0.75     # [m] root height at which healthy reaches 0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def heading_frame(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, left, up) unit vectors in the root frame; forward/left are horizontal."""
    up = _unit(obs_block(obs, "world_zaxis"))
    fwd = spec.BODY_FORWARD - np.sum(spec.BODY_FORWARD * up, axis=-1, keepdims=True) * up
    fwd = _unit(fwd)
    left = np.cross(up, fwd)
    return fwd, left, up


def kinematics(obs: np.ndarray) -> dict[str, np.ndarray]:
    """Heading-frame velocities [m/s] and angular rates [rad/s] from the observation."""
    fwd, left, up = heading_frame(obs)
    v = obs_block(obs, "sensors_velocimeter")
    w = obs_block(obs, "sensors_gyro")
    dot = lambda a, b: np.sum(a * b, axis=-1)  # noqa: E731
    return {"v_fwd": dot(v, fwd), "v_left": dot(v, left), "v_up": dot(v, up),
            "roll_rate": dot(w, fwd), "pitch_rate": dot(w, left), "yaw_rate": dot(w, up)}


#: Tracking is judged on ~1 s moving averages [control steps]: a humanoid's root sways ~1 m/s
#: within each stride, so a user's "tracking" is the stride-averaged velocity, not the sway.
TRACK_WINDOW = 33


def tracking_rmse(velocities: np.ndarray, command) -> float:
    """RMS error of the ~1 s moving averages of per-step velocities (T, k) against the command
    (k,), summed over the k components (NaN with no steps)."""
    v = np.asarray(velocities, float).reshape(len(velocities), -1)
    k = min(TRACK_WINDOW, len(v))
    if k == 0:
        return float("nan")
    box = np.ones(k) / k
    avg = np.stack([np.convolve(v[:, i], box, mode="valid") for i in range(v.shape[1])], axis=1)
    return float(np.sqrt(np.mean(np.sum((avg - np.asarray(command, float)) ** 2, axis=1))))


def healthy(obs: np.ndarray) -> np.ndarray:
    """In [0, 1]: 1 when upright at standing height, 0 when fallen."""
    h = obs_block(obs, "body_height")[..., 0]
    up = _unit(obs_block(obs, "world_zaxis"))
    upright = np.clip((np.sum(up * UPRIGHT_ZAXIS, axis=-1) - 0.7) / 0.25, 0.0, 1.0)
    tall = np.clip((h - FALLEN_HEIGHT) / (STAND_HEIGHT - 0.1 - FALLEN_HEIGHT), 0.0, 1.0)
    return upright * tall


def _stand(obs, cmd):
    k = kinematics(obs)
    still = np.exp(-(k["v_fwd"] ** 2 + k["v_left"] ** 2) / 0.25)
    return healthy(obs) * (0.3 + 0.7 * still)


def _objective(key: str, sign: float = 1.0, absolute: bool = False):
    def reward(obs, cmd):
        k = kinematics(obs)
        x = np.hypot(k["v_fwd"], k["v_left"]) if key == "speed" else k[key]
        x = np.abs(x) if absolute else sign * x
        return healthy(obs) * (1.0 + x)
    return reward


def _track(obs, cmd):
    """Velocity tracking of a commanded twist (vx fwd [m/s], vy left [m/s], wz yaw [rad/s])."""
    k = kinematics(obs)
    c = np.broadcast_to(np.asarray(cmd, dtype=np.float64), (3,))
    err = ((k["v_fwd"] - c[0]) ** 2 + (k["v_left"] - c[1]) ** 2) / 0.25 + (k["yaw_rate"] - c[2]) ** 2
    return healthy(obs) * (0.3 + 0.7 * np.exp(-err))


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    doc: str
    default_command: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def reward(self, obs: np.ndarray, command=None) -> np.ndarray:
        cmd = self.default_command if command is None else command
        return self.fn(np.asarray(obs), cmd)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("stand", _stand, "stay upright at standing height, horizontal speed ~0"),
    Task("speed", _objective("speed"), "horizontal speed in any direction"),
    Task("forward", _objective("v_fwd"), "velocity along the heading"),
    Task("backward", _objective("v_fwd", -1.0), "velocity against the heading"),
    Task("shift_left", _objective("v_left"), "velocity to the robot's left"),
    Task("jump", _objective("v_up"), "upward velocity of the root"),
    Task("rotate_x", _objective("roll_rate"), "roll rate about the heading axis"),
    Task("rotate_y", _objective("pitch_rate"), "pitch rate about the left axis"),
    Task("rotate_z", _objective("yaw_rate"), "yaw rate about the world vertical"),
    Task("track", _track, "track the commanded twist (vx, vy, wz), e.g. from /cmd_vel",
         default_command=(0.5, 0.0, 0.0)),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]
