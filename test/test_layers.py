"""The layer rules are contracts a tool checks (import-linter, `.importlinter`), not prose.

models/, export/ and sim/ live at the repo root but import as planner_node.*; import-linter reads
the package from disk, so the check runs on a staged copy laid out as installed. Each contract is
also shown to fail on a deliberate violation.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def stage(dst: Path) -> Path:
    """planner_node/ with models/, export/, sim/ inside it, as `pip install` lays it out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "planner_node", dst / "planner_node", ignore=ignore)
    for sub in ("models", "export", "sim"):
        shutil.copytree(ROOT / sub, dst / "planner_node" / sub, ignore=ignore)
    return dst


def lint(staged: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache", str(ROOT / ".importlinter")], capture_output=True, text=True,
                          cwd=staged, env={"PYTHONPATH": str(staged), "PATH": "/usr/bin:/bin"}, timeout=300)


CONTRACTS = ("runtime, controller and spec import neither torch", "nothing outside the ROS shells imports rclpy",
             "models, export and sim tooling never import the ROS shells", "models never import sim tooling",
             "only the viewer imports rerun")


def status(stdout: str, contract: str) -> str:
    """KEPT or BROKEN, from the summary line of one contract (names wrap across lines)."""
    text = " ".join(stdout.split())
    summary = text[text.index("Contracts ---------"):]
    m = re.search(re.escape(contract) + r".*?\b(KEPT|BROKEN)\b", summary)
    return m.group(1) if m else "missing"


def test_layer_contracts_hold(tmp_path):
    r = lint(stage(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"{len(CONTRACTS)} kept, 0 broken" in r.stdout, r.stdout[-2000:]
    assert all(status(r.stdout, c) == "KEPT" for c in CONTRACTS)


@pytest.mark.parametrize("module,line,contract", [
    ("planner_node/runtime/engine.py", "import torch", "runtime, controller and spec import neither torch"),
    ("planner_node/control/controller.py", "import planner_node.sim.env", "runtime, controller and spec import neither torch"),
    ("planner_node/control/controller.py", "import rclpy", "nothing outside the ROS shells imports rclpy"),
    ("planner_node/sim/env.py", "import planner_node.ros.fuzz", "models, export and sim tooling never import the ROS shells"),
    ("planner_node/models/data.py", "import planner_node.sim.env", "models never import sim tooling"),
    ("planner_node/ros/node.py", "import planner_node.view.rerun_log", "only the viewer imports rerun"),
    ("planner_node/control/controller.py", "import rerun", "only the viewer imports rerun"),
    # The contracts name folders: any module of planner_node/control/ is held to them, listed or not.
    ("planner_node/control/output_guard.py", "import rclpy", "nothing outside the ROS shells imports rclpy"),
    ("planner_node/control/action_filter.py", "import planner_node.ros.launch_description",
     "models, export and sim tooling never import the ROS shells"),
])
def test_each_contract_fails_on_a_violation(tmp_path, module, line, contract):
    staged = stage(tmp_path)
    path = staged / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    r = lint(staged)
    assert r.returncode != 0, r.stdout[-2000:]
    assert status(r.stdout, contract) == "BROKEN", r.stdout[-2000:]
    others = [c for c in CONTRACTS if c != contract]
    assert all(status(r.stdout, c) == "KEPT" for c in others), r.stdout[-2000:]
