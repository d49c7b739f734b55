"""The Rerun view (``planner view``, ``planner demo --rrd``, ``planner data view``) and /tf in the
demo's MCAP, read back with Rerun's own reader and an independent ROS 2 decoder (mcap-ros2-support)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import mujoco
import numpy as np
import pytest

from planner_node import spec

rr = pytest.importorskip("rerun", reason="rerun-sdk (the view extra) is not installed: pip install 'planner_node[view]'")
from rerun.chunk import RrdReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_rrd(path: Path) -> dict[str, dict]:
    """entity -> {"static": {column: value}, "rows": [{column: value, "step": k}, ...]} (Rerun's reader)."""
    out: dict[str, dict] = defaultdict(lambda: {"static": {}, "rows": []})
    for c in RrdReader(str(path)).stream():
        rb = c.to_record_batch()
        cols = [n for n in rb.schema.names if ":" in n]
        if c.is_static:
            out[c.entity_path]["static"].update({n: rb.column(n)[0].as_py() for n in cols})
            continue
        steps = rb.column("step").to_pylist() if "step" in rb.schema.names else [None] * rb.num_rows
        for i in range(rb.num_rows):
            row = {n: rb.column(n)[i].as_py() for n in cols}
            row["step"] = steps[i]
            out[c.entity_path]["rows"].append(row)
    return out


def visible_geoms(model) -> list[int]:
    return [g for g in range(model.ngeom)
            if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE and model.geom_rgba[g, 3] > 0]


def logged_pose(entity: dict, step: int) -> tuple[np.ndarray, np.ndarray]:
    row = [r for r in entity["rows"] if r["step"] == step and r.get("Transform3D:translation")][-1]
    t = np.asarray(row["Transform3D:translation"], float).reshape(3)
    m = np.asarray(row["Transform3D:mat3x3"], float).reshape(3, 3).T  # Rerun stores 3x3 column-major
    return t, m


# -- the demo, recorded: .rrd through `planner view`, /tf in the MCAP ------------------------------

SHORT = (("stand", "stand", (0.0, 0.0, 0.0), 25, ()),
         ("walk 0.3 m/s", "track", (0.3, 0.0, 0.0), 20, ()),
         ("stand + pushes", "stand", (0.0, 0.0, 0.0), 25, (10,)))


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    from planner_node.ros.demo import run_demo
    out = tmp_path_factory.mktemp("demo_view")
    domain = 218  # outside conftest's 60-159 and the other tests' fixed domains
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    summary = run_demo("", out, domain=domain, segments=SHORT, video=False, rrd=out / "demo.rrd")
    return out, summary


def _mcap(path: Path, topic: str):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    with open(path, "rb") as f:
        for _, _, msg, dec in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics=[topic]):
            yield msg.log_time, dec


def _bridge_steps(mcap: Path) -> int:
    last = None
    for _, msg in _mcap(mcap, "/diagnostics"):
        for st in msg.status:
            if st.name == "sim_bridge":
                last = {kv.key: kv.value for kv in st.values}
    assert last is not None, "no sim_bridge diagnostics in the demo's MCAP"
    return int(last["steps"])


