"""Token sampling in numpy, the same arithmetic as ``planner_node.models.prior`` (parity by design)."""
from __future__ import annotations

import numpy as np


def filtered_probs(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Temperature then nucleus filtering; probabilities (rows sum to 1), float64."""
    z = logits.astype(np.float64) / max(temperature, 1e-6)
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        ps = np.take_along_axis(p, order, -1)
        drop = np.cumsum(ps, -1) - ps > top_p
        ps = np.where(drop, 0.0, ps)
        p = np.zeros_like(p)
        np.put_along_axis(p, order, ps, -1)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]
    idx = (cdf < u[:, None]).sum(axis=-1)  # == searchsorted(cdf, u, side='left') per row
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int64)
