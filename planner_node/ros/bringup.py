"""``planner up humanoid``: start the sim bridge and the planner node as processes, with the same
parameters file and argument mapping as launch/humanoid.launch.py (see launch_description)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planner_node.ros.launch_description import NODES, PARAMS_FILE, node_overrides
from planner_node.ros.status_monitor import StatusMonitor


def params_file() -> Path:
    """The installed share/ copy, else the source tree's config/."""
    candidates = [Path(sys.prefix) / "share" / "planner_node" / "config" / PARAMS_FILE,
                  Path(__file__).resolve().parents[2] / "config" / PARAMS_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{PARAMS_FILE} not found in {[str(c) for c in candidates]}")


def _ros_value(v) -> str:
    """A parameter value as ``-p name:=VALUE`` reads it (YAML): a string that YAML would read as a
    mapping or list (a YAML-valued parameter such as ``planner_settings``) is quoted, so it
    arrives as the string it is; numbers written as strings stay numbers."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v == "":
        return '""'
    if isinstance(v, str):
        import yaml
        try:
            collection = isinstance(yaml.safe_load(v), (dict, list))
        except yaml.YAMLError:
            collection = True
        if collection:
            return "'" + v.replace("'", "''") + "'"
    return str(v)


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

    def __init__(self, values: dict[str, str], extra: dict[str, dict] | None = None, log_dir: Path | None = None,
                 view: list[str] | None = None):
        self.cmds = node_commands(values, extra)
        if view is not None:  # ``planner view`` as a third process: it only listens (see planner_node.ros.view)
            self.cmds["planner_view"] = [sys.executable, "-m", "planner_node.ros.view", *view]
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self):
        for name in self.cmds:
            self._start(name)
        return self

    def _start(self, name: str, mode: str = "w") -> None:
        out = open(self.log_dir / f"{name}.log", mode) if self.log_dir else subprocess.DEVNULL
        self.procs[name] = subprocess.Popen(self.cmds[name], env=ros_env(), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def restart(self, name: str) -> None:
        """Stop one node (if it still runs) and start it again; its log is appended to."""
        p = self.procs[name]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(10)
        self._start(name, "a")

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


def web_url(view_args: list[str]) -> str:
    port = view_args[view_args.index("--web-port") + 1] if "--web-port" in view_args else "9090"
    grpc = view_args[view_args.index("--grpc-port") + 1] if "--grpc-port" in view_args else "9876"
    return f"http://127.0.0.1:{port}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{grpc}%2Fproxy"


def exit_reason(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def up(values: dict[str, str], duration: float | None, quiet: bool = False, log_dir: Path | None = None,
       view: list[str] | None = None) -> int:
    """Run the stack until ``duration`` [s] or Ctrl-C. Prints a status line at 1 Hz (unless
    ``quiet``); if a node exits, prints its exit reason and the last lines of its log. ``view``:
    ``planner view``'s arguments, to run it beside the stack."""
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="planner_up_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with Bringup(values, log_dir=log_dir, view=view) as b:
        print("started: " + "; ".join(" ".join(c) for c in b.cmds.values()), flush=True)
        print(f"logs: {log_dir}", flush=True)
        if view is not None and "web" in view:
            print(f"web viewer: {web_url(view)} (served from the rerun-sdk wheel, on localhost)", flush=True)
        monitor = None if quiet else StatusMonitor()
        t0 = time.monotonic()
        try:
            while duration is None or time.monotonic() - t0 < duration:
                dead = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
                if dead:
                    for name, rc in dead.items():
                        print(f"{name} exited ({exit_reason(rc)}); last lines of {log_dir / (name + '.log')}:\n"
                              f"{log_tail(log_dir / (name + '.log'))}", file=sys.stderr, flush=True)
                    return 1
                if monitor is None:
                    time.sleep(0.2)
                    continue
                monitor.spin(1.0, stop=lambda: not all(b.alive().values()))
                print(f"[{time.monotonic() - t0:6.1f} s] {monitor.line()}", flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            if monitor is not None:
                monitor.close()
    return 0
