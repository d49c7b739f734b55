#!/usr/bin/env python3
"""Hot swaps under realtime load: alternate ``bundle_path`` between two bundles N times while the
stack (sim bridge + planner node) runs in real time, then run as long again without swaps.

Reports, for both phases of the same run: the largest gap between commands (seen by this process,
and on the node's own steady clock), the ticks without a fresh plan (fallbacks), and deadline
misses. Each swap is verified synchronously, loaded and warmed up on a worker thread, and applied
at a tick boundary; this script waits until /diagnostics shows the new bundle before the next.

    python bench/swaps.py [--swaps 100] [--a bundles/default] [--b DIR]   # --b: a copy of --a by default
    python bench/swaps.py --process inline worker   # the command clock with the planner in the node, then in a worker
    python bench/swaps.py --kills 10 [--kill-every 5]   # SIGKILL the planner worker, 10 times
    python bench/swaps.py --verify-cost [--reps 200]   # what a signature adds to a swap's verification
    python bench/swaps.py --attacks     # each trust attack against a running node: refused how fast
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from stack import ROOT, counters, stack


def _gap_ms(times: list[float]) -> float:
    return 1e3 * float(np.max(np.diff(times))) if len(times) > 1 else float("nan")


def verify_cost(reps: int) -> int:
    """A swap's synchronous verification (the node's bundle gate, as ``bundle_path`` runs it, and
    as the worker thread runs it with the ONNX graphs' check), without and with trusted keys. The
    two gates alternate rep by rep, so machine noise lands on both; the Ed25519 check alone is
    timed too."""
    from planner_node.runtime.bundle_gate import BundleGate
    from planner_node.runtime.signing import TrustStore, verify

    pub = ROOT / "config" / "keys" / "project_test.pub"
    gates = {"unsigned allowed": BundleGate([], ""), "trusted_keys": BundleGate([str(pub)], "")}
    print(f"{'bundle':<10}{'check':<14}{'gate':<18}{'p50 ms':>8}{'p99 ms':>8}")
    rows = {}
    for bundle in ("default", "hgap"):
        path = ROOT / "bundles" / bundle
        for graphs in (False, True):
            ms = {name: [] for name in gates}
            for i in range(reps if not graphs else max(10, reps // 10)):
                for name in (list(gates) if i % 2 == 0 else list(gates)[::-1]):
                    t0 = time.perf_counter()
                    gates[name].check(path, running_version=1, check_graphs=graphs)
                    ms[name].append(1e3 * (time.perf_counter() - t0))
            for name in gates:
                p50, p99 = np.percentile(ms[name], 50), np.percentile(ms[name], 99)
                rows[(bundle, graphs, name)] = p50
                print(f"{bundle:<10}{'+ graphs' if graphs else 'manifest':<14}{name:<18}{p50:>8.2f}{p99:>8.2f}")
    for bundle in ("default", "hgap"):
        for graphs in (False, True):
            extra = rows[(bundle, graphs, "trusted_keys")] - rows[(bundle, graphs, "unsigned allowed")]
            print(f"signature adds {extra:+.2f} ms (p50) to {bundle} ({'with' if graphs else 'without'} the graphs' check)")
    trust = TrustStore.from_files([pub])
    manifest = (ROOT / "bundles" / "default" / "manifest.yaml").read_bytes()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        verify(manifest, ROOT / "bundles" / "default" / "manifest.sig", trust)
        ms.append(1e3 * (time.perf_counter() - t0))
    print(f"the signature check alone (read manifest.sig, Ed25519 verify): p50 {np.percentile(ms, 50):.3f} ms, "
          f"p99 {np.percentile(ms, 99):.3f} ms")
    return 0


def attacks(domain: int) -> int:
    """The attacks of test/test_bundle_trust.py against a running node (realtime, trusted keys,
    bundle_root, locked parameters): each refusal's reason and how long the parameter service
    took to answer, and the largest gap between commands across them."""
    from hil import Probe
    from test_bundle_trust import SHIPPED, attack_bundles   # the test's attack makers

    from planner_node.runtime.signing import generate_keypair
    tmp = Path(tempfile.mkdtemp(prefix="attacks_"))
    root, outside = tmp / "root", tmp / "outside"
    root.mkdir(), outside.mkdir()
    other, _ = generate_keypair(tmp / "keys", "intruder")
    good = root / "good"
    shutil.copytree(SHIPPED, good)
    cases = attack_bundles(root, outside, other)
    probe = Probe(domain)
    rows = []
    try:
        from planner_node.ros.bringup import Bringup
        planner = {"bundle_root": str(root), "lock_parameters": True}
        with Bringup({"bundle": str(good), "lockstep": "false"}, extra={"planner": planner}, log_dir=tmp):
            probe.wait_for(lambda: len(probe.msgs["/humanoid/joint_commands"]) > 5, 180, "commands")
            t_start = time.monotonic()
            for name, (path, _) in cases.items():
                t0 = time.perf_counter()
                res = probe.set_param("planner", "bundle_path", str(path))
                rows.append((f"bundle_path: {name}", res.successful, res.reason.split(":")[1].strip(),
                             1e3 * (time.perf_counter() - t0)))
            for name, value in (("safety_filter_threshold", "1e9"), ("deadline_ms", 1000.0)):
                t0 = time.perf_counter()
                res = probe.set_param("planner", name, value)
                rows.append((name, res.successful, "locked" if "locked" in res.reason else res.reason,
                             1e3 * (time.perf_counter() - t0)))
            probe.spin(1.0)
            times = [t for t, _ in probe.msgs["/humanoid/joint_commands"] if t >= t_start]
            d = probe.diagnostics()
    finally:
        probe.close()
    print(f"{'attack':<38}{'accepted':>9}  {'reason':<22}{'answer ms':>10}")
    for name, ok, reason, ms in rows:
        print(f"{name:<38}{str(ok):>9}  {reason:<22}{ms:>10.1f}")
    print(f"largest gap between commands across the attacks: {_gap_ms(times):.1f} ms; "
          f"active bundle {d.get('active_bundle')}; ticks {d.get('ticks')}")
    return 0 if not any(ok for _, ok, _, _ in rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attacks", action="store_true", help="each trust attack against a running node, timed")
    ap.add_argument("--verify-cost", action="store_true", help="time the bundle gate with and without signatures")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--a", default=str(ROOT / "bundles" / "default"))
    ap.add_argument("--b", help="second bundle (default: a copy of --a at another path: a full load each swap)")
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--domain", type=int, default=59)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "swaps")
    ap.add_argument("--process", nargs="+", default=["worker"], choices=["worker", "inline"],
                    help="planner_process for each run, in this order (the same swaps each)")
    ap.add_argument("--deadline-ms", nargs="+", type=float, default=[25.0],
                    help="deadline_ms for each run, crossed with --process and --priority")
    ap.add_argument("--priority", nargs="+", type=int, default=[50],
                    help="command_clock_priority for each run (0: normal scheduling), crossed with --process")
    ap.add_argument("--kills", type=int, default=0, help="instead: SIGKILL the planner worker this many times")
    ap.add_argument("--kill-every", type=float, default=5.0, help="--kills: seconds between kills")
    a = ap.parse_args()
    if a.verify_cost:
        return verify_cost(a.reps)
    if a.attacks:
        return attacks(a.domain)
    from planner_node.atomic import write_json
    if a.kills:
        return kills(a)
    tmp = Path(tempfile.mkdtemp(prefix="swaps_"))
    b_path = a.b or str(shutil.copytree(a.a, tmp / "bundle_copy"))
    bundles = [str(Path(a.a).resolve()), str(Path(b_path).resolve())]
    runs = {}
    grid = [(pr, pi, dl) for pr in a.process for pi in a.priority for dl in a.deadline_ms]
    for i, (process, prio, deadline) in enumerate(grid):
        name = f"{process} p{prio} d{deadline:g}"
        runs[name] = run_swaps(a, bundles, {"planner_process": process, "command_clock_priority": prio,
                                            "deadline_ms": deadline}, a.domain - i, tmp / name.replace(" ", "_"))
    summary = {"bundles": [Path(x).name for x in bundles], "runs": runs, "period_ms": 30.0}
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "swaps.json", summary)
    print(f"{'run':<18}{'phase':<10}{'s':>5}{'swaps':>7}{'ticks':>7}{'fresh':>7}{'shifted':>9}{'fallback':>10}"
          f"{'misses':>8}{'late cmd':>10}{'age p99':>9}{'gap node':>10}{'gap listener':>14}{'gap probe':>11}")
    for process, phases in runs.items():
        for name, p in phases["phases"].items():
            print(f"{process:<18}{name:<10}{p['seconds']:>5.0f}{p['swaps']:>7}{p['ticks']:>7}{p['commands_fresh_plan']:>7}"
                  f"{p['commands_shifted_plan']:>9}{p['commands_fallback']:>10}{p['deadline_misses']:>8}"
                  f"{p['late_commands']:>10}{p['plan_age_p99_ms']:>9.1f}{p['max_gap_node_ms']:>10.1f}"
                  f"{p['max_gap_listener_ms']:>14.1f}{p['max_gap_probe_ms']:>11.1f}")
    print("fresh/shifted/fallback: where each slot's command came from; misses: slots whose fresh plan was not in by "
          "the deadline; late cmd: commands published after their slot ended; age p99: the commanded plan's state age [ms]; "
          "p: command_clock_priority (SCHED_FIFO; 0 normal); d: deadline_ms; "
          "gap node: the largest interval between two commands on the node's steady clock (1 s windows); "
          "gap listener: as this process's DDS received them; gap probe: as its Python callbacks ran [ms]")
    print(json.dumps(summary))
    return 0 if all(all(r["alive"].values()) for r in runs.values()) else 1


def _node_values(probe, t0: float, key: str) -> list[str]:
    """The planner node's /diagnostics values of ``key`` received since ``t0``."""
    return [kv.value for t, m in probe.msgs["/diagnostics"] if t > t0 for st in m.status
            if st.name == "planner_node" for kv in st.values if kv.key == key]


