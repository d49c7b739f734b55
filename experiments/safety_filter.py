#!/usr/bin/env python3
"""The Lyapunov-density safety filter in closed loop under pushes: filter off against on, for
each bundle (e.g. the shipped planner and a deliberately weakened one), and a threshold sweep.

Per row, over the same seeds: falls, mean episode length and return ± standard error, the share
of executed steps whose (s, a) has E above the bundle's cutoff (outside the dense data), the
intervention rate, and the filter's own latency (p50/p99 ms, the G engine over the candidates).
Thresholds of the sweep are -log c for c the given percentiles of the training data's densities
(measured here with the bundle's own E graph on ``--data``). One JSON per row in ``--out``
(kept: the script resumes); ``sweep.png`` plots the trade-off.

    python experiments/safety_filter.py --bundle B [--weak B2] [--task stand] [--episodes 10] [--steps 150]
                                  [--percentiles 5 20 40 60 80] [--data data/train] [--out results/safety_filter]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def se(x) -> float:
    x = np.asarray(x, float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def data_energies(bundle, data: str, n: int = 4096) -> np.ndarray:
    from planner_node.dataset import Dataset
    from planner_node.runtime.engine import make_engine
    eng = make_engine(bundle, bundle.manifest["safety_filter"]["energy"], "onnxruntime", threads=1)
    B = eng.inputs[0].shape[0]
    a = Dataset(data).arrays
    idx = np.random.default_rng(0).choice(len(a["observations"]), n - n % B, replace=False)
    out = [eng.run({"obs": a["observations"][idx[i:i + B]].astype(np.float32),
                    "act": a["actions"][idx[i:i + B]].astype(np.float32)})["energy"].copy() for i in range(0, len(idx), B)]
    return np.concatenate(out)


def run_row(bundle_path: str, threshold: float | None, a, label: str) -> dict:
    """``threshold`` None: filter off (the planner's own first action)."""
    from planner_node.planning import PlanRequest
    from planner_node.robot.tasks import get_task
    from planner_node.runtime.bundle import load_bundle
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.runtime.engine import make_engine
    from planner_node.runtime.ldm_filter import LDMFilter
    from planner_node.sim.env import EnvConfig, HumanoidEnv

    bundle = load_bundle(bundle_path)
    cutoff = float(bundle.manifest["safety_filter"]["threshold"])
    planner = runtime_planner(bundle, seed=a.seed)
    filt = LDMFilter(bundle, threshold=threshold if threshold is not None else cutoff)
    energy = make_engine(bundle, bundle.manifest["safety_filter"]["energy"], "onnxruntime", threads=1)
    env = HumanoidEnv(EnvConfig(push_every=a.push_every, push_speed=a.push_speed))
    task = get_task(a.task)
    episodes, filter_ms = [], []
    for i in range(a.episodes):
        seed = a.seed + i
        obs = env.reset(seed)
        planner.reset(seed)
        ret, fell, above, interventions, k = 0.0, False, 0, 0, 0
        for k in range(1, a.steps + 1):
            plan = planner.plan(PlanRequest(obs=obs, task=a.task))
            t0 = time.perf_counter()
            f = filt.filter(obs, plan)  # also measures G of the planner's own choice when off
            filter_ms.append((time.perf_counter() - t0) * 1e3)
            action = f.action if threshold is not None else plan.actions[0]
            interventions += int(f.intervened and threshold is not None)
            # E of what is executed: outside the dense data when above the bundle's cutoff
            e = executed_energy(energy, obs, action)
            above += int(e > cutoff)
            obs, fell = env.step(action)
            ret += float(task.reward(obs, None))
            if fell:
                break
        episodes.append({"seed": seed, "return": ret, "length": k, "fell": bool(fell), "e_above_cutoff": above / k,
                         "interventions": interventions / k})
    L, R = [e["length"] for e in episodes], [e["return"] for e in episodes]
    return {"label": label, "bundle": bundle_path, "threshold": threshold, "cutoff": cutoff, "task": a.task,
            "steps": a.steps, "push_every": a.push_every, "push_speed": a.push_speed, "seed": a.seed,
            "falls": int(sum(e["fell"] for e in episodes)), "mean_length": float(np.mean(L)), "se_length": se(L),
            "mean_return": float(np.mean(R)), "se_return": se(R),
            "e_above_cutoff": float(np.mean([e["e_above_cutoff"] for e in episodes])),
            "intervention_rate": float(np.mean([e["interventions"] for e in episodes])),
            "filter_ms_p50": float(np.percentile(filter_ms, 50)), "filter_ms_p99": float(np.percentile(filter_ms, 99)),
            "episodes": episodes}


def executed_energy(engine, obs, action) -> float:
    """E(s, a) of the one executed action (the graph's fixed batch: row 0, the rest zeros)."""
    B = engine.inputs[0].shape[0]
    act = np.zeros((B, len(action)), np.float32)
    act[0] = action
    o = np.ascontiguousarray(np.broadcast_to(np.asarray(obs, np.float32), (B, len(obs))))
    return float(engine.run({"obs": o, "act": act})["energy"][0])


def latency(bundle_path: str, n: int) -> int:
    """The filter's added latency against the plan it filters, on the same observations."""
    from planner_node.planning import PlanRequest
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.runtime.ldm_filter import LDMFilter
    from planner_node.sim.env import HumanoidEnv
    env = HumanoidEnv()
    obs = [env.reset(0)]
    for _ in range(49):
        obs.append(env.step(env.zero_action)[0])
    planner, filt = runtime_planner(bundle_path, seed=0), LDMFilter(bundle_path)
    for o in obs[:5]:  # warm-up
        filt.filter(o, planner.plan(PlanRequest(obs=o, task="stand")))
    t_plan, t_filter = [], []
    for i in range(n):
        o = obs[i % len(obs)]
        t0 = time.perf_counter()
        plan = planner.plan(PlanRequest(obs=o, task="stand"))
        t1 = time.perf_counter()
        filt.filter(o, plan)
        t2 = time.perf_counter()
        t_plan.append((t1 - t0) * 1e3)
        t_filter.append((t2 - t1) * 1e3)
    print(f"{bundle_path}: {n} ticks; the filter scores {filt.batch} candidates with the bundle's G graph")
    print(f"{'':<24}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, x in ((f"plan ({planner.graph_mode} graphs)", t_plan), ("ldm filter", t_filter)):
        print(f"{name:<24}{np.percentile(x, 50):>9.2f}{np.percentile(x, 99):>9.2f}{np.max(x):>9.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--weak", help="a weakened planner's bundle (with the same --ldm): it leaves the data readily")
    ap.add_argument("--task", default="stand")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--push-every", type=int, default=67)
    ap.add_argument("--push-speed", type=float, default=0.3)
    ap.add_argument("--percentiles", type=float, nargs="+", default=[5, 20, 40, 60, 80])
    ap.add_argument("--data", default="data/train")
    ap.add_argument("--out", default="results/safety_filter")
    ap.add_argument("--latency", type=int, metavar="N",
                    help="only time N filter calls next to N plans of the same bundle (same process, run alone)")
    a = ap.parse_args()
    if a.latency:
        return latency(a.bundle, a.latency)
    from planner_node.atomic import write_json
    from planner_node.runtime.bundle import load_bundle

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    energies = data_energies(load_bundle(a.bundle), a.data)
    plan = []
    for name, path in (("main", a.bundle), ("weak", a.weak)):
        if path:
            plan += [(f"{name}_off", path, None), (f"{name}_on", path, "bundle")]
    plan += [(f"main_c{c:g}", a.bundle, float(np.percentile(energies, 100 - c))) for c in a.percentiles]
    rows = []
    for label, path, thr in plan:
        f = out / f"{label}_{a.task}.json"
        if not f.exists():
            threshold = float(load_bundle(path).manifest["safety_filter"]["threshold"]) if thr == "bundle" else thr
            write_json(f, run_row(path, threshold, a, label))
        rows.append(json.loads(f.read_text()))
    print(f"{a.task}: {a.episodes} episodes x {a.steps} steps, seeds {a.seed}+, pushes {a.push_speed} m/s every "
          f"{a.push_every} steps; mean ± s.e.; E above cutoff: share of executed steps outside the dense data")
    print(f"{'row':<12}{'threshold':>10}{'falls':>7}{'length':>15}{'return':>15}{'E>cutoff':>10}{'interv.':>9}"
          f"{'filter p50/p99 ms':>19}")
    for r in rows:
        thr = "off" if r["threshold"] is None else f"{r['threshold']:.1f}"
        print(f"{r['label']:<12}{thr:>10}{r['falls']:>4}/{a.episodes:<2}{r['mean_length']:>8.1f} ± {r['se_length']:<4.1f}"
              f"{r['mean_return']:>8.1f} ± {r['se_return']:<4.1f}{r['e_above_cutoff']:>10.0%}{r['intervention_rate']:>9.0%}"
              f"{r['filter_ms_p50']:>10.2f} / {r['filter_ms_p99']:<6.2f}")
    sweep = [r for r in rows if r["label"].startswith("main_c")]
    if sweep:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        cs = [float(r["label"][6:]) for r in sweep]
        fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
        for axis, key, name in ((ax[0], "mean_return", "mean return"), (ax[1], "mean_length", "mean length [steps]"),
                                (ax[2], "e_above_cutoff", "executed steps with E > cutoff")):
            err = [se([e[key.replace("mean_", "")] for e in r["episodes"]]) for r in sweep]
            axis.errorbar(cs, [r[key] for r in sweep], yerr=err, fmt="o-", capsize=3, label="filter on (± s.e.)")
            off = next((r for r in rows if r["label"] == "main_off"), None)
            if off:
                e_off = se([e[key.replace("mean_", "")] for e in off["episodes"]])
                axis.axhline(off[key], color="gray", ls="--", label="filter off")
                axis.axhspan(off[key] - e_off, off[key] + e_off, color="gray", alpha=0.15)
            axis.set_xlabel("threshold: percentile c of data density (-log c)")
            axis.set_title(name)
        ax[0].legend()
        fig.suptitle(f"LDM safety filter, {a.task}, pushes {a.push_speed} m/s every {a.push_every} steps")
        fig.tight_layout()
        fig.savefig(out / "sweep.png", dpi=110)
        print(f"wrote {out / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
