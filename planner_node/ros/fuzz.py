"""Malformed state messages of every class we know, made from a valid pair (a ROS shell helper).

Used by the fuzz test (``test/test_fuzz.py``) and the flood bench (``bench/fuzz_flood.py``): each
class names the ``/diagnostics`` counter that must count it. Messages are corrupted copies of
the latest valid ``/joint_states`` and ``/odom``, stamped against the current clock, so every
field but the broken one is plausible.
"""
from __future__ import annotations

import copy

import numpy as np
from geometry_msgs.msg import Twist

from planner_node import spec


def _stamp(msg, t: float) -> None:
    ns = int(round(t * 1e9))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000


def _js(valid, now, **kw):
    m = copy.deepcopy(valid)
    _stamp(m, now)
    pos, vel = list(m.position), list(m.velocity)
    for k, v in kw.items():
        if k == "pos":
            i, x = v
            pos[i] = x
        elif k == "vel":
            i, x = v
            vel[i] = x
    m.position, m.velocity = pos, vel
    return m


def _od(valid, now, pos=None, quat=None, lin=None, ang=None):
    m = copy.deepcopy(valid)
    _stamp(m, now)
    if pos is not None:
        p = m.pose.pose.position
        p.x, p.y, p.z = pos
    if quat is not None:
        q = m.pose.pose.orientation
        q.w, q.x, q.y, q.z = quat
    if lin is not None:
        t = m.twist.twist.linear
        t.x, t.y, t.z = lin
    if ang is not None:
        t = m.twist.twist.angular
        t.x, t.y, t.z = ang
    return m


def _short(valid, now):
    m = _js(valid, now)
    m.position = list(m.position)[:-1]
    return m


def _missing(valid, now):
    m = _js(valid, now)
    m.name = list(m.name)[:-1] + ["not_a_joint"]
    return m


def _restamped(valid, t):
    m = copy.deepcopy(valid)
    _stamp(m, t)
    return m


#: class -> (topic, counter in /diagnostics, maker(valid_js, valid_od, now_s, rng) -> message)
CLASSES = {
    "js_nan_position": ("/joint_states", "rejected_joint_states_non_finite",
                        lambda j, o, t, r: _js(j, t, pos=(int(r.integers(56)), float("nan")))),
    "js_inf_velocity": ("/joint_states", "rejected_joint_states_non_finite",
                        lambda j, o, t, r: _js(j, t, vel=(int(r.integers(56)), float("-inf")))),
    "js_huge_position": ("/joint_states", "rejected_joint_states_position_limit",
                         lambda j, o, t, r: _js(j, t, pos=(int(r.integers(56)), 1e300))),
    "js_beyond_limit": ("/joint_states", "rejected_joint_states_position_limit",
                        lambda j, o, t, r: _js(j, t, pos=(int(r.integers(56)), float(r.choice([-1, 1]) * 4.0)))),
    "js_huge_velocity": ("/joint_states", "rejected_joint_states_velocity_bound",
                         lambda j, o, t, r: _js(j, t, vel=(int(r.integers(56)), float(r.choice([-1, 1]) * 1e6)))),
    "js_short": ("/joint_states", "rejected_joint_states_length_mismatch", lambda j, o, t, r: _short(j, t)),
    "js_missing_joint": ("/joint_states", "rejected_joint_states_missing_joint", lambda j, o, t, r: _missing(j, t)),
    "js_stamp_hour_ahead": ("/joint_states", "rejected_joint_states_stamp_future",
                            lambda j, o, t, r: _restamped(j, t + 3600.0)),
    "js_stamp_ancient": ("/joint_states", "rejected_joint_states_stamp_past",
                         lambda j, o, t, r: _restamped(j, max(0.0, t - 3600.0))),
    "js_stamp_backwards": ("/joint_states", "rejected_joint_states_stamp_backwards",
                           lambda j, o, t, r: _restamped(j, max(0.0, t - 0.2))),
    "odom_nan_position": ("/odom", "rejected_odom_non_finite",
                          lambda j, o, t, r: _od(o, t, pos=(float("nan"), 0.0, 1.0))),
    "odom_inf_twist": ("/odom", "rejected_odom_non_finite",
                       lambda j, o, t, r: _od(o, t, ang=(0.0, float("inf"), 0.0))),
    "odom_zero_quaternion": ("/odom", "rejected_odom_quaternion",
                             lambda j, o, t, r: _od(o, t, quat=(0.0, 0.0, 0.0, 0.0))),
    "odom_scaled_quaternion": ("/odom", "rejected_odom_quaternion",
                               lambda j, o, t, r: _od(o, t, quat=tuple(1.2 * np.array(spec.STAND_ROOT_QUAT)))),
    "odom_far_position": ("/odom", "rejected_odom_position_bound",
                          lambda j, o, t, r: _od(o, t, pos=(1e9, -1e9, 1e300))),
    "odom_huge_twist": ("/odom", "rejected_odom_twist_bound",
                        lambda j, o, t, r: _od(o, t, lin=(500.0, 0.0, 0.0))),
    "odom_stamp_hour_ahead": ("/odom", "rejected_odom_stamp_future", lambda j, o, t, r: _restamped(o, t + 3600.0)),
    "odom_stamp_ancient": ("/odom", "rejected_odom_stamp_past", lambda j, o, t, r: _restamped(o, max(0.0, t - 3600.0))),
    "odom_stamp_backwards": ("/odom", "rejected_odom_stamp_backwards",
                             lambda j, o, t, r: _restamped(o, max(0.0, t - 0.2))),
    "cmd_vel_nan": ("/cmd_vel", "rejected_cmd_vel_non_finite",
                    lambda j, o, t, r: Twist(linear=type(Twist().linear)(x=float("nan")))),
    "cmd_vel_huge": ("/cmd_vel", "rejected_cmd_vel_bound",
                     lambda j, o, t, r: Twist(angular=type(Twist().angular)(z=1e9))),
}


def malformed(kind: str, valid_js, valid_od, now_s: float, rng: np.random.Generator):
    """(topic, message) of class ``kind``."""
    topic, _, make = CLASSES[kind]
    return topic, make(valid_js, valid_od, now_s, rng)
