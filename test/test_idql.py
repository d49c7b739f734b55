"""The IDQL kind: training (denoiser, then its critic beside it, on label data too), resume, the
unrolled graph against torch, the critic's choice among samples, refusals by name."""
import csv

import numpy as np
import pytest
import torch

from planner_node import spec
from planner_node.kinds import KINDS
from planner_node.planning import PlanRequest

TINY = {"kind": "idql", **KINDS["idql"].tiny}
TINY_TRAIN = {**TINY, "train": {**TINY["train"], "steps": 200, "checkpoint_every": 50, "eval_every": 50}}


@pytest.fixture(scope="module")
def idql_run(tiny_data, tmp_path_factory):
    from planner_node.models.config import config_from_dict
    from planner_node.models.idql import IDQLTrainer
    out = tmp_path_factory.mktemp("runs") / "idql"
    IDQLTrainer(config_from_dict(TINY_TRAIN), tiny_data, out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def idql_bundle(idql_run, tmp_path_factory):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path_factory.mktemp("bundles") / "idql"
    export_bundle(idql_run, out, samples=8, steps=3)
    return out


def test_training_lowers_the_loss_resumes_exactly_and_ends_with_a_critic(tiny_data, idql_run, tmp_path):
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.config import config_from_dict
    from planner_node.models.idql import IDQLTrainer
    rows = list(csv.DictReader(open(idql_run / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["policy"] * 4 and (idql_run / "loss.png").exists()
    tr = IDQLTrainer(config_from_dict(TINY_TRAIN), tiny_data, tmp_path / "short", progress=False)
    obs, task, cmd, act, mask = tr.train

    def loss():
        with torch.no_grad():
            return tr.loss(act, obs, task, cmd, mask, np.random.default_rng(0)).item()
    before = loss()
    tr.run()
    assert loss() < 0.7 * before
    ck = load_checkpoint(idql_run)
    assert ck["stage"] == "done" and set(ck["critic"]) >= {"v", "q", "config", "tasks", "metrics"}
    # A kill mid-run, then a resume, ends with the same weights as an uninterrupted run.
    cfg = config_from_dict(TINY)
    full, killed = tmp_path / "full", tmp_path / "killed"
    IDQLTrainer(cfg, tiny_data, full, progress=False).run()
    assert IDQLTrainer(cfg, tiny_data, killed, progress=False).run(stop_after=25)["stage"] == "killed"
    assert IDQLTrainer(cfg, tiny_data, killed, progress=False).run()["stage"] == "done"
    a, b = load_checkpoint(full), load_checkpoint(killed)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=0, rtol=0)
    # a finished run resumed is left byte for byte
    done = (full / "checkpoint.pt").read_bytes()
    assert IDQLTrainer(cfg, tiny_data, full, progress=False).run()["stage"] == "done"
    assert (full / "checkpoint.pt").read_bytes() == done


def test_a_batch_takes_the_same_rows_of_every_array(tiny_data, tmp_path):
    """Each window's observation, task, command, chunk and mask stay together (a batch drawn
    per array would pair observations with other rows' actions, and the denoiser would learn to
    ignore the observation)."""
    from planner_node.models.config import config_from_dict
    from planner_node.models.idql import IDQLTrainer
    tr = IDQLTrainer(config_from_dict(TINY), tiny_data, tmp_path / "run", progress=False)
    batch = tr.batch(np.random.default_rng(3))
    key = torch.cat([tr.train[0], tr.train[3].flatten(1)], 1)   # (obs, chunk) of every window
    got = torch.cat([batch[0], batch[3].flatten(1)], 1)
    assert all((key == row).all(1).any() for row in got), "a batch row pairs one window's obs with another's chunk"


def test_a_checkpoint_without_its_critic_is_refused_by_name(tiny_data, tmp_path):
    from planner_node.models.checkpoint import CheckpointError
    from planner_node.models.config import config_from_dict
    from planner_node.models.idql import IDQLPlanner, IDQLTrainer
    tr = IDQLTrainer(config_from_dict(TINY), tiny_data, tmp_path / "run", progress=False)
    tr.step = TINY["train"]["steps"]
    tr.save()   # the denoiser done, the critic not yet (as a kill during its training leaves it)
    with pytest.raises(CheckpointError, match="no critic yet"):
        IDQLPlanner(str(tmp_path / "run"))


@pytest.mark.parametrize("select", ["argmax", "expectile", "exp", "uniform"])
def test_runtime_plan_matches_the_reference(idql_run, idql_bundle, env, select):
    from planner_node.models.idql import IDQLPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    ref = IDQLPlanner(str(idql_run), threads=1, samples=8, steps=3, select=select)
    rt = runtime_planner(idql_bundle, select=select)
    obs = env.reset(3)
    for task, command in [("stand", None), ("track", (0.6, -0.2, 0.3)), ("stand", None)]:
        a, b = ref.plan(PlanRequest(obs=obs, task=task, command=command)), rt.plan(
            PlanRequest(obs=obs, task=task, command=command))
        np.testing.assert_allclose(b.actions, a.actions, atol=5e-4)
        assert b.actions.shape == (TINY["policy"]["horizon"], spec.ACTION_DIM) and np.all(np.abs(b.actions) <= 1)
        c = b.info["candidates"]
        assert c["first_actions"].shape == (8, spec.ACTION_DIM) and c["scores"].shape == (8,)
        np.testing.assert_allclose(c["scores"], a.info["candidates"]["scores"], atol=1e-3)
        obs, _ = env.step(b.actions[0])


def test_the_graph_samples_from_its_draws_and_scores_with_the_critic(idql_run, idql_bundle, env):
    """Different draws, different chunks; the advantages are the critic's Q - V of the first
    actions under the task, each chunk inside the action limits."""
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.critic import Critic
    from planner_node.runtime.bundle_planner import runtime_planner
    rt = runtime_planner(idql_bundle)
    obs = env.reset(5)
    rt.plan(PlanRequest(obs=obs, task="forward"))
    c = rt.plan(PlanRequest(obs=obs, task="forward")).info["candidates"]
    first = c["first_actions"]
    assert np.all(np.abs(first) <= 1) and not np.allclose(first[0], first[1])
    critic = Critic(None, payload=load_checkpoint(idql_run)["critic"])
    want = critic.q_values(obs, first, "forward") - critic.values(obs[None], "forward")[0]
    np.testing.assert_allclose(c["scores"], want, atol=1e-3)


def test_the_choice_follows_the_critic():
    from planner_node.runtime.idql_select import choose
    adv = np.array([0.1, -2.0, 3.0, np.nan, 0.5])
    rng = np.random.default_rng(0)
    base = {"temperature": 1.0}
    assert choose(adv, {**base, "select": "argmax"}, rng, 0.7) == 2
    picks = {h: np.bincount([choose(adv, {**base, "select": h, "temperature": 4.0}, rng, 0.7) for _ in range(2000)],
                            minlength=5) for h in ("expectile", "exp", "uniform")}
    for h in ("expectile", "exp"):
        assert picks[h][3] == 0, f"{h} chose a non-finite advantage"
        assert picks[h][2] > picks[h][1], h
    assert picks["exp"].argmax() == 2
    # the expectile's implicit policy: weight |tau - 1(A<0)| / |A|, so a small positive A counts most
    assert picks["expectile"].argmax() == 0
    assert np.all(picks["uniform"] > 300)   # the critic ignored (the attribution)
    assert choose(np.full(3, np.nan), {**base, "select": "argmax"}, rng, 0.7) in range(3)


@pytest.mark.parametrize("setting,value,match", [
    ("steps", 0, r"steps=0: must be an integer in \[1, 5\]"), ("steps", 9, r"steps=9"),
    ("select", "best", "select='best': must be one of argmax"), ("temperature", -1.0, "temperature=-1.0"),
    ("samples", 0, "samples=0"), ("overlap", 0, "overlap=0")])
def test_bad_settings_are_refused_by_name(idql_run, setting, value, match):
    from planner_node.models.idql import IDQLPlanner
    with pytest.raises(ValueError, match=match):
        IDQLPlanner(str(idql_run), **{setting: value})


def test_the_runtime_refuses_settings_its_graph_cannot_run(idql_bundle):
    from planner_node.runtime.bundle_planner import runtime_planner
    with pytest.raises(ValueError, match="runs 3 denoising steps"):
        runtime_planner(idql_bundle, steps=2)
    with pytest.raises(ValueError, match=r"samples=16, but the bundle's graphs draw \[8\]"):
        runtime_planner(idql_bundle, samples=16)


def test_label_rounds_train_the_policy_and_only_executed_episodes_train_its_critic(tiny_data, tmp_path):
    """The denoiser clones labels as the chunk policy does (first action only); the critic's
    backup skips the label round's episodes, whose actions were never executed."""
    from planner_node.dataset import Dataset, DatasetError, merge
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.config import config_from_dict
    from planner_node.models.critic import CriticConfig, train_critic, transitions
    from planner_node.models.idql import IDQLTrainer
    from planner_node.sim.generate import generate
    generate("tiny_labels", tmp_path / "labels", learner=_chunk_run(tiny_data, tmp_path), progress=False)
    merge([tiny_data, tmp_path / "labels"], tmp_path / "both")
    ds = Dataset(tmp_path / "both")
    with pytest.raises(DatasetError, match="expert-label data"):
        train_critic(tmp_path / "both", tmp_path / "c", CriticConfig(steps=2, width=8, layers=1), progress=False)
    tr = transitions(ds, skip_labels=True)
    assert not ds.label_rows()[tr["rows"]].any() and len(tr["rows"]) == len(transitions(Dataset(tiny_data))["rows"])
    trainer = IDQLTrainer(config_from_dict(TINY), tmp_path / "both", tmp_path / "idql", progress=False)
    mask = trainer.train[-1].numpy()
    assert mask.shape[1] == TINY["policy"]["horizon"]
    trainer.run()
    assert load_checkpoint(tmp_path / "idql")["critic"]["metrics"]["holdout_transitions"] > 0


def _chunk_run(tiny_data, tmp_path):
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict
    out = tmp_path / "chunk"
    ChunkTrainer(config_from_dict({"kind": "chunk", **KINDS["chunk"].tiny}), tiny_data, out, progress=False).run()
    return out
