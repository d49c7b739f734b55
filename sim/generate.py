"""Dataset generation: the MPPI expert on randomized tasks, with exploration noise and pushes.

One shard per episode, content-named in the store; episodes run in this process or as Ray
tasks (``sim/parallel.py``). Resumable: a shard exists under its final name only once it is
complete (atomic rename), and ``.NAME.progress.json`` records each finished episode after its
shard is written, so after a kill the finished episodes are kept and the rest are generated
again. Each episode's seed derives from the recipe's seed and the episode index, so a resumed
or distributed run writes the same shards, byte for byte, as one uninterrupted process.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from planner_node.dataset import DatasetError, finalize, is_sha256, manifest_path, shard_dir, write_shard
from planner_node.kinds import KINDS
from planner_node.robot.tasks import TASKS, get_task


@dataclass(frozen=True)
class Recipe:
    """How much data, from which expert, on which tasks."""

    episodes: int
    steps: int                       # control steps per episode (x 30 ms)
    tasks: tuple[str, ...] = tuple(TASKS)  # the dataset's task list (task_ids index it)
    draw: tuple[str, ...] = ()       # the tasks episodes are drawn from (default: all of ``tasks``)
    expert: dict = field(default_factory=dict)   # MPPIConfig overrides
    action_noise: float = 0.05       # exploration noise added to the expert's action
    push_every: int = 50
    push_speed: float = 0.3
    seed: int = 0
    # DAgger (Ross et al. 2011) for trajectory models: a learned planner drives first, for a
    # number of steps drawn from ``handover``; the expert takes over from the state it reached
    # and only the expert's part is recorded. If the learner falls first, the expert takes
    # over ``backoff`` steps (drawn) before the fall: the near-failure states a learner visits
    # and the expert data never did. ``learner`` is a run directory, given at generate time.
    learner: str = ""
    learner_planner: str = ""  # the learner's planner kind; "" = the kind its checkpoint records
    handover: tuple[int, int] = (0, 0)
    backoff: tuple[int, int] = (8, 20)
    # MPPI updates at the takeover state before the expert acts (its cold-start plans are poor:
    # without a warm start it fell in 6 of 6 episodes, README "Data engine"); 0 = none.
    expert_warmup: int = 0
    # DAgger as Ross et al. wrote it, for policies: the learner drives the whole episode (each
    # step the expert's action is executed instead with probability ``expert_share``), the expert
    # plans along at every visited state (its nominal shifts with the robot, so it stays warm),
    # and what is recorded is the expert's action there, its label, not the one executed. A
    # recorded (s, a, s') is then not always a transition of the dynamics: only kinds whose
    # trainer clones actions take such data (``Kind.trains_on_labels``).
    labels: str = "executed"   # "executed" | "expert"
    expert_share: float = 0.0
    # With labels="expert": the first ``plan_labels`` actions of the expert's plan at each visited
    # state are recorded with its label (the shard's ``plans`` field), so a chunk policy's tail,
    # which blending executes, is supervised at the learner's states too. 0 = the label only.
    plan_labels: int = 0
    # DAgger by rescue, for a learner that falls in the seconds after a push, not at once: the
    # learner drives the whole episode, which is cut into windows at the pushes (every
    # ``push_every`` steps from step 0). At each window's start the learner is first tried ahead
    # on a copy (robot, push and the learner's own state); where it would fall inside the window,
    # the copy is dropped and the expert (warmed up) drives that window from the same state under
    # the same push instead. Only the expert's windows are recorded, each as an episode of its
    # executed actions, so a chunk's tail is what the expert went on to do. Then the learner
    # drives on from where the expert left the robot.
    rescue: bool = False
    # With labels="expert", for a learner whose failure is slow drift (the shipped stand policy
    # falls 40-50 s into a no-push stand, its feet sliding apart): the learner first drives alone
    # and unrecorded for a number of steps drawn from this range, so the labels fall where the
    # drift has built up; then the expert warms up (``expert_warmup``) and labelling begins for
    # ``steps`` steps. A fall in the prefix backs off ``backoff`` steps. (0, 0) = from the start.
    label_from: tuple[int, int] = (0, 0)
    # Policy rollouts (MoCapAct's recipe for H-GAP's data, Wagener et al. 2022): the learner (a
    # policy run) drives whole episodes and its executed actions are recorded, so every kind
    # trains on the result (world models too: these are transitions). Per episode, drawn and
    # recorded in the shard: the action noise std (``noise_range``, added to the policy's action,
    # whose clean value is recorded beside it as ``clean_actions``) and the task weight
    # (``weight_range``: the policy's ``task_weights`` for the episode's task; stand is always
    # its own). Pushes come at random gaps (``push_gap``, steps) with random speeds
    # (``push_range``, m/s) and directions; ``push_every`` and ``push_speed`` are unused. A share
    # of the episodes (``long_share``) runs ``long_steps`` instead of ``steps``, so that the data
    # holds the slow drift of a minute's stand. A fall ends an episode (terminal).
    rollout: bool = False
    noise_range: tuple[float, float] = (0.0, 0.1)
    weight_range: tuple[float, float] = (0.0, 1.0)
    push_range: tuple[float, float] = (0.1, 0.35)
    push_gap: tuple[int, int] = (40, 120)
    long_share: float = 0.0
    long_steps: int = 2000

    def __post_init__(self):
        if self.episodes < 1 or self.steps < 1:
            raise ValueError(f"Recipe.episodes and Recipe.steps must be >= 1, got {self.episodes}, {self.steps}")
        for name in ("handover", "backoff", "label_from"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"Recipe.{name} must be a range 0 <= lo <= hi, got {getattr(self, name)!r}")
        if self.labels not in ("executed", "expert"):
            raise ValueError(f"Recipe.labels must be 'executed' or 'expert', got {self.labels!r}")
        if not 0.0 <= self.expert_share <= 1.0:
            raise ValueError(f"Recipe.expert_share must be in [0, 1], got {self.expert_share}")
        if self.labels == "expert" and self.handover[1] > 0:
            raise ValueError("Recipe.labels='expert' records the whole episode: it takes no handover range")
        if self.label_from[1] > 0 and self.labels != "expert":
            raise ValueError("Recipe.label_from delays the labels of labels='expert': give labels='expert'")
        if self.plan_labels < 0 or (self.plan_labels and self.labels != "expert"):
            raise ValueError(f"Recipe.plan_labels must be >= 0, and only given with labels='expert', "
                             f"got {self.plan_labels} with labels={self.labels!r}")
        if self.rescue and (self.labels != "executed" or self.handover[1] > 0 or self.push_every < 1):
            raise ValueError("Recipe.rescue cuts the learner's episode at its pushes: it needs push_every >= 1, "
                             "labels='executed' and no handover range")
        if self.expert_warmup < 0:
            raise ValueError(f"Recipe.expert_warmup must be >= 0, got {self.expert_warmup}")
        if self.learner_planner and self.learner_planner not in KINDS:
            raise ValueError(f"Recipe.learner_planner must be one of {', '.join(KINDS)}, got {self.learner_planner!r}")
        if self.rollout:
            for name in ("noise_range", "weight_range", "push_range"):
                lo, hi = getattr(self, name)
                if not 0 <= lo <= hi:
                    raise ValueError(f"Recipe.{name} must be a range 0 <= lo <= hi, got {getattr(self, name)!r}")
            if self.weight_range[1] > 1:
                raise ValueError(f"Recipe.weight_range must lie in [0, 1], got {self.weight_range!r}")
            if not 1 <= self.push_gap[0] <= self.push_gap[1]:
                raise ValueError(f"Recipe.push_gap must be a range 1 <= lo <= hi, got {self.push_gap!r}")
            if not 0 <= self.long_share <= 1 or self.long_steps < 1:
                raise ValueError(f"Recipe.long_share must be in [0, 1] and long_steps >= 1, got {self.long_share}, "
                                 f"{self.long_steps}")
            if self.labels != "executed" or self.rescue or self.handover[1] > 0:
                raise ValueError("Recipe.rollout records the learner's own executed actions: it takes no labels, "
                                 "rescue or handover")
        for t in self.tasks:
            get_task(t)
        extra = [t for t in self.draw if t not in self.tasks]
        if extra:
            raise ValueError(f"Recipe.draw names {extra[0]!r}, which is not in Recipe.tasks")


#: The data expert: 32 samples planning on a copy of the robot with its own 5 ms step and Newton
#: solver. experiments/expert_options.py measured every cheaper copy against it (results/expert/): the
#: ones that are 1.5-3.3x faster lose quality, most visibly in walking (README "Data engine").
EXPERT = {"samples": 32, "timestep": 0.005, "solver": "newton"}
#: 2.5x cheaper per control step (10 ms step, PGS solver); balances about as well on the 10 tasks,
#: but does not walk (0.25 m in 150 steps against 1.0-1.4 m). For balance data only.
FAST_EXPERT = {"samples": 32, "timestep": 0.01, "solver": "pgs"}
# The far-sighted expert: MPPI whose cost also counts 2 x gamma^H x V(s_H) of the committed task
# critic (runs/critic3), so it stops trading a later fall for reward now (the label rounds below).
FAR_EXPERT = {**EXPERT, "terminal_critic": "runs/critic3", "w_terminal": 2.0}
LOCOMOTION = ("forward", "backward", "shift_left", "track")

RECIPES: dict[str, Recipe] = {
    # Seconds on 2 cores: for tests and smoke runs.
    "tiny": Recipe(episodes=4, steps=20, tasks=("stand", "forward", "track"),
                   expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4),
    # The expert on the 10 tasks under pushes (0.3 m/s every 50 steps): ~5 min on 2 cores.
    "default": Recipe(episodes=40, steps=100, expert=EXPERT),
    # Same seeds as default, so its first 40 episodes are default's:
    # `--reuse data/default` takes them from there and only the other 80 are generated.
    "large": Recipe(episodes=120, steps=100, expert=EXPERT),
    # Balance data from the cheaper planning copy: 2.5x the transitions per CPU-hour (~50 min on 2 cores).
    "fast": Recipe(episodes=400, steps=100, expert=FAST_EXPERT),
    # Walking: on the locomotion tasks the expert leads its feet with the capture point
    # (walk_speed, m/s), so the data shows stepping, not only balancing in place.
    "walk": Recipe(episodes=120, steps=100, draw=LOCOMOTION, expert={**EXPERT, "walk_speed": 0.2}, seed=5),
    # DART (Laskey et al. 2017): 4x the execution noise, so the expert demonstrates recoveries
    # from the drift a learned planner makes (measured: H-GAP's actions drift 0.1-0.35 from the
    # expert's before it falls). Another seed; combine with `planner data merge`.
    "dart": Recipe(episodes=60, steps=100, expert=EXPERT, action_noise=0.2, seed=1),
    # DAgger round: needs `--learner RUN` (a learned kind's run). The learner drives 10-45 steps (it
    # falls at ~60-70 on its own; 8-20 steps before a fall is measured past saving), then the
    # expert recovers for up to 100.
    "dagger": Recipe(episodes=80, steps=100, expert=EXPERT, seed=2, handover=(10, 45), backoff=(20, 40)),
    # DAgger for a learner that lasts longer (a chunk policy falls after ~150 steps under these
    # pushes, not 60-70): it drives 20-200 steps, so the expert takes over late, from where the
    # learner drifted to, or 10-30 steps before the fall it was heading for.
    # The expert warms up for 10 updates at the takeover state: round 1 without it recorded
    # 50-step episodes (the cold expert fell) and its policy was worse (results/chunk_dagger/).
    "dagger_late": Recipe(episodes=80, steps=100, expert=EXPERT, seed=20, handover=(20, 200), backoff=(10, 30),
                          expert_warmup=10),
    "tiny_dagger": Recipe(episodes=2, steps=6, tasks=("stand", "forward"),
                          expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4,
                          handover=(3, 8), backoff=(1, 3)),
    # DAgger with expert labels on every state the learner visits (a policy's round: `--learner
    # RUN` of the chunk kind). The learner drives 300-step episodes (10 s, as the stay-up
    # evaluation) and the expert's action is executed on 20 % of the steps, so episodes last
    # past the learner's first fall-prone states; the labels are the expert's clean actions.
    # The cheaper planning copy labels: with the full expert a round took ~1 h on 2 cores
    # (2.5 labelled steps/s per worker), and the learner's failures are in balance, which the
    # cheap copy does as well (it does not walk, and the policy does not either).
    "dagger_labels": Recipe(episodes=120, steps=300, expert=FAST_EXPERT, seed=30, labels="expert",
                            expert_share=0.2),
    # The same from balance tasks only: round 1's labels (the cheaper copy's, which does not walk)
    # cost the locomotion tasks and helped rotate_y (README "Chunk policy").
    "dagger_labels_balance": Recipe(episodes=60, steps=300, expert=FAST_EXPERT, seed=31, labels="expert",
                                    expert_share=0.2, draw=("stand", "jump", "rotate_x", "rotate_y", "rotate_z")),
    # Labels from the full expert (the walking one on locomotion tasks), on the tasks the
    # policy is weakest at: the cheaper copy's labels lost walking (round 1) and left stand level
    # (balance round), and its 1-update labels are further from its converged action on learner
    # states (experiments/label_staleness.py). ~2.5 labelled steps/s per worker.
    "dagger_labels_full": Recipe(episodes=60, steps=300, expert={**EXPERT, "walk_speed": 0.2}, seed=32,
                                 labels="expert", expert_share=0.2,
                                 draw=("stand", "shift_left", "rotate_x", "rotate_y", "rotate_z")),
    # The same, labelled by a far-sighted expert: MPPI's cost adds 2 x gamma^H x V(s_H) of the
    # committed critic (runs/critic3), so it stops trading a later fall for rotation now. Offline
    # on schedule B (4 episodes, results/far_expert/): rotate_x length 199 -> 254, rotate_z
    # 129 -> 155, and more return on both. Seed 33 as dagger_labels_full2's round, so the two
    # labellers see the same episode draws from the same learner.
    "dagger_labels_far": Recipe(episodes=60, steps=300, seed=33, labels="expert", expert_share=0.2,
                                expert={**FAR_EXPERT, "walk_speed": 0.2},
                                draw=("stand", "shift_left", "rotate_x", "rotate_y", "rotate_z")),
    # Far-sighted labels on stand alone: the one gain of the round above that replicated over two
    # training seeds is stand on schedule B (falls 80 % -> 60-65 %, README "Chunk policy"). The
    # same learner and expert, another seed, 40 episodes of stand (~35 min on 2 cores).
    "dagger_labels_far_stand": Recipe(episodes=40, steps=300, seed=34, labels="expert", expert_share=0.2,
                                      expert=FAR_EXPERT,
                                      draw=("stand",)),
    # Round 2 of the above (DAgger is iterative): the learner is round 1's policy (runs/chunk_fs,
    # trained on data/train11 = train6 + round 1), which falls on stand in 40-65 % of 10 s
    # episodes on schedules A-C; its own drift is what this round labels. Another seed.
    "dagger_labels_far_stand2": Recipe(episodes=40, steps=300, seed=35, labels="expert", expert_share=0.2,
                                       expert=FAR_EXPERT,
                                       draw=("stand",)),
    # Round 3: the learner is round 2's policy (runs/chunk_fs2, trained on data/train12).
    "dagger_labels_far_stand3": Recipe(episodes=40, steps=300, seed=36, labels="expert", expert_share=0.2,
                                       expert=FAR_EXPERT,
                                       draw=("stand",)),
    # Labels where the drift is (docs/experiments/long_stand.md): the shipped policy
    # (runs/chunk_rsw4_s0) stands unpushed, alone and unrecorded, for 300-900 steps, and then for
    # 1,200 more steps the cheaper planning copy labels every state it visits (executing 10 % of
    # them). From the policy's drifted state (feet ~25 cm apart, base 12 cm lower) the copy
    # holds the robot up for 300 of 300 steps where the policy falls after 193.
    "dagger_labels_long": Recipe(episodes=24, steps=1200, seed=40, labels="expert", expert_share=0.1,
                                 expert=FAST_EXPERT, draw=("stand",), push_every=0, label_from=(300, 900),
                                 expert_warmup=10),
    # Round 4, with the expert's plan recorded at each state (its first 8 actions: a chunk):
    # label rows supervised only their first action, while ~60 % of each executed action comes
    # from chunk tails (blending, decay 0.5). The learner is round 3's policy (runs/chunk_fs3,
    # trained on data/train13).
    "dagger_labels_plans_stand": Recipe(episodes=40, steps=300, seed=37, labels="expert", expert_share=0.2,
                                        expert=FAR_EXPERT, draw=("stand",), plan_labels=8),
    # More of the expert's own stand episodes (balance under pushes, 0.3 m/s every 50 steps), from
    # the cheaper planning copy, which balances as well as the full one: a chunk policy's tails
    # are learned from the expert's executed actions, and label rounds no longer move stand.
    "fast_stand": Recipe(episodes=150, steps=100, expert=FAST_EXPERT, draw=("stand",), seed=8),
    # DAgger by rescue on stand: the stand policy falls 40-65 steps after a push in 55-65 % of
    # 10 s episodes on schedules B and C, and from the state at such a push the far-sighted
    # expert keeps the robot up in 5 of 6 tried (the policy's noisy continuations, in none). The
    # expert's recoveries from the pushes the learner fails are recorded. Pushes of 0.33 m/s
    # every 75 steps: between B and C, equal to no evaluated schedule.
    "rescue_stand": Recipe(episodes=60, steps=300, seed=38, expert=FAR_EXPERT, draw=("stand",), push_every=75,
                           push_speed=0.33, expert_warmup=10, rescue=True),
    # Round 2: the learner is round 1's shipped policy (runs/chunk_rsw4_s0, on data/train16), which
    # falls on stand in 5 / 40 / 75 / 5 % of episodes on schedules A-D: C's 0.35 m/s pushes are
    # where it still fails, so this round pushes at 0.36 m/s every 85 steps (equal to no
    # evaluated schedule). Another seed.
    "rescue_stand2": Recipe(episodes=40, steps=300, seed=39, expert=FAR_EXPERT, draw=("stand",), push_every=85,
                            push_speed=0.36, expert_warmup=10, rescue=True),
    "tiny_rescue": Recipe(episodes=2, steps=8, tasks=("stand", "forward", "track"), draw=("stand",),
                          expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4,
                          expert_warmup=1, rescue=True),
    # Policy rollouts (see Recipe.rollout): the shipped chunk policy (`--learner
    # runs/chunk_rsw4_s0`) on the 10 tasks, noise std in [0, 0.1] (its own actions' std is ~0.1),
    # task weights in [0, 1], pushes of 0.1-0.35 m/s every 40-120 steps, 10 % of the episodes
    # 2,000 steps long. `make rollouts` (docs/data.md#policy-rollouts).
    "policy_rollouts": Recipe(episodes=4400, steps=300, seed=50, rollout=True, long_share=0.1),
    "tiny_rollouts": Recipe(episodes=3, steps=12, tasks=("stand", "forward", "track"), rollout=True, long_share=0.34,
                            long_steps=20, push_gap=(3, 6)),
    "tiny_labels": Recipe(episodes=2, steps=8, tasks=("stand", "forward", "track"), draw=("stand", "forward"),
                          expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4,
                          labels="expert", expert_share=0.5),
}


def episode_start(recipe: Recipe, index: int) -> tuple[int, np.random.Generator, str]:
    """Episode ``index``'s seed, its random stream (the task drawn from it) and its task: a
    function of the recipe's seed and the index only, so any process makes the same episode."""
    seed = recipe.seed * 100_003 + index
    rng = np.random.default_rng(seed)
    pool = recipe.draw or recipe.tasks
    return seed, rng, pool[int(rng.integers(len(pool)))]


