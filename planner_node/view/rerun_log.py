"""What the viewer logs to Rerun, and where: one place for entity paths, shapes and timelines.

ROS-free (``planner view`` feeds it from topics, ``planner data view`` from a dataset). Rerun is an
optional dependency (the ``view`` extra): import this module only where a view is asked for.

Entities (world frame = /odom's ``odom``, z up, metres):
- ``world/floor``; ``world/robot/<geom>``: every MJCF geom, its shape static, its pose
  (Transform3D = MuJoCo's geom_xpos / geom_xmat) once per simulation step;
- ``world/base_path``: where the base has been; ``world/plan/<body>``: where the plan takes the
  feet and hands over its horizon (joint-space plan, base held where it is); ``world/plan/base``:
  where a kind that predicts states expects the base to go, at the height it predicts;
- ``safety/...``, ``tracking/...``, ``timing/ms/...``, ``timing/count/...``,
  ``joints/<name>/{commanded,measured}``, ``joints/base_height_m``: series (from /diagnostics at 1 Hz,
  from the states and commands each step);
- ``events``: pushes, falls, resets, hot swaps, clock resets (TextLog).
Timelines: ``step`` (simulation step: sim time / control period) and ``sim_time`` [s].
"""
from __future__ import annotations

import numpy as np

from planner_node import spec

try:
    import rerun as rr
except ImportError as e:  # pragma: no cover - exercised by test_view's missing-extra check
    raise ImportError("the viewer needs rerun-sdk: pip install 'planner_node[view]' "
                      "(or pip install rerun-sdk==0.41.0)") from e

import mujoco

#: Joints whose commanded and measured angles are plotted (hips and knees, both sides).
PLOTTED_JOINTS = ("lfemurrx", "ltibiarx", "rfemurrx", "rtibiarx")
#: Bodies whose planned paths are drawn.
PLAN_BODIES = ("lfoot", "rfoot", "lradius", "rradius")
BASE_PATH_LEN = 600  # steps of base trail kept in view (18 s)
_PLAN_COLORS = {"lfoot": (30, 144, 255), "rfoot": (255, 99, 71), "lradius": (100, 180, 255), "rradius": (255, 160, 140)}
EVENT_LEVELS = {"push": "WARN", "fall": "ERROR", "reset": "INFO", "swap": "INFO", "clock_reset": "WARN",
                "label": "DEBUG", "terminal": "ERROR"}


def geom_entity(model: mujoco.MjModel, g: int) -> str:
    name = model.geom(g).name or f"geom_{g}"
    return f"world/robot/{rr.escape_entity_path_part(name)}"


def step_of(sim_time_s: float) -> int:
    """The simulation step a state stamped ``sim_time_s`` belongs to (the bridge steps one
    control period at a time from t = 0; resets keep its time running)."""
    return int(round(sim_time_s / spec.CONTROL_PERIOD_S))


