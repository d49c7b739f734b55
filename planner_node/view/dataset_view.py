"""``planner data view STORE/NAME --episode K``: one dataset episode in Rerun, as a run is shown.

A dataset row holds the observation, not the simulator state. The robot is posed from what the
observation has: joint angles, base height and tilt (``world_zaxis``) are observed; the base's
x, y and yaw are dead-reckoned from the velocimeter and the gyro (root frame), starting at the
origin facing +x. So the pose is exact up to that drift in the horizontal plane.

Marked on the timeline: rewards (series), terminals (a fall), timeouts, the pushes the recipe
scheduled (``push_every``: the env pushes before step t when t > 0 and t % push_every == 0), and
label rows (actions that are an expert's labels, not executed). Where a label round recorded the
expert's plans, they are drawn as plan paths.
"""
from __future__ import annotations

import mujoco
import numpy as np

from planner_node import spec
from planner_node.dataset import Dataset, DatasetError
from planner_node.robot.kinematics import Kinematics, heading_velocity
from planner_node.view.rerun_log import PLAN_BODIES, RunLog, open_recording


def _obs(obs: np.ndarray, block: str) -> np.ndarray:
    return obs[..., spec.OBS_SLICES[block]]


def _tilt(z_body: np.ndarray) -> np.ndarray:
    """The rotation (3, 3), body to world, with no yaw of its own, that takes the observed world
    z axis (expressed in the body frame) to the world's z: the shortest arc."""
    a = z_body / max(np.linalg.norm(z_body), 1e-9)
    b = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # upside down: any half turn about a horizontal axis
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _rz(psi: float) -> np.ndarray:
    c, s = np.cos(psi), np.sin(psi)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _heading_angle(R: np.ndarray) -> float:
    h = R @ spec.BODY_FORWARD
    return float(np.arctan2(h[1], h[0]))


def base_poses(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base positions (T, 3) [m] and quaternions (T, 4) (w, x, y, z) for an episode's
    observations (T, 224): height and tilt observed; the heading and x, y dead-reckoned (the
    gyro and velocimeter, root frame, integrated by the trapezoid rule), starting at the origin
    facing +x. Each step the integrated attitude keeps only its heading: the tilt is observed."""
    dt = spec.CONTROL_PERIOD_S
    T = len(obs)
    pos, quat = np.zeros((T, 3)), np.zeros((T, 4))
    tilt = _tilt(_obs(obs[0], "world_zaxis"))
    R = _rz(-_heading_angle(tilt)) @ tilt  # start facing +x
    xy = np.zeros(2)
    for k in range(T):
        if k:
            w = 0.5 * (_obs(obs[k - 1], "sensors_gyro") + _obs(obs[k], "sensors_gyro")) * dt  # body frame [rad]
            step = np.empty(4)
            mujoco.mju_axisAngle2Quat(step, w / max(np.linalg.norm(w), 1e-12), float(np.linalg.norm(w)))
            dR = np.empty(9)
            mujoco.mju_quat2Mat(dR, step)
            R_pred = R @ dR.reshape(3, 3)
            tilt = _tilt(_obs(obs[k], "world_zaxis"))
            R_next = _rz(_heading_angle(R_pred) - _heading_angle(tilt)) @ tilt
            v = 0.5 * (R @ _obs(obs[k - 1], "sensors_velocimeter") + R_next @ _obs(obs[k], "sensors_velocimeter"))
            xy = xy + dt * v[:2]
            R = R_next
        pos[k] = (xy[0], xy[1], float(_obs(obs[k], "body_height")[0]))
        mujoco.mju_mat2Quat(quat[k], R.reshape(-1))
    return pos, quat


def view_episode(path: str, episode: int, rrd: str | None = None, view: str | None = None) -> dict:
    """Log one episode; returns what was logged (rows, events) for the CLI's summary."""
    ds = Dataset(path)
    eps = ds.episodes()
    if not 0 <= episode < len(eps):
        raise DatasetError(f"{ds.path}: --episode {episode} is out of range: it has {len(eps)} episodes (0..{len(eps) - 1})")
    rows = eps[episode]
    a = {k: v[rows] for k, v in ds.arrays.items()}
    labels = ds.label_rows()[rows]
    push_every = int(ds.push_every_rows()[rows[0]])
    recipe = str(ds.recipe_rows()[rows[0]])
    plans = ds.plans[rows] if ds.plans is not None else None
    plan_steps = ds.plan_steps[rows]
    kin = Kinematics()
    rec, viewer = open_recording("planner_node_dataset", rrd=rrd, view=view)
    log = RunLog(rec, kin.model)
    task = ds.tasks[int(a["task_ids"][0])]
    pos, quat = base_poses(a["observations"])
    events = {"push": 0, "terminal": 0, "timeout": 0, "label": int(labels.sum())}
    log.at(0)
    log.event("label" if labels.any() else "reset",
              f"dataset {ds.path.name} episode {episode} ({len(rows)} rows): task {task}, recipe {recipe or '-'}, "
              f"{int(labels.sum())} label rows, push_every {push_every or 'never'}")
    for k in range(len(rows)):
        log.at(k)
        obs = a["observations"][k]
        joints = _obs(obs, "joints_pos")
        kin.pose(kin.qpos_from(joints, pos[k], quat[k]))
        log.robot_pose(*kin.geom_poses(), pos[k])
        log.scalar("data/reward", a["rewards"][k])
        log.scalar("data/label_row", float(labels[k]))
        achieved = heading_velocity(quat[k], _obs(obs, "sensors_velocimeter"), _obs(obs, "sensors_gyro"))
        log.velocity(a["commands"][k], achieved)
        log.joints(kin.layout.action_to_joint_pos(a["actions"][k]), joints)
        log.scalar("joints/base_height_m", pos[k][2])
        if push_every and k > 0 and k % push_every == 0:
            log.event("push", f"scheduled push (push_every {push_every}) before row {k}")
            events["push"] += 1
        if a["terminals"][k]:
            log.event("terminal", f"fell after row {k}")
            events["terminal"] += 1
        if a["timeouts"][k]:
            log.event("timeout", f"cut by the step limit after row {k}")
            events["timeout"] += 1
        if plans is not None and plan_steps[k]:
            path = kin.layout.action_to_joint_pos(plans[k, : plan_steps[k]])
            log.plan_paths(kin.body_paths(PLAN_BODIES, path, pos[k], quat[k]))
    log.close()
    return {"dataset": str(ds.path), "episode": episode, "rows": len(rows), "task": task, "recipe": recipe,
            "poses": log.poses_logged, "events": events, "viewer": viewer}