def generate_episode(recipe: Recipe, index: int, threads: int) -> dict[str, np.ndarray]:
    from planner_node.planning import PlanRequest
    from planner_node.sim.env import EnvConfig, HumanoidEnv
    from planner_node.sim.mppi import MPPIPlanner

    seed, rng, task_name = episode_start(recipe, index)
    command = np.zeros(3)
    if task_name == "track":
        command = np.array([rng.uniform(-0.3, 1.0), rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])
    env = HumanoidEnv(EnvConfig(push_every=0 if recipe.rollout else recipe.push_every, push_speed=recipe.push_speed))
    obs = env.reset(seed)
    if recipe.rollout:
        return _policy_rollout(recipe, index, threads, env, obs, task_name, command, rng, seed)
    if recipe.labels == "expert":
        return _labelled_episode(recipe, index, threads, env, obs, task_name, command, rng, seed)
    if recipe.rescue:
        return _rescued_episode(recipe, index, threads, env, obs, task_name, command, rng, seed)
    if recipe.learner:
        obs = _learner_prefix(recipe, env, obs, task_name, command, rng, seed, threads)
    expert = MPPIPlanner(seed=seed, **{"threads": threads, **recipe.expert})
    if recipe.expert_warmup:
        expert.warm_up(PlanRequest(obs=obs, task=task_name, command=tuple(command), sim_state=env.get_state()),
                       recipe.expert_warmup)

    def act(request):
        plan = expert.plan(request)
        action = np.clip(plan.actions[0] + rng.normal(0, recipe.action_noise, plan.actions.shape[1]), -1, 1)
        return action, action   # executed and recorded

    try:
        return _rollout(recipe, index, env, obs, task_name, command, act)
    finally:
        expert.close()