class RunLog:
    """Logs one run (live or from a file) to a Rerun RecordingStream."""

    def __init__(self, rec: "rr.RecordingStream", model: mujoco.MjModel):
        self.rec = rec
        self.model = model
        self.geoms = [g for g in range(model.ngeom)
                      if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE and model.geom_rgba[g, 3] > 0]
        self.entities = [geom_entity(model, g) for g in self.geoms]
        self.poses_logged = 0
        self._base_path: list[np.ndarray] = []
        self._log_static()

    # -- time -------------------------------------------------------------------------------
    def at(self, step: int, sim_time_s: float | None = None) -> None:
        self.rec.set_time("step", sequence=int(step))
        self.rec.set_time("sim_time", duration=float(step * spec.CONTROL_PERIOD_S if sim_time_s is None else sim_time_s))

    # -- the robot --------------------------------------------------------------------------
    def _log_static(self) -> None:
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self.rec.log("world/floor", rr.Boxes3D(half_sizes=[[5.0, 5.0, 0.002]], centers=[[0, 0, -0.002]],
                                               colors=[[140, 150, 160, 255]], fill_mode="solid"), static=True)
        for g, ent in zip(self.geoms, self.entities):
            self.rec.log(ent, self._shape(g), static=True)

    def _shape(self, g: int):
        m = self.model
        t, size = int(m.geom_type[g]), m.geom_size[g]
        color = [np.clip(np.asarray(m.geom_rgba[g]) * 255, 0, 255).astype(np.uint8)]
        G = mujoco.mjtGeom
        if t == G.mjGEOM_CAPSULE:  # MuJoCo: centred, half-length size[1] along local z; Rerun: from the origin up +z
            return rr.Capsules3D(lengths=[2 * size[1]], radii=[size[0]], translations=[[0, 0, -size[1]]],
                                 colors=color, fill_mode="solid")
        if t == G.mjGEOM_SPHERE:
            return rr.Ellipsoids3D(half_sizes=[[size[0]] * 3], colors=color, fill_mode="solid")
        if t == G.mjGEOM_ELLIPSOID:
            return rr.Ellipsoids3D(half_sizes=[size], colors=color, fill_mode="solid")
        if t == G.mjGEOM_BOX:
            return rr.Boxes3D(half_sizes=[size], colors=color, fill_mode="solid")
        if t == G.mjGEOM_CYLINDER:
            return rr.Cylinders3D(lengths=[2 * size[1]], radii=[size[0]], colors=color, fill_mode="solid")
        if t == G.mjGEOM_MESH:  # vertices are in the geom's frame once MuJoCo has compiled the model
            mid = int(m.geom_dataid[g])
            v0, nv = int(m.mesh_vertadr[mid]), int(m.mesh_vertnum[mid])
            f0, nf = int(m.mesh_faceadr[mid]), int(m.mesh_facenum[mid])
            return rr.Mesh3D(vertex_positions=m.mesh_vert[v0:v0 + nv], triangle_indices=m.mesh_face[f0:f0 + nf],
                             albedo_factor=color[0])
        raise ValueError(f"geom {m.geom(g).name!r}: type {t} has no Rerun shape here")

    def robot_pose(self, geom_xpos: np.ndarray, geom_xmat: np.ndarray, base_pos: np.ndarray) -> None:
        """Every geom's world pose at the current time: MuJoCo's geom_xpos (ngeom, 3), geom_xmat
        (ngeom, 3, 3)."""
        for g, ent in zip(self.geoms, self.entities):
            self.rec.log(ent, rr.Transform3D(translation=geom_xpos[g], mat3x3=geom_xmat[g]))
        self.poses_logged += 1
        self._base_path.append(np.asarray(base_pos, float).copy())
        del self._base_path[:-BASE_PATH_LEN]
        if len(self._base_path) >= 2:
            self.rec.log("world/base_path", rr.LineStrips3D([np.asarray(self._base_path)], colors=[[250, 200, 40]],
                                                            radii=[0.01]))

    # -- intent -----------------------------------------------------------------------------
    def plan_paths(self, paths: dict[str, np.ndarray]) -> None:
        """Where the plan takes each body over its horizon: {body: (H, 3) world positions}."""
        for body, p in paths.items():
            self.rec.log(f"world/plan/{body}", rr.LineStrips3D([p], colors=[_PLAN_COLORS.get(body, (200, 200, 200))],
                                                               radii=[0.008]))
            self.rec.log(f"world/plan/{body}/end", rr.Points3D([p[-1]], radii=[0.025],
                                                              colors=[_PLAN_COLORS.get(body, (200, 200, 200))]))

    def plan_base(self, path: np.ndarray) -> None:
        """Where the planner predicts the base goes (T, 3) [m, world], at the body height it predicts,
        with a stalk to the floor at each step (the heights over the horizon at a glance)."""
        self.rec.log("world/plan/base", rr.LineStrips3D([path], colors=[[60, 200, 120]], radii=[0.012]))
        stalks = [[p, (p[0], p[1], 0.0)] for p in path]
        self.rec.log("world/plan/base/heights", rr.LineStrips3D(stalks, colors=[[60, 200, 120, 90]], radii=[0.003]))

    def plan_candidates(self, paths: list[np.ndarray]) -> None:
        """The best other candidates' predicted base paths (K of (T, 3)), faded."""
        self.rec.log("world/plan/candidates", rr.LineStrips3D(paths, colors=[[150, 150, 150, 70]], radii=[0.006]))

    # -- series -----------------------------------------------------------------------------
    def scalar(self, path: str, value: float | None) -> None:
        if value is not None and np.isfinite(value):
            self.rec.log(path, rr.Scalars(float(value)))

    def joints(self, commanded: np.ndarray | None, measured: np.ndarray | None) -> None:
        for name in PLOTTED_JOINTS:
            j = spec.JOINT_NAMES.index(name)
            if commanded is not None:
                self.scalar(f"joints/{name}/commanded", commanded[j])
            if measured is not None:
                self.scalar(f"joints/{name}/measured", measured[j])

    def velocity(self, commanded: np.ndarray | None, achieved: np.ndarray | None) -> None:
        """(vx, vy [m/s], wz [rad/s]) in the heading frame, commanded (/cmd_vel) and achieved."""
        for k, axis in enumerate(("vx", "vy", "wz")):
            if commanded is not None:
                self.scalar(f"tracking/{axis}/commanded", commanded[k])
            if achieved is not None:
                self.scalar(f"tracking/{axis}/achieved", achieved[k])

    def event(self, kind: str, text: str) -> None:
        self.rec.log("events", rr.TextLog(f"{kind}: {text}", level=EVENT_LEVELS.get(kind, "INFO")))
        self.rec.log(f"events/{kind}", rr.Scalars(1.0))  # a mark on the timeline per event kind

    def close(self) -> None:
        """Flush and close the sinks (an .rrd gets its footer)."""
        self.rec.flush()
        self.rec.disconnect()