def test_demo_rrd_holds_every_entity_and_a_pose_per_bridge_step(short_demo):
    out, summary = short_demo
    log = read_rrd(out / "demo.rrd")
    from planner_node.robot.humanoid import load_model
    model = load_model()
    geoms = [f"/world/robot/{model.geom(g).name}" for g in visible_geoms(model)]
    missing = [g for g in geoms if g not in log or not log[g]["static"]]
    assert not missing, f"geoms without a shape: {missing}"
    steps = _bridge_steps(out / "demo.mcap")
    assert steps == sum(s[3] for s in SHORT)
    for g in geoms:  # one pose per simulation step (the initial state is step 0), none twice
        logged = [r["step"] for r in log[g]["rows"]]
        assert sorted(logged) == list(range(0, steps + 1)), (g, len(logged), steps)
    for entity in ("/world/floor", "/world/base_path", "/world/plan/lfoot", "/world/plan/rfoot", "/world/plan/lradius",
                   "/tracking/vx/commanded", "/tracking/vx/achieved", "/tracking/wz/commanded",
                   "/joints/lfemurrx/commanded", "/joints/lfemurrx/measured",
                   "/safety/filter_g_mean", "/safety/filter_threshold", "/safety/filter_interventions",
                   "/safety/fallbacks/plan_late", "/safety/guard/out_of_limits",
                   "/timing/ms/latency_p99_ms", "/timing/count/deadline_misses", "/timing/ms/plan_age_p99_ms",
                   "/timing/count/commands_fresh_plan", "/joints/base_height_m", "/events"):
        assert entity in log and (log[entity]["rows"] or log[entity]["static"]), f"{entity} not recorded"
    texts = [t for r in log["/events"]["rows"] for t in (r["TextLog:text"] or [])]
    assert any(t.startswith("push:") for t in texts), texts
    walk = [r for r in log["/tracking/vx/commanded"]["rows"] if abs(r["Scalars:scalars"][0] - 0.3) < 1e-9]
    assert walk, "the walk segment's command is not on the tracking plot"


def test_demo_rrd_geom_poses_match_mujoco(short_demo):
    """For 3 recorded steps: the logged pose of every geom is MuJoCo's geom_xpos / geom_xmat at the
    state the bridge published for that step (posed here independently, with mj_forward)."""
    out, _ = short_demo
    log = read_rrd(out / "demo.rrd")
    from planner_node.robot.humanoid import Layout, load_model
    model = load_model()
    data, lay = mujoco.MjData(model), Layout(model)
    states: dict[int, dict] = defaultdict(dict)
    for topic in ("/joint_states", "/odom"):
        for _, msg in _mcap(out / "demo.mcap", topic):
            k = round((msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec) / spec.CONTROL_PERIOD_S)
            states[k][topic] = msg
    checked = 0
    for k in (5, 33, 61):
        js, od = states[k]["/joint_states"], states[k]["/odom"]
        p, q = od.pose.pose.position, od.pose.pose.orientation
        data.qpos[:] = model.qpos0
        data.qpos[0:7] = [p.x, p.y, p.z, q.w, q.x, q.y, q.z]
        data.qpos[lay.qpos_idx] = js.position
        mujoco.mj_forward(model, data)
        for g in visible_geoms(model):
            t, m = logged_pose(log[f"/world/robot/{model.geom(g).name}"], k)
            np.testing.assert_allclose(t, data.geom_xpos[g], atol=2e-5, err_msg=f"step {k} {model.geom(g).name}")
            np.testing.assert_allclose(m, data.geom_xmat[g].reshape(3, 3), atol=2e-5, err_msg=f"step {k} {model.geom(g).name}")
            checked += 1
    assert checked == 3 * len(visible_geoms(model))
    G = mujoco.mjtGeom
    for g in visible_geoms(model):  # each shape in its geom's frame: MuJoCo's sizes, centred on the geom
        shape, size = log[f"/world/robot/{model.geom(g).name}"]["static"], model.geom_size[g]
        if model.geom_type[g] == G.mjGEOM_CAPSULE:  # Rerun's capsule runs up +z from its translation
            np.testing.assert_allclose(shape["Capsules3D:lengths"], [2 * size[1]], rtol=1e-6)
            np.testing.assert_allclose(shape["Capsules3D:radii"], [size[0]], rtol=1e-6)
            np.testing.assert_allclose(shape["Capsules3D:translations"], [[0, 0, -size[1]]], rtol=1e-6)
        elif model.geom_type[g] in (G.mjGEOM_SPHERE, G.mjGEOM_ELLIPSOID):
            want = [size[0]] * 3 if model.geom_type[g] == G.mjGEOM_SPHERE else size
            np.testing.assert_allclose(shape["Ellipsoids3D:half_sizes"], [want], rtol=1e-6)