def _rollout(recipe: Recipe, index: int, env, obs, task_name: str, command, act,
             steps: int | None = None) -> dict[str, np.ndarray]:
    """Step ``env`` until ``steps`` (default: the recipe's) or a fall, as episode ``index``;
    ``act(request) -> (executed, recorded)`` chooses each step's action and what the dataset
    records for it."""
    from planner_node.planning import PlanRequest

    task = get_task(task_name)
    steps = recipe.steps if steps is None else steps
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for t in range(steps):
        executed, recorded = act(PlanRequest(obs=obs, task=task_name, command=tuple(command),
                                             sim_state=env.get_state()))
        next_obs, fell = env.step(executed)
        rows["observations"].append(obs)
        rows["actions"].append(recorded)
        rows["rewards"].append(float(task.reward(next_obs, command)))
        rows["terminals"].append(fell)
        rows["timeouts"].append(not fell and t == steps - 1)
        obs = next_obs
        if fell:
            break
    return _episode_arrays(rows, recipe, index, task_name, command)


def _policy_rollout(recipe: Recipe, index: int, threads: int, env, obs, task_name: str, command, rng,
                    seed: int) -> dict[str, np.ndarray]:
    """One ``rollout`` episode: the learner drives it all, with the episode's noise and task
    weight, pushed at random gaps; executed and clean actions recorded."""
    from planner_node.planning import planner_class

    sigma = float(rng.uniform(*recipe.noise_range))
    weight = float(rng.uniform(*recipe.weight_range))
    steps = recipe.long_steps if rng.random() < recipe.long_share else recipe.steps
    settings = {} if task_name == "stand" else {"task_weights": f"{task_name}:{weight:.6g}"}
    learner = planner_class(recipe.learner_planner)(checkpoint=recipe.learner, seed=seed, threads=threads, **settings)
    next_push = int(rng.integers(recipe.push_gap[0], recipe.push_gap[1] + 1))
    clean = []

    def act(request):
        nonlocal next_push
        if env.t == next_push:   # pushed before this step's action takes effect, as EnvConfig's pushes
            env.push(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(*recipe.push_range)))
            next_push += int(rng.integers(recipe.push_gap[0], recipe.push_gap[1] + 1))
        a = np.asarray(learner.plan(request).actions[0], np.float64)
        clean.append(a)
        executed = np.clip(a + rng.normal(0, sigma, a.shape), -1, 1) if sigma > 0 else a
        return executed, executed

    arrays = _rollout(recipe, index, env, obs, task_name, command, act, steps=steps)
    n = len(arrays["rewards"])
    arrays["clean_actions"] = np.stack(clean)[:n]
    arrays["noise_std"] = np.full(n, sigma)
    arrays["task_weight"] = np.full(n, 1.0 if task_name == "stand" else weight)
    return arrays


