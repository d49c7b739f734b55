"""H-GAP and TAP planners on numpy + Engine (no torch): what the node runs.

They reproduce the PyTorch reference planners (``planner_node.models.planners``) draw for draw:
same numpy random stream, same sampling arithmetic, same task scoring.

Deadline-aware (anytime): given ``PlanRequest.deadline``, a planner that cannot finish in time
returns the best plan it has: the previous tick's best plan shifted by one control step
(scored by the same task on its predicted observations), marked ``info["fallback"]``.
"""
from __future__ import annotations

import time

import numpy as np

from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.runtime.bundle import Bundle, load_bundle
from planner_node.runtime.engine import make_engine
from planner_node.runtime.sampling import filtered_probs, inverse_cdf
from planner_node.robot.tasks import get_task


class _BundlePlanner(Planner):
    kind = ""

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
        self.params = {**m["planner_defaults"], **overrides}
        kw = {"threads": threads} if threads else {}
        self.priors = self._engines("prior_step", backend, kw)
        self.decoders = self._engines("decoder", backend, kw)
        self.prior, self.decoder = self.priors[max(self.priors)], self.decoders[max(self.decoders)]
        self.backend = backend
        n = self.bundle.normalizer()
        self.obs_mean, self.obs_std = n["obs_mean"], n["obs_std"]
        self.act_mean, self.act_std = n["act_mean"], n["act_std"]
        self.ret_mean, self.ret_std = n["ret_mean"], n["ret_std"]
        self.T, self.H, self.D = m["num_tokens"], m["horizon"], m["obs_dim"]
        shapes = {t.name: t.shape for t in self.prior.inputs}
        self.n_prior = shapes["state"][0]
        self.cache_shape = shapes["k_cache"]
        self.n_dec = {t.name: t.shape for t in self.decoder.inputs}["tokens"][0]
        self.reset(seed)

    def _engines(self, base: str, backend: str, kw: dict) -> dict:
        """batch size -> engine for ``base`` and its smaller fixed-shape copies (``base_bN``)."""
        engines = [make_engine(self.bundle, name, backend, **kw) for name in self.bundle.manifest["graphs"]
                   if name == base or name.startswith(base + "_b")]
        return dict(sorted(({t.name: t.shape for t in e.inputs}["state"][0], e) for e in engines))

    @staticmethod
    def _fit(engines: dict, n: int):
        """(batch, engine) of the smallest fixed-shape graph that holds n rows."""
        return next((b, e) for b, e in engines.items() if b >= n)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # (pred obs, actions) of last best
        self._prev_age = 0

    def _norm_state(self, obs: np.ndarray, n: int) -> np.ndarray:
        s = ((np.asarray(obs, np.float32) - self.obs_mean) / self.obs_std).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(s, (n, self.D)))

    def _unpack(self, traj: np.ndarray):
        obs = traj[..., : self.D] * self.obs_std + self.obs_mean
        act = np.clip(traj[..., self.D: self.D + 56] * self.act_std + self.act_mean, -1.0, 1.0)
        return obs, act

    #: After this many consecutive fallback ticks the previous plan is too old to reuse: plan
    #: to completion even if late (the controller counts the miss), rather than run open loop.
    MAX_FALLBACK_TICKS = 2

    def _late(self, deadline: float | None, margin_s: float) -> bool:
        # Without a (recent) previous plan there is nothing better to return: finish late
        # instead; the next ticks can then be anytime again.
        if self._previous is None or self._prev_age >= self.MAX_FALLBACK_TICKS:
            return False
        return deadline is not None and time.perf_counter() + margin_s > deadline

    def _fallback(self, request: PlanRequest, why: str) -> Plan:
        task = get_task(request.task)
        obs, act = self._previous
        obs, act = np.concatenate([obs[1:], obs[-1:]]), np.concatenate([act[1:], act[-1:]])
        self._previous = (obs, act)
        self._prev_age += 1
        return Plan(act, float(task.reward(obs[1:], request.command).sum()), info={"fallback": why})

    def _step_cost_s(self) -> float:
        return getattr(self, "_ema_step_s", 0.0)

    def _timed_prior(self, feeds, engine=None):
        t = time.perf_counter()
        out = (engine or self.prior).run(feeds)
        dt = time.perf_counter() - t
        self._ema_step_s = 0.8 * self._step_cost_s() + 0.2 * dt if self._step_cost_s() else dt
        return out


class RuntimeHGAPPlanner(_BundlePlanner):
    """Sample N code sequences (temperature, top-p), decode, score with the task, keep the best."""

    name = kind = "hgap"

    def plan(self, request: PlanRequest) -> Plan:
        p, N = self.params, self.n_prior
        u = self.rng.random((N, self.T))  # drawn up front: the stream matches the reference planner
        state = self._norm_state(request.obs, N)
        k = np.zeros(self.cache_shape, np.float32)
        v = np.zeros(self.cache_shape, np.float32)
        token = np.zeros((N, 1), np.int64)
        tokens = np.zeros((N, self.T), np.int64)
        for t in range(self.T):
            # Anytime: stop sampling if the remaining steps + decode would overrun the deadline.
            if self._late(request.deadline, (self.T - t + 2) * self._step_cost_s()):
                return self._fallback(request, f"deadline at token {t}/{self.T}")
            out = self._timed_prior({"state": state, "token": token, "pos": np.array([t], np.int64),
                                     "k_cache": k, "v_cache": v})
            k[:, :, :, t], v[:, :, :, t] = out["k_new"], out["v_new"]  # write slot t (copies)
            probs = filtered_probs(out["logits"], p["temperature"], p["top_p"])
            token = inverse_cdf(probs, u[:, t])[:, None]
            tokens[:, t] = token[:, 0]
        traj = self.decoder.run({"tokens": tokens, "state": state})["trajectory"]
        obs, act = self._unpack(traj)
        score = get_task(request.task).reward(obs[:, 1:], request.command).sum(axis=1)
        best = int(np.argmax(score))
        self._previous, self._prev_age = (obs[best], act[best]), 0
        return Plan(act[best].copy(), float(score[best]), info={"tokens": tokens[best].tolist()})


