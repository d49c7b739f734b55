"""``planner demo``: bring up sim + planner with a bundle, run a scripted sequence, report.

Sequence (lockstep sim, so the result does not depend on this machine's speed): stand, walk
forward at two commanded speeds (task ``track`` driven by /cmd_vel), turn in place, and stand
through pushes. Everything is indexed by simulation step on the bridge: the bridge halts at each
segment end and push step (``max_steps``), the driver switches the task or pushes, then raises
the limit; falls reset the robot on the step they happen (``reset_on_fall``). So two runs of one
commit print the same table, and each segment runs exactly its configured steps.

Prints a per-segment table (return, falls, velocity tracking error, plan latency p50/p99,
deadline misses, state->command latency over ROS 2), writes a PNG of commanded vs achieved
velocity and tick latency, records the run as MCAP, and renders an MP4 from the recorded states
when headless rendering works.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner_node.spec import CONTROL_PERIOD_S

#: (name, task, /cmd_vel (vx, vy, wz), control steps, push at these steps of the segment)
SEGMENTS = (
    ("stand", "stand", (0.0, 0.0, 0.0), 100, ()),
    ("walk 0.3 m/s", "track", (0.3, 0.0, 0.0), 100, ()),
    ("walk 0.6 m/s", "track", (0.6, 0.0, 0.0), 100, ()),
    ("turn 0.5 rad/s", "track", (0.0, 0.0, 0.5), 100, ()),
    ("stand + pushes", "stand", (0.0, 0.0, 0.0), 100, (30, 70)),
)


@dataclass
class Sample:
    segment: int
    t_sim: float
    v_fwd: float
    yaw_rate: float
    reward: float
    height: float


def run_demo(bundle: str, out_dir: str | Path, domain: int = 47, backend: str = "onnxruntime",
             segments=SEGMENTS, video: bool = True, planner: str = "bundle", safety_filter: str = "auto",
             rrd: str | Path | None = None) -> dict:
    """``planner``: bundle (the learned planner in ``bundle``) or mppi (ground-truth sampling MPC
    on the simulator's own model, through the same node: what a capable planner does here).
    ``safety_filter``: auto (the bundle's Lyapunov-density filter when it carries one), none, ldm.
    ``rrd``: also run ``planner view`` and record the run to this Rerun file."""
    import rclpy
    from geometry_msgs.msg import Twist
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_srvs.srv import Trigger

    from planner_node.ros.bringup import Bringup
    from planner_node.ros.mcap_io import McapRecorder
    from planner_node.ros.convert import joint_state_arrays, odometry_arrays
    from planner_node.robot.tasks import get_task, kinematics
    from planner_node.control.state_estimator import MeasuredState, StateEstimator
    from planner_node.robot.kinematics import Kinematics
    from planner_node.ros.tf_frames import TF_TYPE, tf_message_cdr, tf_schema

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = Node("demo_driver", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    rec = McapRecorder(out / "demo.mcap")
    est = StateEstimator()
    frames, tf_def = Kinematics(), tf_schema()
    state = {"joint": None, "odom": None, "t_state": None, "step": -1}
    lat_ros, diags, bridge_diags, samples, qpos_log = [], [], [], [], []
    seg_idx = [0]
    view_status: dict[str, str] = {}

    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    def now_ns():
        return time.time_ns()

    def step_of(msg) -> int:
        """The simulation step a state belongs to (the bridge stamps sim time; resets keep it)."""
        return round((msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec) / CONTROL_PERIOD_S)

    def on_js(msg):
        rec.write("/joint_states", msg, now_ns())
        state["joint"], state["t_state"] = msg, time.perf_counter()
        sample()

    def on_odom(msg):
        rec.write("/odom", msg, now_ns())
        state["odom"] = msg
        sample()

    def sample():
        """Once both halves of a step's state are in: one sample per simulation step (the
        bridge re-publishes its first state until the first command)."""
        if state["joint"] is None or state["odom"] is None:
            return
        k = step_of(state["odom"])
        if step_of(state["joint"]) != k or k <= state["step"]:
            return
        pos, vel = joint_state_arrays(state["joint"])
        bp, bq, bl, ba = odometry_arrays(state["odom"])
        frames.pose(frames.qpos_from(pos, bp, bq))  # /tf: every body frame, from the same kinematics as the viewer
        stamp = state["odom"].header.stamp
        rec.write_cdr("/tf", TF_TYPE, tf_def, tf_message_cdr(stamp.sec * 1_000_000_000 + stamp.nanosec,
                                                             *frames.body_frames()), now_ns())
        if k == 0:  # the initial state, before any command: not part of a segment
            state["step"] = 0
            return
        state["step"] = k
        obs = est.observe(MeasuredState(0.0, pos, vel, bp, bq, bl, ba))
        name, task, cmd, _, _ = segments[seg_idx[0]]
        kin = kinematics(obs)
        samples.append(Sample(seg_idx[0], k * CONTROL_PERIOD_S, float(kin["v_fwd"]), float(kin["yaw_rate"]),
                              float(get_task(task).reward(obs, cmd)), float(bp[2])))
        qpos_log.append(np.concatenate([bp, bq, pos]))

    def on_cmd(msg):
        rec.write("/humanoid/joint_commands", msg, now_ns())
        est.commanded(est.positions_to_action(np.asarray(msg.data)))
        if state["t_state"] is not None:
            lat_ros.append((time.perf_counter() - state["t_state"]) * 1e3)
            state["t_state"] = None

    def on_diag(msg):
        rec.write("/diagnostics", msg, now_ns())
        for st in msg.status:
            if st.name == "planner_node":
                diags.append({kv.key: kv.value for kv in st.values})
            elif st.name == "sim_bridge":
                bridge_diags.append({kv.key: kv.value for kv in st.values})
            elif st.name == "planner_view":
                view_status.update({kv.key: kv.value for kv in st.values})

    # Deep queues: lockstep steps as fast as the planner answers, and a busy driver (or the viewer
    # beside it on 2 cores) must not lose a step's state (a lost half drops that step's sample).
    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(JointState, "/joint_states", on_js, qos)
    node.create_subscription(Odometry, "/odom", on_odom, qos)
    node.create_subscription(Float64MultiArray, "/humanoid/joint_commands", on_cmd, qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    pub_twist = node.create_publisher(Twist, "/cmd_vel", qos)
    set_planner = node.create_client(SetParameters, "/planner/set_parameters")
    set_bridge = node.create_client(SetParameters, "/sim_bridge/set_parameters")
    push = node.create_client(Trigger, "/sim_bridge/push")

    def spin_until(cond, timeout):
        end = time.time() + timeout
        while time.time() < end and not cond():
            ex.spin_once(timeout_sec=0.02)
        return cond()

    def call(cli, req):
        fut = cli.call_async(req)
        if not spin_until(fut.done, 30):
            raise RuntimeError(f"no answer from {cli.srv_name} in 30 s; logs in {out}")
        return fut.result()

    def set_param(cli, name, value):
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, str):
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(value))
        res = call(cli, SetParameters.Request(parameters=[Parameter(name=name, value=pv)])).results[0]
        if not res.successful:
            raise RuntimeError(f"{cli.srv_name}: {name}: {res.reason}")

    # Halt points: each push step and each segment end, as absolute simulation steps.
    stops, start = [], 0
    for i, (_, _, _, steps, pushes) in enumerate(segments):
        stops += [(start + p, i, "push") for p in sorted(pushes) if 0 < p < steps] + [(start + steps, i, "end")]
        start += steps
    values = {"bundle": bundle, "backend": backend, "lockstep": "true", "task": segments[0][1], "planner": planner}
    # The bridge holds at step 0 until this driver hears it (else a segment could run unseen).
    extra = {"sim_bridge": {"lockstep_timeout_s": 30.0, "max_steps": stops[0][0], "reset_on_fall": True,
                            "hold": True}}
    if planner == "mppi":
        extra["planner"] = {"mppi_samples": 32, "mppi_threads": 2}
    if safety_filter == "auto":
        safety_filter = "none"
        if planner == "bundle":
            from planner_node.ros.default_bundle import default_bundle_path
            from planner_node.runtime.bundle import load_bundle
            sf = load_bundle(bundle or default_bundle_path(), check_graphs=False).manifest["safety_filter"]
            safety_filter = sf["name"] if sf else "none"
    extra.setdefault("planner", {})["safety_filter"] = safety_filter
    falls = [0] * len(segments)
    t0 = time.time()
    view = ["--rrd", str(rrd)] if rrd else None

    def viewing() -> bool:  # the viewer has drawn the held first state (else its recording would miss steps)
        return view is None or view_status.get("poses", "0") != "0"

    with Bringup(values, extra=extra, log_dir=out, view=view) as b:
        if not spin_until(lambda: (set_planner.service_is_ready() and set_bridge.service_is_ready()
                                   and push.service_is_ready() and state["step"] == 0 and viewing())
                          or not all(b.alive().values()), 120) or not all(b.alive().values()):
            from planner_node.ros.bringup import exit_reason, log_tail
            dead = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
            why = "; ".join(f"{n} exited ({exit_reason(rc)}):\n{log_tail(out / (n + '.log'))}" for n, rc in dead.items())
            raise RuntimeError(f"nodes did not come up ({why or 'not ready in 120 s'}); logs in {out}")
        falls_before = 0
        for n, (stop, i, kind) in enumerate(stops):
            if n == 0 or stops[n - 1][2] == "end":  # a segment starts: its task and command
                _, task, cmd, _, _ = segments[i]
                seg_idx[0] = i
                tw = Twist()
                tw.linear.x, tw.linear.y, tw.angular.z = cmd
                pub_twist.publish(tw)
                spin_until(lambda: False, 0.2)  # /cmd_vel reaches the planner before the sim resumes
                set_param(set_planner, "task", task)
                if n > 0:
                    set_param(set_bridge, "max_steps", stop)
                else:
                    set_param(set_bridge, "hold", False)
            elif n > 0:
                set_param(set_bridge, "max_steps", stop)
            last = (state["step"], time.time())
            while state["step"] < stop and all(b.alive().values()):
                ex.spin_once(timeout_sec=0.02)
                if state["step"] != last[0]:
                    last = (state["step"], time.time())
                elif time.time() - last[1] > 60:
                    raise RuntimeError(f"the simulation stopped at step {state['step']} before {stop} "
                                       f"(bridge: {bridge_diags[-1] if bridge_diags else 'no diagnostics'}); "
                                       f"logs in {out}")
            if not all(b.alive().values()):
                raise RuntimeError(f"a node died; logs in {out}: {b.alive()}")
            if kind == "push":
                call(push, Trigger.Request())
            else:  # the bridge's fall counter at this (halted) step
                spin_until(lambda s=stop: bridge_diags and bridge_diags[-1].get("steps") == str(s), 5)
                total = int(bridge_diags[-1].get("falls", 0)) if bridge_diags else falls_before
                falls[i], falls_before = total - falls_before, total
        spin_until(lambda: False, 1.5)  # last diagnostics
    rec.close()
    ex.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    wall = time.time() - t0
    return _report(out, segments, samples, falls, lat_ros, diags, np.asarray(qpos_log), wall, video)


def tracks(v_fwd: float, yaw_rate: float, cmd) -> str:
    """'yes' when a segment's mean achieves at least half of each commanded rate (forward, yaw),
    'NO' when it does not, '-' for a segment that commands no motion: visible at a glance."""
    wanted = [(got, want) for got, want in ((v_fwd, cmd[0]), (yaw_rate, cmd[2])) if abs(want) > 1e-9]
    if not wanted:
        return "-"
    return "yes" if all(got / want >= 0.5 for got, want in wanted) else "NO"


def tracking_rmse(v_fwd: np.ndarray, yaw_rate: np.ndarray, cmd) -> float:
    """RMS error of the ~1 s moving averages of forward velocity [m/s] and yaw rate [rad/s]
    against the command (vx, vy, wz): what a user calls tracking, not the stride's sway."""
    from planner_node.robot.tasks import tracking_rmse as windowed
    return windowed(np.stack([np.asarray(v_fwd, float), np.asarray(yaw_rate, float)], axis=1), (cmd[0], cmd[2]))


def _report(out, segments, samples, falls, lat_ros, diags, qpos_log, wall, video) -> dict:
    last = diags[-1] if diags else {}
    rows = []
    for i, (name, task, cmd, steps, _) in enumerate(segments):
        s = [x for x in samples if x.segment == i]
        v = np.array([x.v_fwd for x in s]) if s else np.zeros(1)
        w = np.array([x.yaw_rate for x in s]) if s else np.zeros(1)
        err = tracking_rmse(v, w, cmd)
        rows.append({"segment": name, "task": task, "steps": len(s), "return": float(sum(x.reward for x in s)),
                     "falls": falls[i], "track_rmse": err, "mean_v_fwd": float(v.mean()), "mean_yaw_rate": float(w.mean()),
                     "cmd_v_fwd": float(cmd[0]), "cmd_yaw_rate": float(cmd[2]),
                     "tracks": tracks(float(v.mean()), float(w.mean()), cmd)})
    lat = np.asarray(lat_ros) if lat_ros else np.zeros(1)
    summary = {"segments": rows, "plan_latency_p50_ms": float(last.get("latency_p50_ms", "nan")),
               "plan_latency_p99_ms": float(last.get("latency_p99_ms", "nan")),
               "deadline_misses": int(last.get("deadline_misses", 0)), "fallbacks": int(last.get("fallbacks", 0)),
               "wall_overruns": int(last.get("wall_overruns", 0)),
               "state_to_command_p50_ms": float(np.percentile(lat, 50)),
               "state_to_command_p99_ms": float(np.percentile(lat, 99)), "wall_s": wall,
               "active_bundle": last.get("active_bundle"), "safety_filter": last.get("safety_filter", "none"),
               "filter_interventions": int(last.get("filter_interventions", 0))}
    print(f"{'segment':<16}{'task':<7}{'steps':>6}{'return':>9}{'falls':>6}{'v_fwd cmd/got':>15}{'yaw cmd/got':>13}"
          f"{'track rmse':>11}{'tracks':>8}")
    for r in rows:
        print(f"{r['segment']:<16}{r['task']:<7}{r['steps']:>6}{r['return']:>9.1f}{r['falls']:>6}"
              f"{r['cmd_v_fwd']:>9.2f}/{r['mean_v_fwd']:<5.2f}{r['cmd_yaw_rate']:>7.2f}/{r['mean_yaw_rate']:<5.2f}"
              f"{r['track_rmse']:>11.2f}{r['tracks']:>8}")
    print(f"plan latency p50 {summary['plan_latency_p50_ms']:.1f} ms, p99 {summary['plan_latency_p99_ms']:.1f} ms; "
          f"deadline misses {summary['deadline_misses']} (wall-clock overruns {summary['wall_overruns']}, "
          f"lockstep: the sim waits); state->command over ROS 2 p50 "
          f"{summary['state_to_command_p50_ms']:.1f} ms, p99 {summary['state_to_command_p99_ms']:.1f} ms; "
          f"wall {wall:.0f} s; safety filter {summary['safety_filter']} ({summary['filter_interventions']} interventions)")
    _plot(out / "demo.png", segments, samples, lat_ros)
    from planner_node.atomic import write_json
    write_json(out / "demo.json", summary)
    print(f"wrote {out}/demo.json, {out}/demo.png, {out}/demo.mcap (with /tf)")
    if video and len(qpos_log):
        try:
            _render(out / "demo.mp4", qpos_log)
            print(f"wrote {out}/demo.mp4")
        except Exception as e:  # noqa: BLE001 - rendering is optional
            print(f"no MP4: {e}")
    return summary


def _plot(path, segments, samples, lat_ros) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = np.array([s.t_sim for s in samples])
    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=False)
    cmd_v = np.array([segments[s.segment][2][0] for s in samples])
    cmd_w = np.array([segments[s.segment][2][2] for s in samples])
    ax[0].plot(t, cmd_v, "k--", label="commanded vx")
    ax[0].plot(t, [s.v_fwd for s in samples], label="achieved v_fwd")
    ax[0].set_ylabel("m/s")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, cmd_w, "k--", label="commanded wz")
    ax[1].plot(t, [s.yaw_rate for s in samples], label="achieved yaw rate")
    ax[1].set_ylabel("rad/s")
    ax[1].legend(loc="upper left")
    ax[2].plot(lat_ros, ".", ms=2)
    ax[2].set_ylabel("state->command [ms]")
    ax[2].set_xlabel("tick")
    for a in ax[:2]:
        start = 0
        for name, _, _, steps, _ in segments:
            a.axvline(start * 0.03, color="0.8", lw=0.8)
            a.text(start * 0.03, a.get_ylim()[1], name, fontsize=7, va="top")
            start += steps
        a.set_xlabel("sim time [s]")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _render(path, qpos_log) -> None:
    import mujoco

    from planner_node.robot.humanoid import Layout, load_model
    from planner_node.sim.render import VideoRecorder
    model = load_model()
    lay = Layout(model)
    data = mujoco.MjData(model)
    rec = VideoRecorder(model, str(path))

    class _Env:
        pass
    e = _Env()
    e.data = data
    for q in qpos_log:
        data.qpos[0:7] = q[0:7]
        data.qpos[lay.qpos_idx] = q[7:]
        mujoco.mj_forward(model, data)
        rec.add(e)
    rec.close()


def main_demo(bundle: str, out: str, domain: int, planner: str = "bundle", safety_filter: str = "auto",
              rrd: str | None = None) -> int:
    summary = run_demo(bundle, out, domain=domain, planner=planner, safety_filter=safety_filter, rrd=rrd)
    print(json.dumps({k: v for k, v in summary.items() if k != "segments"}))
    return 0