def _episode_arrays(rows: dict, recipe: Recipe, index: int, task_name: str, command) -> dict[str, np.ndarray]:
    n = len(rows["rewards"])
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["episode_ids"] = np.full(n, index)
    out["task_ids"] = np.full(n, recipe.tasks.index(task_name))
    out["commands"] = np.tile(command, (n, 1))
    return out


def _labelled_episode(recipe: Recipe, index: int, threads: int, env, obs, task_name: str, command, rng,
                      seed: int) -> dict[str, np.ndarray]:
    """One ``labels="expert"`` episode: the learner drives (the expert on a share of the steps),
    the expert's clean action at each visited state is the recorded action."""
    from planner_node.planning import PlanRequest, planner_class
    from planner_node.sim.mppi import MPPIPlanner

    learner = planner_class(recipe.learner_planner)(checkpoint=recipe.learner, seed=seed, threads=threads)
    expert = MPPIPlanner(seed=seed, **{"threads": threads, **recipe.expert})

    plans = []
    if recipe.label_from[1] > 0:
        obs = _unrecorded_prefix(recipe, learner, env, obs, task_name, command, rng)
    if recipe.expert_warmup and recipe.label_from[1] > 0:
        expert.warm_up(PlanRequest(obs=obs, task=task_name, command=tuple(command), sim_state=env.get_state()),
                       recipe.expert_warmup)

    def act(request):
        plan = expert.plan(request).actions
        label = plan[0]
        if recipe.plan_labels:
            plans.append(np.clip(plan[: recipe.plan_labels], -1, 1))
        # the learner plans every step, driving or not, so its own state (a chunk policy's
        # blend of recent chunks) is what it would be had it driven throughout
        mine = learner.plan(PlanRequest(obs=request.obs, task=request.task, command=request.command)).actions[0]
        if rng.random() < recipe.expert_share:
            return np.clip(label + rng.normal(0, recipe.action_noise, label.shape), -1, 1), np.clip(label, -1, 1)
        return mine, np.clip(label, -1, 1)

    try:
        arrays = _rollout(recipe, index, env, obs, task_name, command, act)
    finally:
        expert.close()
    if recipe.plan_labels:
        arrays["plans"] = np.stack(plans)   # one per recorded row: act runs once per step
    return arrays