def _clear_commands(probe) -> None:
    for held in (probe.msgs, probe.received, probe.sent):
        held["/humanoid/joint_commands"].clear()


_PHASE_COUNTERS = ("ticks", "fallbacks", "deadline_misses", "late_commands", "swaps", "commands_fresh_plan",
                   "commands_shifted_plan", "commands_fallback", "worker_restarts")


def _phase(probe, d0: dict, t0: float) -> dict:
    """What one phase did: counter deltas, the node's and this process's largest command gaps."""
    d1 = probe.diagnostics()
    node_gaps = [float(v) for v in _node_values(probe, t0, "command_gap_max_ms_last_period")]
    times = [t for t, _ in probe.msgs["/humanoid/joint_commands"]]
    parts = [[float(x) for x in v.split()] for v in _node_values(probe, t0, "gap_parts_ms_last_period")]
    return {"seconds": round(time.monotonic() - t0, 1),
            "largest_gap_parts_ms": dict(zip(("gap", "previous_phase", "start_late", "lock", "observe", "wait",
                                              "choose", "publish"), max(parts, default=[]))),
            "gc_pause_max_ms": max((float(v) for v in _node_values(probe, t0, "gc_pause_max_ms_last_period")),
                                   default=float("nan")),
            **{k: int(d1.get(k, 0)) - int(d0.get(k, 0)) for k in _PHASE_COUNTERS},
            "plan_age_p99_ms": float(d1.get("plan_age_p99_ms", "nan")),
            "max_gap_probe_ms": round(_gap_ms(times), 1),
            "max_gap_listener_ms": round(_gap_ms(probe.received["/humanoid/joint_commands"]), 1),
            "max_gap_node_ms": round(max(node_gaps), 1) if node_gaps else float("nan"),
            "node_gaps_over_2_periods": sum(g > 60.0 for g in node_gaps),
            "fallbacks_by_reason": {k: v - counters(d0, "fallback_").get(k, 0)
                                    for k, v in counters(d1, "fallback_").items()},
            "commands": len(times)}


