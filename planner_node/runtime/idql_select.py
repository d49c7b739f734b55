"""IDQL's choice among its samples (no torch: the runtime and the reference planner share it).

The tick's graph gives N sampled chunks and each one's advantage A = Q(s, a0) - V(s) under the
task. ``select`` says which one is executed (Hansen-Estruch et al. 2023, section 4):

* ``argmax``: the largest A (the paper's greedy choice);
* ``expectile``: drawn with weight |tau - 1(A < 0)| / |A|, the implicit policy of an expectile
  critic (tau: the critic's expectile);
* ``exp``: drawn with weight exp(temperature x A / std(A)) (AWR-style; A standardised over the
  samples, so the temperature is unit-free across tasks);
* ``uniform``: drawn uniformly, ignoring the critic (the attribution: diffusion alone).
"""
from __future__ import annotations

import numpy as np

from planner_node.runtime.chunk import check_settings as check_chunk_settings

SELECT = ("argmax", "expectile", "exp", "uniform")
ADV_EPS = 1e-6


def sample_steps(diffusion_steps: int, steps: int) -> list[tuple[int, int]]:
    """DDIM's subsequence: ``steps`` (t, t_prev) pairs from T - 1 down to 0, evenly spaced;
    t_prev = -1 at the last (the clean sample)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= diffusion_steps:
        raise ValueError(f"steps={steps!r}: must be an integer in [1, {diffusion_steps}] (the model's diffusion steps)")
    ts = np.unique(np.round(np.linspace(0, diffusion_steps - 1, steps)).astype(int))[::-1]
    return [(int(t), int(ts[i + 1]) if i + 1 < len(ts) else -1) for i, t in enumerate(ts)]


def check_settings(settings: dict, horizon: int, tasks: list[str], diffusion_steps: int) -> dict[str, float]:
    """The chunk policy's blending and posture settings, plus ``samples``, ``steps``, ``select``
    and ``temperature``; returns the parsed ``task_weights``."""
    n = settings["samples"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"samples={n!r}: must be an integer >= 1")
    sample_steps(diffusion_steps, settings["steps"])
    if settings["select"] not in SELECT:
        raise ValueError(f"select={settings['select']!r}: must be one of {', '.join(SELECT)}")
    temp = settings["temperature"]
    if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not 0 <= temp < float("inf"):
        raise ValueError(f"temperature={temp!r}: must be a finite number >= 0")
    return check_chunk_settings(settings, horizon, tasks)


def choose(adv: np.ndarray, settings: dict, rng: np.random.Generator, expectile: float) -> int:
    """The index of the executed sample. Non-finite advantages are never chosen; if none is
    finite the choice is uniform (the samples themselves are clipped, finite actions)."""
    adv = np.asarray(adv, np.float64)
    finite = np.isfinite(adv)
    how = settings["select"]
    if how == "uniform" or not finite.any():
        return int(rng.integers(len(adv)))
    if how == "argmax":
        return int(np.argmax(np.where(finite, adv, -np.inf)))
    a = np.where(finite, adv, 0.0)
    if how == "expectile":
        w = np.abs(expectile - (a < 0)) / np.maximum(np.abs(a), ADV_EPS)
    else:
        z = (a - a[finite].max()) / max(float(a[finite].std()), ADV_EPS)
        w = np.exp(float(settings["temperature"]) * z)
    w = np.where(finite, w, 0.0)
    return int(rng.choice(len(a), p=w / w.sum()))


def plan_info(chunks: np.ndarray, adv: np.ndarray) -> dict:
    """``Plan.info``: every sample's first action with its advantage as the score (what the LDM
    filter chooses among)."""
    return {"candidates": {"first_actions": np.asarray(chunks[:, 0], np.float64),
                           "scores": np.nan_to_num(np.asarray(adv, np.float64), nan=-np.inf)}}
