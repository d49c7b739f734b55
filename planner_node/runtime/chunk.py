"""The action-chunk policy's runtime planner (numpy + one engine, no torch): one call of the
``policy`` graph per tick, blended with the chunks of the ticks before (temporal ensembling).
Reproduces ``planner_node.models.chunk.ChunkPlanner``."""
from __future__ import annotations

import numpy as np

from planner_node import spec
from planner_node.planning import Plan, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.bundle_planner import BundlePlanner

COMMAND_DIM = 3   # (vx [m/s], vy [m/s], wz [rad/s]) in the root frame; zeros for tasks without one


#: The task the policy leans on where a task's weight is under 1 (``task_weights``).
BALANCE_TASK = "stand"


def parse_task_weights(text: str, tasks: list[str] | None = None) -> dict[str, float]:
    """``task_weights``: ``"TASK:W,TASK:W"`` ('' = every task at 1). The policy reads the task as
    W x its one-hot + (1 - W) x stand's: W = 1 is the task as trained, 0 is standing. Why: the
    tasks' rewards pay 1 per step upright plus the task's rate, so over 10 s with pushes the
    return of rotate_x, rotate_y, rotate_z and shift_left peaks at W = 0.3-0.5, where the policy
    rotates (or steps) less and falls later (README "Chunk policy"). Each name must be a task the
    policy knows (``tasks``), each W a number in [0, 1], given once."""
    if not isinstance(text, str):
        raise ValueError(f"task_weights={text!r}: expected a string 'TASK:W,TASK:W' ('' = every task at 1)")
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, w = item.partition(":")
        name = name.strip()
        try:
            value = float(w)
        except ValueError:
            value = float("nan")
        if not sep or not np.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"task_weights: {item!r}: expected TASK:W with W a number in [0, 1]")
        get_task(name)   # an unknown name: KeyError naming it and the valid ones
        if tasks is not None and name not in tasks:
            raise ValueError(f"task_weights: task {name!r}: this policy was trained on {', '.join(tasks)}")
        if name in out:
            raise ValueError(f"task_weights: task {name!r} is given twice")
        out[name] = value
    if tasks is not None and any(w < 1.0 for w in out.values()) and BALANCE_TASK not in tasks:
        raise ValueError(f"task_weights: a weight under 1 leans on {BALANCE_TASK!r}, which this policy was not "
                         f"trained on ({', '.join(tasks)})")
    return out


