"""One description of the humanoid bring-up, read by launch/humanoid.launch.py (ROS 2 installs)
and by ``planner up humanoid`` (pip installs have no ``ros2 launch``)."""
from __future__ import annotations

#: launch argument -> (default, [(node, parameter, type)])
ARGUMENTS = {
    "bundle": ("", [("planner", "bundle_path", str)]),
    "backend": ("onnxruntime", [("planner", "backend", str)]),
    "task": ("stand", [("planner", "task", str)]),
    "planner": ("bundle", [("planner", "planner", str)]),
    "use_sim_time": ("false", [("planner", "use_sim_time", bool), ("sim_bridge", "use_sim_time", bool)]),
    "lockstep": ("false", [("planner", "lockstep", bool), ("sim_bridge", "mode", "lockstep")]),
}
#: node name -> console_scripts executable
NODES = {"sim_bridge": "sim_bridge", "planner": "planner_node"}
PARAMS_FILE = "humanoid.yaml"


def node_overrides(values: dict[str, str]) -> dict[str, dict]:
    """Launch-argument values (strings) -> per-node parameter overrides."""
    out: dict[str, dict] = {n: {} for n in NODES}
    for arg, (default, targets) in ARGUMENTS.items():
        raw = values.get(arg, default)
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
