"""The documented entry points work as written: `planner up humanoid` with no arguments runs the
shipped bundle on the bridge's /clock, prints a 1 Hz status line, and stops without a
traceback; a node that exits is reported with its reason and its last log lines."""
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

from planner_node.ros.default_bundle import default_bundle_path
from planner_node.ros.launch_description import argument_defaults, node_overrides

_domains = itertools.count(220)  # DDS domain ids stop at 232
PLANNER = str(Path(sys.executable).with_name("planner"))


def _env():
    return {**os.environ, "ROS_DOMAIN_ID": str(next(_domains)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def test_launch_defaults_resolve_to_the_shipped_bundle():
    found = default_bundle_path()
    assert found is not None and (found / "manifest.yaml").is_file()
    assert argument_defaults()["bundle"] == str(found)
    assert node_overrides({})["planner"]["bundle_path"] == str(found)
    assert node_overrides({})["planner"]["use_sim_time"] is True


def test_planner_up_with_no_arguments_runs_the_shipped_bundle(tmp_path):
    r = subprocess.run([PLANNER, "up", "humanoid", "--duration", "10", "--log-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=180, env=_env(), cwd=tmp_path)
    out = r.stdout + r.stderr
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert r.returncode == 0, out + str(logs)
    ticks = [int(m) for m in re.findall(r"planner: ticks (\d+), plan p50", out)]
    assert len(ticks) >= 5 and ticks[-1] > ticks[0] > 0, out
    assert re.search(r"bridge: steps \d+, fell (yes|no), travel", out), out
    assert f"configured: planner {default_bundle_path()}" in logs["planner.log"], logs["planner.log"]
    for name, text in logs.items():  # a stop leaves no traceback, abort or publish on a dead context
        for bad in ("Traceback", "terminate called", "Failed to publish", "tick failed"):
            assert bad not in text, f"{name}: {bad}\n{text[-2000:]}"


def test_planner_up_reports_why_a_node_exited(tmp_path):
    r = subprocess.run([PLANNER, "up", "humanoid", "--bundle", str(tmp_path / "missing"), "--duration", "60",
                        "--quiet", "--log-dir", str(tmp_path)], capture_output=True, text=True, timeout=180,
                       env=_env(), cwd=tmp_path)
    assert r.returncode == 1
    assert "planner exited (exit code 1)" in r.stderr, r.stderr
    assert "configure failed" in r.stderr and "manifest.yaml" in r.stderr, r.stderr


def test_the_install_prefix_is_found_from_the_module_path(tmp_path):
    """colcon and pip install this module at <prefix>/lib/pythonX.Y/site-packages/planner_node/ros/:
    its prefix's share/ comes first; in a source tree, <repo>/bundles/ comes last."""
    from planner_node.ros.default_bundle import candidates
    here = tmp_path / "lib" / "python3.11" / "site-packages" / "planner_node" / "ros" / "default_bundle.py"
    assert candidates(here)[0] == tmp_path / "share" / "planner_node" / "bundles" / "default"
    src = tmp_path / "repo" / "planner_node" / "ros" / "default_bundle.py"
    assert candidates(src)[-1] == tmp_path / "repo" / "bundles" / "default"
    assert all("site-packages" not in str(c) for c in candidates(src)[:-1])
