#!/usr/bin/env python3
"""First-action fidelity on held-out rows: how well each policy kind reproduces the data's action
at the data's own states, as R^2 in the data's per-joint units (1 = exact, 0 = the mean action).

Rows: executed (not label) rows of the held-out episodes of the split every trainer uses
(``split_episodes``, holdout 0.1, seed 0), so no model trained on them, with at least
``--window`` steps left in their episode (the trajectory models' windows start there). Columns,
on the same rows:
- a chunk bundle's first action;
- an IDQL run's samples at each DDIM step count: the mean of N, one sample, and the critic's
  choice (argmax of Q - V);
- an H-GAP or TAP run (``--latent``, repeatable): the VQ-VAE decoding the window's own true codes,
  the prior's near-greedy codes, one sample at T=1, the mean of N samples at T=1, and the best of
  N at T=2 picked by the true action (an oracle: how close the proposals come);
- a Diffuser run (``--diffuser``): the mean first action of its samples, at the shipped sampler
  settings and at the paper's (64 samples, 20 DDPM steps, value guidance), each state cold.
With ``--clean``, the target is the recorded clean action (policy rollouts: the policy's action
before the exploration noise); the trajectory models still encode the executed window.

    .venv/bin/python experiments/first_action_fidelity.py --data data/train \
        --chunk bundles/default --latent runs/hgap_default --latent runs/tap_small \
        --diffuser runs/diffuser_small [--rows 500] [--json results/fidelity/train.json]
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


def latent_first(run: str, ds, rows: np.ndarray, samples: int, seed: int) -> dict[str, np.ndarray]:
    """An H-GAP / TAP run's first action at each row's window: true codes, near-greedy, one sample,
    the mean of ``samples`` and the oracle best of ``samples``, in action units."""
    import torch

    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.data import returns_to_go, windows_at
    from planner_node.models.prior import sample_tokens
    from planner_node.models.train import build_models
    torch.set_num_threads(2)
    cfg, vq, prior, norm = build_models(load_checkpoint(run))
    x = torch.from_numpy(windows_at(ds, rows, cfg.vq.horizon, norm, returns_to_go(ds, cfg.vq.discount),
                                    cfg.vq.predict_return))
    D, T = cfg.vq.obs_dim, cfg.vq.num_tokens
    act = lambda z: np.clip(norm.unnorm_act(z.numpy()), -1, 1)   # noqa: E731 - z-scored -> action units
    true_a = ds.arrays["actions"][rows]
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("greedy", "one", "mean", "best")}
    with torch.no_grad():
        out["true codes"] = act(vq(x)[0][:, 0, D:D + 56])
        for i in range(len(x)):
            s = x[i:i + 1, 0, :D]
            g = sample_tokens(prior, s, 1, 1e-3, 1.0, np.full((1, T), 0.5))
            out["greedy"].append(act(vq.decode_tokens(g, s)[0, 0, D:D + 56]))
            toks = sample_tokens(prior, s, samples, 1.0, 1.0, rng.random((samples, T)))
            a1 = act(vq.decode_tokens(toks, s.expand(samples, -1))[:, 0, D:D + 56])
            out["one"].append(a1[0])
            out["mean"].append(a1.mean(0))
            toks = sample_tokens(prior, s, samples, 2.0, 0.99, rng.random((samples, T)))
            a2 = act(vq.decode_tokens(toks, s.expand(samples, -1))[:, 0, D:D + 56])
            out["best"].append(a2[((a2 - true_a[i]) ** 2).mean(1).argmin()])
    return {k: np.asarray(v) for k, v in out.items()}


def diffuser_first(run: str, ds, rows: np.ndarray, settings: dict) -> np.ndarray:
    """Diffuser's mean first action over its samples at each row's state, planned cold."""
    from planner_node.models.diffuser import DiffuserPlanner
    from planner_node.planning import PlanRequest
    pl = DiffuserPlanner(run, seed=0, **settings)
    A, out = ds.arrays, []
    for r in rows:
        pl.reset(int(r))
        p = pl.plan(PlanRequest(obs=A["observations"][r].astype(np.float64), task=ds.tasks[A["task_ids"][r]],
                                command=tuple(A["commands"][r])))
        c = p.info.get("candidates")
        out.append(np.asarray(c["first_actions"]).mean(0) if c is not None else p.actions[0])
    return np.asarray(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--chunk", help="a chunk bundle")
    ap.add_argument("--idql", help="an IDQL run")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 10], help="IDQL's DDIM step counts")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--latent", action="append", default=[], help="an H-GAP or TAP run (repeatable)")
    ap.add_argument("--diffuser", help="a Diffuser run")
    ap.add_argument("--window", type=int, default=16, help="rows keep this many steps of their episode")
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
    ids = ds.arrays["episode_ids"]
    ahead = np.minimum(rows + a.window - 1, len(ids) - 1)
    rows = rows[ids[ahead] == ids[rows]]          # a whole window left in the episode
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
    for run in a.latent:
        got = latent_first(run, ds, rows, a.samples, a.seed)
        for k, label in (("true codes", "VQ-VAE from the true codes"), ("greedy", "prior near-greedy"),
                         ("one", "one sample, T=1"), ("mean", f"mean of {a.samples}, T=1"),
                         ("best", f"best of {a.samples} at T=2 (oracle)")):
            table[f"{run}: {label}"] = r2(got[k], target)
    if a.diffuser:
        from planner_node.kinds import get_kind
        from planner_node.models.diffuser import REFERENCE_SETTINGS
        shipped = {k: v for k, v in get_kind("diffuser").defaults.items() if k in REFERENCE_SETTINGS}
        for label, settings in (("shipped sampler", shipped), ("paper sampler", REFERENCE_SETTINGS)):
            n = settings.get("samples", 1)
            table[f"{a.diffuser}: mean of {n}, {label}"] = r2(diffuser_first(a.diffuser, ds, rows, settings), target)
    what = "clean" if a.clean else "recorded"
    print(f"first-action R^2 against the {what} action, {len(rows)} held-out executed rows of {a.data}")
    for k, v in table.items():
        print(f"  {k:<60}{v:>7.3f}")
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"data": a.data, "rows": len(rows), "target": what, "r2": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
