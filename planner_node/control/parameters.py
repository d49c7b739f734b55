"""The planner node's parameters, in one table: the node declares them from it, the controller's
config takes its defaults from it, and ``config/humanoid.yaml`` must say the same (a test checks
names, types and defaults; ``python -m planner_node.control.parameters`` prints the YAML block)."""
from __future__ import annotations

from dataclasses import dataclass

from planner_node import spec


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    static: bool          # static: read at configure, refused at run time
    description: str


PARAMS: tuple[Param, ...] = (
    Param("planner", "bundle", True, "bundle (run bundle_path) | mppi (ground truth, sim only) | zero"),
    Param("bundle_path", "", False, "engine bundle directory ('' = the shipped default bundle); set at run time to hot-swap"),
    Param("backend", "onnxruntime", True, "engine backend: onnxruntime | tensorrt | torch"),
    Param("planner_settings", "{}", True, "YAML overrides of every loaded bundle's planner settings, e.g. {task_weights: ''}"),
    Param("task", "stand", False, "task scored by the planner; /cmd_vel drives 'track'"),
    Param("control_period", spec.CONTROL_PERIOD_S, True, "control period [s] (the models' 0.03)"),
    Param("deadline_ms", 25.0, False, "planning deadline per tick [ms]"),
    Param("safety_filter", "none", True, "action filter between plan and command: none (pass-through) | ldm (bundle's Lyapunov density)"),
    Param("safety_filter_config", "{}", True, "the filter's settings, as YAML"),
    Param("safety_filter_threshold", "", False, "ldm: admissible while G <= this ('' = the bundle's); set at run time"),
    Param("fallback", "hold", True, "what to command without a fresh plan: hold"),
    Param("lockstep", False, True, "tick once per new state (deterministic closed loop with a lockstep sim)"),
    Param("mppi_samples", 16, True, "samples for planner=mppi"),
    Param("mppi_threads", 1, True, "rollout threads for planner=mppi"),
    Param("mppi_walk_speed", 0.2, True, "planner=mppi: capture-point lead [m/s] on locomotion tasks (0: stand still)"),
    Param("seed", 0, True, "planner random seed"),
    Param("planner_process", "worker", True,
          "planner=bundle: worker (engines and filter in a child process: the command clock never waits "
          "past the deadline, a crash is survived) | inline (in the node's control thread)"),
    Param("worker_hang_ms", 300.0, True, "a worker with requests unanswered this long is killed and restarted [ms]"),
    Param("command_clock_priority", 50, True,
          "SCHED_FIFO priority of the command clock thread with a planner worker (0: normal scheduling); "
          "needs an rtprio limit, else it warns"),
    Param("stamp_future_tolerance_s", 0.1, True, "reject a state stamped more than this ahead of the node's clock [s]"),
    Param("stamp_max_age_s", 0.5, True, "reject a state stamped more than this behind the node's clock [s]"),
    Param("autostart", True, True, "configure and activate on start (pip installs have no lifecycle manager)"),
    Param("trusted_keys", "config/keys/project_test.pub", True,
          "public keys (comma-separated; relative to the package share dir): bundles must be signed by one "
          "('' = unsigned allowed). The project TEST key: deploy with your own"),
    Param("bundle_root", "", True, "bundles load only from under this directory, symlinks resolved ('' = anywhere)"),
    Param("lock_parameters", False, True,
          "refuse run-time changes to safety_filter, safety_filter_threshold, deadline_ms, planner_settings"),
)
#: What ``lock_parameters: true`` makes read-only at run time (the static ones are refused anyway;
#: listing them makes the refusal say "locked", which is what a deployment wants to read).
LOCKED_WHEN_DEPLOYED = ("safety_filter", "safety_filter_threshold", "deadline_ms", "planner_settings")
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}


def yaml_mapping(text: str, where: str) -> dict:
    """A YAML-valued string parameter (``safety_filter_config``, ``planner_settings``) as a
    mapping; '' is {}. Errors name the parameter."""
    import yaml
    try:
        d = yaml.safe_load(text or "{}")
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: invalid YAML ({e})") from e
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    return d


def planner_settings(text: str) -> dict:
    """``planner_settings``: overrides of a bundle's planner settings, e.g.
    ``"{task_weights: 'rotate_z:1'}"``: names to numbers, words or true/false. Whether the bundle's
    kind has each setting, and its value, the runtime planner checks by name."""
    d = yaml_mapping(text, "planner_settings")
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"planner_settings: {k!r}: {v!r}: expected a setting name and a number, a word or true/false")
    return d


def default(name: str):
    return BY_NAME[name].default


def yaml_block() -> str:
    """The planner's section of config/humanoid.yaml, from the table."""
    import json
    lines = ["planner:", "  ros__parameters:"]
    for p in PARAMS:
        v = json.dumps(p.default) if isinstance(p.default, str) else str(p.default).lower() \
            if isinstance(p.default, bool) else repr(p.default)
        lines.append(f"    {p.name}: {v}".ljust(40) + f"  # {p.description}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(yaml_block())
