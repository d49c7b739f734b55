"""Dataset generation: the MPPI expert on randomized tasks, with exploration noise and pushes.

Sharded over processes, one shard per episode. Resumable: a shard exists under its final
name only once it is complete (atomic rename), so after a kill the finished shards are
kept and the rest are regenerated. Each shard's seed derives from the recipe's seed and
the shard index, so a resumed run writes the same data as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from planner_node.dataset import DatasetError, finalize, read_shard, write_shard
from planner_node.kinds import KINDS
from planner_node.robot.tasks import TASKS, get_task


@dataclass(frozen=True)
class Recipe:
    """How much data, from which expert, on which tasks."""

    episodes: int
    steps: int                       # control steps per episode (x 30 ms)
    tasks: tuple[str, ...] = tuple(TASKS)
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

    def __post_init__(self):
        if self.episodes < 1 or self.steps < 1:
            raise ValueError(f"Recipe.episodes and Recipe.steps must be >= 1, got {self.episodes}, {self.steps}")
        for name in ("handover", "backoff"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"Recipe.{name} must be a range 0 <= lo <= hi, got {getattr(self, name)!r}")
        if self.learner_planner and self.learner_planner not in KINDS:
            raise ValueError(f"Recipe.learner_planner must be one of {', '.join(KINDS)}, got {self.learner_planner!r}")
        for t in self.tasks:
            get_task(t)


RECIPES: dict[str, Recipe] = {
    # Seconds on 2 cores: for tests and smoke runs.
    "tiny": Recipe(episodes=4, steps=20, tasks=("stand", "forward", "track"),
                   expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4),
    # ~15 min on 2 cores (32-sample expert, about 5 control steps/s per core pair).
    "default": Recipe(episodes=40, steps=100, expert={"samples": 32}),
    # ~1 h on 2 cores. Same seeds as default, so its first 40 episodes are default's:
    # `--reuse data/default` takes them from there and only the other 80 are generated.
    "large": Recipe(episodes=120, steps=100, expert={"samples": 32}),
    # DART (Laskey et al. 2017): 4x the execution noise, so the expert demonstrates recoveries
    # from the drift a learned planner makes (measured: H-GAP's actions drift 0.1-0.35 from the
    # expert's before it falls). Another seed; combine with `planner data merge`. ~15 min.
    "dart": Recipe(episodes=60, steps=100, expert={"samples": 32}, action_noise=0.2, seed=1),
    # DAgger round: needs `--learner RUN` (a learned kind's run). The learner drives 10-45 steps (it
    # falls at ~60-70 on its own; 8-20 steps before a fall is measured past saving), then the
    # expert recovers for up to 100. 22-28 min on 2 cores (--workers 2).
    "dagger": Recipe(episodes=80, steps=100, expert={"samples": 32}, seed=2, handover=(10, 45), backoff=(20, 40)),
    "tiny_dagger": Recipe(episodes=2, steps=6, tasks=("stand", "forward"),
                          expert={"samples": 6, "horizon": 5, "knots": 2, "threads": 1}, push_every=4,
                          handover=(3, 8), backoff=(1, 3)),
}


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.npz"


def generate_episode(recipe: Recipe, index: int, threads: int) -> dict[str, np.ndarray]:
    from planner_node.planning import PlanRequest
    from planner_node.sim.env import EnvConfig, HumanoidEnv
    from planner_node.sim.mppi import MPPIPlanner

    seed = recipe.seed * 100_003 + index
    rng = np.random.default_rng(seed)
    task_name = recipe.tasks[int(rng.integers(len(recipe.tasks)))]
    task = get_task(task_name)
    command = np.zeros(3)
    if task_name == "track":
        command = np.array([rng.uniform(-0.3, 1.0), rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])
    env = HumanoidEnv(EnvConfig(push_every=recipe.push_every, push_speed=recipe.push_speed))
    obs = env.reset(seed)
    if recipe.learner:
        obs = _learner_prefix(recipe, env, obs, task_name, command, rng, seed, threads)
    expert = MPPIPlanner(seed=seed, **{"threads": threads, **recipe.expert})
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    try:
        for t in range(recipe.steps):
            plan = expert.plan(PlanRequest(obs=obs, task=task_name, command=tuple(command),
                                           sim_state=env.get_state()))
            action = np.clip(plan.actions[0] + rng.normal(0, recipe.action_noise, plan.actions.shape[1]), -1, 1)
            next_obs, fell = env.step(action)
            rows["observations"].append(obs)
            rows["actions"].append(action)
            rows["rewards"].append(float(task.reward(next_obs, command)))
            rows["terminals"].append(fell)
            rows["timeouts"].append(not fell and t == recipe.steps - 1)
            obs = next_obs
            if fell:
                break
    finally:
        expert.close()
    n = len(rows["rewards"])
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["episode_ids"] = np.full(n, index)
    out["task_ids"] = np.full(n, recipe.tasks.index(task_name))
    out["commands"] = np.tile(command, (n, 1))
    return out


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


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit when the generate process is gone (killed), instead of living
    on as an orphan that keeps writing shards into a directory somebody may have reused."""
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _work(out: str, recipe: Recipe, index: int, threads: int) -> dict:
    arrays = generate_episode(recipe, index, threads)
    return write_shard(Path(out) / _shard_name(index), arrays)


def _existing_entry(path: Path) -> dict | None:
    """Meta entry for a complete shard, or None if absent/unreadable (then regenerate)."""
    if not path.is_file():
        return None
    try:
        a = read_shard(path)
    except DatasetError:
        return None
    from planner_node.atomic import sha256_file
    return {"file": path.name, "sha256": sha256_file(path), "transitions": int(len(a["rewards"])),
            "episodes": int(len(np.unique(a["episode_ids"])))}


