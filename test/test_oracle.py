"""`planner eval --score oracle`: the same candidates chosen by the model, by true rollouts, and by
true rollouts with the previous plan as a candidate."""
import json
import subprocess
import sys

import numpy as np
import pytest

from planner_node.planning import PlanRequest


@pytest.fixture(scope="module")
def hgap(hgap_run):
    from planner_node.models.hgap import HGAPPlanner
    return HGAPPlanner(checkpoint=str(hgap_run), samples=6, threads=1)


def test_oracle_chooses_the_candidate_with_the_best_true_return(env, hgap):
    from planner_node.sim.oracle import ScoredPlanner, TrueRollout
    obs = env.reset(3)
    req = PlanRequest(obs=obs, task="forward", sim_state=env.get_state())
    hgap.reset(0)
    c = hgap.candidates(req)
    act, score = c.actions, c.scores
    true = TrueRollout(threads=1)
    returns = true.returns(req.sim_state, act, "forward")
    # each candidate, executed step by step in the environment, earns what the rollout says
    for i in (0, int(np.argmax(returns))):
        env.reset(3)
        total = 0.0
        from planner_node.robot.tasks import get_task
        for a in act[i]:
            o, _ = env.step(a)
            total += float(get_task("forward").reward(o, None))
        assert total == pytest.approx(returns[i], rel=1e-6, abs=1e-6)
    oracle = ScoredPlanner(hgap, "oracle", threads=1)
    oracle.reset(0)
    env.reset(3)
    plan = oracle.plan(req)
    np.testing.assert_array_equal(plan.actions, act[int(np.argmax(returns))])
    model = ScoredPlanner(hgap, "model")
    model.reset(0)
    np.testing.assert_array_equal(model.plan(req).actions, act[int(np.argmax(score))])


def test_continuation_is_one_more_candidate(env, hgap):
    from planner_node.sim.oracle import ScoredPlanner
    p = ScoredPlanner(hgap, "oracle+continuation", threads=1)
    p.reset(0)
    obs = env.reset(4)
    first = p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    obs, _ = env.step(first.actions[0])
    p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    np.testing.assert_array_equal(p._prev.shape, first.actions.shape)
    with pytest.raises(ValueError, match="--score must be one of"):
        ScoredPlanner(hgap, "guess")


