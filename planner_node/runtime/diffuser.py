"""Diffuser's samplers and runtime planner (numpy + engines, no torch).

A plan is a trajectory of H rows (observation, action), normalised, denoised from noise by a
network that predicts the clean trajectory (x0). The current observation is written into row 0
after every step (inpainting). The arithmetic of every sampler lives in ``DiffusionSampler``,
over two callables (the denoiser, the value and its gradient), so the PyTorch reference planner
(``planner_node.models.diffuser``) and this runtime planner run the same steps on the same random
draws and make the same plan.

Samplers (the ``sampler`` setting):

* ``ddpm``: the paper's: every one of the T diffusion steps, ancestral noise at each.
* ``ddim``: ``steps`` deterministic DDIM steps (eta = 0) from pure noise.
* ``warm``: the previous tick's best plan, shifted one control step (its last row repeated),
  re-noised to level ``warm_start`` (of T) and denoised in ``steps`` DDIM steps; the first tick
  after a reset has no previous plan and runs ``cold_steps`` DDIM steps from pure noise.

Guidance (``guide``): ``gradient`` adds ``guide_scale`` x the step's posterior variance x the
gradient of the task's value in return units (as the paper's value regresses raw returns),
``guide_steps`` times per step, down to step ``guide_stop`` (the paper's 0.1, 2, 2); ``rank``
only ranks. Either way the samples are ranked
by the task's value of the final (clean) trajectory, and the best one's actions are the plan.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from planner_node.planning import MAX_CANDIDATES, Plan, PlanRequest
from planner_node.runtime.bundle_planner import BundlePlanner

SAMPLERS = ("ddpm", "ddim", "warm")
GUIDES = ("gradient", "rank")


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (what Diffuser uses), betas clipped at 0.999."""
    x = np.linspace(0, T, T + 1, dtype=np.float64)
    ac = np.cos(((x / T) + s) / (1 + s) * np.pi / 2) ** 2
    ac = ac / ac[0]
    return np.clip(1 - ac[1:] / ac[:-1], 0, 0.999)


@dataclass(frozen=True)
class Schedule:
    """DDPM coefficients for T steps (float64; cast per use)."""

    T: int

    def __post_init__(self):
        b = cosine_betas(self.T)
        a = 1.0 - b
        ab = np.cumprod(a)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        for k, v in {"betas": b, "alphas_cumprod": ab, "alphas_cumprod_prev": ab_prev, "posterior_variance": post_var,
                     # log clipped at 1e-20: the posterior variance at t = 0 is exactly 0
                     "posterior_log_variance": np.log(np.maximum(post_var, 1e-20)),
                     "mean_coef_x0": b * np.sqrt(ab_prev) / (1.0 - ab),
                     "mean_coef_xt": (1.0 - ab_prev) * np.sqrt(a) / (1.0 - ab)}.items():
            object.__setattr__(self, k, v)


