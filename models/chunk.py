"""Action-chunk policy: an ensemble of MLPs that maps (observation, task, command) to the next
``horizon`` actions, trained by behaviour cloning on the expert's data and improved by DAgger
rounds (``planner data generate --recipe dagger --learner RUN``); its training (``planner
train`` with ``kind: chunk``) and its PyTorch reference planner.

Why a policy among the planners: H-GAP's, TAP's and Diffuser's sampled plans all lead to a
fall, and even an oracle choosing among them does not keep the robot up (README "Results").
Regressing the expert's action directly, as a chunk of the next actions (the action chunking of
ACT, Zhao et al. 2023: predicting the next H actions, not one, regularises the policy toward
the expert's temporally consistent plans), keeps the robot up several times longer on the same
data (README "Chunk policy"). The chunk is the plan: its first action is commanded, the rest is
what the node's anytime fallback would replay.

* Inputs: the z-scored observation, a one-hot of the task over the dataset's task list, and the
  task's command (vx, vy, wz; zeros for tasks without one).
* Targets: the next ``horizon`` recorded actions of the episode, z-scored; steps past the
  episode's end are masked out of the loss.
* ``ensemble`` members, each trained on its own batches from its own initialisation; the plan
  is their mean (one exported graph). Single runs differ a lot in closed loop; the mean of a few
  differs less.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from planner_node import spec
from planner_node.dataset import Dataset
from planner_node.models.checkpoint import load_checkpoint, save_checkpoint
from planner_node.models.config import ConfigError, check_fields
from planner_node.models.data import ACTION_TARGETS, Normalizer, returns_to_go, split_episodes, target_actions
from planner_node.models.device import cpu_state, describe, resolve_device, to
from planner_node.models.train import open_run, plot_metrics, policy_step
from planner_node.planning import Candidates, Plan, Planner, PlanRequest
from planner_node.runtime.chunk import COMMAND_DIM, ChunkExecution, check_settings, policy_inputs

KIND = "chunk"
LABEL_TAILS = ("none", "labels", "plans")


@dataclass(frozen=True)
class PolicyConfig:
    horizon: int = 8          # actions per chunk (x 30 ms)
    width: int = 512
    layers: int = 3           # hidden layers
    ensemble: int = 3         # members averaged
    # Dropout after each hidden layer while training (identity in the exported graph and the
    # reference planner, which run in eval mode). 0 = none, and the layer is not built at all,
    # so runs without it keep their parameter names.
    dropout: float = 0.0
    # Chunks each member proposes (a mixture: ``modes`` chunks and a logit each). Why: where the
    # expert acts in one of several ways (a step with the left foot or the right), a single
    # regressed chunk is their mean, which is none of them. Trained with relaxed winner-takes-all
    # (the closest mode takes 1 - MODE_EPS of the row's loss, the others share MODE_EPS) and a
    # cross-entropy on which mode won; at run time each member gives its most likely mode's chunk.
    # 1 = plain regression, the parameter names as before.
    modes: int = 1

    def __post_init__(self):
        check_fields("policy", {"horizon": self.horizon >= 1, "width": self.width > 0, "layers": self.layers >= 1,
                          "ensemble": self.ensemble >= 1, "dropout": 0 <= self.dropout < 1,
                          "modes": self.modes >= 1}, self)


@dataclass(frozen=True)
class ChunkTrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3          # cosine-annealed to 0 over ``steps``
    weight_decay: float = 1e-4
    # Rows this many steps or fewer before a fall are not trained on: there the expert is
    # past saving the robot, and what it does is no demonstration of balance.
    drop_before_fall: int = 0
    # Advantage-weighted regression (IQL's policy extraction, Kostrikov et al. 2021): with a task
    # critic (``planner train-critic``: Q and V with falls terminal, gamma 0.99, ~3 s), each window
    # counts exp(beta * A / std(A)) (at most ``advantage_max_weight``), A = Q(s, a) - V(s) of its
    # first action under the row's task, std over that task's rows: actions the critic expects to
    # end in a fall count less. Standardising A makes beta unit-free. beta 0 = plain cloning.
    advantage_critic: str = ""
    advantage_beta: float = 0.0
    advantage_max_weight: float = 20.0
    # A label row (DAgger, expert labels) supervises its first action only, so it has 1 term in
    # the loss where an expert row has ``horizon``: ``label_weight`` multiplies that term
    # (``horizon`` = a label row counts as much as an expert row).
    label_weight: float = 1.0
    # What supervises a label row's chunk past its first action. "none": nothing (the next rows'
    # labels are the expert's answers at states the learner's actions led to, not a plan the
    # expert would carry out from this row's state). "labels": those next labels anyway, as
    # an expert row's tail is the expert's next actions: the chunk tails that blending executes
    # (with decay 0.5, ~60 % of each executed action) are then trained at the states the learner
    # visits, not only at the expert's. "plans": the expert's own plan at the row's state, where
    # the round recorded it (recipe ``plan_labels``; rows without one supervise their first
    # action only). Both far worse on stand: every episode falls (README "Supervising chunk
    # tails at the learner's states").
    label_tails: str = "none"
    # Weight of each tail step that ``label_tails`` supervises on a label row (1 = as much as an
    # expert row's step; the first action keeps ``label_weight``).
    label_tail_weight: float = 1.0
    # Gaussian noise (std, in z-scored observation units) added to every batch's observations,
    # targets unchanged: the policy learns to answer states a little off the recorded ones with
    # the expert's action there, as its own drift in closed loop makes them. 0 = none.
    obs_noise: float = 0.0
    # "RECIPE:W,RECIPE:W" ('' = every row at 1): the rows a recipe made (through merges) count W
    # times in the loss, e.g. a small round of targeted data (``rescue_stand``) among 170k rows.
    recipe_weights: str = ""
    # What the chunks learn: "executed" actions, or a rollout's "clean" ones (``target_actions``).
    action_target: str = "executed"
    seed: int = 0
    holdout_fraction: float = 0.1
    checkpoint_every: int = 500
    eval_every: int = 250
    threads: int = 2

    def __post_init__(self):
        check_fields("train", {**cloning_checks(self),
                               "advantage_beta": self.advantage_beta >= 0,
                               "advantage_critic": bool(self.advantage_critic) or self.advantage_beta == 0,
                               "advantage_max_weight": self.advantage_max_weight >= 1,
                               "label_tails": self.label_tails in LABEL_TAILS,
                               "label_tail_weight": self.label_tail_weight > 0,
                               "obs_noise": 0 <= self.obs_noise < float("inf")}, self)


def cloning_checks(t) -> dict[str, bool]:
    """The checks of the train fields every action-cloning kind's config has (chunk, IDQL)."""
    return {"steps": t.steps >= 0, "batch_size": t.batch_size > 0, "lr": t.lr > 0, "weight_decay": t.weight_decay >= 0,
            "drop_before_fall": t.drop_before_fall >= 0, "label_weight": t.label_weight > 0,
            "recipe_weights": parse_recipe_weights(t.recipe_weights) is not None,
            "action_target": t.action_target in ACTION_TARGETS, "holdout_fraction": 0 <= t.holdout_fraction < 1,
            "checkpoint_every": t.checkpoint_every > 0, "eval_every": t.eval_every > 0, "threads": t.threads > 0}