def test_cli_prints_the_three_scorings_side_by_side(tmp_path, hgap_run):
    out = tmp_path / "oracle.json"
    r = subprocess.run([sys.executable, "-m", "planner_node.cli", "eval", "--planner", "hgap", "--checkpoint",
                        str(hgap_run), "--samples", "4", "--task", "stand", "--episodes", "1", "--steps", "3",
                        "--score", "oracle", "--quiet", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for mode in ("hgap[model]", "hgap[oracle]", "hgap[oracle+continuation]"):
        assert mode in r.stdout
    assert [row["score"] for row in json.loads(out.read_text())["rows"]] == ["model", "oracle", "oracle+continuation"]


def test_critic_trains_and_its_scoring_adds_the_discounted_value(tmp_path, tiny_data, hgap, env):
    """The critic learns from the tiny dataset (falls terminal, every task relabelled), and
    critic scoring = model score + gamma^H V(predicted last state)."""
    from planner_node.dataset import Dataset
    from planner_node.models.critic import Critic, CriticConfig, train_critic, transitions
    from planner_node.robot.tasks import TASKS, get_task
    from planner_node.sim.oracle import ScoredPlanner

    ds = Dataset(tiny_data)
    tr = transitions(ds)
    assert tr["r"].shape == (len(tr["s"]), len(TASKS))
    k = list(TASKS).index("stand")
    live = tr["fell"] == 0
    np.testing.assert_allclose(tr["r"][live, k], get_task("stand").reward(tr["s2"][live]), rtol=1e-6)
    m = train_critic(tiny_data, tmp_path / "critic", CriticConfig(steps=60, batch_size=32, width=32), progress=False)
    assert np.isfinite(m["holdout_td_mse"])
    critic = Critic(tmp_path / "critic")
    obs = env.reset(5)
    req = PlanRequest(obs=obs, task="stand", sim_state=env.get_state())
    hgap.reset(0)
    c = hgap.candidates(req)
    want = c.scores + critic.discount ** c.horizon * critic.values(c.final_obs, "stand")
    p = ScoredPlanner(hgap, "critic", critic=str(tmp_path / "critic"))
    p.reset(0)
    np.testing.assert_array_equal(p.plan(req).actions, c.actions[int(np.argmax(want))])
    q = ScoredPlanner(hgap, "critic_q", critic=str(tmp_path / "critic"))
    q.reset(0)
    want_q = critic.q_values(obs, c.actions[:, 0], "stand")
    np.testing.assert_array_equal(q.plan(req).actions, c.actions[int(np.argmax(want_q))])
    with pytest.raises(ValueError, match="needs a trained critic"):
        ScoredPlanner(hgap, "critic")


def test_train_critic_cli(tmp_path, tiny_data):
    r = subprocess.run([sys.executable, "-m", "planner_node.cli", "train-critic", "--data", str(tiny_data),
                        "--out", str(tmp_path / "c"), "--steps", "20", "--quiet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out TD MSE" in r.stdout and (tmp_path / "c" / "critic.pt").is_file()
    bad = subprocess.run([sys.executable, "-m", "planner_node.cli", "train-critic", "--data", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "nope.json" in bad.stderr


@pytest.fixture(scope="module")
def critic_run(tiny_data, tmp_path_factory):
    from planner_node.models.critic import CriticConfig, train_critic
    out = tmp_path_factory.mktemp("runs") / "critic"
    train_critic(tiny_data, out, CriticConfig(steps=60, batch_size=32, width=32), progress=False)
    return out


def test_critic_in_the_bundle_scores_as_the_reference_does(hgap_run, critic_run, tmp_path, env):
    """The exported critic graph: the runtime's candidates score predicted reward + weight x
    gamma^H V(predicted last state), as the reference planner + critic do, on the same draws;
    weight 0 is the model's scoring; the bundle's block is checked."""
    import shutil

    import yaml

    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.critic import Critic, score_with_critic
    from planner_node.models.hgap import HGAPPlanner
    from planner_node.runtime.bundle import BundleError, load_bundle
    from planner_node.runtime.bundle_planner import runtime_planner
    b = tmp_path / "b"
    export_bundle(hgap_run, b, samples=16, critic=critic_run, critic_weight=0.5)
    m = load_bundle(b).manifest
    assert m["critic"]["weight"] == 0.5 and m["critic"]["graph"] in m["graphs"]
    critic, ref = Critic(critic_run), HGAPPlanner(str(hgap_run), samples=16, seed=4, threads=1)
    rt, plain = runtime_planner(b, seed=4), runtime_planner(b, seed=4, critic_weight=0.0)
    obs = env.reset(3)
    for _ in range(3):
        req = PlanRequest(obs=obs, task="stand")
        c, r, p = ref.candidates(req), rt.candidates(req), plain.candidates(req)
        want = score_with_critic(c.scores, c.final_obs, c.horizon, critic, "stand", weight=0.5)
        np.testing.assert_allclose(r.scores, want, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(p.scores, c.scores, rtol=1e-4, atol=1e-4)
        assert not np.allclose(r.scores, p.scores)  # the critic term is there
        obs = env.step(r.actions[int(np.argmax(r.scores)), 0])[0]
    bad = tmp_path / "bad"
    shutil.copytree(b, bad)
    mm = yaml.safe_load((bad / "manifest.yaml").read_text())
    mm["critic"]["discount"] = 1.5
    (bad / "manifest.yaml").write_text(yaml.safe_dump(mm, sort_keys=False))
    with pytest.raises(BundleError, match=r"critic.discount must be a finite number in \[0.0, 1.0\]"):
        load_bundle(bad)
    with pytest.raises(ValueError, match="has no critic"):
        runtime_planner(_no_critic_bundle(hgap_run, tmp_path), critic_weight=1.0)


def _no_critic_bundle(hgap_run, tmp_path):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path / "plain"
    export_bundle(hgap_run, out, samples=16)
    return out


def test_eval_table_shows_the_standard_error_of_the_mean_return():
    """`planner eval` prints mean return ± its standard error (sample std / sqrt(n)), as the cards
    and bench/eval_table.py do, not the spread of the episodes."""
    import numpy as np

    from planner_node.sim.evaluate import format_table, se_return
    rets = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    row = {"planner": "p", "task": "stand", "mean_return": rets.mean(), "std_return": rets.std(),
           "episodes": [{"return": x} for x in rets], "mean_length": 10.0, "fall_rate": 0.0, "ctrl_steps_per_s": 1.0}
    assert se_return(row) == pytest.approx(rets.std(ddof=1) / np.sqrt(5))
    assert f"± {rets.std(ddof=1) / np.sqrt(5):.2f}" in format_table([row])


def test_far_sighted_mppi_adds_the_critics_terminal_value(critic_run, env):
    """MPPI with ``w_terminal``: each sample's cost is the plain cost minus w x gamma^H x V(task,
    last state of its rollout), V computed here independently from the critic's network."""
    import torch

    from planner_node.models.critic import Critic
    from planner_node.robot.observation import build_observation
    from planner_node.robot.tasks import get_task
    from planner_node.sim.mppi import MPPIPlanner

    small = dict(samples=6, horizon=5, knots=3, threads=1)
    obs = env.reset(0)
    state = env.get_state()
    plain = MPPIPlanner(seed=0, **small)
    far = MPPIPlanner(seed=0, **small, terminal_critic=str(critic_run), w_terminal=2.0)
    actions = np.tile(plain.hold, (6, 5, 1)) + np.random.default_rng(1).normal(0, 0.2, (6, 5, plain.hold.size))
    states, sensordata = plain._rollout(state, actions)
    task = get_task("stand")
    c_plain, _ = plain._costs(states, sensordata, task, None)
    c_far, _ = far._costs(states, sensordata, task, None)
    m, lay = plain.model, plain.layout
    end = states[:, -1]
    last_obs = build_observation(lay, end[:, 1:1 + m.nq], end[:, 1 + m.nq:1 + m.nq + m.nv],
                                 end[:, 1 + m.nq + m.nv:1 + m.nq + m.nv + m.na], sensordata[:, -1])
    critic = Critic(critic_run)
    with torch.no_grad():
        v = critic.v(torch.as_tensor(last_obs, dtype=torch.float32))[:, critic.tasks.index("stand")].numpy()
    assert np.ptp(v) > 0  # the samples' last states differ in value, so the check can tell
    np.testing.assert_allclose(c_far, c_plain - 2.0 * critic.discount ** 5 * v, rtol=1e-4, atol=1e-4)
    # It plans (the whole path through plan()).
    assert far.plan(PlanRequest(obs=obs, task="stand", sim_state=state)).actions.shape == (5, plain.hold.size)
