"""Closed-loop evaluation of any registered planner on a task: returns, falls, speed."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from planner_node import spec
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.robot.tasks import get_task, kinematics, tracking_rmse


@dataclass
class EpisodeResult:
    seed: int
    ret: float
    length: int
    fell: bool
    wall_s: float
    plan_ms: list[float] = field(default_factory=list)
    # The planner's sample count as it ran: a budgeted MPPI (``--budget-ms``) calibrates it to
    # the machine's speed when each worker starts, so the same command can run 7 samples one day
    # and 2 (no better than zero action) another (README "Results", schedule D).
    samples: int | None = None
    # With ``trace=True``: the drift summary (sim/drift.py, JSON-ready) and the per-step arrays
    # (for the PNG; not serialized).
    drift: dict | None = None
    trace: dict | None = None
    # With a command (task track): achieved against commanded velocity (``tracking``), JSON-ready.
    tracking: dict | None = None

    def to_dict(self) -> dict:
        p = np.asarray(self.plan_ms) if self.plan_ms else np.zeros(1)
        return {"seed": self.seed, "return": self.ret, "length": self.length, "fell": self.fell,
                "fell_at": self.length if self.fell else None,
                "wall_s": self.wall_s, "plan_ms_p50": float(np.percentile(p, 50)),
                "plan_ms_p99": float(np.percentile(p, 99)),
                **({"samples": self.samples} if self.samples is not None else {}),
                **({"drift": self.drift} if self.drift is not None else {}),
                **({"tracking": self.tracking} if self.tracking is not None else {})}


def tracking_summary(rows: list[tuple[float, float, float]], command) -> dict:
    """Per step (forward, left [m/s], yaw rate [rad/s]) in the heading frame -> their means, the
    displacement as a fraction of the commanded one (per commanded component), and the RMSE of the
    ~1 s averages against the command (all three components)."""
    v = np.asarray(rows, float).reshape(-1, 3)
    cmd = np.asarray(command, float)
    if len(v) == 0:
        return {}
    mean = v.mean(axis=0)
    out = {"v_fwd_mean": float(mean[0]), "v_left_mean": float(mean[1]), "yaw_rate_mean": float(mean[2]),
           "rmse": tracking_rmse(v, cmd)}
    for i, name in enumerate(("fwd", "left", "yaw")):
        if abs(cmd[i]) > 1e-9:
            out[f"{name}_fraction"] = float(mean[i] / cmd[i])   # of the commanded rate, over the episode
    return out


def run_episode(env: HumanoidEnv, planner: Planner, task: str, steps: int, seed: int,
                command=None, frame_cb=None, trace: bool = False) -> EpisodeResult:
    t = get_task(task)
    obs = env.reset(seed)
    planner.reset(seed)
    drift = None
    if trace:
        from planner_node.sim.drift import DriftTrace
        drift = DriftTrace(env.model)
        drift.record(env)
    ret, fell, plan_ms, velocities = 0.0, False, [], []
    t0 = time.perf_counter()
    k = 0
    for k in range(1, steps + 1):
        t1 = time.perf_counter()
        plan = planner.plan(PlanRequest(obs=obs, task=task, command=command, sim_state=env.get_state()))
        plan_ms.append((time.perf_counter() - t1) * 1e3)
        obs, fell = env.step(plan.actions[0])
        ret += float(t.reward(obs, command))
        if command is not None:
            kin = kinematics(obs)
            velocities.append((float(kin["v_fwd"]), float(kin["v_left"]), float(kin["yaw_rate"])))
        if frame_cb is not None:
            frame_cb(env)
        if drift is not None:
            drift.record(env)
        if fell:
            break
    samples = getattr(planner, "samples", None)
    return EpisodeResult(seed, ret, k, fell, time.perf_counter() - t0, plan_ms,
                         int(samples) if isinstance(samples, (int, np.integer)) else None,
                         drift=drift.summary(env.layout.joint_range) if drift else None,
                         trace=drift.arrays() if drift else None,
                         tracking=tracking_summary(velocities, command) if command is not None else None)


def summarize(results: list[EpisodeResult], **extra) -> dict:
    rets = np.array([r.ret for r in results])
    steps = sum(r.length for r in results)
    wall = sum(r.wall_s for r in results)
    return {**extra,
            "mean_return": float(rets.mean()), "std_return": float(rets.std()),
            "mean_length": float(np.mean([r.length for r in results])),
            "fall_rate": float(np.mean([r.fell for r in results])),
            "ctrl_steps_per_s": steps / max(wall, 1e-9),
            "episodes": [r.to_dict() for r in results]}


def evaluate(agent: Planner, task: str, episodes: int, seed: int, steps: int,
             env_config: EnvConfig = EnvConfig(), command=None, progress: bool = True,
             video: str | None = None, trace_png: str | None = None, **extra) -> dict:
    from tqdm import tqdm

    env = HumanoidEnv(env_config)
    recorder = None
    if video:
        from planner_node.sim.render import VideoRecorder
        recorder = VideoRecorder(env.model, video)
    results = []
    try:
        for i in tqdm(range(episodes), desc=f"eval {getattr(agent, 'name', '?')}/{task}",
                      unit="episode", disable=not progress):
            results.append(run_episode(env, agent, task, steps, seed + i, command,
                                       frame_cb=recorder.add if recorder else None, trace=bool(trace_png)))
    finally:
        if recorder is not None:
            recorder.close()
    _plot_traces(results, trace_png, f"{getattr(agent, 'name', '?')} / {task}")
    return summarize(results, task=task, seed=seed, steps=steps, **extra)


def _plot_traces(results: list[EpisodeResult], png: str | None, title: str) -> None:
    if png:
        from planner_node.sim.drift import plot
        plot([(f"seed {r.seed}" + (f" fell@{r.length}" if r.fell else " up"), r.trace)
              for r in results if r.trace is not None], png, title)


@dataclass(frozen=True)
class PlannerFactory:
    """How to build a planner in any process (a Ray worker builds it once and keeps it)."""

    name: str                     # a registered planner (mppi, zero, a learned kind)
    kwargs: tuple = ()            # (key, value) pairs for its constructor
    bundle: str | None = None     # or: an exported bundle's runtime planner
    backend: str = "onnxruntime"
    seed: int = 0
    score: str = ""               # "": the planner as it is; else a ScoredPlanner mode (sim/oracle.py)
    critic: str | None = None     # a trained critic's run, for score="critic"
    filter: str = "none"          # an ActionFilter between plan and action (as the node has), by name
    filter_config: str = "{}"     # its YAML config
    plan_latency_ms: float = 0.0  # plans reach the robot this late (DelayedPlanner), as a command clock would

    def __call__(self) -> Planner:
        key = repr(self)
        if key not in _WORKER_PLANNERS:
            if self.bundle:
                from planner_node.runtime.bundle_planner import runtime_planner
                # kwargs here: the bundle's planner settings (e.g. temperature), checked by the runtime
                planner = runtime_planner(self.bundle, backend=self.backend, seed=self.seed, **dict(self.kwargs))
            else:
                from planner_node.planning import planner_class
                planner = planner_class(self.name)(**dict(self.kwargs))
            if self.score:
                from planner_node.sim.oracle import ScoredPlanner
                planner = ScoredPlanner(planner, self.score, threads=dict(self.kwargs).get("threads", 2),
                                        critic=self.critic)
            if self.filter != "none":
                from planner_node.control.action_filter import make_filter
                planner = FilteredPlanner(planner, make_filter(self.filter, self.filter_config,
                                                               bundle=getattr(planner, "bundle", None)))
            if self.plan_latency_ms > 0:
                planner = DelayedPlanner(planner, self.plan_latency_ms)
            _WORKER_PLANNERS[key] = planner
        return _WORKER_PLANNERS[key]


class DelayedPlanner(Planner):
    """Plans that arrive late, as a command clock apart from planning would use them: the plan
    made on the state of step k is ready at step k + d (d = ``latency_ms`` / the control period,
    rounded up); a new plan starts every step (pipelined: the best case for that age). Each step
    commands the newest ready plan, shifted by its age (its action
    ``age``, the last one held past its horizon). Before the first plan is ready it commands the
    first plan's first action (a node holds the robot then). d = 0 is the planner itself."""

    def __init__(self, inner: Planner, latency_ms: float):
        if not np.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError(f"plan_latency_ms={latency_ms!r}: must be a finite number >= 0")
        self.inner = inner
        self.delay = int(np.ceil(latency_ms / 1e3 / spec.CONTROL_PERIOD_S - 1e-9))
        self.name = f"{inner.name}@{latency_ms:g}ms"
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
        self.step = 0
        self.pending: list[tuple[int, Plan]] = []     # (step the plan was made on, plan)
        self.active: tuple[int, Plan] | None = None

    def plan(self, request: PlanRequest) -> Plan:
        self.pending.append((self.step, self.inner.plan(request)))
        while self.pending and self.pending[0][0] + self.delay <= self.step:
            self.active = self.pending.pop(0)
        made, plan = self.active or (self.step, self.pending[0][1])
        age = self.step - made if self.active else 0
        self.step += 1
        actions = np.asarray(plan.actions, float)
        shifted = actions[min(age, len(actions) - 1):]
        return Plan(shifted, plan.score, info={**plan.info, "plan_age_steps": age})