def ddim_timesteps(t_start: int, k: int) -> list[int]:
    """k DDIM steps from level t_start (inclusive) towards 0, evenly spaced: (19, 4) -> 19, 14, 9, 4."""
    if not 1 <= k <= t_start + 1:
        raise ValueError(f"steps={k} must be in [1, {t_start + 1}] for a start at level {t_start}")
    return [(t_start + 1) * (k - i) // k - 1 for i in range(k)]


def check_settings(p: dict, T: int) -> None:
    """Refuse settings the samplers cannot run, naming the setting."""
    if p["sampler"] not in SAMPLERS:
        raise ValueError(f"sampler={p['sampler']!r}: expected one of {SAMPLERS}")
    if p["guide"] not in GUIDES:
        raise ValueError(f"guide={p['guide']!r}: expected one of {GUIDES}")
    if not 0 <= int(p["warm_start"]) < T:
        raise ValueError(f"warm_start={p['warm_start']!r}: expected a diffusion level in [0, {T - 1}]")
    if p["sampler"] == "warm":
        ddim_timesteps(int(p["warm_start"]), int(p["steps"]))
        ddim_timesteps(T - 1, int(p["cold_steps"]))
    elif p["sampler"] == "ddim":
        ddim_timesteps(T - 1, int(p["steps"]))
    for k in ("samples", "guide_steps"):
        if int(p[k]) < (1 if k == "samples" else 0):
            raise ValueError(f"{k}={p[k]!r} is out of range")
    if not np.isfinite(float(p["guide_scale"])):
        raise ValueError(f"guide_scale={p['guide_scale']!r}: expected a finite number")


class DiffusionSampler:
    """Every sampler's arithmetic over callables on float32 numpy arrays:

    ``denoise(x (N, H, D), t) -> x0 (N, H, D)``; ``value(x, t) -> (N, n_tasks)`` (normalised
    values); ``value_grad(x, t, weight (N, n_tasks)) -> (values, d sum(weight * values) / dx)``.
    Random draws come from the caller's numpy generator, in a fixed order."""

    def __init__(self, T: int, obs_dim: int, denoise: Callable, value: Callable, value_grad: Callable):
        self.s = Schedule(T)
        self.T, self.obs_dim = T, obs_dim
        self.denoise, self.value, self.value_grad = denoise, value, value_grad

    def condition(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        x[:, 0, : self.obs_dim] = state
        return x

    def _guide(self, x, t, state, weight, p) -> np.ndarray:
        if p["guide"] != "gradient" or t < int(p["guide_stop"]):
            return x
        for _ in range(int(p["guide_steps"])):
            _, g = self.value_grad(x, t, weight)
            x = self.condition((x + np.float32(p["guide_scale"] * self.s.posterior_variance[t]) * g).astype(np.float32),
                               state)
        return x

    def ddpm(self, rng, state, weight, p, n, shape) -> np.ndarray:
        s = self.s
        x = self.condition(rng.standard_normal((n, *shape), dtype=np.float32), state)
        for t in range(self.T - 1, -1, -1):
            x = self._guide(x, t, state, weight, p)
            x0 = self.condition(self.denoise(x, t), state)
            x = (np.float32(s.mean_coef_x0[t]) * x0 + np.float32(s.mean_coef_xt[t]) * x).astype(np.float32)
            if t > 0:
                std = np.float32(np.exp(0.5 * s.posterior_log_variance[t]))
                x = x + std * rng.standard_normal(x.shape, dtype=np.float32)
            x = self.condition(x, state)
        return x

    def ddim(self, x, state, weight, p, timesteps: list[int]) -> np.ndarray:
        ab = self.s.alphas_cumprod
        x = self.condition(x, state)
        for i, t in enumerate(timesteps):
            x = self._guide(x, t, state, weight, p)
            x0 = self.condition(self.denoise(x, t), state)
            ab_prev = ab[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
            eps = (x - np.float32(np.sqrt(ab[t])) * x0) / np.float32(np.sqrt(1.0 - ab[t]))
            x = self.condition((np.float32(np.sqrt(ab_prev)) * x0 + np.float32(np.sqrt(1.0 - ab_prev)) * eps)
                               .astype(np.float32), state)
        return x

    def sample(self, rng, state: np.ndarray, weight: np.ndarray, p: dict, shape: tuple,
               previous: np.ndarray | None) -> np.ndarray:
        """N = len(weight) samples (N, H, D) for the normalised ``state``; ``previous``: the
        last best plan (H, D) for the warm start."""
        n = len(weight)
        if p["sampler"] == "ddpm":
            return self.ddpm(rng, state, weight, p, n, shape)
        if p["sampler"] == "warm" and previous is not None:
            t_w = int(p["warm_start"])
            shifted = np.concatenate([previous[1:], previous[-1:]])[None]
            ab = self.s.alphas_cumprod[t_w]
            x = (np.float32(np.sqrt(ab)) * shifted
                 + np.float32(np.sqrt(1.0 - ab)) * rng.standard_normal((n, *shape), dtype=np.float32))
            return self.ddim(x.astype(np.float32), state, weight, p, ddim_timesteps(t_w, int(p["steps"])))
        k = int(p["cold_steps"] if p["sampler"] == "warm" else p["steps"])
        x = rng.standard_normal((n, *shape), dtype=np.float32)
        return self.ddim(x, state, weight, p, ddim_timesteps(self.T - 1, k))


class DiffuserPlanMixin:
    """What the reference and the runtime planner share around the sampler: settings, the
    task's one-hot weight, the warm-start memory, ranking and the Plan."""

    def _setup(self, params: dict, tasks: list[str], val_mean, val_std, obs_dim: int, horizon: int, dim: int):
        check_settings(params, self.sampler.T)
        self.params, self.tasks = params, list(tasks)
        self.val_mean, self.val_std = np.asarray(val_mean, np.float32), np.asarray(val_std, np.float32)
        self.obs_dim, self.horizon, self.dim = obs_dim, horizon, dim
        self._last = None

    def _task_weight(self, task: str, n: int) -> np.ndarray:
        if task not in self.tasks:
            raise KeyError(f"Diffuser's value was not trained for task {task!r} (it knows {', '.join(self.tasks)})")
        # d V_task / dx in return units: the network's output is z-scored per task.
        k = self.tasks.index(task)
        w = np.zeros((n, len(self.tasks)), np.float32)
        w[:, k] = self.val_std[k]
        return w

    def _sample_and_rank(self, request: PlanRequest, state: np.ndarray):
        """(samples (N, H, D), scores (N,): the task's value in return units)."""
        n = int(self.params["samples"])
        weight = self._task_weight(request.task, n)
        x = self.sampler.sample(self.rng, state, weight, self.params, (self.horizon, self.dim), self._last)
        k = self.tasks.index(request.task)
        v = self.sampler.value(x, 0)[:, k] * self.val_std[k] + self.val_mean[k]
        return x, v.astype(np.float64)

    def _finish(self, x: np.ndarray, scores: np.ndarray, unnorm_obs, unnorm_act) -> Plan:
        finite = np.isfinite(scores) & np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
        if not finite.any():
            raise FloatingPointError("Diffuser: every sample is non-finite")
        scores = np.where(finite, scores, -np.inf)
        best = int(np.argmax(scores))
        self._last = x[best].copy()
        others = [i for i in np.argsort(-scores, kind="stable") if i != best and finite[i]][:MAX_CANDIDATES]
        # Unnormalise only what is used: the best plan, and every candidate's first action.
        return Plan(unnorm_act(x[best, :, self.obs_dim:]), float(scores[best]),
                    info={"candidates": {"first_actions": unnorm_act(x[finite, 0, self.obs_dim:]),
                                         "scores": scores[finite]},
                          "predicted_obs": unnorm_obs(x[best, :, : self.obs_dim]),
                          "candidate_obs": unnorm_obs(x[others, :, : self.obs_dim])})


class RuntimeDiffuserPlanner(BundlePlanner, DiffuserPlanMixin):
    """The node's Diffuser: the bundle's ``denoiser``, ``value`` and ``value_grad`` graphs, at
    the exported sample count, driven by ``DiffusionSampler``."""

    name = kind = "diffuser"

    def __init__(self, bundle, backend: str = "onnxruntime", seed: int | None = 0, threads: int = 1, **overrides):
        BundlePlanner.__init__(self, bundle, backend=backend, seed=seed, threads=threads, **overrides)
        kc = self.kind_config
        n = int(self.params["samples"])
        dens = self.engines("denoiser")
        if n not in dens:
            raise ValueError(f"{self.bundle.root}: samples={n}, but its graphs were exported for {sorted(dens)} "
                             f"samples (export again with --samples {n})")
        self.den, self.val, self.vgrad = dens[n], self.engines("value")[n], self.engines("value_grad")[n]
        self.sampler = DiffusionSampler(int(kc["diffusion_steps"]), int(kc["obs_dim"]), self._denoise, self._value,
                                        self._value_grad)
        self._setup(self.params, kc["tasks"], kc["value_mean"], kc["value_std"], int(kc["obs_dim"]), self.H,
                    int(kc["obs_dim"]) + int(kc["act_dim"]))
        self._cost_s = 0.0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._last = None

    def _fallback(self, request: PlanRequest, why: str) -> Plan:
        # The warm start ages with the plan it came from: shift it as the executed plan shifts.
        if self._last is not None:
            self._last = np.concatenate([self._last[1:], self._last[-1:]])
        return super()._fallback(request, why)

    @staticmethod
    def _t(n: int, t: int) -> np.ndarray:
        return np.full((n,), float(t), np.float32)

    def _denoise(self, x, t):
        return self.den.run({"x": x, "t": self._t(len(x), t)})["x0"]

    def _value(self, x, t):
        return self.val.run({"x": x, "t": self._t(len(x), t)})["value"]

    def _value_grad(self, x, t, weight):
        out = self.vgrad.run({"x": x, "t": self._t(len(x), t), "weight": weight})
        return out["value"], out["grad"]

    def plan(self, request: PlanRequest) -> Plan:
        # Anytime: one sampler call cannot be cut short; if its running cost would overrun the
        # deadline, return the previous plan shifted (see BundlePlanner).
        if self._late(request.deadline, self._cost_s):
            return self._fallback(request, "deadline before sampling")
        t0 = time.perf_counter()
        state = self.norm_obs(request.obs, 1)[0]
        x, scores = self._sample_and_rank(request, state)
        plan = self._finish(x, scores, lambda o: o * self.obs_std + self.obs_mean, self.unnorm_act)
        dt = time.perf_counter() - t0
        self._cost_s = 0.8 * self._cost_s + 0.2 * dt if self._cost_s else dt
        self._remember(plan.info["predicted_obs"], plan.actions)
        return plan
