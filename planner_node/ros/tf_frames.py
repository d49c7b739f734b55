"""Every body frame of the humanoid as tf2_msgs/msg/TFMessage, for /tf in a recorded MCAP.

Foxglove's 3D panel and RViz read the robot's frames from /tf. The frames come from the same
kinematics the viewer poses geoms with (planner_node.robot.kinematics): each body relative to its
parent, the root body named ``base`` under ``odom`` (as /odom names them).

tf2_msgs has no wheel on PyPI (rclpy cannot publish a type it has no Python module for), so the
message is encoded here as CDR (little endian, XCDR1, as rosbag2 writes it) with its ros2msg
schema, which is all an MCAP needs. Decoders (mcap-ros2-support, rosbags) read it back.
"""
from __future__ import annotations

import struct

import numpy as np

from planner_node.ros.mcap_io import schema_text

TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_DEFINITION = "geometry_msgs/TransformStamped[] transforms\n"
ROOT_BODY, ROOT_FRAME, WORLD_FRAME = "root", "base", "odom"


def tf_schema() -> str:
    return schema_text(TF_TYPE, main=TF_DEFINITION)


class _Cdr:
    """Little-endian CDR with alignment counted from the end of the 4-byte encapsulation header."""

    def __init__(self):
        self.buf = bytearray(b"\x00\x01\x00\x00")  # CDR_LE, options 0

    def _align(self, n: int) -> None:
        self.buf += b"\x00" * (-(len(self.buf) - 4) % n)

    def u32(self, v: int) -> None:
        self._align(4)
        self.buf += struct.pack("<I", v)

    def i32(self, v: int) -> None:
        self._align(4)
        self.buf += struct.pack("<i", v)

    def string(self, s: str) -> None:
        b = s.encode() + b"\x00"
        self.u32(len(b))
        self.buf += b

    def f64s(self, vals) -> None:
        self._align(8)
        self.buf += struct.pack(f"<{len(vals)}d", *vals)


def tf_message_cdr(stamp_ns: int, names: list[str], parents: list[str], trans: np.ndarray, quats_wxyz: np.ndarray) -> bytes:
    """One TFMessage: a TransformStamped per body (``names``[i] in its ``parents``[i] frame)."""
    c = _Cdr()
    c.u32(len(names))
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    rename = {ROOT_BODY: ROOT_FRAME}
    for name, parent, t, q in zip(names, parents, trans, quats_wxyz):
        c.i32(sec)
        c.u32(nsec)
        c.string(rename.get(parent, parent))
        c.string(rename.get(name, name))
        c.f64s([float(t[0]), float(t[1]), float(t[2])])
        c.f64s([float(q[1]), float(q[2]), float(q[3]), float(q[0])])  # ROS order: x, y, z, w
    return bytes(c.buf)
