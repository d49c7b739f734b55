"""Per-episode drift traces: what changes between an episode's start and its fall.

A robot that stands for 30 s and then falls with nothing touching it has drifted somewhere:
its feet slid, its base yawed or sank, a joint crept toward its limit, or its actuators'
activations wandered from the targets that hold the pose. ``DriftTrace`` records those
quantities at every control step (from the simulator's state, not the observation, so the
numbers are in world units), and ``summary`` names the largest changes. ``plot`` draws the
traces of a whole evaluation into one PNG.
"""
from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import FOOT_BODIES, SUPPORT_BODIES

#: Steps averaged at the start and the end of an episode when a change is measured: the noise of
#: single steps (the reset's velocity noise, a step's sway) would otherwise look like drift.
WINDOW = 30
#: How many joints the summary names (those that moved most, start window to end window).
TOP_JOINTS = 5


def windows(n: int) -> tuple[slice, slice]:
    """The start and end windows of an n-step trace (each ``WINDOW`` steps, fewer when short). The
    fall itself is fast: the end is taken a window before the last step, so a change is the drift
    that led up to the fall, not the fall."""
    w = max(1, min(WINDOW, n // 4))
    return slice(0, w), (slice(n - 2 * w, n - w) if n > 3 * w else slice(n - w, n))


def _yaw(quat_wxyz: np.ndarray) -> float:
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class DriftTrace:
    """Call ``record(env)`` after every step; arrays per step in world units (m, rad)."""

    def __init__(self, model: mujoco.MjModel):
        assert SUPPORT_BODIES[:len(FOOT_BODIES)] == FOOT_BODIES  # the sensors' order, read below
        self.rows: dict[str, list] = {"base_height": [], "base_yaw": [], "base_xy": [], "feet_xy": [],
                                      "joints": [], "activation_error": []}

    def record(self, env) -> None:
        d, lay = env.data, env.layout
        self.rows["base_height"].append(float(d.qpos[2]))
        self.rows["base_yaw"].append(_yaw(d.qpos[3:7]))
        self.rows["base_xy"].append(d.qpos[0:2].copy())
        # the feet's world frame positions (sensors of the support bodies, SUPPORT_BODIES order)
        self.rows["feet_xy"].append(d.sensordata[lay.support_world].reshape(-1, 3)[:len(FOOT_BODIES), :2].copy())
        self.rows["joints"].append(d.qpos[lay.qpos_idx].copy())
        # The actuators' filtered targets against the targets that would hold the joints where
        # they are now: a persistent gap is a posture the controller keeps pushing on.
        self.rows["activation_error"].append(
            float(np.abs(d.act[lay.act_idx] - lay.hold_action(d.qpos[lay.qpos_idx])).mean()))

    def arrays(self) -> dict[str, np.ndarray]:
        a = {k: np.asarray(v) for k, v in self.rows.items()}
        if len(a["base_height"]):
            a["base_yaw"] = np.unwrap(a["base_yaw"])
            a["feet_slide"] = np.linalg.norm(a["feet_xy"] - a["feet_xy"][0], axis=-1)  # (T, 2) [m]
            a["base_travel"] = np.linalg.norm(a["base_xy"] - a["base_xy"][0], axis=-1)
            # feet apart, horizontal [m]: legs that splay widen it while the base stays put
            a["stance_width"] = np.linalg.norm(a["feet_xy"][:, 0] - a["feet_xy"][:, 1], axis=-1)
        return a

    def summary(self, joint_range: np.ndarray) -> dict:
        """Start-to-end changes (each end a mean over ``WINDOW`` steps); JSON-ready."""
        a = self.arrays()
        n = len(a["base_height"])
        if n == 0:
            return {}
        start, end = windows(n)

        def change(x):
            return float(np.mean(x[end], axis=0).mean() - np.mean(x[start], axis=0).mean()) if x.ndim == 1 \
                else (np.mean(x[end], axis=0) - np.mean(x[start], axis=0))

        joint_delta = change(a["joints"])
        lo, hi = joint_range.T
        margin_end = np.minimum(np.mean(a["joints"][end], 0) - lo, hi - np.mean(a["joints"][end], 0))
        order = np.argsort(-np.abs(joint_delta))[:TOP_JOINTS]
        return {
            "steps": n - 1,     # control steps (the trace holds the start state and one per step)
            "base_height_change_m": change(a["base_height"]),
            "base_yaw_change_rad": change(a["base_yaw"]),
            "base_travel_m": float(np.mean(a["base_travel"][end])),
            "feet_slide_m": [float(v) for v in np.mean(a["feet_slide"][end], axis=0)],   # (left, right)
            "stance_width_change_m": change(a["stance_width"]),
            "activation_error_start": float(np.mean(a["activation_error"][start])),
            "activation_error_end": float(np.mean(a["activation_error"][end])),
            "joints_moved_most": [
                {"joint": spec.JOINT_NAMES[i], "change_rad": float(joint_delta[i]),
                 "margin_to_limit_rad": float(margin_end[i])} for i in order],
        }


def plot(traces: list[tuple[str, dict[str, np.ndarray]]], out: str | Path, title: str = "") -> Path:
    """One PNG: base height, base yaw, feet slide, base travel, the joints that moved most in
    the first trace, and the activation error, every episode a line (a fall ends the line)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from planner_node.atomic import atomic_path

    fig, ax = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    dt = spec.CONTROL_PERIOD_S
    # the joints that moved most up to a window before the fall, in the longest episode
    longest = max((a for _, a in traces), key=lambda a: len(a.get("base_height", [])), default={})
    joint_ids = None
    if len(longest.get("base_height", [])):
        j = longest["joints"]
        start, end = windows(len(j))
        joint_ids = np.argsort(-np.abs(j[end].mean(0) - j[start].mean(0)))[:3]
    for label, a in traces:
        if not len(a.get("base_height", [])):
            continue
        t = np.arange(len(a["base_height"])) * dt
        ax[0, 0].plot(t, a["base_height"], lw=0.8, label=label)
        ax[0, 1].plot(t, np.degrees(a["base_yaw"] - a["base_yaw"][0]), lw=0.8)
        ax[1, 0].plot(t, a["feet_slide"].max(axis=1) * 100, lw=0.8)
        ax[1, 1].plot(t, a["base_travel"] * 100, lw=0.8)
        ax[1, 1].plot(t, (a["stance_width"] - a["stance_width"][0]) * 100, lw=0.8, ls="--",
                      color=ax[1, 1].lines[-1].get_color())
        for k, i in enumerate(joint_ids):
            ax[2, 0].plot(t, np.degrees(a["joints"][:, i] - a["joints"][0, i]), lw=0.8,
                          ls=("-", "--", ":")[k], color=ax[0, 0].lines[-1].get_color())
        ax[2, 1].plot(t, a["activation_error"], lw=0.8)
    ax[0, 0].set_ylabel("base height [m]")
    ax[0, 1].set_ylabel("base yaw change [deg]")
    ax[1, 0].set_ylabel("largest foot slide [cm]")
    ax[1, 1].set_ylabel("travel (-), feet apart Δ (--) [cm]")
    names = ", ".join(spec.JOINT_NAMES[i] for i in (joint_ids if joint_ids is not None else []))
    ax[2, 0].set_ylabel("joint change [deg]")
    ax[2, 0].set_title(f"moved most (-, --, :): {names}", fontsize=9)
    ax[2, 1].set_ylabel("|activation - hold target|")
    for a_ in ax[2]:
        a_.set_xlabel("time [s]")
    if len(traces) <= 10:
        ax[0, 0].legend(fontsize=7)
    fig.suptitle(title or "drift traces")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out