def _unrecorded_prefix(recipe: Recipe, learner, env, obs, task_name: str, command, rng) -> np.ndarray:
    """The learner drives alone for ``label_from`` (drawn) steps; on a fall, back off
    ``backoff`` (drawn) steps. Leaves ``env`` where the labels begin."""
    from planner_node.planning import PlanRequest

    k = int(rng.integers(recipe.label_from[0], recipe.label_from[1] + 1))
    states = [(env.get_state(), env.t)]
    for _ in range(k):
        obs, fell = env.step(learner.plan(PlanRequest(obs=obs, task=task_name, command=tuple(command))).actions[0])
        if fell:
            state, t = states[max(0, len(states) - int(rng.integers(recipe.backoff[0], recipe.backoff[1] + 1)))]
            env.set_state(state)
            env.t = t
            return env.observation()
        states.append((env.get_state(), env.t))
    return obs


#: A rescue episode in which the learner never would have fallen records nothing; it is tried again
#: from another start this many times, and on the last try its last window is the expert's anyway
#: (every shard holds at least one window).
RESCUE_TRIES = 4


def _rescued_episode(recipe: Recipe, index: int, threads: int, env, obs, task_name: str, command, rng,
                     seed: int) -> dict[str, np.ndarray]:
    """One ``rescue`` episode: the expert's windows where the learner, tried ahead, would fall."""
    import copy

    from planner_node.planning import PlanRequest, planner_class
    from planner_node.sim.mppi import MPPIPlanner

    learner = planner_class(recipe.learner_planner)(checkpoint=recipe.learner, seed=seed, threads=threads)
    expert = MPPIPlanner(seed=seed, **{"threads": threads, **recipe.expert})
    windows: list[dict] = []

    def request(o, sim=False):
        return PlanRequest(obs=o, task=task_name, command=tuple(command), sim_state=env.get_state() if sim else None)

    def expert_act(req):
        plan = expert.plan(req)
        learner.plan(request(req.obs))   # keeps the learner's own state (a chunk policy's blend) current
        action = np.clip(plan.actions[0] + rng.normal(0, recipe.action_noise, plan.actions.shape[1]), -1, 1)
        return action, action

    def expert_window(o, n: int) -> tuple[np.ndarray, bool]:
        """The expert drives ``n`` steps (a window, cut by a timeout) or to a fall; recorded."""
        expert.reset(seed)
        if recipe.expert_warmup:
            expert.warm_up(request(o, sim=True), recipe.expert_warmup)
        windows.append(_rollout(recipe, len(windows), env, o, task_name, command, expert_act, steps=n))
        return env.observation(), bool(windows[-1]["terminals"][-1])

    try:
        for attempt in range(RESCUE_TRIES):
            if attempt:
                obs = env.reset(int(rng.integers(2**31)))
                learner.reset(seed)
            t, fell = 0, False
            while t < recipe.steps and not fell:
                n = min(recipe.push_every, recipe.steps - t)
                saved = (env.get_state(), env.t, copy.deepcopy(env.rng.bit_generator.state))
                probe, o = copy.deepcopy(learner), obs
                for _ in range(n):
                    o, fell = env.step(probe.plan(request(o)).actions[0])
                    if fell:
                        break
                last_chance = attempt == RESCUE_TRIES - 1 and not windows and t + n >= recipe.steps
                if not fell and not last_chance:
                    learner, obs = probe, o
                else:   # the learner would fall here: back to the window's start, the expert drives
                    env.set_state(saved[0])
                    env.t, env.rng.bit_generator.state = saved[1], saved[2]
                    obs, fell = expert_window(env.observation(), n)
                t += n
            if windows:
                break
    finally:
        expert.close()
    return {k: np.concatenate([w[k] for w in windows]) for k in windows[0]}