def test_demo_mcap_tf_decodes_and_chains_to_mujoco_body_frames(short_demo):
    """/tf in the demo's MCAP, decoded by mcap-ros2-support: one TFMessage per step, every body;
    chaining odom -> base -> ... -> ltoes gives MuJoCo's own xpos for that body."""
    out, _ = short_demo
    from planner_node.robot.humanoid import Layout, load_model
    model = load_model()
    data, lay = mujoco.MjData(model), Layout(model)
    tfs = [dec for _, dec in _mcap(out / "demo.mcap", "/tf")]
    assert len(tfs) == _bridge_steps(out / "demo.mcap") + 1
    assert all(len(m.transforms) == model.nbody - 1 for m in tfs)
    js = {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in _mcap(out / "demo.mcap", "/joint_states")}
    od = {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in _mcap(out / "demo.mcap", "/odom")}
    msg = tfs[40]
    stamp = (msg.transforms[0].header.stamp.sec, msg.transforms[0].header.stamp.nanosec)
    p, q = od[stamp].pose.pose.position, od[stamp].pose.pose.orientation
    data.qpos[:] = model.qpos0
    data.qpos[0:7] = [p.x, p.y, p.z, q.w, q.x, q.y, q.z]
    data.qpos[lay.qpos_idx] = js[stamp].position
    mujoco.mj_forward(model, data)
    by_child = {t.child_frame_id: t for t in msg.transforms}
    base = by_child["base"]
    assert base.header.frame_id == "odom"
    np.testing.assert_allclose([base.transform.translation.x, base.transform.translation.y, base.transform.translation.z],
                               [p.x, p.y, p.z], atol=1e-9)
    for body in ("ltoes", "rradius", "head"):
        pos, rot, frame = np.zeros(3), np.eye(3), body
        chain = []
        while frame != "odom":
            chain.append(by_child[frame])
            frame = by_child[frame].header.frame_id
        for t in reversed(chain):  # compose from the world down
            r = t.transform.rotation
            R = np.empty(9)
            mujoco.mju_quat2Mat(R, np.array([r.w, r.x, r.y, r.z]))
            tr = t.transform.translation
            pos = pos + rot @ np.array([tr.x, tr.y, tr.z])
            rot = rot @ R.reshape(3, 3)
        np.testing.assert_allclose(pos, data.xpos[model.body(body).id], atol=1e-6, err_msg=body)


# -- the status log: events a short run does not show ---------------------------------------------

def test_status_log_marks_swaps_falls_resets_pushes_and_clock_resets(tmp_path):
    from planner_node.robot.humanoid import load_model
    from planner_node.view.rerun_log import RunLog, open_recording
    from planner_node.view.status_log import StatusLog
    rec, _ = open_recording("t", rrd=str(tmp_path / "s.rrd"))
    log = RunLog(rec, load_model())
    st = StatusLog(log)
    log.at(1)
    st.bridge({"pushes": "0", "falls": "0", "resets": "0", "steps": "1"})  # the baseline marks nothing
    cmd = st.planner({"active_bundle": "bundles/a", "clock_resets": "0", "cmd_vel": "0.300 0.000 0.100",
                      "filter_g_mean": "0.2", "filter_threshold": "0.5", "fallback_plan_late": "3"})
    np.testing.assert_allclose(cmd, [0.3, 0.0, 0.1])
    log.at(2)
    st.bridge({"pushes": "1", "falls": "1", "resets": "1", "steps": "2"})
    st.planner({"active_bundle": "bundles/b", "bundle_version": "2", "clock_resets": "1"})
    log.at(3)
    st.bridge({"pushes": "1", "falls": "1", "resets": "1", "steps": "3"})  # unchanged: nothing new
    st.planner({"active_bundle": "bundles/b", "clock_resets": "1", "cmd_vel": "nan 0 0"})
    log.close()
    rec.flush()
    del rec
    got = read_rrd(tmp_path / "s.rrd")
    texts = [(r["step"], t) for r in got["/events"]["rows"] for t in r["TextLog:text"]]
    kinds = sorted(t.split(":")[0] for _, t in texts)
    assert kinds == ["clock_reset", "fall", "push", "reset", "swap"], texts
    assert all(step == 2 for step, _ in texts)
    assert any("bundles/a -> bundles/b" in t for _, t in texts)
    assert got["/safety/fallbacks/plan_late"]["rows"][0]["Scalars:scalars"] == [3.0]