class FilteredPlanner(Planner):
    """A planner behind an action filter, as the controller runs it: the filter picks the action
    executed now (the plan's first), the rest of the plan is the planner's. Counts interventions."""

    def __init__(self, inner: Planner, action_filter):
        self.inner, self.filter = inner, action_filter
        self.name = f"{inner.name}+{action_filter.name}"

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
        self.filter.reset()

    def plan(self, request: PlanRequest) -> Plan:
        plan = self.inner.plan(request)
        f = self.filter.filter(request.obs, plan)
        actions = np.array(plan.actions, dtype=float)
        actions[0] = f.action
        return Plan(actions, plan.score, info={**plan.info, "filter": f.info, "intervened": f.intervened})


_WORKER_PLANNERS: dict[str, Planner] = {}  # per process: Ray reuses its workers across episodes
_WORKER_ENVS: dict[EnvConfig, HumanoidEnv] = {}  # likewise (reset() seeds every episode afresh)


def _episode_task(factory: PlannerFactory, task: str, steps: int, seed: int, env_config: EnvConfig,
                  command, trace: bool = False) -> EpisodeResult:
    env = _WORKER_ENVS.get(env_config) or _WORKER_ENVS.setdefault(env_config, HumanoidEnv(env_config))
    return run_episode(env, factory(), task, steps, seed, command, trace=trace)


