"""``planner up humanoid``: start the sim bridge and the planner node as processes, with the same
parameters file and argument mapping as launch/humanoid.launch.py (see launch_description)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from planner_node.launch_description import NODES, PARAMS_FILE, node_overrides


def params_file() -> Path:
    """The installed share/ copy, else the source tree's config/."""
    candidates = [Path(sys.prefix) / "share" / "planner_node" / "config" / PARAMS_FILE,
                  Path(__file__).resolve().parents[1] / "config" / PARAMS_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{PARAMS_FILE} not found in {[str(c) for c in candidates]}")


def _ros_value(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else (f'"{v}"' if v == "" else str(v))


def node_commands(values: dict[str, str], extra: dict[str, dict] | None = None) -> dict[str, list[str]]:
    overrides = node_overrides(values)
    cmds = {}
    for name, exe in NODES.items():
        params = {**overrides[name], **((extra or {}).get(name, {}))}
        exe_path = Path(sys.executable).with_name(exe)
        cmd = [str(exe_path) if exe_path.exists() else exe, "--ros-args", "-r", f"__node:={name}",
               "--params-file", str(params_file())]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={_ros_value(v)}"]
        cmds[name] = cmd
    return cmds


def ros_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", "37")
    return env


class Bringup:
    """Context manager: the two nodes as child processes, stopped on exit."""

    def __init__(self, values: dict[str, str], extra: dict[str, dict] | None = None, log_dir: Path | None = None):
        self.cmds = node_commands(values, extra)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self):
        env = ros_env()
        for name, cmd in self.cmds.items():
            out = open(self.log_dir / f"{name}.log", "w") if self.log_dir else subprocess.DEVNULL
            self.procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        return self

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        deadline = time.time() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return False


def up(values: dict[str, str], duration: float | None) -> int:
    with Bringup(values) as b:
        print("started: " + "; ".join(" ".join(c) for c in b.cmds.values()), flush=True)
        t0 = time.time()
        try:
            while duration is None or time.time() - t0 < duration:
                if not all(b.alive().values()):
                    print(f"a node exited: {b.alive()}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    return 0
