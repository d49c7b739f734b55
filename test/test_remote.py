"""`planner swap` and `planner task` against a running stack over real DDS: what a pip-only user,
who has no `ros2 param set`, runs to swap a bundle and to command the robot."""
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hil import Probe

from planner_node.ros.bringup import Bringup

ROOT = Path(__file__).resolve().parents[1]
PLANNER = str(Path(sys.executable).with_name("planner"))
_domains = itertools.count(170)  # apart from the other suites' 60-159


@pytest.fixture
def probe():
    p = Probe(next(_domains))
    yield p
    p.close()


def planner(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The console script in its own process, on the probe's ROS domain (os.environ)."""
    return subprocess.run([PLANNER, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_swap_and_task_drive_a_running_stack(probe, tmp_path):
    other = tmp_path / "other_bundle"
    shutil.copytree(ROOT / "bundles" / "default", other)  # the same bundle at another path: a real swap
    with Bringup({"lockstep": "false"}, extra={"planner": {}, "sim_bridge": {}}, log_dir=tmp_path):
        probe.wait_for(lambda: len(probe.msgs["/humanoid/joint_commands"]) > 5, 180, "commands from the node")

        r = planner("swap", str(tmp_path / "missing"))
        assert r.returncode == 1 and "refused" in r.stdout and "manifest.yaml" in r.stdout, r.stdout + r.stderr
        r = planner("swap", str(other))
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"active bundle {other}" in r.stdout, r.stdout
        probe.wait_for(lambda: probe.diagnostics().get("active_bundle") == str(other), 30, "the swap in /diagnostics")

        r = planner("task", "no_such_task")
        assert r.returncode == 1 and "unknown 'no_such_task'" in r.stdout, r.stdout + r.stderr
        r = planner("task", "track", "--cmd-vel", "5", "0", "0")  # over the 2 m/s limit: rejected by the node
        assert r.returncode == 1 and "rejected" in r.stdout, r.stdout + r.stderr
        r = planner("task", "track", "--cmd-vel", "0.3", "0", "0.1")
        assert r.returncode == 0, r.stdout + r.stderr
        probe.wait_for(lambda: probe.diagnostics().get("cmd_vel") == "0.300 0.000 0.100"
                       and probe.diagnostics().get("task") == "track", 30, "task and cmd_vel in /diagnostics")
        d = probe.diagnostics()
    # the refused twist was published a few times (publish_twist), each one refused
    assert int(d["swaps"]) == 1 and int(d["rejected_cmd_vel_bound"]) >= 1, d
