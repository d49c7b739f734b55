"""The humanoid's interface as data: one source of truth for sim, models, export and node.

Everything that crosses a boundary (datasets, checkpoints, bundles, ROS messages) is
laid out by this module, and records :data:`SPEC_HASH` so a mismatch is caught at load.

Frames: the CMU humanoid's root body frame has +z forward, +y up and +x to the left
(CMU mocap is y-up). ``world_zaxis`` is the world's z axis expressed in that frame, so
an upright robot reads (0, 1, 0).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

#: The 56 actuated joints in canonical order (the MJCF's actuators are alphabetical,
#: which is also MoCapAct's actuator order). Everything is mapped *by name* to this.
JOINT_NAMES: tuple[str, ...] = (
    "headrx", "headry", "headrz", "lclaviclery", "lclaviclerz", "lfemurrx", "lfemurry",
    "lfemurrz", "lfingersrx", "lfootrx", "lfootrz", "lhandrx", "lhandrz", "lhumerusrx",
    "lhumerusry", "lhumerusrz", "lowerbackrx", "lowerbackry", "lowerbackrz", "lowerneckrx",
    "lowerneckry", "lowerneckrz", "lradiusrx", "lthumbrx", "lthumbrz", "ltibiarx", "ltoesrx",
    "lwristry", "rclaviclery", "rclaviclerz", "rfemurrx", "rfemurry", "rfemurrz",
    "rfingersrx", "rfootrx", "rfootrz", "rhandrx", "rhandrz", "rhumerusrx", "rhumerusry",
    "rhumerusrz", "rradiusrx", "rthumbrx", "rthumbrz", "rtibiarx", "rtoesrx", "rwristry",
    "thoraxrx", "thoraxry", "thoraxrz", "upperbackrx", "upperbackry", "upperbackrz",
    "upperneckrx", "upperneckry", "upperneckrz",
)
NUM_JOINTS = len(JOINT_NAMES)
#: Joints that carry balance (legs and trunk); the expert explores these hardest.
BALANCE_JOINTS: tuple[str, ...] = tuple(
    n for n in JOINT_NAMES if any(k in n for k in ("femur", "tibia", "foot", "toes", "back", "thorax")))
ACTION_DIM = NUM_JOINTS  # normalized position targets in [-1, 1], one per joint
ACTION_LOW, ACTION_HIGH = -1.0, 1.0

#: H-GAP's 224-D proprioceptive observation: named blocks in this (alphabetical) order.
OBS_BLOCKS: tuple[tuple[str, int], ...] = (
    ("actuator_activation", 56),   # filtered actuator state, same scale as actions
    ("appendages_pos", 15),        # hands, feet, head minus root, root frame [m]
    ("body_height", 1),            # root z above the floor [m]
    ("end_effectors_pos", 12),     # hands, feet minus root, root frame [m]
    ("joints_pos", 56),            # [rad], JOINT_NAMES order
    ("joints_vel", 56),            # [rad/s], JOINT_NAMES order
    ("sensors_accelerometer", 3),  # root site frame [m/s^2]
    ("sensors_gyro", 3),           # root site frame [rad/s]
    ("sensors_torque", 6),         # tanh(2 tau / 60), humerus force-torque sites
    ("sensors_touch", 10),         # binary contact (> 1e-3 N)
    ("sensors_velocimeter", 3),    # root site frame [m/s]
    ("world_zaxis", 3),            # world z in root frame
)
OBS_DIM = sum(n for _, n in OBS_BLOCKS)


def _block_slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, size in OBS_BLOCKS:
        out[name] = slice(start, start + size)
        start += size
    return out


OBS_SLICES: dict[str, slice] = _block_slices()

CONTROL_PERIOD_S = 0.03   # MoCapAct's 33 Hz
PHYSICS_TIMESTEP_S = 0.005
SUBSTEPS = round(CONTROL_PERIOD_S / PHYSICS_TIMESTEP_S)

#: Root-frame axes (see module docstring).
BODY_FORWARD = np.array([0.0, 0.0, 1.0])
BODY_LEFT = np.array([1.0, 0.0, 0.0])
BODY_UP = np.array([0.0, 1.0, 0.0])

#: Standing root pose: position [m] and dm_control's upright quaternion (w, x, y, z).
STAND_ROOT_POS = (0.0, 0.0, 1.15)
STAND_ROOT_QUAT = tuple((np.array([0.859, 1.0, 1.0, 0.859]) / np.linalg.norm([0.859, 1.0, 1.0, 0.859])).tolist())


def obs_block(obs: np.ndarray, name: str) -> np.ndarray:
    """View of one named block of (a batch of) observations, last axis = OBS_DIM."""
    if name not in OBS_SLICES:
        raise KeyError(f"unknown observation block {name!r}; valid: {sorted(OBS_SLICES)}")
    return obs[..., OBS_SLICES[name]]


@dataclass(frozen=True)
class Spec:
    """The interface a dataset, model or bundle was made for (recorded, then checked)."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    obs_blocks: tuple[tuple[str, int], ...] = OBS_BLOCKS
    action_dim: int = ACTION_DIM
    control_period_s: float = CONTROL_PERIOD_S
    physics_timestep_s: float = PHYSICS_TIMESTEP_S

    def to_dict(self) -> dict:
        return {
            "joint_names": list(self.joint_names),
            "obs_blocks": [[n, s] for n, s in self.obs_blocks],
            "action_dim": self.action_dim,
            "control_period_s": self.control_period_s,
            "physics_timestep_s": self.physics_timestep_s,
        }

    @property
    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


SPEC = Spec()
SPEC_HASH = SPEC.hash


def check_spec_hash(found: str, where: str) -> None:
    """Refuse an artefact made for another robot interface."""
    if found != SPEC_HASH:
        raise ValueError(f"{where}: spec hash {found!r} does not match this build's {SPEC_HASH!r} "
                         "(joint order, observation layout or control period differ)")
