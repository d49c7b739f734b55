#!/usr/bin/env python3
"""How well Diffuser's value network knows returns and foresees falls, on held-out episodes.

For every held-out window (the run's own split), V(clean trajectory, t = 0) of each task
against the task's true discounted return-to-go: R^2 (z-scored), and the fall AUC, P(V of a
window that ends within 10 steps of a fall < V of one that does not); 0.5 is chance. The same
AUC of the true returns is the ceiling.

    python experiments/diffuser_value_quality.py runs/diffuser_small [--data data/train] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def fall_auc(score: np.ndarray, near: np.ndarray) -> float:
    a, b = score[near], score[~near]
    if not len(a) or not len(b):
        return float("nan")
    r = np.argsort(np.argsort(np.concatenate([a, b])))
    return 1.0 - float((r[: len(a)].sum() - len(a) * (len(a) - 1) / 2) / (len(a) * len(b)))


def main() -> int:
    from planner_node.dataset import Dataset
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.config import config_from_dict
    from planner_node.models.data import make_windows, split_episodes
    from planner_node.models.data import window_starts
    from planner_node.models.diffuser import build_models, task_returns
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", default="data/train")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint(a.run)
    cfg, _, value, norm = build_models(ck)
    c = config_from_dict(ck["config"])
    ds = Dataset(a.data)
    if ds.sha256 != ck["dataset"]["dataset_sha256"]:
        print(f"note: {a.data} is not the run's training data; its split is not the run's held-out set", file=sys.stderr)
    _, hold = split_episodes(ds, c.train.holdout_fraction, c.train.seed)
    H = c.unet.horizon
    x = torch.from_numpy(make_windows(ds, hold, H, norm, None, False))
    starts = window_starts(hold, H)
    ends_near_fall = np.zeros(len(ds), bool)
    for ep in ds.episodes():
        if ds.arrays["terminals"][ep[-1]]:
            ends_near_fall[ep[-(H + 10):]] = True   # the window ends within 10 steps of the fall
    near = ends_near_fall[starts]
    with torch.no_grad():
        v = value(x, torch.zeros(len(x))).numpy()
    rtg, tasks = task_returns(ds, c.value.discount)
    y = (rtg[starts] - ck["value_mean"].numpy()) / ck["value_std"].numpy()
    rows = []
    print(f"{a.run}: {len(x)} held-out windows, {int(near.sum())} end within 10 steps of a fall")
    print(f"{'task':<12}{'R^2':>6}{'fall AUC':>10}{'ceiling':>9}")
    for k, t in enumerate(tasks):
        r2 = 1.0 - float(((v[:, k] - y[:, k]) ** 2).mean() / y[:, k].var())
        row = {"task": t, "r2": r2, "fall_auc": fall_auc(v[:, k], near), "fall_auc_true_return": fall_auc(y[:, k], near)}
        rows.append(row)
        print(f"{t:<12}{r2:>6.2f}{row['fall_auc']:>10.2f}{row['fall_auc_true_return']:>9.2f}")
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"run": a.run, "windows": int(len(x)), "near_fall": int(near.sum()), "tasks": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