# -- the dataset viewer -------------------------------------------------------------------------------

def test_dead_reckoned_base_pose_follows_the_simulator(env):
    """The dataset viewer poses the base from observations: height and tilt exactly, x, y and yaw
    integrated from the velocimeter and gyro (compared after aligning the start heading)."""
    from planner_node.robot.humanoid import heading_world
    from planner_node.view.dataset_view import base_poses
    env.reset(3)
    obs, qpos = [], []
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs.append(env.observation())
        qpos.append(env.data.qpos.copy())
        env.step(np.clip(env.zero_action + rng.normal(0, 0.05, spec.ACTION_DIM), -1, 1))
    obs, qpos = np.array(obs), np.array(qpos)
    pos, quat = base_poses(obs)
    np.testing.assert_allclose(pos[:, 2], qpos[:, 2], atol=1e-9)
    from planner_node.robot.observation import world_zaxis_from_quat
    np.testing.assert_allclose(world_zaxis_from_quat(quat), world_zaxis_from_quat(qpos[:, 3:7]), atol=1e-6)
    h0 = heading_world(qpos[0, 3:7])
    rot = np.array([[h0[0], h0[1]], [-h0[1], h0[0]]])  # world -> the start heading frame
    true_xy = (qpos[:, :2] - qpos[0, :2]) @ rot.T
    assert np.max(np.linalg.norm(pos[:, :2] - true_xy, axis=1)) < 0.03
    heading_err = [np.arccos(np.clip(heading_world(a) @ (rot @ heading_world(b)), -1, 1)) for a, b in zip(quat, qpos[:, 3:7])]
    assert max(heading_err) < 0.05


def _cli(*args, env_extra: dict | None = None, pre: str = "") -> subprocess.CompletedProcess:
    code = f"import sys; {pre}from planner_node.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_data_view_writes_an_episode_that_reads_back(tmp_path):
    rrd = tmp_path / "x.rrd"
    r = _cli("data", "view", "data/train16", "--episode", "0", "--rrd", str(rrd))
    assert r.returncode == 0, r.stderr[-2000:]
    from planner_node.dataset import Dataset
    ds = Dataset(ROOT / "data" / "train16")
    rows = ds.episodes()[0]
    got = read_rrd(rrd)
    assert sorted(x["step"] for x in got["/world/robot/lfoot"]["rows"]) == list(range(len(rows)))
    rewards = [x["Scalars:scalars"][0] for x in sorted(got["/data/reward"]["rows"], key=lambda x: x["step"])]
    np.testing.assert_allclose(rewards, ds.arrays["rewards"][rows], rtol=1e-6)
    texts = [t for x in got["/events"]["rows"] for t in x["TextLog:text"]]
    push_every = int(ds.push_every_rows()[rows[0]])
    assert push_every and sum(t.startswith("push:") for t in texts) == (len(rows) - 1) // push_every
    assert sum(t.startswith("timeout:") for t in texts) == int(ds.arrays["timeouts"][rows].sum())
    assert f"{len(rows)} rows" in r.stdout


def test_data_view_marks_label_rows_and_draws_the_experts_plans(tmp_path):
    from planner_node.dataset import Dataset
    ds = Dataset(ROOT / "data" / "train16")
    labels, eps = ds.label_rows(), ds.episodes()
    k = next(i for i, e in enumerate(eps) if labels[e[0]] and ds.plan_steps[e[0]] > 0)
    rrd = tmp_path / "labels.rrd"
    r = _cli("data", "view", "data/train16", "--episode", str(k), "--rrd", str(rrd))
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_rrd(rrd)
    marks = [x["Scalars:scalars"][0] for x in got["/data/label_row"]["rows"]]
    assert sum(marks) == int(labels[eps[k]].sum()) > 0
    assert len(got["/world/plan/lfoot"]["rows"]) == int((ds.plan_steps[eps[k]] > 0).sum())
    np.testing.assert_array_equal(ds.plans_at(eps[k]), ds.plans[eps[k]])  # the viewer's per-episode slice