def _learner_prefix(recipe: Recipe, env, obs, task_name: str, command, rng, seed: int, threads: int):
    """Let the learner drive; leave ``env`` at the state the expert takes over from."""
    from planner_node.planning import PlanRequest, planner_class

    learner = planner_class(recipe.learner_planner)(checkpoint=recipe.learner, seed=seed, threads=threads)
    k = int(rng.integers(recipe.handover[0], recipe.handover[1] + 1))
    states = [(env.get_state(), env.t)]
    for _ in range(k):
        plan = learner.plan(PlanRequest(obs=obs, task=task_name, command=tuple(command)))
        obs, fell = env.step(plan.actions[0])
        if fell:
            back = int(rng.integers(recipe.backoff[0], recipe.backoff[1] + 1))
            state, t = states[max(0, len(states) - back)]
            env.set_state(state)
            env.t = t
            return env.observation()
        states.append((env.get_state(), env.t))
    return obs


def _episode(store: str, recipe: Recipe, index: int, threads: int) -> dict:
    """One episode, written to the store as one content-named shard; returns its entry.
    Runs in a Ray worker or in this process: the entry is recorded by the caller, so a worker
    killed mid-episode leaves at most a temp file (removed on the next run) and no record."""
    arrays = generate_episode(recipe, index, threads)
    return {**write_shard(store, arrays), "episode": index}