class RuntimeTAPPlanner(_BundlePlanner):
    """Beam search over codes scored by task reward (+ learned return-to-go when trained on the
    task), with TAP's likelihood-threshold penalty."""

    name = kind = "tap"

    def plan(self, request: PlanRequest) -> Plan:
        p, B = self.params, self.n_prior
        E = p["expansion"]
        m = self.bundle.manifest
        task = get_task(request.task)
        use_value = m.get("trained_tasks") == [request.task]
        states: dict[int, np.ndarray] = {}

        def state(n: int) -> np.ndarray:
            if n not in states:
                states[n] = self._norm_state(request.obs, n)
            return states[n]

        def cache(n: int) -> np.ndarray:
            return np.zeros((self.cache_shape[0], n, *self.cache_shape[2:]), np.float32)

        # Each call runs the smallest fixed-shape graph that holds the live rows (rows beyond
        # them are padding and are dropped): the beam is 1, E, E^2, ... wide before it is full.
        bp, eng = self._fit(self.priors, 1)
        k, v = cache(bp), cache(bp)
        out = self._timed_prior({"state": state(bp), "token": np.zeros((bp, 1), np.int64), "pos": np.array([0]),
                                 "k_cache": k, "v_cache": v}, eng)
        logits = out["logits"][:1].copy()
        k[:, :, :, 0], v[:, :, :, 0] = out["k_new"], out["v_new"]
        k, v = k[:, :1], v[:, :1]
        tokens = np.zeros((1, 0), np.int64)
        penalty = np.zeros(1)
        for t in range(self.T):
            if self._late(request.deadline, 2 * self._step_cost_s()):
                return self._fallback(request, f"deadline at code {t}/{self.T}")
            n = tokens.shape[0]
            probs = filtered_probs(logits, p["temperature"], 1.0)
            u = self.rng.random((n, E))
            cand = np.stack([inverse_cdf(probs, u[:, j]) for j in range(E)], 1)
            rel = np.take_along_axis(probs, cand, 1) / probs.max(1, keepdims=True)
            cand_tokens = np.concatenate([np.repeat(tokens, E, 0), cand.reshape(-1, 1)], 1)
            cand_pen = np.repeat(penalty, E) + (rel.reshape(-1) < p["prob_threshold"])
            full = np.concatenate([cand_tokens, np.repeat(cand_tokens[:, -1:], self.T - t - 1, 1)], 1)
            nc = len(full)
            bd, dec = self._fit(self.decoders, nc)
            padded = np.concatenate([full, np.repeat(full[-1:], bd - nc, 0)]) if nc < bd else full
            traj = dec.run({"tokens": padded, "state": state(bd)})["trajectory"][:nc]
            obs, _ = self._unpack(traj)
            cpl, stride = m["codes_per_latent"], m["latent_stride"]
            steps = ((t + 1) // cpl) * stride if cpl > 1 else (t + 1) * stride
            steps = max(1, min(steps, self.H))
            objective = task.reward(obs[:, 1:steps + 1], request.command).sum(1) if steps > 1 else np.zeros(nc)
            if use_value:
                rtg = traj[:, steps - 1, -2:] * self.ret_std + self.ret_mean
                objective = objective + (m["discount"] ** steps) * rtg[:, 1]
            objective = objective - p["prob_weight"] * cand_pen
            keep = np.argsort(-objective, kind="stable")[:B]
            tokens, penalty, best_objective = cand_tokens[keep], cand_pen[keep], objective[keep]
            if t + 1 < self.T:
                parent = keep // E
                nb = len(keep)
                bp, eng = self._fit(self.priors, nb)
                kk, vv = cache(bp), cache(bp)
                kk[:, :nb], vv[:, :nb] = k[:, parent], v[:, parent]
                tok = np.zeros((bp, 1), np.int64)
                tok[:nb, 0] = tokens[:, -1]
                out = self._timed_prior({"state": state(bp), "token": tok, "pos": np.array([t + 1]),
                                         "k_cache": kk, "v_cache": vv}, eng)
                logits = out["logits"][:nb].copy()
                kk[:, :, :, t + 1], vv[:, :, :, t + 1] = out["k_new"], out["v_new"]
                k, v = kk[:, :nb], vv[:, :nb]
        bd, dec = self._fit(self.decoders, 1)
        traj = dec.run({"tokens": np.repeat(tokens[:1], bd, 0), "state": state(bd)})["trajectory"][:1]
        obs, act = self._unpack(traj)
        self._previous, self._prev_age = (obs[0], act[0]), 0
        return Plan(act[0].copy(), float(best_objective[0]), info={"tokens": tokens[0].tolist()})


RUNTIME_PLANNERS = {"hgap": RuntimeHGAPPlanner, "tap": RuntimeTAPPlanner}


def runtime_planner(bundle: str | Bundle, backend: str = "onnxruntime", **kw) -> Planner:
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return RUNTIME_PLANNERS[b.manifest["planner"]](b, backend=backend, **kw)
