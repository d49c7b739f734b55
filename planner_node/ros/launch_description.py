"""One description of the humanoid bring-up, read by launch/humanoid.launch.py (ROS 2 installs)
and by ``planner up humanoid`` (pip installs have no ``ros2 launch``).

The planner runs on the bridge's ``/clock`` (``use_sim_time``), as ROS users expect against a
simulator: state stamps are judged against that clock. The bridge is the clock's source and
steps on wall time, so it never takes ``use_sim_time`` itself.
"""
from __future__ import annotations

from planner_node.ros.default_bundle import default_bundle_path

#: launch argument -> (default, [(node, parameter, type)]); "" for bundle means the shipped one.
ARGUMENTS = {
    "bundle": ("", [("planner", "bundle_path", str)]),
    "backend": ("onnxruntime", [("planner", "backend", str)]),
    "task": ("stand", [("planner", "task", str)]),
    "planner": ("bundle", [("planner", "planner", str)]),
    "use_sim_time": ("true", [("planner", "use_sim_time", bool)]),
    "lockstep": ("false", [("planner", "lockstep", bool), ("sim_bridge", "mode", "lockstep")]),
    # deployment trust (docs/safety.md): relative key paths resolve against the package share dir
    "trusted_keys": ("config/keys/project_test.pub", [("planner", "trusted_keys", str)]),
    "bundle_root": ("", [("planner", "bundle_root", str)]),
    "lock_parameters": ("false", [("planner", "lock_parameters", bool)]),
    # the simulated robot is reset on the step it falls (sim bridge only)
    "reset_on_fall": ("false", [("sim_bridge", "reset_on_fall", bool)]),
}
#: node name -> console_scripts executable
NODES = {"sim_bridge": "sim_bridge", "planner": "planner_node"}
PARAMS_FILE = "humanoid.yaml"


def argument_defaults() -> dict[str, str]:
    """Each launch argument's default as ``ros2 launch`` shows it; ``bundle`` resolves to the
    shipped bundle in this install's share/ (or the source tree), '' if it is not installed."""
    out = {a: d for a, (d, _) in ARGUMENTS.items()}
    found = default_bundle_path()
    out["bundle"] = str(found) if found is not None else ""
    return out


def node_overrides(values: dict[str, str]) -> dict[str, dict]:
    """Launch-argument values (strings) -> per-node parameter overrides."""
    defaults = argument_defaults()
    out: dict[str, dict] = {n: {} for n in NODES}
    for arg, (_, targets) in ARGUMENTS.items():
        raw = values.get(arg, defaults[arg])
        for node, param, kind in targets:
            if kind is bool:
                out[node][param] = str(raw).lower() in ("1", "true", "yes")
            elif kind == "lockstep":
                out[node][param] = "lockstep" if str(raw).lower() in ("1", "true", "yes") else "realtime"
            else:
                out[node][param] = raw
        if arg == "bundle" and raw == "":
            out["planner"].pop("bundle_path")
    return out