def blueprint():
    """The default layout: the robot and its plan large, seen from its front left; beside it the
    velocity tracking, safety, timing and joint plots, and the event log."""
    import rerun.blueprint as rrb
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(origin="world", name="robot, base path and plan",
                              eye_controls=rrb.EyeControls3D(position=(3.2, -3.2, 2.2), look_target=(0.3, 0.0, 0.7),
                                                            eye_up=(0, 0, 1))),
            rrb.Vertical(
                rrb.TimeSeriesView(origin="tracking", name="velocity: commanded vs achieved"),
                rrb.TimeSeriesView(origin="safety", name="safety: filter G, interventions, fallbacks, guard"),
                rrb.TimeSeriesView(origin="timing/ms", name="timing [ms]: plan latency, plan age, command gap"),
                rrb.TimeSeriesView(origin="timing/count", name="commands by source, deadline misses, late commands"),
                rrb.TimeSeriesView(origin="joints", name="hips and knees, commanded vs measured [rad]; base height [m]"),
                rrb.TextLogView(origin="events", name="events"),
            ),
            column_shares=[3, 2],
        ),
        rrb.TimePanel(timeline="step"),
        collapse_panels=True,
    )


class Viewer:
    """The viewer from the rerun-sdk wheel (its ``rerun`` CLI) as a process of its own, bound to
    localhost: ``native`` opens a window (needs a display), ``web`` serves the web viewer over HTTP.
    Both also host the gRPC proxy this process logs to. ``close()`` stops it."""

    def __init__(self, kind: str, web_port: int, grpc_port: int):
        import shutil
        import subprocess
        import sys
        from pathlib import Path
        exe = Path(sys.executable).with_name("rerun")
        exe = str(exe) if exe.exists() else shutil.which("rerun")
        if exe is None:
            raise ImportError("the viewer needs rerun-sdk's `rerun` CLI: pip install 'planner_node[view]'")
        cmd = [exe, "--bind", "127.0.0.1", "--port", str(grpc_port), "--server-memory-limit", "1GiB"]
        if kind == "web":
            cmd += ["--serve-web", "--web-viewer-port", str(web_port)]
        self.kind = kind
        self.grpc_url = f"rerun+http://127.0.0.1:{grpc_port}/proxy"
        self.url = (f"http://127.0.0.1:{web_port}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{grpc_port}%2Fproxy"
                    if kind == "web" else None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_listening(grpc_port)

    def _wait_listening(self, port: int, timeout_s: float = 20.0) -> None:
        import socket
        import time
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.kind} viewer exited at start (exit code {self.proc.returncode}); "
                                   f"is port {port} in use?")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the {self.kind} viewer did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")

    def close(self) -> None:
        import os
        import signal
        if self.kind == "web" and self.proc.poll() is None:  # a native window stays open for the user
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001 - it must go
                os.killpg(self.proc.pid, signal.SIGKILL)


def open_recording(app: str, rrd: str | None = None, view: str | None = None, web_port: int = 9090,
                   grpc_port: int = 9876) -> tuple["rr.RecordingStream", "Viewer | None"]:
    """A RecordingStream to a file (``rrd``), a viewer (``view``: native | web, started here as its
    own process on localhost), or both. Returns (stream, the viewer or None)."""
    if view not in (None, "", "none", "native", "web"):
        raise ValueError(f"view: unknown {view!r}; valid: native, web")
    if not rrd and view in (None, "", "none"):
        raise ValueError("nothing to log to: give an .rrd path, a viewer, or both")
    rec = rr.RecordingStream(application_id=app)
    sinks, viewer = [], None
    if rrd:
        sinks.append(rr.FileSink(str(rrd)))
    if view in ("native", "web"):
        viewer = Viewer(view, web_port, grpc_port)
        sinks.append(rr.GrpcSink(viewer.grpc_url))
    rec.set_sinks(*sinks, default_blueprint=blueprint())
    return rec, viewer
