"""Test-wide environment: headless GL, loopback-only DDS, a unique ROS domain per test."""
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

_domain = [int(os.environ.get("PLANNER_TEST_DOMAIN_BASE", "60"))]


@pytest.fixture
def ros_domain(monkeypatch):
    """A fresh ROS_DOMAIN_ID (and localhost-only discovery) for tests that start nodes."""
    _domain[0] = 60 + (_domain[0] - 59) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(_domain[0]))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return _domain[0]


@pytest.fixture(scope="session")
def env():
    from planner_node.sim.env import HumanoidEnv
    return HumanoidEnv()