_DAGGER_FIELDS = ("learner", "learner_planner", "handover", "backoff")
_ROLLOUT_FIELDS = ("rollout", "noise_range", "weight_range", "push_range", "push_gap", "long_share", "long_steps")


def _recipe_dict(name: str, recipe: Recipe) -> dict:
    """What recipe.json records (JSON types). Expert-only recipes leave the DAgger fields out,
    so datasets made before DAgger existed still resume and are reused."""
    d = {"name": name, **asdict(recipe), "tasks": list(recipe.tasks), "draw": list(recipe.draw)}
    if not recipe.rollout:
        for k in _ROLLOUT_FIELDS:
            d.pop(k)   # recipes made before it existed still resume
    else:
        for k in ("handover", "backoff", "push_every", "push_speed", "expert", "action_noise"):
            d.pop(k)   # the learner drives throughout; pushes and noise are drawn; no expert
        for k in ("noise_range", "weight_range", "push_range", "push_gap"):
            d[k] = list(d[k])
    if not recipe.expert_warmup:
        d.pop("expert_warmup")   # recipes made before it existed still resume
    if not recipe.plan_labels:
        d.pop("plan_labels")   # recipes made before it existed still resume
    if not recipe.rescue:
        d.pop("rescue")   # likewise
    if recipe.label_from[1] == 0:
        d.pop("label_from")   # likewise
    else:
        d["label_from"] = list(recipe.label_from)
    if recipe.labels == "executed":
        d.pop("labels")
        d.pop("expert_share")
    if recipe.labels == "expert":
        d.pop("handover")
        if recipe.label_from[1] == 0:
            d.pop("backoff")   # the learner drives throughout: no handover
        else:
            d["backoff"] = list(recipe.backoff)   # a fall in the unrecorded prefix backs off
        return {**d, **_learner_fields(recipe)}
    if recipe.rescue:
        d.pop("handover")
        d.pop("backoff")   # the learner drives throughout: no handover
        return {**d, **_learner_fields(recipe)}
    if recipe.rollout:
        return {**d, **_learner_fields(recipe)}
    if recipe.handover[1] == 0 and not recipe.learner:
        for k in _DAGGER_FIELDS:
            d.pop(k)
        return d
    d["handover"], d["backoff"] = list(recipe.handover), list(recipe.backoff)
    return {**d, **_learner_fields(recipe)}


def _learner_fields(recipe: Recipe) -> dict:
    """The learner's hash, not its path, identifies the data: resuming with another checkpoint
    under the same path is refused as a different recipe."""
    if not recipe.learner:
        return {}
    from planner_node.atomic import sha256_file
    from planner_node.models.checkpoint import checkpoint_file
    return {"learner": sha256_file(checkpoint_file(recipe.learner))}


def _reuse_entries(src: str | Path, recipe: Recipe) -> dict[int, dict]:
    """Episodes of a finished dataset made by the same recipe up to its episode count
    (episode i depends only on the recipe's seed and i, not on how many there are)."""
    from planner_node.dataset import Dataset
    ds = Dataset(src)  # verifies every shard's sha256
    theirs = {k: v for k, v in ds.meta.get("source", {}).get("recipe", {}).items() if k not in ("name", "episodes")}
    ours = {k: v for k, v in _recipe_dict("", recipe).items() if k not in ("name", "episodes")}
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise DatasetError(f"{ds.path}: made by another recipe (differs in {', '.join(diff)}); cannot reuse its episodes")
    return {int(e["episode"]): e for e in ds.meta["shards"][: recipe.episodes] if "episode" in e}


def progress_path(manifest: Path) -> Path:
    """Where a generation in progress records its recipe and finished episodes."""
    return manifest.with_name(f".{manifest.stem}.progress.json")