def evaluate_parallel(factory: PlannerFactory, task: str, episodes: int, seed: int, steps: int,
                      env_config: EnvConfig = EnvConfig(), command=None, progress: bool = True,
                      workers: int = 1, ray_address: str | None = None, trace_png: str | None = None,
                      **extra) -> dict:
    """``evaluate`` with episodes as Ray tasks (``sim/parallel.py``): the same episodes (seed,
    seed + 1, ...), the same per-episode results, in episode order."""
    from tqdm import tqdm

    from planner_node.sim.parallel import EpisodePool

    results: dict[int, EpisodeResult] = {}
    bar = tqdm(total=episodes, desc=f"eval {factory.name}/{task}", unit="episode", disable=not progress)
    with EpisodePool(workers, ray_address) as pool:
        args = [(factory, task, steps, seed + i, env_config, command, bool(trace_png)) for i in range(episodes)]
        for i, r in pool.run(_episode_task, args):
            results[i] = r
            bar.update(1)
    bar.close()
    ordered = [results[i] for i in range(episodes)]
    _plot_traces(ordered, trace_png, f"{factory.name} / {task}")
    return summarize(ordered, task=task, seed=seed, steps=steps, **extra)


def se_return(r: dict) -> float:
    """Standard error of the mean return (``std_return`` is the population std over episodes)."""
    n = max(1, len(r.get("episodes", [])))
    return r["std_return"] * (n / max(1, n - 1)) ** 0.5 / n ** 0.5


def format_table(rows: list[dict]) -> str:
    """Mean return ± its standard error, mean length, fall rate, control steps/s."""
    head = f"{'planner':<16}{'task':<12}{'return ± s.e.':>18}{'length':>9}{'falls':>7}{'steps/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.get('planner', '?'):<16}{r['task']:<12}"
                     f"{r['mean_return']:>10.2f} ± {se_return(r):<5.2f}{r['mean_length']:>9.1f}"
                     f"{r['fall_rate']:>7.0%}{r['ctrl_steps_per_s']:>9.2f}")
    return "\n".join(lines)


def format_tracking(r: dict) -> str:
    """Achieved against commanded velocity, over the episodes that carry it ('' if none do)."""
    eps = [e for e in r.get("episodes", []) if e.get("tracking")]
    if not eps:
        return ""
    m = {k: np.mean([e["tracking"][k] for e in eps]) for k in ("v_fwd_mean", "v_left_mean", "yaw_rate_mean", "rmse")}
    return (f"tracking (mean of {len(eps)} episodes): forward {m['v_fwd_mean']:+.3f} m/s, left {m['v_left_mean']:+.3f} "
            f"m/s, yaw {m['yaw_rate_mean']:+.3f} rad/s; RMSE of 1 s averages {m['rmse']:.3f}")


def format_falls(r: dict) -> str:
    """When each episode fell (its step), and its drift summary where it was traced."""
    eps = r.get("episodes", [])
    falls = [f"{e['fell_at']}" if e.get("fell_at") else "up" for e in eps]
    lines = [f"fell at (step, per episode from seed {r.get('seed')}): {', '.join(falls)}"]
    for e in eps:
        d = e.get("drift")
        if not d:
            continue
        joints = ", ".join(f"{j['joint']} {j['change_rad']:+.2f} ({j['margin_to_limit_rad']:.2f} to limit)"
                           for j in d["joints_moved_most"][:3])
        lines.append(f"  seed {e['seed']}: {'fell@' + str(e['fell_at']) if e['fell'] else 'up'}; "
                     f"height {d['base_height_change_m']:+.3f} m, yaw {d['base_yaw_change_rad']:+.2f} rad, "
                     f"travel {d['base_travel_m']:.2f} m, feet slid {d['feet_slide_m'][0]:.2f}/"
                     f"{d['feet_slide_m'][1]:.2f} m, stance {d.get('stance_width_change_m', 0):+.3f} m, "
                     f"activation error {d['activation_error_start']:.3f}"
                     f"->{d['activation_error_end']:.3f}; joints {joints} [rad]")
    return "\n".join(lines)
