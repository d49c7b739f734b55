"""/diagnostics key-values (the planner's and the sim bridge's) as Rerun series and events.

ROS-free: the ROS view node hands it each status's {key: value} strings. Counters become series
(safety/..., timing/...); a counter that grows, or a bundle that changes, becomes an event.
"""
from __future__ import annotations

import numpy as np

from planner_node.view.rerun_log import RunLog

#: the planner's timing figures [ms] (timing/ms/<key>) and its counters (timing/count/<key>)
TIMING_MS = ("latency_p50_ms", "latency_p99_ms", "plan_age_p50_ms", "plan_age_p99_ms", "command_gap_max_ms_last_period")
TIMING_COUNTS = ("deadline_misses", "late_commands", "commands_fresh_plan", "commands_shifted_plan", "commands_fallback",
                 "worker_restarts")
#: the output guard's refusals by reason (the per-source keys, guard_<why>_<source>, add up to these)
GUARD_REASONS = ("guard_non_finite", "guard_out_of_limits", "guard_bad_shape")
#: sim bridge counter -> event kind
BRIDGE_EVENTS = (("pushes", "push"), ("falls", "fall"), ("resets", "reset"))


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class StatusLog:
    def __init__(self, log: RunLog):
        self.log = log
        self._last: dict[tuple[str, str], float] = {}
        self.bundle: str | None = None

    def _grew(self, source: str, key: str, values: dict) -> bool:
        v = _float(values.get(key))
        if v is None:
            return False
        prev = self._last.get((source, key))
        self._last[(source, key)] = v
        return prev is not None and v > prev

    def bridge(self, values: dict) -> None:
        for key, kind in BRIDGE_EVENTS:
            if self._grew("bridge", key, values):
                self.log.event(kind, f"{key} {values[key]} (step {values.get('steps', '?')})")

    def planner(self, values: dict) -> np.ndarray | None:
        """Log one planner status; returns the /cmd_vel it tracks (vx, vy, wz), if it says."""
        for key in ("filter_g_mean", "filter_g_max", "filter_threshold"):
            self.log.scalar(f"safety/{key}", _float(values.get(key)))
        for key, val in values.items():
            if key == "filter_interventions":
                self.log.scalar("safety/filter_interventions", _float(val))
            elif key.startswith("fallback_"):
                self.log.scalar(f"safety/fallbacks/{key[len('fallback_'):]}", _float(val))
            elif key in GUARD_REASONS:
                self.log.scalar(f"safety/guard/{key[len('guard_'):]}", _float(val))
            elif key in TIMING_MS:
                self.log.scalar(f"timing/ms/{key}", _float(val))
            elif key in TIMING_COUNTS:
                self.log.scalar(f"timing/count/{key}", _float(val))
        bundle = values.get("active_bundle")
        if bundle and bundle != self.bundle:
            if self.bundle is not None:
                self.log.event("swap", f"{self.bundle} -> {bundle} (bundle_version {values.get('bundle_version', '?')})")
            self.bundle = bundle
        if self._grew("planner", "clock_resets", values):
            self.log.event("clock_reset", f"clock_resets {values['clock_resets']}")
        try:
            cmd = np.array([float(x) for x in str(values["cmd_vel"]).split()][:3])
            return cmd if cmd.shape == (3,) and np.all(np.isfinite(cmd)) else None
        except (KeyError, ValueError):
            return None