def generate(recipe_name: str, out: str | Path, workers: int = 1, progress: bool = True,
             recipe: Recipe | None = None, reuse: str | Path | None = None,
             learner: str | Path | None = None, seed: int | None = None,
             ray_address: str | None = None, episodes: int | None = None) -> dict:
    """Generate (or resume) the dataset ``out`` (a manifest, STORE/NAME.json; shards go to
    STORE/shards/); returns its meta.

    ``workers`` > 1 or ``ray_address``: episodes are Ray tasks (see ``sim/parallel.py``), with
    identical results. ``reuse``: a finished dataset of the same recipe with fewer episodes, in
    the same store, whose episodes are taken, not regenerated. ``learner``: the run whose
    planner drives first, for DAgger recipes. ``seed``: replaces the recipe's (e.g. a second
    DAgger round on new episodes); recorded in the manifest's recipe. ``episodes``: replaces the
    recipe's count; a generation in progress may be resumed with another count (episode i depends
    only on the seed and i), e.g. to finish a long round early with the episodes it has."""
    from tqdm import tqdm

    from planner_node.atomic import write_json
    from planner_node.sim.parallel import EpisodePool

    if recipe is None:
        if recipe_name not in RECIPES:
            raise KeyError(f"unknown recipe {recipe_name!r}; valid recipes: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
    if learner is not None:
        recipe = replace(recipe, learner=str(learner))
    if seed is not None:
        recipe = replace(recipe, seed=int(seed))
    if episodes is not None:
        recipe = replace(recipe, episodes=int(episodes))
    out = manifest_path(out)
    if recipe.handover[1] > 0 and not recipe.learner:
        raise DatasetError(f"recipe {recipe_name!r} starts episodes where a learned planner took the robot: "
                           "give its run with --learner RUN")
    if recipe.rescue and not recipe.learner:
        raise DatasetError(f"recipe {recipe_name!r} rescues a learned planner where it would fall: "
                           "give its run with --learner RUN")
    if recipe.rollout and not recipe.learner:
        raise DatasetError(f"recipe {recipe_name!r} rolls out a learned policy: give its run with --learner RUN")
    if recipe.labels == "expert" and not recipe.learner:
        raise DatasetError(f"recipe {recipe_name!r} labels the states a learned planner visits: "
                           "give its run with --learner RUN")
    if recipe.learner:
        from planner_node.models.checkpoint import load_checkpoint
        # refuses a missing run, or one of another kind than the recipe names, by name
        ck = load_checkpoint(recipe.learner, expect_kind=recipe.learner_planner or None)
        if not recipe.learner_planner:
            recipe = replace(recipe, learner_planner=ck["kind"])
    recipe_dict = _recipe_dict(recipe_name, recipe)
    if out.exists():
        from planner_node.dataset import read_manifest
        found = read_manifest(out).get("source", {}).get("recipe")
        if found != recipe_dict:
            raise DatasetError(f"{out}: holds a dataset of a different recipe "
                               f"({(found or {}).get('name')!r}); refusing to overwrite it; choose another --out")
        return read_manifest(out)
    store = shard_dir(out)
    store.mkdir(parents=True, exist_ok=True)
    prog = progress_path(out)
    done: dict[int, dict] = {}
    if prog.exists():
        state = json.loads(prog.read_text())
        if {**state.get("recipe", {}), "episodes": recipe.episodes} != recipe_dict:
            raise DatasetError(f"{prog}: a generation of {out} with a different recipe "
                               f"({state.get('recipe', {}).get('name')!r}) is in progress; refusing to mix them; "
                               "choose another --out, or delete that file to start over")
        for k, e in state.get("done", {}).items():
            sha = str(e.get("sha256", "")) if isinstance(e, dict) else ""
            # a name, never a path; the shard itself is verified when the dataset is finalized
            if is_sha256(sha) and (store / f"{sha}.npz").is_file() and int(k) < recipe.episodes:
                done[int(k)] = e
    for stale in store.glob(".shard.*.tmp"):
        stale.unlink(missing_ok=True)  # half-written shards of killed workers are never taken as whole
    if reuse is not None:
        src_store = shard_dir(manifest_path(reuse))
        for i, e in _reuse_entries(reuse, recipe).items():
            dst = store / f"{e['sha256']}.npz"
            if not dst.exists():  # another store: copy the shard (content-named: same bytes, same name)
                tmp = store / f".shard.{e['sha256'][:16]}.tmp"
                shutil.copyfile(src_store / dst.name, tmp)
                os.replace(tmp, dst)
            done.setdefault(i, e)

    def record() -> None:
        write_json(prog, {"recipe": recipe_dict, "done": {str(i): e for i, e in sorted(done.items())}})

    record()
    todo = [i for i in range(recipe.episodes) if i not in done]
    bar = tqdm(total=recipe.episodes, initial=len(done), desc=f"generate {recipe_name}",
               unit="episode", disable=not progress)
    with EpisodePool(workers, ray_address) as pool:
        threads = pool.threads_per_task
        for k, entry in pool.run(_episode, [(str(store), recipe, i, threads) for i in todo]):
            done[todo[k]] = entry
            record()
            bar.update(1)
    bar.close()
    ordered = [done[i] for i in range(recipe.episodes)]
    kind = "expert_labels" if recipe.labels == "expert" else "policy_rollouts" if recipe.rollout else "mppi_expert"
    meta = finalize(out, ordered, list(recipe.tasks), {"kind": kind, "recipe": recipe_dict})
    prog.unlink(missing_ok=True)
    return meta