def policy_inputs(obs_z: np.ndarray, tasks: list[str], task: str, command,
                  weights: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The task's conditioning (n, n_tasks) and the command (n, 3) for ``len(obs_z)`` rows, as the
    policy reads them: the task's one-hot, or with a weight W from ``weights`` (``task_weights``)
    W x its one-hot + (1 - W) x stand's. An unknown task or a malformed command is refused by name
    (shared by the reference and the runtime planner)."""
    if task not in tasks:
        get_task(task)   # an unknown name: KeyError naming it and the valid ones
        raise ValueError(f"task {task!r}: this policy was trained on {', '.join(tasks)}")
    n = len(obs_z)
    onehot = np.zeros((n, len(tasks)), np.float32)
    w = (weights or {}).get(task, 1.0)
    onehot[:, tasks.index(task)] = w
    if w < 1.0:
        onehot[:, tasks.index(BALANCE_TASK)] += 1.0 - w
    cmd = np.zeros(COMMAND_DIM, np.float32) if command is None else np.asarray(command, np.float32)
    if cmd.shape != (COMMAND_DIM,) or not np.all(np.isfinite(cmd)):
        raise ValueError(f"command: expected {COMMAND_DIM} finite numbers, got {command!r}")
    return onehot, np.tile(cmd, (n, 1))


class StanceHold:
    """The posture term (docs/experiments/long_stand.md). Unpushed, the policy alone lets its feet
    slide apart sideways, ~1 cm/s, until the legs split after 40-55 s; held apart, its feet then
    scissor fore and aft (the pelvis yaws over them) until it falls after ~95 s. Both are slow,
    and both are read from the observation's ``end_effectors_pos`` (feet minus root, root frame
    [m]), along the body's left axis (how far apart: ``width`` is the standing pose's) and along
    its forward axis (left foot ahead of the right: 0 in the standing pose). Against the excess,
    in normalized action units per metre times ``gain``: the hip abduction targets close
    (``lfemurrz`` down, ``rfemurrz`` up) and the hip rotation targets (``l/rfemurry``, both down)
    turn the pelvis back. Each reading is low-passed (time constant ``TAU_S``) and the gain ramps
    in over ``RAMP_TICKS`` after a reset: the first seconds' settling and a push's fast stepping
    are left to the policy."""

    TAU_S = 2.0
    RAMP_TICKS = 200       # 6 s

    def __init__(self, gain: float, width: float):
        self.gain, self.width = float(gain), float(width)
        j = spec.JOINT_NAMES.index
        self.abduct = (j("lfemurrz"), j("rfemurrz"))
        self.rotate = (j("lfemurry"), j("rfemurry"))
        self.alpha = spec.CONTROL_PERIOD_S / self.TAU_S
        self.smoothed: np.ndarray | None = None     # (feet apart, left foot ahead) [m]
        self.ticks = 0

    def reset(self) -> None:
        self.smoothed, self.ticks = None, 0

    @staticmethod
    def feet(obs: np.ndarray) -> np.ndarray:
        """(lfoot - rfoot along the root's left axis, along its forward axis) [m] (end effectors:
        rradius, lradius, rfoot, lfoot)."""
        ee = spec.obs_block(np.asarray(obs, np.float64), "end_effectors_pos").reshape(4, 3)
        d = ee[3] - ee[2]
        return np.array([d @ spec.BODY_LEFT, d @ spec.BODY_FORWARD])

    @classmethod
    def feet_apart(cls, obs: np.ndarray) -> float:
        return float(cls.feet(obs)[0])

    def __call__(self, plan: np.ndarray, obs: np.ndarray) -> np.ndarray:
        if self.gain == 0.0:
            return plan
        f = self.feet(obs)
        if not np.all(np.isfinite(f)):     # the guard refuses such states; the term adds nothing
            return plan
        self.smoothed = f if self.smoothed is None else self.smoothed + self.alpha * (f - self.smoothed)
        self.ticks += 1
        k = self.gain * min(1.0, self.ticks / self.RAMP_TICKS)
        wide, ahead = k * (self.smoothed[0] - self.width), k * self.smoothed[1]
        out = np.array(plan, np.float64)
        out[:, self.abduct[0]] -= wide
        out[:, self.abduct[1]] += wide
        out[:, self.rotate[0]] -= ahead
        out[:, self.rotate[1]] -= ahead
        return np.clip(out, spec.ACTION_LOW, spec.ACTION_HIGH)


def check_settings(settings: dict, horizon: int, tasks: list[str]) -> dict[str, float]:
    """``overlap``: how many of the latest chunks are blended (1 = the newest alone; a chunk older
    than its ``horizon`` steps reaches no step ahead, so more than that counts as ``horizon``);
    ``decay``: a chunk made ``age`` ticks ago weighs exp(-decay x age); ``task_weights``
    (``parse_task_weights``), returned parsed."""
    k, d = settings["overlap"], settings["decay"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"overlap={k!r}: must be an integer >= 1 (1 = no blending)")
    if not isinstance(d, (int, float)) or isinstance(d, bool) or not 0 <= d < float("inf"):
        raise ValueError(f"decay={d!r}: must be a finite number >= 0")
    for name, hi in (("stance_gain", 10.0), ("stance_width", 2.0)):   # absent in bundles before it
        v = settings.get(name, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= hi:
            raise ValueError(f"{name}={v!r}: must be a number in [0, {hi:g}]")
    return parse_task_weights(settings["task_weights"], tasks)


class TemporalEnsemble:
    """ACT's temporal ensembling (Zhao et al. 2023): every tick's chunk predicts the next H
    actions, so the action for a step has been predicted by each of the last H chunks. The plan
    is, step by step, their weighted mean, exp(-decay x age) over the ``overlap`` latest chunks
    that reach that step. One call per control tick: ``age`` counts calls. Measured on schedule
    A (experiments/chunk_smoothing.py): mean episode length over 5 tasks 145 without, 170 with decay
    0.5, 164 with 0.2, 167 with 1.0."""

    def __init__(self, overlap: int, decay: float):
        self.overlap, self.decay = int(overlap), float(decay)
        self.chunks: list[np.ndarray] = []   # newest last; chunk i was made len - 1 - i ticks ago

    def reset(self) -> None:
        self.chunks = []

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """The blended plan (H, A) for this tick, given its fresh chunk (H, A)."""
        H = len(chunk)
        self.chunks = [*self.chunks, np.asarray(chunk, np.float64)][-min(self.overlap, H):]
        out, total = np.zeros_like(self.chunks[-1]), np.zeros((H, 1))
        for i, c in enumerate(self.chunks):
            age = len(self.chunks) - 1 - i
            w = np.exp(-self.decay * age)
            n = H - age                      # steps of this chunk still ahead: now .. now + n - 1
            out[:n] += w * c[age:]
            total[:n] += w
        return out / total


class ChunkExecution:
    """What the chunk kinds (the chunk policy, IDQL) make of a tick's fresh chunk: blended with
    the last ones (``TemporalEnsemble``: settings ``overlap``, ``decay``), then the posture term
    (``StanceHold``: ``stance_gain``, ``stance_width``) at the tick's observation."""

    def __init__(self, settings: dict):
        self.blend = TemporalEnsemble(settings["overlap"], settings["decay"])
        self.stance = StanceHold(settings.get("stance_gain", 0.0), settings.get("stance_width", 0.0))

    def reset(self) -> None:
        self.blend.reset()
        self.stance.reset()

    def __call__(self, chunk: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return self.stance(self.blend(chunk), obs)


class RuntimeChunkPlanner(BundlePlanner):
    """One ``policy`` graph call per plan (well under a millisecond on one core: no anytime
    fallback is needed, so none is kept)."""

    name = kind = "chunk"

    def __init__(self, bundle, **kw):
        super().__init__(bundle, **kw)
        self.tasks = list(self.kind_config["tasks"])
        self.task_weights = check_settings(self.params, self.H, self.tasks)
        self.batch, self.engine = self._fit(self.engines("policy"), 1)
        self.execution = ChunkExecution(self.params)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        if hasattr(self, "execution"):   # the base class resets before __init__ made it
            self.execution.reset()

    def plan(self, request: PlanRequest) -> Plan:
        obs = self.norm_obs(request.obs, self.batch)
        task, cmd = policy_inputs(obs, self.tasks, request.task, request.command, self.task_weights)
        z = self.engine.run({"obs": obs, "task": task, "command": cmd})["actions"][0]
        return Plan(self.execution(self.unnorm_act(z.astype(np.float64)), request.obs), 0.0)
