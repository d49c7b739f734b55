"""Ground-truth sampling MPC (MPPI / predictive sampling) on the true MuJoCo dynamics.

It is the expert that makes datasets (large offline budget) and the baseline the learned
planners must beat (same 30 ms budget). Design, after MJPC's sampling planners:

* controls are a piecewise-linear spline with ``knots`` knots over the horizon (few
  parameters, smooth targets), held for each 30 ms control period like the real robot;
* warm start: the previous nominal spline shifted by one control period is sample 0, the
  standing "hold" posture is sample 1, the rest are Gaussian perturbations of the nominal;
* rollouts run in ``mujoco.rollout``'s C threads; the observation of every predicted
  control step is built by the one observation builder and scored by the task code, plus
  a balance cost (capture point over the feet, head height) from true-state sensors;
* update: MPPI weights exp(-(c - c_min) / (temperature * spread)); temperature 0 is
  predictive sampling (keep the best).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import mujoco
import numpy as np
from mujoco import rollout

from planner_node import spec
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.robot.humanoid import Layout, heading_world, load_model, standing_qpos
from planner_node.robot.observation import build_observation
from planner_node.robot.tasks import get_task

GRAVITY = 9.81
INTEGRATORS = {"euler": mujoco.mjtIntegrator.mjINT_EULER,
               "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
               "rk4": mujoco.mjtIntegrator.mjINT_RK4}
SOLVERS = {"newton": mujoco.mjtSolver.mjSOL_NEWTON, "cg": mujoco.mjtSolver.mjSOL_CG,
           "pgs": mujoco.mjtSolver.mjSOL_PGS}


def planning_copy(cfg: "MPPIConfig") -> mujoco.MjModel:
    """The model the expert predicts with: the executed robot, made cheaper as configured."""
    model = load_model(planning=cfg.planning_model)
    model.opt.timestep = cfg.timestep
    model.opt.integrator = INTEGRATORS[cfg.integrator]
    model.opt.solver = SOLVERS[cfg.solver]
    model.opt.iterations = cfg.iterations
    model.opt.ls_iterations = cfg.ls_iterations
    model.opt.tolerance = cfg.tolerance
    if not cfg.self_collision:
        # Bit 2 on the robot's conaffinity only: robot-robot pairs never match, robot-floor do.
        floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        body = np.arange(model.ngeom) != floor
        model.geom_contype[body] = 1
        model.geom_conaffinity[body] = 2
        model.geom_contype[floor] = 1
        model.geom_conaffinity[floor] = 3
    return model


@dataclass(frozen=True)
class MPPIConfig:
    """Expert settings. ``budget_ms`` (if set) caps samples to what fits that budget here."""

    samples: int = 64
    horizon: int = 15          # control steps (x 30 ms)
    knots: int = 4
    noise: float = 0.2         # std of knot perturbations, normalized action units
    limb_noise_scale: float = 0.25  # noise multiplier for arms/head (balance joints get 1)
    temperature: float = 0.1   # relative to the spread of sample costs; 0 = argmin
    threads: int = 2
    w_balance: float = 20.0    # capture point to support-centre distance [1/m]
    w_head: float = 10.0       # head height deficit^2 [1/m^2]
    head_height: float = 1.65  # [m] head height while standing (settled: ~1.69)
    w_height: float = 20.0     # root height deficit^2 [1/m^2]
    root_height: float = 1.03  # [m] root height while standing (settled: ~1.06)
    w_posture: float = 10.0    # mean squared joint deviation from the standing pose [1/rad^2]
    discount: float = 1.0
    walk_speed: float = 0.0    # [m/s] on locomotion tasks, where the capture point should lead the feet
    budget_ms: float | None = None
    planning_model: bool = True  # drop observation-only sensors, looser solver (~1.4x faster)
    # The expert may plan on a cheaper copy of the model than the one it executes on
    # (measured option by option in experiments/expert_options.py; the recipes use the winners).
    # Measured option by option in experiments/expert_options.py (results/expert/, README "Data
    # engine"): a 10 ms step and the PGS solver make a control step 2.5x cheaper, but the
    # expert then no longer walks; the defaults keep the executed robot's step and solver.
    timestep: float = spec.PHYSICS_TIMESTEP_S  # [s] physics step of the planning copy
    integrator: str = "euler"    # euler | implicitfast | rk4 (of the planning copy)
    solver: str = "newton"       # newton | cg | pgs: constraint solver of the planning copy
    iterations: int = 10         # constraint solver iterations (planning copy)
    ls_iterations: int = 10      # solver line-search iterations (planning copy)
    tolerance: float = 1e-5      # solver tolerance (planning copy)
    self_collision: bool = True  # False: the planning copy only collides with the floor
    warm_start: bool = True      # sample 0 = the previous plan shifted one control period
    replan_every: int = 1        # control steps between replans (in between: the plan, shifted)
    elite: int = 0               # > 0: MPPI weights over the best `elite` samples only (CEM-style)
    # A far-sighted expert: the horizon (0.45 s) cannot see a fall that its choice makes
    # inevitable later; a critic's V of the task at each rollout's last state (``planner
    # train-critic``: discounted return of the data's behaviour, falls terminal) adds
    # -w_terminal x gamma^H x V(s_H) to the sample's cost. 0 = off.
    terminal_critic: str = ""    # the critic's run directory
    w_terminal: float = 0.0

    def __post_init__(self):
        checks = {"samples": self.samples >= 2, "horizon": self.horizon >= 2,
                  "knots": 2 <= self.knots <= self.horizon, "noise": self.noise >= 0,
                  "temperature": self.temperature >= 0, "threads": self.threads >= 1,
                  "budget_ms": self.budget_ms is None or self.budget_ms > 0,
                  "timestep": 0 < self.timestep <= spec.CONTROL_PERIOD_S
                  and abs(spec.CONTROL_PERIOD_S / self.timestep - round(spec.CONTROL_PERIOD_S / self.timestep)) < 1e-6,
                  "integrator": self.integrator in INTEGRATORS, "solver": self.solver in SOLVERS,
                  "iterations": self.iterations >= 1, "ls_iterations": self.ls_iterations >= 1,
                  "tolerance": self.tolerance >= 0, "replan_every": 1 <= self.replan_every < self.horizon,
                  "elite": 0 <= self.elite <= self.samples, "w_terminal": self.w_terminal >= 0,
                  "terminal_critic": bool(self.terminal_critic) or self.w_terminal == 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"MPPIConfig.{name} has an invalid value: {getattr(self, name)!r}")


def _desired_velocity(task: str, command, speed: float) -> np.ndarray | None:
    """Heading-frame (forward, left) velocity [m/s] the balance term should ask for, or None."""
    if speed <= 0:
        return None
    if task == "track":  # the commanded velocity, capped at ``speed`` (a 0.5 m/s lead falls: measured)
        v = np.asarray(command if command is not None else (0.5, 0.0, 0.0), float)[:2]
        return v * min(1.0, speed / max(float(np.linalg.norm(v)), 1e-9))
    return {"forward": np.array([speed, 0.0]), "backward": np.array([-speed, 0.0]),
            "shift_left": np.array([0.0, speed])}.get(task)


class MPPIPlanner(Planner):
    """Sampling MPC on the true dynamics; needs ``PlanRequest.sim_state``."""

    name = "mppi"

    def __init__(self, config: MPPIConfig | None = None, seed: int | None = 0, **overrides):
        cfg = config or MPPIConfig()
        if overrides:
            cfg = MPPIConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        self.model = planning_copy(cfg)
        self.substeps = round(spec.CONTROL_PERIOD_S / cfg.timestep)  # physics steps per control period
        self.layout = Layout(self.model)
        self._q_stand = standing_qpos(self.model, self.layout)[self.layout.qpos_idx]
        self.hold = self.layout.hold_action(self._q_stand)
        self._datas = [mujoco.MjData(self.model) for _ in range(cfg.threads)]
        self._pool = rollout.Rollout(nthread=cfg.threads) if cfg.threads > 1 else None
        H, K = cfg.horizon, cfg.knots
        # Linear interpolation matrix: actions (H, 56) = W (H, K) @ knots (K, 56).
        self._knot_t = np.linspace(0.0, H - 1, K)
        self._interp = self._interp_matrix(np.arange(H, dtype=np.float64))
        self._shift = self._interp_matrix(np.minimum(self._knot_t + 1.0, H - 1))
        self._noise_scale = np.where(np.isin(spec.JOINT_NAMES, spec.BALANCE_JOINTS), 1.0,
                                     cfg.limb_noise_scale) * cfg.noise
        self._critic = None
        if cfg.w_terminal > 0:
            from planner_node.models.critic import Critic  # torch: only for a far-sighted expert
            self._critic = Critic(cfg.terminal_critic, threads=1)
        self.samples = cfg.samples
        if cfg.budget_ms is not None:
            self.samples = self._calibrate(cfg.budget_ms)
        self.reset(seed)

    def _interp_matrix(self, t: np.ndarray) -> np.ndarray:
        K = len(self._knot_t)
        W = np.zeros((len(t), K))
        for i, ti in enumerate(t):
            j = min(int(np.searchsorted(self._knot_t, ti, side="right")) - 1, K - 2)
            a = (ti - self._knot_t[j]) / (self._knot_t[j + 1] - self._knot_t[j])
            W[i, j], W[i, j + 1] = 1.0 - a, a
        return W

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.nominal = np.tile(self.hold, (self.config.knots, 1))
        self._last: Plan | None = None
        self._age = 0  # control steps since the last replan
        self._warmed = False  # the nominal was optimised at the current state (warm_up)

    def _calibrate(self, budget_ms: float) -> int:
        """Largest sample count whose plan() fits the budget on this machine (measured)."""
        from planner_node.sim.env import HumanoidEnv

        env = HumanoidEnv()
        obs = env.reset(0)
        req = PlanRequest(obs=obs, sim_state=env.get_state())
        timings = {}
        for n in (2, 8):
            self.samples = n
            self.reset(0)
            self.plan(req)
            t0 = time.perf_counter()
            for _ in range(3):
                self.plan(req)
            timings[n] = (time.perf_counter() - t0) / 3 * 1e3
        per_sample = max((timings[8] - timings[2]) / 6, 1e-6)
        fixed = max(timings[2] - 2 * per_sample, 0.0)
        return int(max(2, (budget_ms - fixed) // per_sample))

    def _rollout(self, state: np.ndarray, actions: np.ndarray):
        n = actions.shape[0]
        ctrl = np.empty((n, actions.shape[1], self.model.nu))
        ctrl[..., self.layout.ctrl_idx] = actions
        ctrl = np.repeat(ctrl, self.substeps, axis=1)  # zero-order hold per control period
        x0 = np.tile(state, (n, 1))
        if self._pool is not None:
            return self._pool.rollout(self.model, self._datas, x0, ctrl)
        return rollout.rollout(self.model, self._datas[0], x0, ctrl)

    def _costs(self, states, sensordata, task, command) -> tuple[np.ndarray, np.ndarray]:
        m, lay, cfg = self.model, self.layout, self.config
        idx = np.arange(self.substeps - 1, states.shape[1], self.substeps)  # end of each period
        st, sd = states[:, idx], sensordata[:, idx]
        qpos = st[..., 1:1 + m.nq]
        qvel = st[..., 1 + m.nq:1 + m.nq + m.nv]
        act = st[..., 1 + m.nq + m.nv:1 + m.nq + m.nv + m.na]
        obs = build_observation(lay, qpos, qvel, act, sd)
        reward = task.reward(obs, command)
        com, com_vel = sd[..., lay.com], sd[..., lay.com_vel]
        support = sd[..., lay.support_world].reshape(*sd.shape[:2], -1, 3)
        capture = com[..., :2] + com_vel[..., :2] * np.sqrt(np.maximum(com[..., 2:3], 0.1) / GRAVITY)
        # A norm, not its square: a small lean must still cost something (MJPC's smooth abs).
        target = support[..., :2].mean(axis=-2)
        v_des = _desired_velocity(task.name, command, cfg.walk_speed)
        if v_des is not None:
            # Walking is controlled falling: ask for the capture point ahead of the feet by the
            # desired velocity x the pendulum time constant, so the planner must step to keep up.
            fwd = heading_world(qpos[..., 3:7])
            left = np.stack([-fwd[..., 1], fwd[..., 0]], axis=-1)
            v_world = v_des[0] * fwd + v_des[1] * left
            target = target + v_world * np.sqrt(np.maximum(com[..., 2:3], 0.1) / GRAVITY)
        balance = np.sqrt(np.sum((capture - target) ** 2, axis=-1) + 1e-4)
        head = np.maximum(cfg.head_height - sd[..., lay.head_world][..., 2], 0.0) ** 2
        height = np.maximum(cfg.root_height - qpos[..., 2], 0.0) ** 2
        posture = np.mean((qpos[..., lay.qpos_idx] - self._q_stand) ** 2, axis=-1)
        step_cost = (-reward + cfg.w_balance * balance + cfg.w_head * head + cfg.w_height * height
                     + cfg.w_posture * posture)
        disc = cfg.discount ** np.arange(step_cost.shape[1])
        cost = step_cost @ disc
        if self._critic is not None:
            v_end = self._critic.values(obs[:, -1], task.name)
            cost = cost - cfg.w_terminal * self._critic.discount ** step_cost.shape[1] * v_end
        return cost, reward

    def plan(self, request: PlanRequest) -> Plan:
        if request.sim_state is None:
            raise ValueError("mppi is a ground-truth planner: PlanRequest.sim_state is required")
        cfg, task = self.config, get_task(request.task)
        t0 = time.perf_counter()
        if self._last is not None and self._age + 1 < cfg.replan_every:
            self._age += 1  # keep executing the last plan (it was made self._age steps ago)
            a = self._last.actions
            shifted = np.concatenate([a[self._age:], np.repeat(a[-1:], self._age, axis=0)])
            return Plan(shifted, score=self._last.score, info={**self._last.info, "replanned": False})
        nominal = self.nominal
        # The warm start: the previous nominal, shifted by the control periods since it was made
        # (not at all right after ``warm_up``, which optimised it at this very state).
        for _ in range(0 if self._warmed else self._age + 1 if cfg.warm_start else 0):
            nominal = self._shift @ nominal
        if not cfg.warm_start:
            nominal = np.tile(self.hold, (cfg.knots, 1))
        self._age, self._warmed = 0, False
        return self._improve(request, nominal, task, t0)

    def warm_up(self, request: PlanRequest, iterations: int) -> None:
        """Optimise the plan ``iterations`` times at this state without acting. A cold start
        (the nominal at the standing pose) makes poor first plans; an expert that takes over
        from a learner (DAgger) warms up first, so its recorded actions are its converged ones."""
        if request.sim_state is None:
            raise ValueError("mppi is a ground-truth planner: PlanRequest.sim_state is required")
        task = get_task(request.task)
        for _ in range(iterations):
            self._improve(request, self.nominal, task, time.perf_counter())
        self._age, self._warmed, self._last = 0, iterations > 0, None

    def _improve(self, request: PlanRequest, nominal: np.ndarray, task, t0: float) -> Plan:
        """One MPPI update around ``nominal`` at the request's state; the new nominal and plan."""
        cfg = self.config
        eps = self.rng.normal(0.0, 1.0, (self.samples, cfg.knots, spec.ACTION_DIM)) * self._noise_scale
        eps[0] = 0.0
        knots = nominal[None] + eps
        knots[1] = self.hold
        knots = np.clip(knots, spec.ACTION_LOW, spec.ACTION_HIGH)
        actions = np.einsum("hk,nka->nha", self._interp, knots)
        states, sensordata = self._rollout(request.sim_state, actions)
        cost, reward = self._costs(states, sensordata, task, request.command)
        cost = np.where(np.isfinite(cost), cost, np.inf)
        best = int(np.argmin(cost))
        if cfg.temperature > 0:
            spread = max(float(np.median(cost) - cost[best]), 1e-9)
            w = np.exp(-(cost - cost[best]) / (cfg.temperature * spread))
            if cfg.elite:
                w[np.argsort(cost)[cfg.elite:]] = 0.0
            w /= w.sum()
            self.nominal = np.einsum("n,nka->ka", w, knots)
        else:
            self.nominal = knots[best]
        plan_actions = np.clip(self._interp @ self.nominal, spec.ACTION_LOW, spec.ACTION_HIGH)
        self._last = Plan(plan_actions, score=float(-cost[best]),
                          info={"samples": self.samples, "best_reward": float(reward[best].mean()),
                                "plan_ms": (time.perf_counter() - t0) * 1e3, "replanned": True})
        return self._last

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
