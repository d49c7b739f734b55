"""Shared by the stack benches (soak, swaps, flood): bring up bridge + planner in real time with a
bundle, read the nodes' /diagnostics, and the planner process's resident memory."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))


def rss_mib(pid: int) -> float:
    """Resident set size of a process [MiB] (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stack(bundle: str, log_dir: Path, planner: dict | None = None, view: list[str] | None = None, **bridge):
    """A Bringup of the realtime stack (the planner on the bridge's /clock) with planner and bridge
    overrides; ``view``: `planner view`'s arguments, to run it beside."""
    from planner_node.ros.bringup import Bringup
    return Bringup({"bundle": bundle, "lockstep": "false"}, extra={"sim_bridge": bridge, "planner": planner or {}},
                   log_dir=log_dir, view=view)


def counters(d: dict, prefix: str) -> dict[str, int]:
    """The non-zero counters of one family, e.g. fallback_ or rejected_joint_states_."""
    return {k[len(prefix):]: int(v) for k, v in d.items() if k.startswith(prefix) and v.isdigit() and int(v)}
