"""The CMU humanoid (MoCapAct's V2020 position-controlled walker) on a floor, stepped with raw MuJoCo.

dm_control is used only to *build* the MJCF (its walker class rescales the body and turns
motors into filtered position actuators); stepping is raw ``mujoco`` because dm_control's
environment step is ~10x slower. This module owns every MJCF name the project uses.
"""
from __future__ import annotations

import functools
import os
import warnings

import mujoco
import numpy as np

from planner_node import spec

# Extra sensors we add (read by the observation builder and the expert's cost).
END_EFFECTOR_BODIES = ("rradius", "lradius", "rfoot", "lfoot")  # dm_control's order
APPENDAGE_BODIES = END_EFFECTOR_BODIES + ("head",)
FOOT_BODIES = ("lfoot", "rfoot")
SUPPORT_BODIES = ("lfoot", "rfoot", "ltoes", "rtoes")  # ankles and toes span the support area
FLOOR_GEOM = "floor"
TOUCH_SENSORS = ("sensor_touch_lhand", "sensor_touch_lfingers", "sensor_touch_lthumb",
                 "sensor_touch_rhand", "sensor_touch_rfingers", "sensor_touch_rthumb",
                 "sensor_touch_ltoes", "sensor_touch_rtoes", "sensor_touch_rfoot",
                 "sensor_touch_lfoot")
TORQUE_SENSORS = ("sensor_torque_lhumerus", "sensor_torque_rhumerus")
TORQUE_THRESHOLD = 60.0   # dm_control's corruptor: tanh(2 tau / 60)
TOUCH_THRESHOLD = 1e-3    # [N] dm_control's corruptor: binary contact


#: Sensors a planning model drops: the expert's costs never read them, and they cost ~30% of
#: rollout time (the accelerometer alone needs an extra inverse-dynamics pass).
PLANNING_DROPPED_SENSORS = ("accelerometer", "touch", "torque")


def _build_xml(planning: bool = False) -> tuple[str, dict]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glfw warns about a missing DISPLAY on import
        from dm_control.locomotion.walkers import cmu_humanoid

    walker = cmu_humanoid.CMUHumanoidPositionControlledV2020()
    root = walker.mjcf_model
    root.option.timestep = spec.PHYSICS_TIMESTEP_S
    root.worldbody.add("geom", name=FLOOR_GEOM, type="plane", size=[100, 100, 0.1],
                       rgba=[0.55, 0.6, 0.65, 1])
    root.worldbody.add("light", name="top", pos=[0, 0, 6], dir=[0, 0, -1])
    walker.root_body.add("freejoint", name="root")
    # The 4 end-effector framepos sensors already exist (relative to the root body).
    root.sensor.add("framepos", name="head_appendage", objtype="xbody", objname="head",
                    reftype="xbody", refname="root")
    # World-frame quantities for the expert's balance cost (not part of the observation).
    root.sensor.add("subtreecom", name="com_world", body="root")
    root.sensor.add("subtreelinvel", name="com_vel_world", body="root")
    for body in SUPPORT_BODIES + ("head",):
        root.sensor.add("framepos", name=f"{body}_world", objtype="xbody", objname=body)
    if planning:
        for kind in PLANNING_DROPPED_SENSORS:
            for el in list(root.sensor.all_children()):
                if el.tag == kind:
                    el.remove()
        # Looser solver settings: converged enough for 0.45 s predictions, ~20% faster.
        root.option.tolerance = 1e-5
        root.option.iterations = 10
        root.option.ls_iterations = 10
    return root.to_xml_string(), root.get_assets()


@functools.lru_cache(maxsize=2)
def _cached_xml(planning: bool = False) -> tuple[str, dict]:
    return _build_xml(planning)


def model_xml(planning: bool = False) -> str:
    """The compiled-from MJCF text (for the record and for rendering tools)."""
    return _cached_xml(planning)[0]


def load_model(planning: bool = False) -> mujoco.MjModel:
    """A fresh compiled model (each caller may own and modify its copy).

    ``planning=True``: the same dynamics without the sensors only the observation needs
    (accelerometer, touch, torque: zeros in predicted observations) and a looser solver."""
    xml, assets = _cached_xml(planning)
    return mujoco.MjModel.from_xml_string(xml, assets)