def run_swaps(a, bundles: list[str], planner: dict, domain: int, logs: Path) -> dict:
    """One stack with these planner parameters: a phase of swaps, then as long without."""
    from hil import Probe
    logs.mkdir(parents=True, exist_ok=True)
    probe = Probe(domain, keep=600)
    phases = {}
    try:
        with stack(bundles[0], logs, planner=planner, reset_on_fall=True) as b:
            probe.wait_for(lambda: len(probe.msgs["/planner/plan"]) > 30, 180, "the planner to plan")
            probe.spin(2.2)
            for phase in ("swaps", "no swaps"):
                d0 = probe.diagnostics()
                _clear_commands(probe)
                t0 = time.monotonic()
                if phase == "swaps":
                    for i in range(a.swaps):
                        target = bundles[(i + 1) % 2]
                        res = probe.set_param("planner", "bundle_path", target)
                        if not res.successful:
                            raise RuntimeError(f"swap {i} refused: {res.reason}")
                        probe.wait_for(lambda t=target: probe.diagnostics().get("active_bundle") == t, 60,
                                       f"swap {i} to {target}")
                        if i % 10 == 9:
                            print(f"{planner}: {i + 1} swaps, {time.monotonic() - t0:.0f} s", flush=True)
                    duration = time.monotonic() - t0
                else:
                    probe.spin(duration)
                probe.spin(2.2)  # diagnostics after the phase
                phases[phase] = _phase(probe, d0, t0)
            alive = b.alive()
            node_gap = float(probe.diagnostics().get("command_gap_max_ms", "nan"))
    finally:
        probe.close()
    return {"phases": phases, "node_command_gap_max_ms": node_gap, "alive": alive}


