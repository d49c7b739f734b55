"""Policy rollouts (recipe ``rollout``): the policy drives whole episodes, with per-episode noise
and task weight, random pushes and a share of long episodes; executed and clean actions are
recorded; the same recipe and policy make the same shards, byte for byte."""
import json
from pathlib import Path

import numpy as np
import pytest

from planner_node.dataset import Dataset, DatasetError, merge
from planner_node.kinds import KINDS
from planner_node.sim.generate import RECIPES, Recipe, generate

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "data" / "regenerate" / "policy_rollouts.json"
BY_ISA = ROOT / "data" / "regenerate" / "policy_rollouts_by_isa.json"  # the same episodes on other CPUs
SHIPPED_POLICY = ROOT / "runs" / "chunk_rsw4_s0"


@pytest.fixture(scope="module")
def policy_run(tiny_data, tmp_path_factory):
    from planner_node.models.chunk import ChunkTrainer
    from planner_node.models.config import config_from_dict
    out = tmp_path_factory.mktemp("runs") / "chunk"
    ChunkTrainer(config_from_dict({"kind": "chunk", **KINDS["chunk"].tiny}), tiny_data, out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def rollouts(policy_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "ro"
    generate("tiny_rollouts", out, learner=policy_run, progress=False)
    return out


def test_rollouts_record_each_episodes_draws_and_the_clean_action(rollouts):
    r = RECIPES["tiny_rollouts"]
    ds = Dataset(rollouts)
    a = ds.arrays
    assert ds.meta["source"]["kind"] == "policy_rollouts" and not ds.label_sources()
    clean, sigma, weight = ds.optional("clean_actions"), ds.optional("noise_std"), ds.optional("task_weight")
    lengths = []
    for ep in ds.episodes():
        assert len(np.unique(sigma[ep])) == 1 and len(np.unique(weight[ep])) == 1
        s = float(sigma[ep[0]])
        assert r.noise_range[0] <= s <= r.noise_range[1]
        task = r.tasks[a["task_ids"][ep[0]]]
        assert weight[ep[0]] == 1.0 if task == "stand" else r.weight_range[0] <= weight[ep[0]] <= r.weight_range[1]
        # executed = clip(clean + N(0, sigma)): the residual's spread is the episode's sigma
        inside = np.abs(a["actions"][ep]) < 0.999
        resid = (a["actions"][ep] - clean[ep])[inside]
        assert abs(resid.std() / s - 1) < 0.25, (resid.std(), s)
        lengths.append(len(ep))
        assert len(ep) in (r.steps, r.long_steps) or a["terminals"][ep[-1]], len(ep)
    assert r.long_steps in lengths, f"no long episode among {lengths}"


def test_the_same_recipe_and_policy_make_the_same_shards(rollouts, policy_run, tmp_path, capsys):
    from planner_node.cli import main
    again = tmp_path / "again"
    assert main(["data", "generate", "--recipe", "tiny_rollouts", "--learner", str(policy_run), "--out", str(again),
                 "--quiet", "--expect", f"{rollouts}.json"]) == 0
    assert "matches" in capsys.readouterr().out
    assert main(["data", "info", str(again)]) == 0
    assert f"policy rollouts on {len(Dataset(again))} rows: clean actions recorded" in capsys.readouterr().out
    other = tmp_path / "other"
    assert main(["data", "generate", "--recipe", "tiny_rollouts", "--learner", str(policy_run), "--out", str(other),
                 "--quiet", "--seed", "7", "--expect", f"{rollouts}.json"]) == 1
    assert "NOT the dataset" in capsys.readouterr().err


def test_rollouts_need_a_policy_and_their_fields_are_checked(tmp_path, rollouts, tiny_data):
    with pytest.raises(DatasetError, match="--learner RUN"):
        generate("tiny_rollouts", tmp_path / "none", progress=False)
    for bad, match in [({"noise_range": (0.2, 0.1)}, "noise_range"), ({"weight_range": (0.0, 1.5)}, "weight_range"),
                       ({"push_gap": (0, 4)}, "push_gap"), ({"long_share": 2.0}, "long_share"),
                       ({"labels": "expert"}, "no labels")]:
        with pytest.raises(ValueError, match=match):
            Recipe(episodes=1, steps=1, rollout=True, **bad)
    # merged with expert data: the rollout fields are NaN on the expert's rows
    merge([tiny_data, rollouts], tmp_path / "both")
    ds = Dataset(tmp_path / "both")
    clean, n = ds.optional("clean_actions"), len(Dataset(tiny_data))
    assert np.isnan(clean[:n]).all() and np.isfinite(clean[n:]).all()
    assert Dataset(tiny_data).optional("clean_actions") is None
    with pytest.raises(KeyError, match="not an optional row field"):
        ds.optional("plans")


def test_policies_learn_the_clean_actions_when_told(tmp_path, rollouts, tiny_data):
    """``action_target: clean``: the chunks are the recorded clean actions (the executed ones in
    rows of shards without them); data that recorded none is refused by name."""
    from types import SimpleNamespace

    from planner_node.models.chunk import chunk_targets, window_arrays
    from planner_node.models.config import config_from_dict
    from planner_node.models.data import Normalizer, returns_to_go, target_actions
    merge([tiny_data, rollouts], tmp_path / "both")
    ds = Dataset(tmp_path / "both")
    n = len(Dataset(tiny_data))
    clean = target_actions(ds, "clean")
    assert np.array_equal(clean[:n], ds.arrays["actions"][:n])
    assert np.array_equal(clean[n:], ds.optional("clean_actions")[n:])
    assert not np.array_equal(clean[n:], ds.arrays["actions"][n:])   # the noise is gone
    norm = Normalizer.from_dataset(ds, returns_to_go(ds, 0.99))
    t = SimpleNamespace(drop_before_fall=0, label_tails="none", label_tail_weight=1.0, label_weight=1.0,
                        action_target="clean")
    eps = [e for e in ds.episodes() if e[0] >= n]
    got = window_arrays(ds, norm, list(ds.tasks), eps, 4, t, ds.label_rows(), np.ones(len(ds), np.float32))[3]
    want, _ = chunk_targets(ds, np.concatenate(eps), 4, clean)
    np.testing.assert_allclose(got.numpy(), norm.norm_act(want), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="records no clean_actions"):
        target_actions(Dataset(tiny_data), "clean")
    with pytest.raises(ValueError, match="action_target"):
        config_from_dict({"kind": "idql", **KINDS["idql"].tiny,
                          "train": {**KINDS["idql"].tiny.get("train", {}), "action_target": "mean"}})


@pytest.mark.skipif(not COMMITTED.exists(), reason="data/regenerate/policy_rollouts.json is not committed")
def test_the_committed_rollout_manifest_regenerates_byte_for_byte(tmp_path):
    """The first episodes of ``make rollouts``, from the committed policy, are the committed
    manifest's first shards (episode i depends only on the recipe's seed and i). torch and MuJoCo
    on one core are deterministic on one CPU type; another instruction set rounds otherwise (an
    AVX2-only CPU does), so there the bytes recorded on that instruction set must come back."""
    want = json.loads(COMMITTED.read_text())
    recipe = want["source"]["recipe"]
    lengths = [e["transitions"] for e in want["shards"]]
    # the first two 300-step episodes (a long one takes ~10 s more)
    first = [i for i, n in enumerate(lengths) if n <= RECIPES["policy_rollouts"].steps][:2]
    k = max(first) + 1
    meta = generate("policy_rollouts", tmp_path / "slice", learner=SHIPPED_POLICY, episodes=k, progress=False)
    assert recipe["learner"] == meta["source"]["recipe"]["learner"], "the committed policy is not the one recorded"
    got = [meta["shards"][i] for i in first]
    if got == [want["shards"][i] for i in first]:
        return  # the committed manifest's own episodes, byte for byte
    # Another instruction set: torch, ONNX Runtime and numpy pick kernels by it, and round otherwise.
    # Byte for byte then means the bytes recorded on such a CPU (and so: deterministic there).
    import torch
    isa = torch.backends.cpu.get_cpu_capability()
    recorded = json.loads(BY_ISA.read_text())["slices"].get(isa)
    assert recorded is not None, (f"episodes {first} differ from the committed manifest, and {BY_ISA.name} records no "
                                  f"slice for this CPU (torch capability {isa}): {got}")
    assert recorded["episodes"] == first
    for i, g, r in zip(first, got, recorded["shards"]):
        assert g == r, f"episode {i} differs from the bytes recorded for {isa} CPUs"
