"""The generic bundle runtime: what every runtime planner over an engine bundle needs (no torch).

``BundlePlanner`` verifies the bundle's kind and spec (``load_bundle``), merges the bundle's
planner defaults with overrides, normalises observations in and actions out with the manifest's
statistics, builds one engine per fixed-shape graph keyed by its batch size (``engines``/``fit``:
the smallest graph that holds n rows), and implements anytime planning: given a deadline, a
planner that cannot finish in time returns the previous best plan shifted by one control step,
scored by the same task on its predicted observations and marked ``info["fallback"]``.

``runtime_planner(bundle)`` builds the kind's runtime planner from its registry record
(``planner_node.kinds``); nothing here names a kind.
"""
from __future__ import annotations

import time

import numpy as np

from planner_node.kinds import get_kind, resolve
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.bundle import Bundle, load_bundle
from planner_node.runtime.engine import make_engine


class BundlePlanner(Planner):
    kind = ""  # set by each kind's runtime planner

    def __init__(self, bundle: str | Bundle, backend: str = "onnxruntime", seed: int | None = 0,
                 threads: int = 1, **overrides):
        # threads=1 by default: the graphs are small (64 x 128 GEMMs) and a second intra-op
        # thread bought nothing on 2 cores while taking the core the node's callbacks need
        # (planner bench --threads 2 vs 1, same run, 3 pairs: p99 39/44/41 ms vs 37/31/35 ms).
        # 0 = the backend's default.
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        m = self.bundle.manifest
        if m["planner"] != self.kind:
            raise ValueError(f"{self.bundle.root}: bundle is for planner {m['planner']!r}, not {self.kind!r}")
        unknown = sorted(set(overrides) - set(m["planner_defaults"]))
        if unknown:
            raise ValueError(f"{self.bundle.root}: unknown planner settings {unknown} for {self.kind!r}; "
                             f"valid: {sorted(m['planner_defaults'])}")
        self.params = {**m["planner_defaults"], **overrides}
        self.kind_config = m["kind_config"]
        self.backend = backend
        self._engine_kw = {"threads": threads} if threads else {}
        n = self.bundle.normalizer()
        self.obs_mean, self.obs_std = n["obs_mean"], n["obs_std"]
        self.act_mean, self.act_std = n["act_mean"], n["act_std"]
        self.H = m["horizon"]
        self.reset(seed)

    # -- engines -----------------------------------------------------------------------------
    def engines(self, base: str) -> dict:
        """batch size -> engine, for graph ``base`` and its smaller fixed-shape copies ``base_bN``
        (batch = the leading dimension of the graph's first input)."""
        engines = [make_engine(self.bundle, name, self.backend, **self._engine_kw)
                   for name in self.bundle.manifest["graphs"] if name == base or name.startswith(base + "_b")]
        self.engines_made = [*getattr(self, "engines_made", []), *engines]  # what runs (planner bench reports it)
        return dict(sorted((e.inputs[0].shape[0], e) for e in engines))

    @staticmethod
    def _fit(engines: dict, n: int):
        """(batch, engine) of the smallest fixed-shape graph that holds n rows."""
        return next((b, e) for b, e in engines.items() if b >= n)

    # -- normalisation -----------------------------------------------------------------------
    def norm_obs(self, obs: np.ndarray, n: int) -> np.ndarray:
        """(n, obs_dim) float32 rows of the normalised observation."""
        s = ((np.asarray(obs, np.float32) - self.obs_mean) / self.obs_std).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(s, (n, len(self.obs_mean))))

    def unnorm_act(self, a: np.ndarray) -> np.ndarray:
        """Normalised actions -> targets in [-1, 1] (the Plan contract)."""
        return np.clip(a * self.act_std + self.act_mean, -1.0, 1.0)

    # -- anytime -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # (pred obs, actions) of last best
        self._prev_age = 0

    #: After this many consecutive fallback ticks the previous plan is too old to reuse: plan
    #: to completion even if late (the controller counts the miss), rather than run open loop.
    MAX_FALLBACK_TICKS = 2

    def _late(self, deadline: float | None, margin_s: float) -> bool:
        # Without a (recent) previous plan there is nothing better to return: finish late
        # instead; the next ticks can then be anytime again.
        if self._previous is None or self._prev_age >= self.MAX_FALLBACK_TICKS:
            return False
        return deadline is not None and time.perf_counter() + margin_s > deadline

    def _remember(self, obs: np.ndarray, act: np.ndarray) -> None:
        """The plan just returned: predicted observations (H+1, D) and actions (H, 56)."""
        self._previous, self._prev_age = (obs, act), 0

    def _fallback(self, request: PlanRequest, why: str) -> Plan:
        task = get_task(request.task)
        obs, act = self._previous
        obs, act = np.concatenate([obs[1:], obs[-1:]]), np.concatenate([act[1:], act[-1:]])
        self._previous = (obs, act)
        self._prev_age += 1
        return Plan(act, float(task.reward(obs[1:], request.command).sum()), info={"fallback": why})


def runtime_planner(bundle: str | Bundle, backend: str = "onnxruntime", **kw) -> Planner:
    """The runtime planner of the bundle's kind (its registry record), over a verified bundle."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return resolve(get_kind(b.manifest["planner"]).runtime)(b, backend=backend, **kw)