def kills(a) -> int:
    """SIGKILL the planner worker ``--kills`` times, one every ``--kill-every`` seconds: per kill,
    the time until the node commands a fresh plan again (seen in /diagnostics, so within its 1 s
    period), and over the run the largest command gap and whether every command was finite and
    inside the joint ranges."""
    import os
    import signal

    from hil import Probe

    from planner_node.atomic import write_json
    from planner_node.control.output_guard import OutputGuard
    from planner_node.robot.humanoid import Layout, load_model
    guard = OutputGuard(Layout(load_model()).joint_range)
    logs = Path(tempfile.mkdtemp(prefix="kills_"))
    probe = Probe(a.domain, keep=600)
    replan_s, bad = [], 0
    try:
        with stack(str(Path(a.a).resolve()), logs, reset_on_fall=True) as b:
            probe.wait_for(lambda: len(probe.msgs["/planner/plan"]) > 30, 180, "the planner to plan")
            probe.spin(2.2)
            d0 = probe.diagnostics()
            _clear_commands(probe)
            t0 = time.monotonic()
            for i in range(a.kills):
                d = probe.diagnostics()
                pid, fresh = int(d["worker_pid"]), int(d["commands_fresh_plan"])
                os.kill(pid, signal.SIGKILL)
                t_kill = time.monotonic()
                probe.wait_for(lambda p=pid, f=fresh: int(probe.diagnostics().get("worker_pid", -1)) not in (-1, p)
                               and int(probe.diagnostics()["commands_fresh_plan"]) > f + 5, 60, f"planning after kill {i}")
                # the diagnostics that showed it were published within the last second
                replan_s.append(time.monotonic() - t_kill)
                print(f"kill {i + 1}: worker {pid} killed; planning again after <= {replan_s[-1]:.2f} s", flush=True)
                probe.spin(max(0.0, a.kill_every - (time.monotonic() - t_kill)))
            probe.spin(2.2)
            phase = _phase(probe, d0, t0)
            bad = sum(guard.check(np.asarray(m.data)) is not None for _, m in probe.msgs["/humanoid/joint_commands"])
            alive = b.alive()
    finally:
        probe.close()
    summary = {"bundle": Path(a.a).name, "kills": a.kills, "replan_s": [round(x, 2) for x in replan_s],
               "commands_outside_guard": bad, **phase, "alive": alive}
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "kills.json", summary)
    print(f"{'kills':>6}{'restarts':>10}{'replan max s':>14}{'ticks':>7}{'fresh':>7}{'shifted':>9}{'fallback':>10}"
          f"{'bad cmds':>10}{'gap node ms':>13}{'gap listener ms':>17}{'gap probe ms':>14}")
    print(f"{a.kills:>6}{phase['worker_restarts']:>10}{max(replan_s):>14.2f}{phase['ticks']:>7}"
          f"{phase['commands_fresh_plan']:>7}{phase['commands_shifted_plan']:>9}{phase['commands_fallback']:>10}"
          f"{bad:>10}{phase['max_gap_node_ms']:>13.1f}{phase['max_gap_listener_ms']:>17.1f}"
          f"{phase['max_gap_probe_ms']:>14.1f}")
    print("replan: kill to the first /diagnostics showing a new worker and fresh plans (1 Hz: an upper bound)")
    print(json.dumps(summary))
    return 0 if all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
