"""The Lyapunov-density safety filter (``safety_filter: ldm``): numpy + the bundle's G engine.

Among the candidates the planner already has (its sampled plans' first actions with their
scores, ``Plan.info["candidates"]``; a planner without them offers its one plan), return the
best-scoring one whose G(s, a) is at most the threshold: from there the robot can stay where its
data is dense. When none qualifies, return the lowest-G one and count an intervention. A
candidate whose action, score or G is not finite is never returned; if no candidate is finite
the filter raises, and the controller commands its fallback.

The threshold is the bundle's (-log of a percentile of the training data's density), unless
the config or ``set_threshold`` (the node's dynamic parameter) says otherwise.
"""
from __future__ import annotations

import numpy as np

from planner_node.control.action_filter import ActionFilter, Filtered, parse_threshold
from planner_node.planning import Plan
from planner_node.runtime.bundle import Bundle, load_bundle
from planner_node.runtime.engine import make_engine


class LDMFilter(ActionFilter):
    name = "ldm"
    needs_bundle = True  # make_filter passes the planner's bundle

    def __init__(self, bundle: str | Bundle, threshold: float | None = None, backend: str = "onnxruntime",
                 threads: int = 1):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        sf = self.bundle.manifest.get("safety_filter")
        if not sf or sf.get("name") != "ldm":
            raise ValueError(f"safety_filter: ldm needs a bundle exported with a Lyapunov density model "
                             f"(`planner export --ldm RUN`); {self.bundle.root} has none")
        self.g = make_engine(self.bundle, sf["lyapunov"], backend, **({"threads": threads} if threads else {}))
        self.batch = self.g.inputs[0].shape[0]
        self.bundle_threshold = float(sf["threshold"])
        self.threshold = self.bundle_threshold
        if threshold is not None:
            self.set_threshold(threshold)
        self.interventions = 0
        self.ticks = 0

    def set_threshold(self, value) -> None:
        """A new threshold (finite), or None / '' / NaN for the bundle's own."""
        v = parse_threshold(value)
        self.threshold = self.bundle_threshold if v is None else v

    def lyapunov(self, observation: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """G of each action (n, 56) at one observation; rows beyond the graph's batch run in chunks."""
        obs = np.ascontiguousarray(np.broadcast_to(np.asarray(observation, np.float32), (self.batch, len(observation))))
        out = []
        for i in range(0, len(actions), self.batch):
            chunk = np.asarray(actions[i:i + self.batch], np.float32)
            pad = np.zeros((self.batch, chunk.shape[1]), np.float32)
            pad[: len(chunk)] = np.nan_to_num(chunk)  # non-finite rows are excluded below, not run
            out.append(self.g.run({"obs": obs, "act": pad})["lyapunov"][: len(chunk)].astype(np.float64))
        return np.concatenate(out)

    def filter(self, observation: np.ndarray, plan: Plan) -> Filtered:
        c = (plan.info or {}).get("candidates")
        if c is not None:
            first, scores = np.asarray(c["first_actions"], float), np.asarray(c["scores"], float)
        else:
            first, scores = np.asarray(plan.actions[:1], float), np.array([plan.score], float)
        g = self.lyapunov(observation, first)
        finite = np.isfinite(first).all(axis=1) & np.isfinite(scores) & np.isfinite(g)
        if not finite.any():
            raise ValueError("safety filter: no candidate has a finite action, score and G")
        self.ticks += 1
        ok = finite & (g <= self.threshold)
        if ok.any():
            i = int(np.argmax(np.where(ok, scores, -np.inf)))
            intervened = False
        else:
            i = int(np.argmin(np.where(finite, g, np.inf)))
            intervened = True
            self.interventions += 1
        best = int(np.argmax(np.where(finite, scores, -np.inf)))
        return Filtered(first[i].copy(), intervened,
                        info={"g": float(g[i]), "threshold": self.threshold, "admissible": int(ok.sum()),
                              "candidates": int(len(first)), "switched": i != best})
