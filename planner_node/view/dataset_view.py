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

import numpy as np

from planner_node import spec
from planner_node.dataset import Dataset, DatasetError
from planner_node.robot.kinematics import Kinematics, dead_reckon, heading_velocity
from planner_node.view.rerun_log import PLAN_BODIES, RunLog, open_recording


def _obs(obs: np.ndarray, block: str) -> np.ndarray:
    return obs[..., spec.OBS_SLICES[block]]


def base_poses(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base positions (T, 3) [m] and quaternions (T, 4) (w, x, y, z) for an episode's observations
    (T, 224), starting at the origin facing +x (see planner_node.robot.kinematics.dead_reckon)."""
    return dead_reckon(_obs(obs, "body_height")[:, 0], _obs(obs, "world_zaxis"), _obs(obs, "sensors_velocimeter"),
                       _obs(obs, "sensors_gyro"))


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
    plans = ds.plans_at(rows)
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