def test_data_view_refuses_an_episode_out_of_range(tmp_path):
    r = _cli("data", "view", "data/train16", "--episode", "99999", "--rrd", str(tmp_path / "x.rrd"))
    assert r.returncode == 2 and "--episode 99999 is out of range" in r.stderr, r.stderr[-1000:]
    assert not (tmp_path / "x.rrd").exists()


@pytest.mark.parametrize("args", [("view", "--rrd", "x.rrd"), ("data", "view", "data/train16", "--rrd", "x.rrd"),
                                  ("demo", "--rrd", "x.rrd")])
def test_view_without_the_extra_says_how_to_install_it(args, tmp_path):
    """The node and a robot's install do not need rerun-sdk; asking for a view without it says how."""
    r = _cli(*args, pre="sys.modules['rerun'] = None; ")
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "pip install 'planner_node[view]'" in r.stderr, r.stderr[-1500:]


# -- the web viewer, served from the wheel, in a headless Chromium ------------------------------------

def _standing_recording(path: Path, robot: bool) -> None:
    from planner_node.robot.kinematics import Kinematics
    from planner_node.view.rerun_log import RunLog, open_recording
    kin = Kinematics()
    if not robot:  # the same scene without the humanoid: the floor alone
        rec, _ = open_recording("planner_node", rrd=str(path))
        rec.log("world/floor", rr.Boxes3D(half_sizes=[[5.0, 5.0, 0.002]], centers=[[0, 0, -0.002]],
                                          colors=[[140, 150, 160, 255]], fill_mode="solid"), static=True)
        rec.disconnect()
        return
    rec, _ = open_recording("planner_node", rrd=str(path))
    log = RunLog(rec, kin.model)
    for k in range(20):
        log.at(k)
        q = kin.qpos_from(np.zeros(spec.NUM_JOINTS), [0.0, 0.0, 1.15], spec.STAND_ROOT_QUAT)
        kin.pose(q)
        log.robot_pose(*kin.geom_poses(), q[:3])
    log.close()


def test_web_viewer_in_headless_chromium_shows_the_humanoid(tmp_path):
    """The web viewer from the rerun-sdk wheel, on localhost, in headless Chromium: the 3D view of
    a recording with the humanoid differs from the same scene without it, over a body-sized area."""
    import web_view
    why = web_view.missing()
    if why and os.environ.get("CI") == "true":  # .ci/run installs Chromium: missing there is a failure
        pytest.fail(f"web viewer capture under CI: {why}")
    if why:
        pytest.skip(f"web viewer capture: {why} (CI installs it and runs this)")
    for robot in (True, False):
        _standing_recording(tmp_path / f"{robot}.rrd", robot)
    with_robot = web_view.capture(tmp_path / "True.rrd", tmp_path / "robot.png")
    without = web_view.capture(tmp_path / "False.rrd", tmp_path / "floor.png")
    assert with_robot.shape == without.shape
    h, w, _ = with_robot.shape
    view = (slice(int(0.08 * h), int(0.75 * h)), slice(0, int(0.58 * w)))  # the 3D view (the blueprint's left column)
    robot_px = np.abs(with_robot[view] - without[view]).max(axis=-1) > 0.1
    assert with_robot[view].std() > 0.05, "the 3D view is blank"
    assert 3000 < robot_px.sum() < 0.3 * robot_px.size, \
        f"{robot_px.sum()} of {robot_px.size} pixels differ: no humanoid in view ({tmp_path / 'robot.png'})"
    rows, cols = np.nonzero(robot_px)
    assert rows.max() - rows.min() > 0.25 * robot_px.shape[0], "what differs is not body-tall"


def _listeners() -> dict[int, set[str]]:
    """Listening TCP sockets on this machine: port -> local addresses (from /proc/net/tcp)."""
    out: dict[int, set[str]] = defaultdict(set)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        if state == "0A":  # LISTEN
            ip_hex, port_hex = local.split(":")
            ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out[int(port_hex, 16)].add(ip)
    return out


