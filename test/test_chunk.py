"""The action-chunk policy kind: targets, training in action units, resume, export parity, refusals."""
import csv

import numpy as np
import pytest
import torch

from planner_node import spec
from planner_node.kinds import KINDS
from planner_node.planning import PlanRequest

TINY = {"kind": "chunk", **KINDS["chunk"].tiny}
TINY_TRAIN = {**TINY, "train": {**TINY["train"], "steps": 200, "checkpoint_every": 50, "eval_every": 50}}


@pytest.fixture(scope="module")
def chunk_run(tiny_data, tmp_path_factory):
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict
    out = tmp_path_factory.mktemp("runs") / "chunk"
    ChunkTrainer(config_from_dict(TINY_TRAIN), tiny_data, out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def chunk_bundle(chunk_run, tmp_path_factory):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path_factory.mktemp("bundles") / "chunk"
    export_bundle(chunk_run, out)
    return out


def test_chunk_targets_stay_inside_the_episode(tiny_data):
    from planner_node.dataset import Dataset
    from planner_node.models.chunk import chunk_targets
    ds = Dataset(tiny_data)
    eps = ds.episodes()
    first, second = eps[0], eps[1]
    rows = np.array([first[0], first[-2], first[-1], second[0]])
    acts, mask = chunk_targets(ds, rows, 4)
    a = ds.arrays["actions"]
    np.testing.assert_array_equal(acts[0], a[first[0]:first[0] + 4])
    np.testing.assert_array_equal(mask[0], 1)
    # Two rows before the end: 2 real steps, then the last action repeated and masked out.
    np.testing.assert_array_equal(mask[1], [1, 1, 0, 0])
    np.testing.assert_array_equal(acts[1][2:], a[[first[-1], first[-1]]])
    np.testing.assert_array_equal(mask[2], [1, 0, 0, 0])
    np.testing.assert_array_equal(acts[3][0], a[second[0]])   # never the previous episode's actions


def test_config_errors_name_the_field():
    from planner_node.models.config import ConfigError, config_from_dict, load_config
    with pytest.raises(ConfigError, match=r"policy\.horizon"):
        config_from_dict({"kind": "chunk", "policy": {"horizon": 0}})
    with pytest.raises(ConfigError, match=r"policy\.depth: unknown key"):
        config_from_dict({"kind": "chunk", "policy": {"depth": 3}})
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        config_from_dict({"kind": "chunk", "train": {"lr": "fast"}})
    assert load_config("config/train/chunk_small.yaml").kind == "chunk"


def test_the_loss_is_in_action_units(tiny_data, tmp_path):
    """A z-scored error of 1 on a joint costs that joint's variance: joints count by how far they move."""
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict
    tr = ChunkTrainer(config_from_dict(TINY), tiny_data, tmp_path / "run", progress=False)
    H = TINY["policy"]["horizon"]
    target = torch.zeros(1, 2, H, spec.ACTION_DIM)
    mask = torch.ones(2, H)
    for j in (0, 17):
        pred = target.clone()
        pred[..., j] = 1.0
        want = float(tr.norm.stats["act_std"][j] ** 2) / spec.ACTION_DIM
        assert tr.loss(pred, target, mask).item() == pytest.approx(want, rel=1e-5)
    mask[1] = 0   # masked steps cost nothing
    pred = target.clone()
    pred[:, 1] = 5.0
    assert tr.loss(pred, target, mask).item() == 0.0


def test_training_lowers_the_loss_and_resumes_exactly(tiny_data, chunk_run, tmp_path):
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict
    rows = list(csv.DictReader(open(chunk_run / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["policy"] * 4 and (chunk_run / "loss.png").exists()
    tr = ChunkTrainer(config_from_dict(TINY_TRAIN), tiny_data, tmp_path / "short", progress=False)
    obs, task, cmd, act, mask = (x[:256] for x in tr.train)

    def loss():
        with torch.no_grad():
            return tr.loss(tr.model(obs, task, cmd)[None], act, mask).item()
    before = loss()
    tr.run()
    assert loss() < 0.5 * before
    # A finished run resumed is left byte for byte (label rounds record its sha256).
    done = (tmp_path / "short" / "checkpoint.pt").read_bytes()
    assert ChunkTrainer(config_from_dict(TINY_TRAIN), tiny_data, tmp_path / "short", progress=False).run()["stage"] == "done"
    assert (tmp_path / "short" / "checkpoint.pt").read_bytes() == done
    # A kill mid-run, then a resume, ends with the same weights as an uninterrupted run.
    cfg = config_from_dict(TINY)
    full, killed = tmp_path / "full", tmp_path / "killed"
    ChunkTrainer(cfg, tiny_data, full, progress=False).run()
    assert ChunkTrainer(cfg, tiny_data, killed, progress=False).run(stop_after=25)["stage"] == "killed"
    assert ChunkTrainer(cfg, tiny_data, killed, progress=False).run()["stage"] == "done"
    a, b = load_checkpoint(full), load_checkpoint(killed)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=0, rtol=0)


@pytest.mark.parametrize("task,command", [("stand", None), ("track", (0.6, -0.2, 0.3))])
def test_runtime_plan_matches_the_reference(chunk_run, chunk_bundle, env, task, command):
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    ref, rt = ChunkPlanner(str(chunk_run), threads=1), runtime_planner(chunk_bundle)
    obs = env.reset(3)
    plans = []
    for _ in range(3):
        a, b = ref.plan(PlanRequest(obs=obs, task=task, command=command)), rt.plan(
            PlanRequest(obs=obs, task=task, command=command))
        np.testing.assert_allclose(b.actions, a.actions, atol=2e-4)
        assert a.actions.shape == (TINY["policy"]["horizon"], spec.ACTION_DIM) and np.all(np.abs(b.actions) <= 1)
        plans.append(b.actions)
        obs, _ = env.step(b.actions[0])
    assert not np.allclose(plans[0], plans[2])   # the plan follows the state
    # the command is an input: another command, another plan
    other = rt.plan(PlanRequest(obs=obs, task="track", command=(-0.3, 0.3, -0.5)))
    assert not np.allclose(other.actions, rt.plan(PlanRequest(obs=obs, task="track", command=(1.0, 0.0, 0.5))).actions)


def test_bad_requests_are_refused_by_name(chunk_bundle, chunk_run):
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    rt = runtime_planner(chunk_bundle)
    obs = np.zeros(spec.OBS_DIM)
    with pytest.raises(KeyError, match="fly"):
        rt.plan(PlanRequest(obs=obs, task="fly"))
    with pytest.raises(ValueError, match="command"):
        rt.plan(PlanRequest(obs=obs, task="track", command=(0.1, float("nan"), 0.0)))
    with pytest.raises(ValueError, match="command"):
        ChunkPlanner(str(chunk_run)).plan(PlanRequest(obs=obs, task="track", command=(0.1, 0.2)))
    with pytest.raises(ValueError, match="batch"):
        runtime_planner(chunk_bundle, samples=4)


def test_temporal_ensemble_blends_the_chunks_that_reach_each_step():
    from planner_node.runtime.chunk import TemporalEnsemble
    rng = np.random.default_rng(0)
    H, decay = 4, 0.5
    chunks = [rng.uniform(-1, 1, (H, 3)) for _ in range(6)]
    te = TemporalEnsemble(overlap=8, decay=decay)   # more than H: counts as H
    for t, c in enumerate(chunks):
        got = te(c)
        for j in range(H):   # step t + j was predicted by chunk s (at s's index t + j - s) for s in (t+j-H, t]
            num = den = 0.0
            for s in range(max(0, t + j - H + 1), t + 1):
                w = np.exp(-decay * (t - s))
                num, den = num + w * chunks[s][t + j - s], den + w
            np.testing.assert_allclose(got[j], num / den, atol=1e-12)
    one = TemporalEnsemble(overlap=1, decay=decay)
    for c in chunks:
        np.testing.assert_array_equal(one(c), c)   # overlap 1: the newest chunk alone
    te.reset()
    np.testing.assert_array_equal(te(chunks[0]), chunks[0])   # a reset forgets the earlier chunks


def test_blending_settings_are_checked_by_name(chunk_run, chunk_bundle, tmp_path):
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    with pytest.raises(ValueError, match="overlap=0"):
        runtime_planner(chunk_bundle, overlap=0)
    with pytest.raises(ValueError, match="decay=-1"):
        ChunkPlanner(str(chunk_run), decay=-1.0)
    with pytest.raises(ValueError, match="decay=nan"):
        export_bundle(chunk_run, tmp_path / "b", decay=float("nan"))
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="unknown chunk policy settings"):
        ChunkPlanner(str(chunk_run), temperature=2.0)


def test_task_weights_lean_the_conditioning_toward_stand(chunk_run, chunk_bundle, tmp_path, env):
    """``task_weights``: the task reads as W x its one-hot + (1 - W) x stand's, in the reference
    and the runtime alike; W = 0 is the stand plan, W = 1 the task's own."""
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    obs = env.reset(5)

    def first(p, task):
        p.reset()
        return p.plan(PlanRequest(obs=obs, task=task)).actions

    export_bundle(chunk_run, tmp_path / "w", task_weights="forward:0.3")
    rt, ref = runtime_planner(tmp_path / "w"), ChunkPlanner(str(chunk_run), threads=1, task_weights="forward:0.3")
    np.testing.assert_allclose(first(rt, "forward"), first(ref, "forward"), atol=2e-4)
    plain, zero = runtime_planner(chunk_bundle), runtime_planner(chunk_bundle, task_weights="forward:0")
    np.testing.assert_array_equal(first(zero, "forward"), first(plain, "stand"))
    np.testing.assert_array_equal(first(zero, "track"), first(plain, "track"))   # tasks not named keep W = 1
    assert not np.allclose(first(rt, "forward"), first(plain, "forward"))
    assert not np.allclose(first(rt, "forward"), first(plain, "stand"))
    # the mix is what the graph reads: 0.3 x forward + 0.7 x stand
    from planner_node.runtime.chunk import policy_inputs
    onehot, _ = policy_inputs(np.zeros((1, spec.OBS_DIM)), ["stand", "forward", "track"], "forward", None,
                              {"forward": 0.3})
    np.testing.assert_allclose(onehot, [[0.7, 0.3, 0.0]], atol=1e-7)


def test_cli_writes_and_evaluates_task_weights(chunk_run, tmp_path, capsys):
    import yaml

    from planner_node.cli import main
    for value, want in (("forward:0.3,track:1", "forward:0.3,track:1"), ("", "")):
        out = tmp_path / f"b{len(value)}"
        assert main(["export", "--checkpoint", str(chunk_run), "--out", str(out), "--set", f"task_weights={value}"]) == 0
        assert yaml.safe_load((out / "manifest.yaml").read_text())["planner_defaults"]["task_weights"] == want
    assert main(["eval", "--planner", "chunk", "--checkpoint", str(chunk_run), "--task", "forward", "--episodes", "1",
                 "--steps", "3", "--quiet", "--set", "task_weights=forward:0.5"]) == 0
    assert main(["eval", "--bundle", str(tmp_path / "b0"), "--task", "forward", "--episodes", "1", "--steps", "3",
                 "--quiet", "--set", "task_weights=forward:2"]) == 2
    assert "'forward:2'" in capsys.readouterr().err


def test_the_nodes_planner_settings_override_the_bundles(chunk_bundle, env):
    """``planner_settings`` (node parameter, YAML): overrides every loaded bundle's settings;
    malformed YAML or values are refused naming the parameter, unknown settings by the runtime."""
    from planner_node.control.parameters import planner_settings
    from planner_node.runtime.bundle_planner import runtime_planner
    obs = env.reset(2)
    over = runtime_planner(chunk_bundle, **planner_settings("{task_weights: 'forward:0', decay: 0.5}"))
    plain = runtime_planner(chunk_bundle, **planner_settings(""))
    np.testing.assert_array_equal(over.plan(PlanRequest(obs=obs, task="forward")).actions,
                                  plain.plan(PlanRequest(obs=obs, task="stand")).actions)
    for text, match in (("[1, 2]", "expected a mapping"), ("{decay: [1]}", "'decay'"), ("{a: b: c}", "invalid YAML")):
        with pytest.raises(ValueError, match=f"planner_settings: .*{match}"):
            planner_settings(text)
    with pytest.raises(ValueError, match=r"unknown planner settings \['temperature'\]"):
        runtime_planner(chunk_bundle, **planner_settings("{temperature: 2}"))


@pytest.mark.parametrize("text,match", [("forward:1.5", "'forward:1.5'"), ("forward", "TASK:W"),
                                        ("forward:x", "'forward:x'"), ("fly:0.5", "fly"),
                                        ("rotate_x:0.5", "trained on"), ("forward:0.5,forward:0.4", "twice"),
                                        (0.5, "expected a string")])
def test_bad_task_weights_are_refused_by_name(chunk_run, chunk_bundle, text, match):
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    with pytest.raises((ValueError, KeyError), match=match):
        runtime_planner(chunk_bundle, task_weights=text)
    with pytest.raises((ValueError, KeyError), match=match):
        ChunkPlanner(str(chunk_run), task_weights=text)


def test_a_bundle_made_before_a_setting_existed_loads_with_its_default(chunk_bundle, tmp_path):
    import shutil

    import yaml

    from planner_node.runtime.bundle import BundleError
    from planner_node.runtime.bundle_planner import runtime_planner
    old = tmp_path / "old"
    shutil.copytree(chunk_bundle, old)
    m = yaml.safe_load((old / "manifest.yaml").read_text())
    del m["planner_defaults"]["task_weights"]
    (old / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    assert runtime_planner(old).params["task_weights"] == ""
    m["planner_defaults"]["stand_bias"] = 0.5
    (old / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(BundleError, match=r"planner_defaults: unknown keys \['stand_bias'\]"):
        runtime_planner(old)


def test_expert_label_rounds_record_the_experts_action_where_the_learner_drove(chunk_run, tmp_path):
    """``labels="expert"``: the learner's actions move the robot (expert_share 0), and the recorded
    action at each visited state is the expert's clean action there, not the executed one.
    Checked by replaying each episode with an independent learner and expert."""
    from dataclasses import replace

    from planner_node.dataset import Dataset
    from planner_node.planning import planner_class
    from planner_node.sim.env import EnvConfig, HumanoidEnv
    from planner_node.sim.generate import RECIPES, episode_start, generate
    from planner_node.sim.mppi import MPPIPlanner

    recipe = replace(RECIPES["tiny_labels"], expert_share=0.0)
    generate("tiny_labels", tmp_path / "labels", recipe=recipe, learner=chunk_run, progress=False)
    ds = Dataset(tmp_path / "labels")
    assert ds.meta["source"]["kind"] == "expert_labels" and ds.label_sources() == ["tiny_labels"]
    gap = 0.0
    for ep, rows in enumerate(ds.episodes()):
        seed, _rng, task = episode_start(recipe, ep)
        env = HumanoidEnv(EnvConfig(push_every=recipe.push_every, push_speed=recipe.push_speed))
        obs = env.reset(seed)
        learner = planner_class("chunk")(checkpoint=str(chunk_run), seed=seed, threads=1)
        expert = MPPIPlanner(seed=seed, **{"threads": 1, **recipe.expert})
        try:
            for i in rows:
                np.testing.assert_allclose(ds.arrays["observations"][i], obs, rtol=2e-3, atol=2e-3)
                label = expert.plan(PlanRequest(obs=obs, task=task, sim_state=env.get_state())).actions[0]
                mine = learner.plan(PlanRequest(obs=obs, task=task)).actions[0]
                np.testing.assert_allclose(ds.arrays["actions"][i], np.clip(label, -1, 1), atol=5e-4)
                gap = max(gap, float(np.abs(label - mine).max()))
                obs, _fell = env.step(mine)
        finally:
            expert.close()
    assert gap > 0.05, "the learner's and the expert's actions never differed: the test would not tell them apart"


def test_expert_label_data_is_refused_by_models_of_the_dynamics_and_masked_for_the_policy(tiny_data, chunk_run, tmp_path):
    """A label's (s, a, s') is not a transition; world models refuse it by name, the policy trains on
    it, each label row supervising its own first action only."""
    from planner_node.dataset import Dataset, DatasetError, merge
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import ConfigError, config_from_dict
    from planner_node.models.train import Trainer
    from planner_node.sim.generate import Recipe, generate
    from conftest import TINY as TINY_HGAP

    for bad, match in [({"labels": "mine"}, "Recipe.labels"), ({"labels": "expert", "expert_share": 1.5}, "expert_share"),
                       ({"labels": "expert", "handover": (1, 2)}, "no handover")]:
        with pytest.raises(ValueError, match=match):
            Recipe(episodes=1, steps=1, **bad)
    with pytest.raises(DatasetError, match="--learner"):
        generate("tiny_labels", tmp_path / "none", progress=False)
    generate("tiny_labels", tmp_path / "labels", learner=chunk_run, progress=False)
    merge([tiny_data, tmp_path / "labels"], tmp_path / "both")
    assert Dataset(tmp_path / "both").label_sources() == ["tiny_labels"] and not Dataset(tiny_data).label_sources()
    with pytest.raises(DatasetError, match="expert-label data .*'tiny_labels'.*trajectory world model"):
        Trainer(config_from_dict({"kind": "hgap", **TINY_HGAP}), tmp_path / "both", tmp_path / "hgap", progress=False)
    cfg = {**TINY, "train": {**TINY["train"], "steps": 4, "checkpoint_every": 4, "eval_every": 4}}
    trainer = ChunkTrainer(config_from_dict(cfg), tmp_path / "both", tmp_path / "chunk", progress=False)
    trainer.run()
    assert (tmp_path / "chunk" / "metrics.csv").exists()
    # Which rows are labels, through nested merges: each source's rows are one block, in order.
    n_expert, n_labels = len(Dataset(tiny_data)), len(Dataset(tmp_path / "labels"))
    merge([tmp_path / "both", tiny_data], tmp_path / "nested")
    want = np.r_[np.zeros(n_expert, bool), np.ones(n_labels, bool), np.zeros(n_expert, bool)]
    np.testing.assert_array_equal(Dataset(tmp_path / "nested").label_rows(), want)
    # A label row supervises only its first action; an expert row its whole chunk.
    episodes = trainer.ds.episodes()
    mask = trainer._arrays(episodes, TINY["policy"]["horizon"])[-1].numpy()
    rows = np.concatenate(episodes)
    labelled = trainer.ds.label_rows()[rows]
    assert labelled.any() and (~labelled).any()
    assert (mask[labelled, 0] == 1).all() and (mask[labelled, 1:] == 0).all()
    assert (mask[~labelled, 1:] == 1).any()
    # label_weight scales a label row's one term, and nothing else
    cfg["train"] = {**cfg["train"], "label_weight": 8.0}
    heavy = ChunkTrainer(config_from_dict(cfg), tmp_path / "both", tmp_path / "heavy", progress=False)
    mask8 = heavy._arrays(episodes, TINY["policy"]["horizon"])[-1].numpy()
    assert (mask8[labelled, 0] == 8).all() and (mask8[labelled, 1:] == 0).all()
    np.testing.assert_array_equal(mask8[~labelled], mask[~labelled])
    with pytest.raises(ConfigError, match=r"train\.label_weight"):
        config_from_dict({**TINY, "train": {**TINY["train"], "label_weight": 0.0}})


def test_label_rounds_record_the_experts_plan_and_it_supervises_the_chunk_tail(tiny_data, chunk_run, tmp_path):
    """``plan_labels``: each label row also records the expert's first K planned actions (the
    first being its label); ``label_tails`` chooses what supervises a label row's chunk tail."""
    from dataclasses import replace

    from planner_node.dataset import Dataset, merge
    from planner_node.models.chunk import ChunkTrainer, chunk_targets
    from planner_node.models.config import ConfigError, config_from_dict
    from planner_node.sim.generate import RECIPES, Recipe, _recipe_dict, generate

    with pytest.raises(ValueError, match="Recipe.plan_labels"):
        Recipe(episodes=1, steps=1, plan_labels=2)   # labels="executed": nothing to plan along
    with pytest.raises(ValueError, match="Recipe.plan_labels"):
        Recipe(episodes=1, steps=1, labels="expert", plan_labels=-1)
    assert "plan_labels" not in _recipe_dict("tiny_labels", RECIPES["tiny_labels"])   # older rounds still resume
    recipe = replace(RECIPES["tiny_labels"], plan_labels=3)
    generate("tiny_labels", tmp_path / "plans", recipe=recipe, learner=chunk_run, progress=False)
    labels = Dataset(tmp_path / "plans")
    assert labels.meta["source"]["recipe"]["plan_labels"] == 3 and labels.plans.shape == (len(labels), 3, spec.ACTION_DIM)
    np.testing.assert_allclose(labels.plans[:, 0], labels.arrays["actions"], atol=5e-4)   # the plan starts at the label
    assert np.abs(np.diff(labels.plans, axis=1)).max() > 1e-3   # and goes on: not the label repeated
    merge([tiny_data, tmp_path / "plans"], tmp_path / "both")
    H = TINY["policy"]["horizon"]   # 4: past the recorded 3 steps

    def targets(tails, tail_weight=1.0):
        cfg = {**TINY, "train": {**TINY["train"], "steps": 0, "label_tails": tails, "label_tail_weight": tail_weight}}
        trainer = ChunkTrainer(config_from_dict(cfg), tmp_path / "both", tmp_path / f"{tails}{tail_weight}",
                               progress=False)
        eps = trainer.ds.episodes()
        rows = np.concatenate(eps)
        _obs, _task, _cmd, acts, mask = (x.numpy() for x in trainer._arrays(eps, H))
        return trainer, rows, trainer.norm.unnorm_act(acts), mask

    trainer, rows, acts, mask = targets("plans")
    labelled = trainer.ds.label_rows()[rows]
    assert labelled.any() and (~labelled).any()
    np.testing.assert_array_equal(mask[labelled], np.tile([1, 1, 1, 0], (labelled.sum(), 1)))
    np.testing.assert_allclose(acts[labelled, :3], trainer.ds.plans[rows[labelled]], atol=1e-5)
    expert_acts, expert_mask = chunk_targets(trainer.ds, rows[~labelled], H)
    np.testing.assert_array_equal(mask[~labelled], expert_mask)   # expert rows as before
    _, _, _, mask_w = targets("plans", 0.25)   # label_tail_weight scales a label row's tail, nothing else
    np.testing.assert_array_equal(mask_w[labelled], np.tile([1, 0.25, 0.25, 0], (labelled.sum(), 1)))
    np.testing.assert_array_equal(mask_w[~labelled], expert_mask)
    _, _, acts_l, mask_l = targets("labels")
    want_acts, want_mask = chunk_targets(trainer.ds, rows[labelled], H)
    np.testing.assert_array_equal(mask_l[labelled], want_mask)   # the next labels along the learner's path
    np.testing.assert_allclose(acts_l[labelled], want_acts, atol=1e-5)
    _, _, _, mask_n = targets("none")
    assert (mask_n[labelled, 1:] == 0).all() and (mask_n[labelled, 0] == 1).all()
    with pytest.raises(ConfigError, match=r"train\.label_tails"):
        config_from_dict({**TINY, "train": {**TINY["train"], "label_tails": "chunks"}})
    with pytest.raises(ConfigError, match=r"train\.label_tail_weight"):
        config_from_dict({**TINY, "train": {**TINY["train"], "label_tail_weight": 0.0}})


def test_candidates_are_the_plan_and_each_members_chunk(chunk_run, env):
    """``planner eval --score`` chooses among the blended plan (first, the policy's choice) and the
    members' own chunks; the blend advances as ``plan``'s does, whichever is executed."""
    from planner_node.models.chunk import ChunkPlanner
    from planner_node.sim.oracle import ScoredPlanner

    a, b = ChunkPlanner(str(chunk_run), threads=1), ChunkPlanner(str(chunk_run), threads=1)
    obs = env.reset(3)
    for _ in range(3):
        req = PlanRequest(obs=obs, task="stand")
        c, p = a.candidates(req), b.plan(req)
        assert c.actions.shape == (len(a.policy.nets) + 1, *p.actions.shape) and c.scores.argmax() == 0
        np.testing.assert_allclose(c.actions[0], p.actions, atol=1e-6)
        assert not np.allclose(c.actions[1], c.actions[2]), "the members' chunks are distinct candidates"
        obs, _ = env.step(c.actions[1][0])   # a member's action executed: the blends must still agree
    # The policy predicts no states: a critic of predicted states is refused by name.
    scored = ScoredPlanner(ChunkPlanner(str(chunk_run), threads=1), "model", threads=1)
    scored.critic = object()   # any critic: the refusal comes before it is used
    with pytest.raises(ValueError, match="predicts no states.*critic_q"):
        scored.plan(PlanRequest(obs=env.reset(0), task="stand"))


def test_advantage_weights_come_from_the_critic_under_each_rows_task(tiny_data, tmp_path):
    """IQL-style extraction: a window counts exp(beta * A / std A), A = Q(s, a) - V(s) of its first
    action under its own task, std over that task's rows, clipped; the loss is the weighted mean; the hold-out is not weighted."""
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import ConfigError, config_from_dict
    from planner_node.models.critic import Critic, CriticConfig, train_critic

    with pytest.raises(ConfigError, match=r"train\.advantage_critic"):
        config_from_dict({**TINY, "train": {**TINY["train"], "advantage_beta": 1.0}})
    with pytest.raises(ConfigError, match=r"train\.advantage_beta"):
        config_from_dict({**TINY, "train": {**TINY["train"], "advantage_beta": -1.0, "advantage_critic": "x"}})
    train_critic(tiny_data, tmp_path / "critic", CriticConfig(steps=60, batch_size=32, width=32), progress=False)
    beta, cap = 1.5, 3.0
    cfg = {**TINY, "train": {**TINY["train"], "steps": 4, "advantage_critic": str(tmp_path / "critic"),
                             "advantage_beta": beta, "advantage_max_weight": cap}}
    trainer = ChunkTrainer(config_from_dict(cfg), tiny_data, tmp_path / "chunk", progress=False)
    critic, a, ds = Critic(tmp_path / "critic"), trainer.ds.arrays, trainer.ds
    adv = np.array([critic.q_values(a["observations"][r], a["actions"][r][None], ds.tasks[a["task_ids"][r]])[0]
                    - critic.values(a["observations"][r][None], ds.tasks[a["task_ids"][r]])[0]
                    for r in range(len(a["actions"]))])
    std = np.array([adv[a["task_ids"] == i].std() for i in a["task_ids"]])   # per task
    want = np.minimum(np.exp(beta * adv / std), cap)
    np.testing.assert_allclose(trainer.weights, want, rtol=1e-4)
    assert (want < 1).any() and (want > 1).any()
    # Each window's mask carries its first row's weight; the loss is their weighted mean.
    episodes = trainer.ds.episodes()
    rows = np.concatenate(episodes)
    mask = trainer._arrays(episodes, TINY["policy"]["horizon"])[-1].numpy()
    np.testing.assert_allclose(mask[:, 0], want[rows], rtol=1e-4)
    target = torch.zeros(1, 2, TINY["policy"]["horizon"], spec.ACTION_DIM)
    pred = target.clone()
    pred[:, 0] = 1.0
    m = torch.ones(2, TINY["policy"]["horizon"])
    m[0] *= 3.0   # the erring window counts 3 times: its error is 3/4 of the mean
    plain = trainer.loss(pred, target, torch.ones_like(m)).item() * 2   # the error of one window
    assert trainer.loss(pred, target, m).item() == pytest.approx(plain * 3 / 4, rel=1e-5)
    assert trainer.split["advantage_weights"]["clipped"] == pytest.approx(np.mean(want >= cap))


def test_a_run_trained_before_a_setting_existed_still_resumes(tiny_data, chunk_run, tmp_path):
    """A finished run whose recorded config lacks a setting added since (its default is what it
    was trained with) resumes; a recorded value that differs, or a key the code does not know, is
    refused as a different config."""
    import shutil

    from planner_node.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict

    def run_with(edit):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(chunk_run, out)
        ck = load_checkpoint(out / "checkpoint.pt")
        edit(ck["config"]["train"])
        save_checkpoint(out / "checkpoint.pt", ck)
        return ChunkTrainer(config_from_dict(TINY_TRAIN), tiny_data, out, progress=False)

    assert run_with(lambda t: t.pop("label_weight")).step == TINY_TRAIN["train"]["steps"]
    with pytest.raises(CheckpointError, match="different config"):
        run_with(lambda t: t.update(label_weight=2.0))
    with pytest.raises(CheckpointError, match="different config"):
        run_with(lambda t: t.update(retired_setting=1))


def test_observation_noise_perturbs_the_batches_and_resumes_exactly(tiny_data, tmp_path):
    """``obs_noise`` trains on noisy observations (a different policy from the same seed and
    batches), deterministically: a kill and a resume end where an uninterrupted run does. A
    negative or non-finite std is refused by name."""
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import ConfigError, config_from_dict
    noisy = config_from_dict({**TINY, "train": {**TINY["train"], "obs_noise": 0.5}})
    ChunkTrainer(config_from_dict(TINY), tiny_data, tmp_path / "plain", progress=False).run()
    ChunkTrainer(noisy, tiny_data, tmp_path / "full", progress=False).run()
    assert ChunkTrainer(noisy, tiny_data, tmp_path / "killed", progress=False).run(stop_after=25)["stage"] == "killed"
    ChunkTrainer(noisy, tiny_data, tmp_path / "killed", progress=False).run()
    plain, full, killed = (load_checkpoint(tmp_path / n)["model"] for n in ("plain", "full", "killed"))
    for k in full:
        torch.testing.assert_close(full[k], killed[k], atol=0, rtol=0)
    assert any(not torch.equal(full[k], plain[k]) for k in full)
    for bad in (-0.1, float("inf")):
        with pytest.raises(ConfigError, match=r"train\.obs_noise"):
            config_from_dict({**TINY, "train": {**TINY["train"], "obs_noise": bad}})


def test_dropout_trains_resumes_exactly_and_is_off_in_the_exported_policy(tiny_data, tmp_path):
    """``policy.dropout`` trains a different policy from the same seed and batches, resumes
    exactly after a kill, is off (eval mode) in the reference and the exported graph (whose
    parity check would fail otherwise), and is refused by name outside [0, 1)."""
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.chunk import ChunkTrainer, build_policy
    from planner_node.models.config import ConfigError, config_from_dict
    dropped = config_from_dict({**TINY, "policy": {**TINY["policy"], "dropout": 0.3}})
    ChunkTrainer(config_from_dict(TINY), tiny_data, tmp_path / "plain", progress=False).run()
    ChunkTrainer(dropped, tiny_data, tmp_path / "full", progress=False).run()
    assert ChunkTrainer(dropped, tiny_data, tmp_path / "killed", progress=False).run(stop_after=25)["stage"] == "killed"
    ChunkTrainer(dropped, tiny_data, tmp_path / "killed", progress=False).run()
    plain, full, killed = (load_checkpoint(tmp_path / n) for n in ("plain", "full", "killed"))
    for k in full["model"]:
        torch.testing.assert_close(full["model"][k], killed["model"][k], atol=0, rtol=0)
    assert not torch.equal(full["model"]["nets.0.0.weight"], plain["model"]["nets.0.0.weight"])
    _, policy, _ = build_policy(full)
    x = (torch.randn(4, spec.OBS_DIM), torch.eye(len(full["policy_tasks"]))[[0] * 4], torch.zeros(4, 3))
    with torch.no_grad():
        torch.testing.assert_close(policy(*x), policy(*x), atol=0, rtol=0)   # no dropout at run time
    export_bundle(tmp_path / "full", tmp_path / "bundle")   # parity checked inside
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"policy\.dropout"):
            config_from_dict({**TINY, "policy": {**TINY["policy"], "dropout": bad}})


def test_modes_train_a_mixture_and_run_its_most_likely_chunk(tiny_data, tmp_path):
    """``policy.modes`` > 1: each member proposes several chunks and a logit each; training
    (relaxed winner-takes-all + the winner's cross-entropy) resumes exactly after a kill; at run
    time a member's chunk is exactly its most likely mode's, in the reference and in the exported
    graph (parity checked by the export); modes < 1 is refused by name."""
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.chunk import ChunkTrainer, build_policy
    from planner_node.models.config import ConfigError, config_from_dict
    mixed = config_from_dict({**TINY, "policy": {**TINY["policy"], "modes": 3}})
    ChunkTrainer(mixed, tiny_data, tmp_path / "full", progress=False).run()
    assert ChunkTrainer(mixed, tiny_data, tmp_path / "killed", progress=False).run(stop_after=25)["stage"] == "killed"
    ChunkTrainer(mixed, tiny_data, tmp_path / "killed", progress=False).run()
    full, killed = (load_checkpoint(tmp_path / n) for n in ("full", "killed"))
    for k in full["model"]:
        torch.testing.assert_close(full["model"][k], killed["model"][k], atol=0, rtol=0)
    with open(tmp_path / "full" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f)]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    _, policy, _ = build_policy(full)
    x = torch.cat([torch.randn(5, spec.OBS_DIM), torch.eye(len(full["policy_tasks"]))[[0] * 5], torch.zeros(5, 3)], -1)
    with torch.no_grad():
        y = policy.nets[0](x)
        chunks, logits = policy.split(y)
        assert chunks.shape == (5, 3, TINY["policy"]["horizon"], spec.ACTION_DIM) and logits.shape == (5, 3)
        torch.testing.assert_close(policy.modal(y), chunks[torch.arange(5), logits.argmax(-1)])
    export_bundle(tmp_path / "full", tmp_path / "bundle")   # parity checked inside
    with pytest.raises(ConfigError, match=r"policy\.modes"):
        config_from_dict({**TINY, "policy": {**TINY["policy"], "modes": 0}})


def test_rescue_rounds_record_the_expert_where_the_learner_tried_ahead_would_fall(tiny_data, chunk_run, tmp_path):
    """``rescue``: the learner drives; where it, tried ahead on a copy, would fall inside a push
    window, the expert drives that window instead from the same state under the same push, and
    only the expert's windows are recorded (each its own episode, of executed actions)."""
    from dataclasses import replace

    from planner_node.dataset import Dataset, DatasetError
    from planner_node.planning import planner_class
    from planner_node.sim.env import EnvConfig, HumanoidEnv
    from planner_node.sim.generate import RECIPES, RESCUE_TRIES, Recipe, _recipe_dict, episode_start, generate

    with pytest.raises(ValueError, match="Recipe.rescue"):
        Recipe(episodes=1, steps=1, rescue=True, labels="expert")
    with pytest.raises(DatasetError, match="--learner"):
        generate("tiny_rescue", tmp_path / "none", progress=False)
    assert "rescue" not in _recipe_dict("tiny", RECIPES["tiny"])   # older recipes still resume
    # A shove no one recovers from at the second window's start (step 25; it takes the robot down
    # in ~20 steps): the learner, tried ahead, falls there, so that window, and only it, is the
    # expert's; the robot falls in it.
    shove = replace(RECIPES["tiny_rescue"], steps=50, push_every=25, push_speed=5.0)
    generate("tiny_rescue", tmp_path / "shove", recipe=shove, learner=chunk_run, progress=False)
    ds = Dataset(tmp_path / "shove")
    assert ds.meta["source"]["kind"] == "mppi_expert" and not ds.label_rows().any()
    assert ds.meta["source"]["recipe"]["rescue"] is True
    episodes = ds.episodes()
    assert len(episodes) == shove.episodes   # one window per shard
    for ep, rows in enumerate(episodes):
        seed, _rng, task = episode_start(shove, ep)
        env = HumanoidEnv(EnvConfig(push_every=shove.push_every, push_speed=shove.push_speed))
        obs = env.reset(seed)
        learner = planner_class("chunk")(checkpoint=str(chunk_run), seed=seed, threads=1)
        for _ in range(shove.push_every):   # the learner's first window, not recorded
            obs, fell = env.step(learner.plan(PlanRequest(obs=obs, task=task)).actions[0])
            assert not fell
        np.testing.assert_allclose(ds.arrays["observations"][rows[0]], obs, rtol=2e-3, atol=2e-3)
        mine = learner.plan(PlanRequest(obs=obs, task=task)).actions[0]
        assert np.abs(ds.arrays["actions"][rows[0]] - mine).max() > 0.05   # the expert's action, not the learner's
        assert len(rows) <= shove.push_every and ds.arrays["terminals"][rows[-1]]
    # No push: the learner never would fall; after RESCUE_TRIES starts the last window is the
    # expert's anyway, cut by a timeout, so every shard holds a window.
    calm = replace(shove, push_speed=0.0, episodes=1, steps=16, push_every=8)
    generate("tiny_rescue", tmp_path / "calm", recipe=calm, learner=chunk_run, progress=False)
    calm_ds = Dataset(tmp_path / "calm")
    (rows,) = calm_ds.episodes()
    assert RESCUE_TRIES > 1 and len(rows) == calm.push_every
    assert calm_ds.arrays["timeouts"][rows[-1]] and not calm_ds.arrays["terminals"].any()

    # ``recipe_weights``: a round's rows count W times in the loss, through merges; the rest once.
    from planner_node.dataset import merge
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import ConfigError, config_from_dict
    merge([tiny_data, tmp_path / "shove"], tmp_path / "both")

    def weights(text):
        cfg = {**TINY, "train": {**TINY["train"], "steps": 0, "recipe_weights": text}}
        return ChunkTrainer(config_from_dict(cfg), tmp_path / "both", tmp_path / f"run{len(text)}", progress=False)

    trainer = weights("tiny_rescue:3")
    made = trainer.ds.recipe_rows()
    assert set(made.tolist()) == {"tiny", "tiny_rescue"}
    np.testing.assert_array_equal(trainer.weights, np.where(made == "tiny_rescue", 3.0, 1.0))
    _obs, _task, _cmd, _acts, mask = trainer._arrays(trainer.ds.episodes(), TINY["policy"]["horizon"])
    assert set(np.unique(mask.numpy()).tolist()) == {0.0, 1.0, 3.0}
    with pytest.raises(ValueError, match="recipe 'dagger' made none of .*its recipes: tiny, tiny_rescue"):
        weights("dagger:2")
    for bad in ("tiny:0", "tiny", "tiny:2,tiny:3", "tiny:nan"):
        with pytest.raises(ConfigError, match=r"train\.recipe_weights"):
            weights(bad)


def test_stance_hold_pulls_splaying_feet_together():
    """The posture term against the long-stand drift: feet wider than the reference bring the
    hip abduction targets toward each other (after the ramp), and it leaves a plan alone at gain
    0, on a non-finite observation, and at the reference width."""
    from planner_node import spec
    from planner_node.runtime.chunk import StanceHold
    obs = np.zeros(spec.OBS_DIM)
    ee = obs[spec.OBS_SLICES["end_effectors_pos"]].reshape(4, 3)
    ee[2] = -0.6 * spec.BODY_LEFT    # rfoot
    ee[3] = +0.6 * spec.BODY_LEFT    # lfoot: 1.2 m apart
    obs[spec.OBS_SLICES["end_effectors_pos"]] = ee.ravel()
    plan = np.zeros((8, spec.ACTION_DIM))
    left, right = spec.JOINT_NAMES.index("lfemurrz"), spec.JOINT_NAMES.index("rfemurrz")
    s = StanceHold(0.5, 0.9)
    assert s.feet_apart(obs) == pytest.approx(1.2)
    for _ in range(StanceHold.RAMP_TICKS):
        out = s(plan, obs)
    assert out[:, left] == pytest.approx(-0.15) and out[:, right] == pytest.approx(0.15)   # 0.5 x 0.3 m
    others = np.delete(out, [left, right], axis=1)
    assert np.all(others == 0.0)
    assert np.array_equal(StanceHold(0.0, 0.9)(plan, obs), plan)
    bad = obs.copy()
    bad[spec.OBS_SLICES["end_effectors_pos"]] = np.nan
    assert np.array_equal(StanceHold(0.5, 0.9)(plan, bad), plan)
    at_ref = StanceHold(0.5, 1.2)
    assert np.allclose(at_ref(plan, obs), plan)
    s.reset()
    assert np.abs(s(plan, obs)[:, left]).max() < 0.01   # the ramp starts again after a reset
    # the left foot 0.2 m ahead of the right (the pelvis yawed over the feet): both hip rotations down
    ahead = obs.copy()
    ee[3] += 0.2 * spec.BODY_FORWARD
    ahead[spec.OBS_SLICES["end_effectors_pos"]] = ee.ravel()
    s = StanceHold(0.5, 1.2)
    for _ in range(StanceHold.RAMP_TICKS):
        out = s(plan, ahead)
    for name in ("lfemurry", "rfemurry"):
        assert out[:, spec.JOINT_NAMES.index(name)] == pytest.approx(-0.1)
    assert out[:, left] == pytest.approx(0.0) and out[:, right] == pytest.approx(0.0)


@pytest.mark.parametrize("name,value", [("stance_gain", -1.0), ("stance_gain", "abc"), ("stance_width", 5.0)])
def test_stance_settings_are_checked(name, value):
    from planner_node.runtime.chunk import check_settings
    settings = {"overlap": 8, "decay": 0.5, "task_weights": "", "stance_gain": 0.5, "stance_width": 0.91, name: value}
    with pytest.raises(ValueError, match=name):
        check_settings(settings, 8, ["stand"])
