"""TAP's runtime planner (numpy + engines, no torch): beam search over codes scored by task
reward (+ learned return-to-go when trained on the task), with TAP's likelihood-threshold penalty.
Reproduces ``planner_node.models.tap.TAPPlanner`` draw for draw."""
from __future__ import annotations

import numpy as np

from planner_node.planning import Plan, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.latent import LatentBundlePlanner
from planner_node.runtime.sampling import filtered_probs, inverse_cdf


class RuntimeTAPPlanner(LatentBundlePlanner):
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
            cpl, stride = self.kind_config["codes_per_latent"], self.kind_config["latent_stride"]
            steps = ((t + 1) // cpl) * stride if cpl > 1 else (t + 1) * stride
            steps = max(1, min(steps, self.H))
            objective = task.reward(obs[:, 1:steps + 1], request.command).sum(1) if steps > 1 else np.zeros(nc)
            if use_value:
                rtg = traj[:, steps - 1, -2:] * self.ret_std + self.ret_mean
                objective = objective + (self.kind_config["discount"] ** steps) * rtg[:, 1]
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
        self._remember(obs[0], act[0])
        return Plan(act[0].copy(), float(best_objective[0]), info={"tokens": tokens[0].tolist(), "predicted_obs": obs[0]})