def parse_recipe_weights(text: str) -> dict[str, float] | None:
    """``recipe_weights`` ("RECIPE:W,RECIPE:W", each W a finite number > 0, each name once),
    parsed; None if malformed."""
    out: dict[str, float] = {}
    if not isinstance(text, str):
        return None
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, w = (x.strip() for x in item.partition(":"))
        try:
            value = float(w)
        except ValueError:
            return None
        if not (sep and name and np.isfinite(value) and value > 0) or name in out:
            return None
        out[name] = value
    return out


def recipe_weights(ds: Dataset, text: str) -> np.ndarray:
    """Per dataset row: the weight ``recipe_weights`` gives the recipe that made it (1 if none).
    A recipe that made none of the dataset is refused by name."""
    names = ds.recipe_rows()
    w = np.ones(len(names), np.float32)
    for name, value in (parse_recipe_weights(text) or {}).items():
        rows = names == name
        if not rows.any():
            raise ValueError(f"train.recipe_weights: recipe {name!r} made none of {ds.path}; its recipes: "
                             f"{', '.join(sorted(set(names.tolist()) - {''}))}")
        w[rows] = value
    return w


@dataclass(frozen=True)
class ChunkConfig:
    kind: str = KIND
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: ChunkTrainConfig = field(default_factory=ChunkTrainConfig)

    def __post_init__(self):
        if self.kind != KIND:
            raise ConfigError(f"kind: {self.kind!r} is not {KIND!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- network ------------------------------------------------------------------------------------
MODE_EPS = 0.05        # relaxed winner-takes-all: the share of a row's loss the losing modes split
MODE_CE_WEIGHT = 0.01  # the mode classifier's cross-entropy [nats] against the chunk MSE (~0.005-0.03)


class ChunkPolicy(nn.Module):
    """(obs (N, 224) z-scored, task (N, n_tasks) one-hot, command (N, 3)) -> the members' mean
    chunk of z-scored actions (N, H, 56); ``members`` gives each member's (K, N, H, 56) (with
    ``modes`` > 1, each member's most likely mode)."""

    def __init__(self, cfg: PolicyConfig, n_tasks: int):
        super().__init__()
        self.H, self.M = cfg.horizon, cfg.modes
        d_in = spec.OBS_DIM + n_tasks + COMMAND_DIM
        d_out = self.M * cfg.horizon * spec.ACTION_DIM + (self.M if self.M > 1 else 0)

        def mlp():
            layers, d = [], d_in
            for _ in range(cfg.layers):
                layers += [nn.Linear(d, cfg.width), nn.GELU()] + ([nn.Dropout(cfg.dropout)] if cfg.dropout else [])
                d = cfg.width
            return nn.Sequential(*layers, nn.Linear(d, d_out))
        self.nets = nn.ModuleList([mlp() for _ in range(cfg.ensemble)])

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A member's raw output (N, d_out) -> its chunks (N, modes, H, 56) and mode logits (N, modes)
        (None for one mode)."""
        n = y.shape[0]
        chunks = y[:, :self.M * self.H * spec.ACTION_DIM].reshape(n, self.M, self.H, spec.ACTION_DIM)
        return chunks, (y[:, self.M * self.H * spec.ACTION_DIM:] if self.M > 1 else None)

    def modal(self, y: torch.Tensor) -> torch.Tensor:
        """A member's chunk (N, H, 56): its most likely mode's (a one-hot mask, not an index, so
        the exported graph needs no gather; an exact tie averages the tied modes)."""
        chunks, logits = self.split(y)
        if logits is None:
            return chunks[:, 0]
        top = (logits >= logits.max(-1, keepdim=True).values).float()
        top = top / top.sum(-1, keepdim=True)
        return (chunks * top[:, :, None, None]).sum(1)

    def members(self, obs, task, command):
        x = torch.cat([obs, task, command], dim=-1)
        return torch.stack([self.modal(n(x)) for n in self.nets])

    def forward(self, obs, task, command):
        return self.members(obs, task, command).mean(0)


# -- data ---------------------------------------------------------------------------------------
def advantage_weights(ds: Dataset, t: ChunkTrainConfig) -> np.ndarray:
    """Per dataset row: exp(beta * A / std(A)), clipped, from ``t.advantage_critic``; ones
    without one. A = Q(s, a) - V(s) under the row's own task (the critic knows every task), its
    std over the rows of that task."""
    n = len(ds.arrays["actions"])
    if t.advantage_beta == 0:
        return np.ones(n, np.float32)
    from planner_node.models.critic import Critic

    critic = Critic(t.advantage_critic, threads=t.threads)
    a = ds.arrays
    z = np.zeros(n, np.float32)
    for i, name in enumerate(ds.tasks):
        rows = np.flatnonzero(a["task_ids"] == i)
        if not len(rows):
            continue
        adv = np.concatenate([critic.advantages(a["observations"][r], a["actions"][r], name)
                              for r in np.array_split(rows, -(-len(rows) // 8192))])
        # per task: the tasks' reward scales differ (rotate_z's A spreads 9x stand's)
        z[rows] = adv / max(float(adv.std()), 1e-6)
    return np.minimum(np.exp(t.advantage_beta * z), t.advantage_max_weight).astype(np.float32)


def chunk_targets(ds: Dataset, rows: np.ndarray, horizon: int,
                  actions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each dataset row: the episode's next ``horizon`` actions (R, H, 56) and a mask (R, H)
    that is 0 past the episode's last step (the action there is the last one, repeated).
    ``actions``: the (N, 56) targets (``target_actions``; default the executed ones)."""
    acts, ids = ds.arrays["actions"] if actions is None else actions, ds.arrays["episode_ids"]
    n = len(acts)
    j = rows[:, None] + np.arange(horizon)[None]
    inside = (j < n) & (ids[np.minimum(j, n - 1)] == ids[rows][:, None])
    last = np.maximum.accumulate(np.where(inside, j, -1), axis=1)   # the last row still in the episode
    return acts[last], inside.astype(np.float32)


def window_arrays(ds: Dataset, norm: Normalizer, policy_tasks: list[str], episodes: list, H: int, t,
                  labelled: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The training windows of ``episodes`` (row-index arrays): (obs z-scored, task one-hot,
    command, the next ``H`` actions z-scored, per-step loss weights), as tensors. ``t`` gives
    ``drop_before_fall``, ``label_tails``, ``label_tail_weight`` and ``label_weight`` (see
    ChunkTrainConfig); ``labelled`` marks label rows, ``weights`` scales each row's loss.
    Shared by the kinds that clone action chunks."""
    k = t.drop_before_fall
    term = ds.arrays["terminals"]
    episodes = [ep[:-k] if k and term[ep[-1]] else ep for ep in episodes]
    rows = np.concatenate(episodes) if episodes else np.zeros(0, np.int64)
    a = ds.arrays
    obs = norm.norm_obs(a["observations"][rows]).astype(np.float32)
    task = np.eye(len(policy_tasks), dtype=np.float32)[a["task_ids"][rows]]
    acts, mask = chunk_targets(ds, rows, H, target_actions(ds, t.action_target))
    # A label row (DAgger, ``labels="expert"``) supervises its first action only unless
    # ``label_tails`` says otherwise (see ChunkTrainConfig).
    lab = labelled[rows]
    if t.label_tails != "labels":
        mask[lab, 1:] = 0.0
    if t.label_tails == "plans" and ds.plans is not None:
        k = np.minimum(ds.plan_steps[rows], H) * lab   # plan steps that supervise the row
        steps = np.arange(H)[None] < k[:, None]
        acts[steps] = ds.plans[rows][:, :H][steps[:, : ds.plans.shape[1]]]
        mask[steps] = 1.0
    mask[lab, 1:] *= t.label_tail_weight
    mask[lab, 0] *= t.label_weight
    return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in
                 (obs, task, a["commands"][rows].astype(np.float32),
                  norm.norm_act(acts).astype(np.float32), mask * weights[rows, None]))


class ChunkTrainer:
    """Behaviour cloning of action chunks; resumable, with deterministic batches keyed by
    (seed, step), the same run-directory layout as the other kinds' trainers."""

    def __init__(self, cfg: ChunkConfig, data_dir: str | Path, out: str | Path, progress: bool = True,
                 device: str = "auto"):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device = resolve_device(device)
        t, H = cfg.train, cfg.policy.horizon
        torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.ds = Dataset(data_dir)
        self.data_id = {"path": str(self.ds.path.resolve()), "dataset_sha256": self.ds.sha256}
        self.norm = Normalizer.from_dataset(self.ds, returns_to_go(self.ds, 0.99))
        self.policy_tasks = list(self.ds.tasks)
        train_eps, hold_eps = split_episodes(self.ds, t.holdout_fraction, t.seed)
        self.labelled = self.ds.label_rows()
        self.weights = advantage_weights(self.ds, t) * recipe_weights(self.ds, t.recipe_weights)
        self.train, self.hold = self._arrays(train_eps, H), self._arrays(hold_eps, H)
        if not len(self.train[0]):
            raise ValueError(f"{data_dir}: no training episode")
        self.tasks = [self.ds.tasks[i] for i in np.unique(self.ds.arrays["task_ids"])]
        self.split = {"train_episodes": len(train_eps), "holdout_episodes": len(hold_eps),
                      "train_windows": len(self.train[0]), "holdout_windows": len(self.hold[0])}
        if t.advantage_beta:
            w = self.weights
            self.split["advantage_weights"] = {"mean": float(w.mean()), "p10": float(np.percentile(w, 10)),
                                               "p90": float(np.percentile(w, 90)),
                                               "clipped": float(np.mean(w >= t.advantage_max_weight))}
        self.act_var = torch.from_numpy(self.norm.stats["act_std"] ** 2).to(self.device)
        self.model = ChunkPolicy(cfg.policy, len(self.policy_tasks)).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.step = 0
        self._resume_or_start()

    def _arrays(self, episodes: list, H: int) -> tuple[torch.Tensor, ...]:
        return window_arrays(self.ds, self.norm, self.policy_tasks, episodes, H, self.cfg.train, self.labelled,
                             self.weights)

    def _payload(self) -> dict:
        return {"kind": KIND, "config": self.cfg.to_dict(), "stage": "done" if self.step >= self.cfg.train.steps
                else "policy", "step": self.step, "model": cpu_state(self.model.state_dict()),
                "opt": cpu_state(self.opt.state_dict()),
                "normalizer": self.norm.to_tensors(), "dataset": self.data_id, "tasks": self.tasks,
                "policy_tasks": self.policy_tasks, "split": self.split, "torch_rng": torch.get_rng_state()}

    def save(self) -> None:
        save_checkpoint(self.out / "checkpoint.pt", self._payload())

    def _resume_or_start(self) -> None:
        ck = open_run(self.out, self.cfg.to_dict(), self.data_id, KIND, ("model", "opt"))
        if ck is not None:
            self.model.load_state_dict(ck["model"])
            if "opt" in ck:
                self.opt.load_state_dict(ck["opt"])
            self.step = ck["step"]
            torch.set_rng_state(ck["torch_rng"])

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked MSE in action units (targets, [-1, 1]) over (members, rows, H, 56) predictions of
        z-scored actions: each member's loss, summed. In action units every joint counts by how far
        it moves; z-scored, joints the expert barely moves (mostly its 0.05 exploration noise) would
        dominate: that policy fell twice as fast on stand (README "Chunk policy")."""
        err = ((pred - target) ** 2 * self.act_var).mean(-1) * mask
        return (err.sum((-1, -2)) / mask.sum().clamp(min=1)).sum()   # a weighted mask: a weighted mean

    def mode_loss(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One member's loss with ``modes`` > 1: per row, the masked action-unit MSE of each mode's
        chunk; the closest mode takes 1 - MODE_EPS of it, the others split MODE_EPS (relaxed
        winner-takes-all: no mode is left untrained); plus MODE_CE_WEIGHT x the cross-entropy of
        the logits against the closest mode, over rows with any target."""
        chunks, logits = self.model.split(y)
        M = chunks.shape[1]
        err = (((chunks - target[:, None]) ** 2 * self.act_var).mean(-1) * mask[:, None]).sum(-1)   # (B, M)
        win = err.detach().argmin(1)
        share = torch.full_like(err, MODE_EPS / (M - 1)).scatter(1, win[:, None], 1.0 - MODE_EPS)
        fit = (share * err).sum() / mask.sum().clamp(min=1)
        rows = (mask.sum(-1) > 0).float()
        ce = (nn.functional.cross_entropy(logits, win, reduction="none") * rows).sum() / rows.sum().clamp(min=1)
        return fit + MODE_CE_WEIGHT * ce

    @torch.no_grad()
    def _holdout(self) -> float:
        if not len(self.hold[0]):
            return float("nan")
        obs, task, cmd, act, mask = to(self.device, *(x[:4096] for x in self.hold))
        # the mean's error, every window counting once, so runs with and without weights compare;
        # in eval mode (no dropout), as the policy runs
        self.model.eval()
        try:
            return self.loss(self.model(obs, task, cmd)[None], act, (mask > 0).float()).item()
        finally:
            self.model.train()

    def run(self, stop_after: int | None = None) -> dict:
        """Train to the end (or return after ``stop_after`` optimizer steps without saving, as a
        kill would leave it: the next run resumes from the last checkpoint)."""
        from tqdm import tqdm

        t, K = self.cfg.train, self.cfg.policy.ensemble
        t0, done_steps = time.time(), 0
        if self.progress:
            print(f"training on {describe(self.device)}")
        bar = tqdm(total=t.steps, initial=self.step, desc="chunk policy", disable=not self.progress)
        n = len(self.train[0])
        while self.step < t.steps:
            if stop_after is not None and done_steps >= stop_after:
                return {"stage": "killed", "step": self.step}
            rng = np.random.default_rng([t.seed, self.step])
            idx = torch.from_numpy(rng.integers(0, n, (K, t.batch_size)))   # each member its own batch
            obs, task, cmd, act, mask = (x[idx] for x in self.train)
            if t.obs_noise:
                obs = obs + t.obs_noise * torch.from_numpy(rng.standard_normal(obs.shape, dtype=np.float32))
            obs, task, cmd, act, mask = to(self.device, obs, task, cmd, act, mask)
            x = torch.cat([obs, task, cmd], dim=-1)
            outs = [net(x[k]) for k, net in enumerate(self.model.nets)]
            if self.model.M == 1:
                loss = self.loss(torch.stack([self.model.split(y)[0][:, 0] for y in outs]), act, mask) / K
            else:
                loss = sum(self.mode_loss(y, act[k], mask[k]) for k, y in enumerate(outs)) / K
            policy_step(self, loss, t0, bar)
            done_steps += 1
        bar.close()
        if done_steps:   # a finished run resumed is left as it is (its bytes are what later rounds record)
            self.save()
            plot_metrics(self.out, (("policy", "chunk MSE (action units)"),))
        return {"stage": "done", "wall_s": time.time() - t0, **self.split}


def build_policy(ck: dict) -> tuple[ChunkConfig, ChunkPolicy, Normalizer]:
    """The trained policy, in eval mode, from a loaded checkpoint."""
    from planner_node.models.config import config_from_dict
    cfg = config_from_dict(ck["config"])
    policy = ChunkPolicy(cfg.policy, len(ck["policy_tasks"]))
    policy.load_state_dict(ck["model"])
    return cfg, policy.eval(), Normalizer.from_tensors(ck["normalizer"])


class ChunkPlanner(Planner):
    """The chunk policy's PyTorch reference planner: the ensemble's mean chunk is the plan."""

    name = kind = KIND

    def __init__(self, checkpoint: str, seed: int | None = 0, threads: int = 2, batch: int = 1, **settings):
        from planner_node.kinds import get_kind
        unknown = sorted(set(settings) - set(get_kind(KIND).defaults))
        if unknown:
            raise ValueError(f"unknown chunk policy settings {unknown}; valid: {sorted(get_kind(KIND).defaults)}")
        ck = load_checkpoint(checkpoint, expect_kind=KIND)
        self.cfg, self.policy, self.norm = build_policy(ck)
        self.tasks = list(ck["policy_tasks"])
        torch.set_num_threads(threads)
        self.settings = {**get_kind(KIND).defaults, **settings}
        self.task_weights = check_settings(self.settings, self.cfg.policy.horizon, self.tasks)
        self.execution = ChunkExecution(self.settings)

    def reset(self, seed: int | None = None) -> None:
        self.execution.reset()

    @torch.no_grad()
    def _members(self, request: PlanRequest) -> torch.Tensor:
        """Each member's chunk of z-scored actions at the request's state, (K, H, 56)."""
        obs = self.norm.norm_obs(np.asarray(request.obs, np.float32)).astype(np.float32)[None]
        task, cmd = policy_inputs(obs, self.tasks, request.task, request.command, self.task_weights)
        return self.policy.members(torch.from_numpy(obs), torch.from_numpy(task), torch.from_numpy(cmd))[:, 0]

    def _execute(self, z: torch.Tensor, obs) -> np.ndarray:
        """The plan: the members' mean chunk in action units, blended with the last ones, plus
        the posture term."""
        return self.execution(np.clip(self.norm.unnorm_act(z.mean(0).numpy()), -1.0, 1.0), obs)

    def plan(self, request: PlanRequest) -> Plan:
        return Plan(self._execute(self._members(request), request.obs), 0.0)

    def candidates(self, request: PlanRequest) -> Candidates:
        """What ``planner eval --score`` chooses among: the blended plan (what ``plan`` returns, the
        policy's own choice: score 1) and each member's chunk, unblended (score 0). The blend is
        updated as ``plan`` updates it, whichever is executed. The policy predicts no states:
        ``final_obs`` is NaN, so scoring by a critic of predicted states is refused."""
        z = self._members(request)
        blended = self._execute(z, request.obs)
        own = np.clip(self.norm.unnorm_act(z.numpy()), -1.0, 1.0)
        actions = np.concatenate([blended[None], own]).astype(np.float32)
        n = len(actions)
        return Candidates(actions, np.r_[1.0, np.zeros(n - 1)], np.full((n, spec.OBS_DIM), np.nan, np.float32),
                          np.zeros((n, 0), np.int64), len(blended))
