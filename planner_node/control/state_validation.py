"""What a state message must satisfy before the controller may use it, ROS-free.

Every rejection names its topic and a reason code; ``REJECT_REASONS`` lists every code per
topic so ``/diagnostics`` can publish all counters, zeros included. The checks run in this
order: shape and names, finiteness, physical bounds, then the stamp. A message is accepted
or rejected as a whole, and a rejected message changes nothing that later messages are
judged against (the stamp gate's reference moves only on acceptance).

Bounds (``StateLimits``) are physical plausibility, not control limits. Measured on the
simulated humanoid (random actions, 1 m/s pushes, falls; 12 episodes x 250 steps): joints
overshoot their MJCF limits by at most 0.19 rad (limits are soft constraints), joint speeds
reach 22 rad/s, base speed 6.2 m/s and base rotation 15 rad/s. The defaults sit well above
that, and far below what a corrupted message or a broken estimator produces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner_node.control.state_estimator import StateError

#: topic -> every reason code a message on it can be rejected for.
REJECT_REASONS: dict[str, tuple[str, ...]] = {
    "joint_states": ("length_mismatch", "missing_joint", "non_finite", "position_limit", "velocity_bound",
                     "stamp_future", "stamp_past", "stamp_backwards"),
    "odom": ("non_finite", "quaternion", "position_bound", "twist_bound",
             "stamp_future", "stamp_past", "stamp_backwards"),
    "cmd_vel": ("non_finite", "bound"),
    # a swap refused: by the bundle gate (runtime/bundle_gate.py REASONS), when loading it, or
    # because its worker crashed three times
    "bundle_path": ("invalid", "load_failed", "unsigned", "unknown_key", "bad_signature", "malformed_signature",
                    "rollback", "outside_bundle_root", "crashed"),
    # a run-time parameter change refused: lock_parameters, or a static parameter
    "parameters": ("locked", "static"),
}


class Rejected(StateError):
    """A message is unusable: ``topic`` and ``reason`` (a code from REJECT_REASONS) say why."""

    def __init__(self, topic: str, reason: str, detail: str):
        assert reason in REJECT_REASONS[topic], (topic, reason)
        super().__init__(f"/{topic}: {detail}")
        self.topic, self.reason = topic, reason


@dataclass(frozen=True)
class StateLimits:
    """Plausibility bounds of a measured state (units in the names); see the module docstring."""

    joint_limit_margin_rad: float = 0.35     # beyond the MJCF joint range
    joint_velocity_max: float = 100.0        # [rad/s]
    base_position_max_m: float = 1000.0      # |odom position| in the odom frame
    base_linear_speed_max: float = 20.0      # [m/s] per axis, base frame
    base_angular_speed_max: float = 50.0     # [rad/s] per axis, base frame
    quaternion_norm_tolerance: float = 1e-3  # | |q| - 1 |
    cmd_linear_max: float = 2.0              # [m/s] /cmd_vel, per axis
    cmd_angular_max: float = 3.0             # [rad/s] /cmd_vel yaw rate

    def __post_init__(self):
        for name, v in self.__dict__.items():
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"StateLimits.{name}: must be a positive finite number, got {v}")


def check_joints(pos: np.ndarray, vel: np.ndarray, joint_range: np.ndarray, names, limits: StateLimits) -> None:
    """Positions (56,) [rad] and velocities (56,) [rad/s] in spec order; ``joint_range`` (56, 2)."""
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
        raise Rejected("joint_states", "non_finite", "NaN or Inf in position/velocity")
    m = limits.joint_limit_margin_rad
    over = np.maximum(joint_range[:, 0] - pos, pos - joint_range[:, 1])
    if np.any(over > m):
        i = int(np.argmax(over))
        raise Rejected("joint_states", "position_limit",
                       f"joint {names[i]} at {pos[i]:.3f} rad is {over[i]:.3f} rad outside its range "
                       f"[{joint_range[i, 0]:.3f}, {joint_range[i, 1]:.3f}] (margin {m} rad)")
    if np.any(np.abs(vel) > limits.joint_velocity_max):
        i = int(np.argmax(np.abs(vel)))
        raise Rejected("joint_states", "velocity_bound",
                       f"joint {names[i]} velocity {vel[i]:.3g} rad/s exceeds {limits.joint_velocity_max} rad/s")


def check_odometry(pos: np.ndarray, quat: np.ndarray, lin: np.ndarray, ang: np.ndarray, limits: StateLimits) -> None:
    """Base position [m] (odom frame), quaternion (w, x, y, z), twist in the base frame."""
    if not all(np.all(np.isfinite(a)) for a in (pos, quat, lin, ang)):
        raise Rejected("odom", "non_finite", "NaN or Inf in pose or twist")
    n = float(np.linalg.norm(quat))
    if abs(n - 1.0) > limits.quaternion_norm_tolerance:
        raise Rejected("odom", "quaternion", f"orientation is not a unit quaternion (norm {n:.6f}, "
                                              f"tolerance {limits.quaternion_norm_tolerance})")
    if np.linalg.norm(pos) > limits.base_position_max_m:
        raise Rejected("odom", "position_bound", f"position {np.linalg.norm(pos):.3g} m from the origin exceeds "
                                                  f"{limits.base_position_max_m} m")
    if np.abs(lin).max() > limits.base_linear_speed_max or np.abs(ang).max() > limits.base_angular_speed_max:
        raise Rejected("odom", "twist_bound", f"twist ({np.abs(lin).max():.3g} m/s, {np.abs(ang).max():.3g} rad/s) "
                                               f"exceeds ({limits.base_linear_speed_max} m/s, "
                                               f"{limits.base_angular_speed_max} rad/s)")


def check_command(v: tuple[float, float, float], limits: StateLimits) -> None:
    """/cmd_vel (vx [m/s], vy [m/s], wz [rad/s]) in the heading frame."""
    if not all(np.isfinite(v)):
        raise Rejected("cmd_vel", "non_finite", "NaN or Inf")
    if max(abs(v[0]), abs(v[1])) > limits.cmd_linear_max or abs(v[2]) > limits.cmd_angular_max:
        raise Rejected("cmd_vel", "bound", f"({v[0]:.3g}, {v[1]:.3g}, {v[2]:.3g}) exceeds "
                                           f"({limits.cmd_linear_max} m/s, {limits.cmd_angular_max} rad/s)")


class StampGate:
    """Judges each message's stamp against the node's clock (ROS time: wall or ``/clock``).

    Accepted: ``now - max_age_s <= stamp <= now + future_tolerance_s`` and not older than the
    last accepted stamp of the same topic. Only an accepted stamp moves that reference, so one
    message stamped an hour ahead is rejected and blocks nothing. If the clock itself goes back
    (a restarted simulator's ``/clock`` starts again from zero, an NTP step), the references
    are older than any stamp the new time source can produce: they are dropped, and counted.
    """

    def __init__(self, future_tolerance_s: float = 0.1, max_age_s: float = 0.5):
        for name, v in (("stamp_future_tolerance_s", future_tolerance_s), ("stamp_max_age_s", max_age_s)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, got {v}")
        self.future_tolerance_s, self.max_age_s = future_tolerance_s, max_age_s
        self.last: dict[str, float] = {}
        self.clock_resets = 0

    def check(self, topic: str, stamp: float, now: float) -> None:
        """Raise ``Rejected`` or record ``stamp`` as the topic's latest accepted one."""
        if self.last and now < max(self.last.values()) - self.future_tolerance_s:
            self.last.clear()  # the time source went back: judge the new one on its own
            self.clock_resets += 1
        if not np.isfinite(stamp):
            raise Rejected(topic, "stamp_future", "stamp is not a finite time")
        if stamp > now + self.future_tolerance_s:
            raise Rejected(topic, "stamp_future", f"stamp {stamp:.3f} s is {stamp - now:.3f} s ahead of the clock "
                                                  f"(tolerance {self.future_tolerance_s} s)")
        if stamp < now - self.max_age_s:
            raise Rejected(topic, "stamp_past", f"stamp {stamp:.3f} s is {now - stamp:.3f} s behind the clock "
                                                f"(max age {self.max_age_s} s)")
        last = self.last.get(topic)
        if last is not None and stamp < last:
            raise Rejected(topic, "stamp_backwards", f"stamp went backwards ({stamp:.3f} < {last:.3f})")
        self.last[topic] = stamp


#: A stamp this far from the node's clock is another time source, not a late message [s].
CLOCK_MISMATCH_S = 3600.0


def clock_mismatch_hint(reason: str, stamp: float, now: float, use_sim_time: bool, clock_publishers: int) -> str | None:
    """The likely cause when every state is rejected for its stamp: the states and the node run
    on different clocks. Simulation time next to a node on the system clock (a /clock publisher
    exists), or system time next to a node waiting on a /clock nobody publishes. None otherwise."""
    if not (np.isfinite(stamp) and np.isfinite(now)):
        return None
    if reason == "stamp_past" and not use_sim_time and clock_publishers > 0 and now - stamp > CLOCK_MISMATCH_S:
        return (f"the states carry simulation time (stamp {stamp:.3f} s, {now - stamp:.0f} s behind this node's "
                f"system clock) and /clock has {clock_publishers} publisher(s): start this node with "
                f"use_sim_time:=true")
    if reason == "stamp_future" and use_sim_time and clock_publishers == 0 and stamp - now > CLOCK_MISMATCH_S:
        return (f"this node runs on /clock (use_sim_time: true), nothing publishes /clock, and the states carry "
                f"system time (stamp {stamp:.0f} s): start this node with use_sim_time:=false, or start the "
                f"clock's publisher")
    return None