class Layout:
    """Index maps from the MJCF into spec order, resolved by *name* once per model."""

    def __init__(self, model: mujoco.MjModel):
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in spec.JOINT_NAMES]
        missing = [n for n, i in zip(spec.JOINT_NAMES, jid) if i < 0]
        if missing:
            raise ValueError(f"MJCF lacks joints {missing}")
        self.qpos_idx = np.array([model.jnt_qposadr[i] for i in jid])
        self.qvel_idx = np.array([model.jnt_dofadr[i] for i in jid])
        aid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in spec.JOINT_NAMES]
        if min(aid) < 0:
            raise ValueError("MJCF lacks an actuator named after a spec joint")
        self.act_idx = np.array([model.actuator_actadr[i] for i in aid])
        self.ctrl_idx = np.array(aid)
        self.joint_range = np.array([model.jnt_range[i] for i in jid])

        def sens(name: str, optional: bool = False) -> np.ndarray | None:
            i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name)
            if i < 0:
                if optional:
                    return None
                raise ValueError(f"MJCF lacks sensor {name!r}")
            a = model.sensor_adr[i]
            return np.arange(a, a + model.sensor_dim[i])

        def cat(names, optional: bool = False):
            parts = [sens(n, optional) for n in names]
            return None if any(p is None for p in parts) else np.concatenate(parts)

        self.veloc = sens("sensor_root_veloc")
        self.gyro = sens("sensor_root_gyro")
        # Absent from planning models (see PLANNING_DROPPED_SENSORS): observed as zeros there.
        self.accel = sens("sensor_root_accel", optional=True)
        self.touch = cat(TOUCH_SENSORS, optional=True)
        self.torque = cat(TORQUE_SENSORS, optional=True)
        self.end_eff = cat([f"{b}_end_effector" for b in END_EFFECTOR_BODIES])
        self.appendages = cat([f"{b}_end_effector" for b in END_EFFECTOR_BODIES] + ["head_appendage"])
        self.com = sens("com_world")
        self.com_vel = sens("com_vel_world")
        self.support_world = cat([f"{b}_world" for b in SUPPORT_BODIES])
        self.head_world = sens("head_world")
        # Geoms whose floor contact does not count as a fall: everything under the feet.
        foot_bodies = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in FOOT_BODIES}
        allowed = set()
        for g in range(model.ngeom):
            b = model.geom_bodyid[g]
            while b > 0:
                if b in foot_bodies:
                    allowed.add(g)
                    break
                b = model.body_parentid[b]
        self.foot_geoms = frozenset(allowed)
        self.floor_geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, FLOOR_GEOM)
        # Position target (normalized ctrl) that gives zero actuator force at joint angle q:
        # gain * a + b0 + b1 * q = 0 for MuJoCo's affine position actuators.
        self._gain = model.actuator_gainprm[aid, 0]
        self._b0 = model.actuator_biasprm[aid, 0]
        self._b1 = model.actuator_biasprm[aid, 1]

    def hold_action(self, joint_pos: np.ndarray) -> np.ndarray:
        """Normalized targets that hold ``joint_pos`` (spec order) with zero force."""
        return np.clip(-(self._b0 + self._b1 * joint_pos) / self._gain, -1.0, 1.0)

    def action_to_joint_pos(self, action: np.ndarray) -> np.ndarray:
        """Joint angle [rad] each normalized target drives to (inverse of hold_action)."""
        return -(self._gain * action + self._b0) / self._b1


def heading_world(quat: np.ndarray) -> np.ndarray:
    """Horizontal unit vector (x, y) of the body's forward axis in the world, per root quat (w,x,y,z)."""
    w, u = quat[..., :1], quat[..., 1:]
    v = np.broadcast_to(spec.BODY_FORWARD, u.shape)
    t = 2.0 * np.cross(u, v)
    f = (v + w * t + np.cross(u, t))[..., :2]
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-9)


def standing_qpos(model: mujoco.MjModel, layout: Layout) -> np.ndarray:
    qpos = model.qpos0.copy()
    qpos[0:3] = spec.STAND_ROOT_POS
    qpos[3:7] = spec.STAND_ROOT_QUAT
    lo, hi = layout.joint_range[:, 0], layout.joint_range[:, 1]
    qpos[layout.qpos_idx] = np.clip(0.0, lo, hi)
    return qpos


def fallen(model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> bool:
    """True when anything but a foot touches the floor (MoCapAct's termination)."""
    for c in data.contact[: data.ncon]:
        g1, g2 = c.geom1, c.geom2
        if g1 == layout.floor_geom and g2 not in layout.foot_geoms:
            return True
        if g2 == layout.floor_geom and g1 not in layout.foot_geoms:
            return True
    return False
