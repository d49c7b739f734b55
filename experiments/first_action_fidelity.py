#!/usr/bin/env python3
"""First-action fidelity on held-out rows: how well each policy kind reproduces the data's action
at the data's own states, as R^2 in the data's per-joint units (1 = exact, 0 = the mean action).

Rows: executed (not label) rows of the held-out episodes of the split every trainer uses
(``split_episodes``, holdout 0.1, seed 0), so neither model trained on them. Columns, on the same
rows: a chunk bundle's first action; an IDQL run's samples at each DDIM step count: the mean of N,
one sample, and the critic's choice (argmax of Q - V). With ``--clean``, the target is the
recorded clean action (policy rollouts: the policy's action before the exploration noise).

    .venv/bin/python experiments/first_action_fidelity.py --data data/train16 \
        --chunk bundles/default --idql runs/idql_small [--rows 500] [--json results/idql/fidelity.json]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    mu, sd = target.mean(0), target.std(0) + 1e-6
    zt, zp = (target - mu) / sd, (pred - mu) / sd
    return float(1 - ((zp - zt) ** 2).mean() / zt.var(0).mean())


def chunk_first(bundle: str, obs: np.ndarray, tasks: list[str], task_ids, cmds) -> np.ndarray:
    from planner_node.runtime.bundle import load_bundle
    from planner_node.runtime.chunk import policy_inputs
    from planner_node.runtime.engine import make_engine
    b = load_bundle(bundle)
    nb, eng = b.normalizer(), make_engine(b, "policy", "onnxruntime", threads=1)
    bt = b.manifest["kind_config"]["tasks"]
    out = []
    for o, k, c in zip(obs, task_ids, cmds):
        z = ((o - nb["obs_mean"]) / nb["obs_std"]).astype(np.float32)[None]
        t, cm = policy_inputs(z, bt, tasks[k], c)
        a = eng.run({"obs": z, "task": t, "command": cm})["actions"][0][0]
        out.append(np.clip(a * nb["act_std"] + nb["act_mean"], -1, 1))
    return np.asarray(out)


def idql_first(run: str, steps: int, samples: int, obs, tasks, task_ids, cmds, seed: int) -> dict[str, np.ndarray]:
    import torch

    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.data import Normalizer
    from planner_node.models.idql import build_tick
    from planner_node.runtime.chunk import policy_inputs
    torch.set_num_threads(1)
    ck = load_checkpoint(run, expect_kind="idql")
    cfg, tick, _ = build_tick(ck, steps)
    norm = Normalizer.from_tensors(ck["normalizer"])
    rng = np.random.default_rng(seed)
    d = cfg.policy.horizon * 56
    mean, one, best = [], [], []
    with torch.no_grad():
        for o, k, c in zip(obs, task_ids, cmds):
            z = norm.norm_obs(o).astype(np.float32)[None]
            t, cm = policy_inputs(z, list(ck["policy_tasks"]), tasks[k], c)
            x, adv = tick(torch.from_numpy(rng.standard_normal((samples, d), dtype=np.float32)), torch.from_numpy(z),
                          torch.from_numpy(t), torch.from_numpy(cm))
            a = np.clip(norm.unnorm_act(x.numpy()[:, 0]), -1, 1)
            mean.append(a.mean(0))
            one.append(a[0])
            best.append(a[int(adv.argmax())])
    return {"mean": np.asarray(mean), "one": np.asarray(one), "critic": np.asarray(best)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--chunk", help="a chunk bundle")
    ap.add_argument("--idql", help="an IDQL run")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 10], help="IDQL's DDIM step counts")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--clean", action="store_true", help="score against the recorded clean actions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()

    from planner_node.dataset import Dataset
    from planner_node.models.data import split_episodes
    ds = Dataset(a.data)
    _, hold = split_episodes(ds, 0.1, 0)
    rows = np.concatenate(hold)
    rows = rows[~ds.label_rows()[rows]]
    target_all = ds.optional("clean_actions") if a.clean else ds.arrays["actions"]
    if target_all is None:
        raise SystemExit(f"{a.data}: records no clean actions (--clean needs policy rollouts)")
    rows = rows[np.isfinite(target_all[rows, 0])]
    rows = np.random.default_rng(a.seed).choice(rows, min(a.rows, len(rows)), replace=False)
    A = ds.arrays
    obs, tid, cmds, target = A["observations"][rows], A["task_ids"][rows], A["commands"][rows], target_all[rows]
    table = {}
    if a.chunk:
        table[f"chunk ({a.chunk})"] = r2(chunk_first(a.chunk, obs, ds.tasks, tid, cmds), target)
    if a.idql:
        for s in a.steps:
            got = idql_first(a.idql, s, a.samples, obs, ds.tasks, tid, cmds, a.seed)
            for k, label in (("mean", f"mean of {a.samples}"), ("one", "one sample"), ("critic", "critic's argmax")):
                table[f"idql {s} steps, {label}"] = r2(got[k], target)
    what = "clean" if a.clean else "recorded"
    print(f"first-action R^2 against the {what} action, {len(rows)} held-out executed rows of {a.data}")
    for k, v in table.items():
        print(f"  {k:<44}{v:>7.3f}")
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"data": a.data, "rows": len(rows), "target": what, "r2": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