_DAGGER_FIELDS = ("learner", "learner_planner", "handover", "backoff")


def _recipe_dict(name: str, recipe: Recipe) -> dict:
    """What recipe.json records (JSON types). Expert-only recipes leave the DAgger fields out,
    so datasets made before DAgger existed still resume and are reused."""
    d = {"name": name, **asdict(recipe), "tasks": list(recipe.tasks)}
    if recipe.handover[1] == 0 and not recipe.learner:
        for k in _DAGGER_FIELDS:
            d.pop(k)
        return d
    d["handover"], d["backoff"] = list(recipe.handover), list(recipe.backoff)
    if recipe.learner:
        # The learner's hash, not its path, identifies the data: resuming with another
        # checkpoint under the same path is refused as a different recipe.
        from planner_node.atomic import sha256_file
        from planner_node.models.checkpoint import checkpoint_file
        d["learner"] = sha256_file(checkpoint_file(recipe.learner))
    return d


def _reuse_shards(src: Path, recipe: Recipe, out: Path) -> int:
    """Copy the verified shards of a finished dataset made by the same recipe up to its episode
    count (episode i depends only on the recipe's seed and i, not on how many there are)."""
    from planner_node.dataset import Dataset
    ds = Dataset(src)  # verifies every shard's sha256
    theirs = {k: v for k, v in ds.meta.get("source", {}).get("recipe", {}).items() if k not in ("name", "episodes")}
    ours = {k: v for k, v in _recipe_dict("", recipe).items() if k not in ("name", "episodes")}
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise DatasetError(f"{src}: made by another recipe (differs in {', '.join(diff)}); cannot reuse its episodes")
    n = 0
    for e in ds.meta["shards"][: recipe.episodes]:
        if not (out / e["file"]).exists():
            shutil.copy2(src / e["file"], out / f".{e['file']}.tmp")
            os.replace(out / f".{e['file']}.tmp", out / e["file"])
            n += 1
    return n


def generate(recipe_name: str, out: str | Path, workers: int = 1, progress: bool = True,
             recipe: Recipe | None = None, reuse: str | Path | None = None,
             learner: str | Path | None = None, seed: int | None = None) -> dict:
    """Generate (or resume) a dataset into ``out``; returns its meta. ``reuse``: a finished
    dataset of the same recipe with fewer episodes, whose episodes are copied, not regenerated.
    ``learner``: the run whose planner drives first, for DAgger recipes. ``seed``: replaces the
    recipe's (e.g. a second DAgger round on new episodes); recorded in recipe.json."""
    from tqdm import tqdm

    if recipe is None:
        if recipe_name not in RECIPES:
            raise KeyError(f"unknown recipe {recipe_name!r}; valid recipes: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
    if learner is not None:
        recipe = replace(recipe, learner=str(learner))
    if seed is not None:
        recipe = replace(recipe, seed=int(seed))
    out = Path(out)
    if recipe.handover[1] > 0 and not recipe.learner:
        raise DatasetError(f"recipe {recipe_name!r} starts episodes where a learned planner took the robot: "
                           "give its run with --learner RUN")
    if recipe.learner:
        from planner_node.models.checkpoint import load_checkpoint
        # refuses a missing run, or one of another kind than the recipe names, by name
        ck = load_checkpoint(recipe.learner, expect_kind=recipe.learner_planner or None)
        if not recipe.learner_planner:
            recipe = replace(recipe, learner_planner=ck["kind"])
    recipe_dict = _recipe_dict(recipe_name, recipe)
    out.mkdir(parents=True, exist_ok=True)
    recipe_file = out / "recipe.json"
    if recipe_file.exists():
        found = json.loads(recipe_file.read_text())
        if found != recipe_dict:
            raise DatasetError(f"{recipe_file}: {out} holds a different recipe ({found.get('name')!r}); "
                               "refusing to mix or overwrite it; choose another --out")
        if (out / "meta.json").exists():
            from planner_node.dataset import Dataset
            return Dataset(out).meta
    else:
        if any(out.iterdir()):
            raise DatasetError(f"{out}: directory is not empty and is not a dataset in progress; "
                               "refusing to overwrite it")
        from planner_node.atomic import write_json
        write_json(recipe_file, recipe_dict)
    for stale in out.glob(".shard_*.tmp*"):
        stale.unlink()  # half-written shards from a killed run are never taken as whole
    if reuse is not None:
        _reuse_shards(Path(reuse), recipe, out)
    entries: dict[int, dict] = {}
    todo = []
    for i in range(recipe.episodes):
        e = _existing_entry(out / _shard_name(i))
        if e is None:
            todo.append(i)
        else:
            entries[i] = e
    threads = max(1, (os.cpu_count() or 2) // max(workers, 1))
    bar = tqdm(total=recipe.episodes, initial=len(entries), desc=f"generate {recipe_name}",
               unit="episode", disable=not progress)
    if workers <= 1:
        for i in todo:
            entries[i] = _work(str(out), recipe, i, threads)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_work, str(out), recipe, i, threads): i for i in todo}
            for f in as_completed(futures):
                entries[futures[f]] = f.result()
                bar.update(1)
    bar.close()
    ordered = [entries[i] for i in range(recipe.episodes)]
    return finalize(out, ordered, list(recipe.tasks), {"kind": "mppi_expert", "recipe": recipe_dict})
