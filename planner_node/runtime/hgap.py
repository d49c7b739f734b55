"""H-GAP's runtime planner (numpy + engines, no torch): what the node runs for an H-GAP bundle.
Reproduces ``planner_node.models.hgap.HGAPPlanner`` draw for draw.

A bundle with the whole-plan graph (``plan``) can plan in one engine call per tick: every prior
step, the sampling and the decoder run inside the graph. Otherwise the planner runs a prior-step
call per code with the sampling in numpy, then the decoder. Both consume the same uniforms, so
they make the same plan. ``graphs="auto"`` takes the whole-plan graph when the bundle has it. On
this 2-core CPU (``planner bench``, 1000 ticks, one run) it has the tighter tail: p50 / p99
11.0 / 12.0 ms against the step graphs' 10.5 / 13.5, and over 10k realtime ticks in the node
0 deadline misses against 1. What it gives up: one call cannot be cut short, so the anytime
check happens once, before the call (a running mean of its cost against the deadline), where
the step graphs can stop between steps."""
from __future__ import annotations

import time

import numpy as np

from planner_node.planning import MAX_CANDIDATES, Candidates, Plan, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.engine import make_engine
from planner_node.runtime.latent import LatentBundlePlanner
from planner_node.runtime.sampling import filtered_probs, inverse_cdf

GRAPH_MODES = ("auto", "plan", "steps")


class RuntimeHGAPPlanner(LatentBundlePlanner):
    """Sample N code sequences (temperature, top-p), decode, score with the task, keep the best."""

    name = kind = "hgap"

    def __init__(self, bundle, backend: str = "onnxruntime", seed: int | None = 0, threads: int = 1,
                 graphs: str = "auto", critic_weight: float | None = None, **overrides):
        """``graphs``: "plan" (the whole-plan graph; an error if the bundle lacks it), "steps"
        (prior-step + decoder graphs), "auto" (the whole-plan graph when the bundle has it).
        ``critic_weight``: the weight of the bundle's critic term (None: the bundle's; 0: the
        candidates score their predicted reward alone)."""
        if graphs not in GRAPH_MODES:
            raise ValueError(f"graphs={graphs!r}: expected one of {GRAPH_MODES}")
        super().__init__(bundle, backend=backend, seed=seed, threads=threads, **overrides)
        has_plan = "plan" in self.bundle.manifest["graphs"]
        if graphs == "plan" and not has_plan:
            raise ValueError(f"{self.bundle.root}: graphs='plan' but the bundle has no whole-plan graph "
                             "(exported before it existed: export it again, or use graphs='steps')")
        self.whole = None
        if has_plan and graphs != "steps":
            self.whole = self.engines("plan")[self.n_prior]
            self._scalars = {"temperature": np.array([self.params["temperature"]], np.float32),
                             "top_p": np.array([self.params["top_p"]], np.float32)}
        self.graph_mode = "plan" if self.whole is not None else "steps"
        self.nucleus_overflows = 0  # ticks the whole-plan graph handed to the step graphs
        # The task critic (optional): predicted reward + weight x gamma^H V(predicted last state).
        cr = self.bundle.manifest.get("critic")
        self.critic = None
        if cr is not None:
            self.critic = make_engine(self.bundle, cr["graph"], backend, **self._engine_kw)
            self.critic_tasks, self.critic_discount = list(cr["tasks"]), float(cr["discount"])
        if critic_weight is None:
            critic_weight = float(cr["weight"]) if cr is not None else 0.0
        elif cr is None and critic_weight:
            raise ValueError(f"critic_weight={critic_weight}: {self.bundle.root} has no critic (planner export --critic RUN)")
        self.critic_weight = float(critic_weight)

    def plan(self, request: PlanRequest) -> Plan:
        c = self.candidates(request)
        if isinstance(c, Plan):  # the deadline came first: the fallback plan
            return c
        best = int(np.argmax(c.scores))
        self._remember(self._last_obs[best], c.actions[best])
        others = [i for i in np.argsort(-c.scores, kind="stable") if i != best][:MAX_CANDIDATES]
        return Plan(c.actions[best].copy(), float(c.scores[best]),
                    info={"tokens": c.tokens[best].tolist(), "candidates": c.first_actions(),
                          "predicted_obs": self._last_obs[best], "candidate_obs": self._last_obs[others]})

    def candidates(self, request: PlanRequest) -> Candidates | Plan:
        """Every sampled plan with the model's scores (or the fallback Plan if the deadline came first)."""
        u = self.rng.random((self.n_prior, self.T))  # drawn up front: the stream matches the reference planner
        if self.whole is not None:
            sampled = self._sample_whole(request, u)
        else:
            sampled = self._sample_steps(request, u)
        if isinstance(sampled, Plan):
            return sampled
        tokens, traj = sampled
        obs, act = self._unpack(traj)
        score = get_task(request.task).reward(obs[:, 1:], request.command).sum(axis=1)
        if self.critic is not None and self.critic_weight and request.task in self.critic_tasks:
            v = self.critic.run({"obs": np.ascontiguousarray(obs[:, -1], np.float32)})["values"]
            v = v[:, self.critic_tasks.index(request.task)]
            score = score + self.critic_weight * self.critic_discount ** (obs.shape[1] - 1) * v
        self._last_obs = obs
        return Candidates(act, score, obs[:, -1], tokens, obs.shape[1] - 1)

    def _sample_whole(self, request: PlanRequest, u: np.ndarray):
        """One engine call: (tokens, normalized trajectory), or the fallback Plan if the call's
        expected time (a running mean of the last calls) would overrun the deadline."""
        if self._late(request.deadline, getattr(self, "_ema_plan_s", 0.0)):
            return self._fallback(request, "deadline before the whole-plan call")
        t = time.perf_counter()
        out = self.whole.run({"uniforms": u.astype(np.float32), "state": self._norm_state(request.obs, 1),
                              **self._scalars})
        dt = time.perf_counter() - t
        ema = getattr(self, "_ema_plan_s", 0.0)
        self._ema_plan_s = 0.8 * ema + 0.2 * dt if ema else dt
        if out["nucleus_overflow"][0]:
            # A nucleus the graph could not resolve (more codes dropped than it sorts): this
            # tick's plan comes from the step graphs, on the same draws, so it is still exact.
            self.nucleus_overflows += 1
            return self._sample_steps(request, u)
        return out["tokens"].copy(), out["trajectory"]

    def _sample_steps(self, request: PlanRequest, u: np.ndarray):
        """A prior-step call per code, sampling in numpy, then the decoder."""
        p, N = self.params, self.n_prior
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
        return tokens, self.decoder.run({"tokens": tokens, "state": state})["trajectory"]