def test_planner_view_web_serves_the_viewer_on_localhost_only_and_stops_it(ros_domain, tmp_path):
    import signal
    import socket
    import time
    import urllib.request
    from web_view import _free_port
    web, grpc = _free_port(), _free_port()
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    p = subprocess.Popen([sys.executable, "-m", "planner_node.ros.view", "--view", "web", "--web-port", str(web),
                          "--grpc-port", str(grpc), "--rrd", str(tmp_path / "v.rrd")], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        page = None
        for _ in range(300):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=1).read()
                break
            except OSError:
                assert p.poll() is None, p.stdout.read()
                time.sleep(0.1)
        assert page and b"<html" in page.lower(), "the web viewer's page was not served"
        listening = _listeners()
        assert listening[web] == {"127.0.0.1"} and listening[grpc] == {"127.0.0.1"}, dict(listening)
        # best effort: the view and its viewer run at nice 10 (the planner, worker and bridge first)
        stat = Path(f"/proc/{p.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == 10, stat
    finally:
        os.killpg(p.pid, signal.SIGINT)
        out = p.communicate(timeout=30)[0]
    assert p.returncode == 0, out[-2000:]
    assert f"web viewer at http://127.0.0.1:{web}/" in out
    with pytest.raises(OSError):  # the viewer went with the node
        socket.create_connection(("127.0.0.1", web), 0.5).close()


def test_planner_up_records_the_run_through_the_view(ros_domain, tmp_path):
    """`planner up humanoid --rrd FILE`: `planner view` runs beside the two nodes, and the file it
    leaves holds the robot's poses once the run stops. H-GAP predicts states: the view draws the
    base path they imply, starting where the base was, at the predicted heights."""
    rrd = tmp_path / "up.rrd"
    r = subprocess.run([str(Path(sys.executable).with_name("planner")), "up", "humanoid", "--lockstep", "--duration", "8",
                        "--bundle", "bundles/hgap", "--rrd", str(rrd), "--log-dir", str(tmp_path / "logs"), "--quiet"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "planner_node.ros.view --rrd" in r.stdout
    log = read_rrd(rrd)
    poses = log["/world/robot/lfoot"]["rows"]
    steps = [x["step"] for x in poses]
    assert len(poses) > 10 and steps == sorted(set(steps)), steps[:20]
    paths = log["/world/plan/base"]["rows"]
    assert paths, "no predicted base path drawn"
    faded = log["/world/plan/candidates"]["rows"]
    assert faded and all(1 <= len(x["LineStrips3D:strips"]) <= 8 for x in faded)
    base = {x["step"]: x for x in log["/world/base_path"]["rows"]}
    for row in paths[-5:]:  # each starts at the base's position at its step (x, y), at a standing-ish height
        start = np.asarray(row["LineStrips3D:strips"][0], float)[0]
        if row["step"] in base:
            here = np.asarray(base[row["step"]]["LineStrips3D:strips"][0], float)[-1]
            np.testing.assert_allclose(start[:2], here[:2], atol=1e-6)
        assert 0.0 < start[2] < 2.0


def test_intents_leave_out_what_is_not_finite():
    """A plan's predicted states reach the view only where they are finite: a bad candidate is
    left out, a bad plan sends none (nothing non-finite is published)."""
    from planner_node.planning import INTENT_DIM, MAX_CANDIDATES, candidate_intents, intent_of
    obs = np.random.default_rng(0).normal(size=(12, 17, spec.OBS_DIM))
    assert intent_of(obs[0]).shape == (17, INTENT_DIM)
    bad = obs.copy()
    bad[3, 5, spec.OBS_SLICES["body_height"]] = np.nan
    assert intent_of(bad[3]) is None and intent_of(None) is None and intent_of(obs[0, :, :10]) is None
    got = candidate_intents(bad)
    assert got.shape == (MAX_CANDIDATES - 1, 17, INTENT_DIM)  # the first 8, less the bad one
    np.testing.assert_array_equal(got[2], intent_of(obs[2]))
    np.testing.assert_array_equal(got[3], intent_of(obs[4]))
