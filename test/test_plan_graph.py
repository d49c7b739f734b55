"""The whole-plan graph (one engine call per tick): in-graph sampling against the numpy sampler,
plan parity against the step graphs and the PyTorch reference on the same draws, the hand-off to
the step graphs when the graph cannot resolve a nucleus, bundles without the graph, torch-cuda."""
import shutil

import numpy as np
import pytest
import torch
import yaml

from planner_node.planning import PlanRequest
from planner_node.runtime.bundle import load_bundle
from planner_node.runtime.bundle_planner import runtime_planner
from planner_node.runtime.sampling import filtered_probs, inverse_cdf

ACTION_ATOL = 1e-4   # planned actions, whole-plan graph vs step graphs / reference (fp32 graphs)


@pytest.mark.parametrize("temperature,top_p", [(2.0, 0.99), (1.0, 0.9), (0.5, 1.0), (3.0, 0.5)])
def test_in_graph_sampler_draws_the_numpy_samplers_tokens(temperature, top_p):
    from planner_node.export.graphs import sample_tokens_in_graph
    rng = np.random.default_rng(0)
    K, N = 64, 256
    logits = (rng.normal(size=(N, K)) * rng.uniform(0.5, 6, (N, 1))).astype(np.float32)
    u = rng.random(N)
    want = inverse_cdf(filtered_probs(logits, temperature, top_p), u)
    got, overflow = sample_tokens_in_graph(torch.from_numpy(logits), torch.from_numpy(u.astype(np.float32)),
                                           torch.tensor([temperature]), torch.tensor([top_p]), tail=K)
    assert overflow.sum() == 0
    assert (got.numpy() == want).mean() >= 0.995  # float32 vs float64: only draws on a CDF boundary differ
    # With a tail too short to hold every dropped code, exactly those rows are flagged.
    z = logits.astype(np.float64) / temperature
    ps = -np.sort(-np.exp(z - z.max(-1, keepdims=True)), -1)
    ps /= ps.sum(-1, keepdims=True)
    dropped = K - ((np.cumsum(ps, -1) - ps) <= top_p).sum(-1) if top_p < 1 else 0  # the numpy sampler's rule
    _, flagged = sample_tokens_in_graph(torch.from_numpy(logits), torch.from_numpy(u.astype(np.float32)),
                                        torch.tensor([temperature]), torch.tensor([top_p]), tail=4)
    assert (flagged.numpy() == (dropped >= 4)).all()


def _requests(env, n=4, task="forward"):
    obs = env.reset(4)
    out = []
    for _ in range(n):
        out.append(PlanRequest(obs=obs, task=task))
        obs = env.step(env.zero_action)[0]
    return out


def test_whole_plan_matches_step_graphs_and_reference(hgap_bundle, hgap_run, env):
    from planner_node.models.hgap import HGAPPlanner
    assert "plan" in load_bundle(hgap_bundle).manifest["graphs"]
    ref = HGAPPlanner(str(hgap_run), samples=16, seed=5, threads=1)
    steps = runtime_planner(hgap_bundle, seed=5, graphs="steps")
    whole = runtime_planner(hgap_bundle, seed=5, graphs="plan")
    assert (steps.graph_mode, whole.graph_mode) == ("steps", "plan")
    assert runtime_planner(hgap_bundle, seed=5).graph_mode == "plan"  # auto: the whole plan when present
    for req in _requests(env):  # several ticks: the three draw streams stay in lockstep
        r, s, w = ref.candidates(req), steps.candidates(req), whole.candidates(req)
        assert (w.tokens == s.tokens).all() and (w.tokens == r.tokens).all()
        assert np.abs(w.actions - s.actions).max() <= ACTION_ATOL
        assert np.abs(w.actions - r.actions).max() <= ACTION_ATOL
        np.testing.assert_allclose(w.scores, r.scores, rtol=1e-4, atol=1e-4)
    assert whole.nucleus_overflows == 0


def test_torch_backend_runs_the_same_whole_plan(hgap_bundle, env):
    ort = runtime_planner(hgap_bundle, seed=1, graphs="plan")
    ref = runtime_planner(hgap_bundle, backend="torch", seed=1, graphs="plan")
    for req in _requests(env, 2):
        a, b = ort.candidates(req), ref.candidates(req)
        assert (a.tokens == b.tokens).all() and np.abs(a.actions - b.actions).max() <= ACTION_ATOL


class _Overflowing:
    """Wraps the whole-plan engine and reports an unresolved nucleus on every call."""

    def __init__(self, engine):
        self.engine, self.inputs, self.outputs = engine, engine.inputs, engine.outputs

    def run(self, feeds):
        out = dict(self.engine.run(feeds))
        out["trajectory"] = out["trajectory"] * 0 + 1e3  # garbage: must not be used
        out["nucleus_overflow"] = np.array([1], np.int64)
        return out


def test_an_unresolved_nucleus_hands_the_tick_to_the_step_graphs(hgap_bundle, env):
    steps = runtime_planner(hgap_bundle, seed=2, graphs="steps")
    whole = runtime_planner(hgap_bundle, seed=2, graphs="plan")
    whole.whole = _Overflowing(whole.whole)
    for req in _requests(env, 2):
        a, b = steps.plan(req), whole.plan(req)
        assert a.info["tokens"] == b.info["tokens"] and np.abs(a.actions - b.actions).max() == 0
    assert whole.nucleus_overflows == 2


def test_bundle_without_the_whole_plan_graph_runs_on_step_graphs(hgap_bundle, tmp_path, env):
    old = tmp_path / "old"
    shutil.copytree(hgap_bundle, old)
    m = yaml.safe_load((old / "manifest.yaml").read_text())
    del m["graphs"]["plan"]
    (old / "plan.onnx").unlink()
    (old / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    p = runtime_planner(old, seed=5)
    assert p.graph_mode == "steps"
    req = _requests(env, 1)[0]
    assert p.plan(req).info["tokens"] == runtime_planner(hgap_bundle, seed=5).plan(req).info["tokens"]
    with pytest.raises(ValueError, match="no whole-plan graph"):
        runtime_planner(old, graphs="plan")
    with pytest.raises(ValueError, match="graphs='bogus'"):
        runtime_planner(hgap_bundle, graphs="bogus")


def test_torch_cuda_whole_plan_matches_onnxruntime_gpu_only(hgap_bundle, env):
    if not torch.cuda.is_available():
        pytest.skip("torch-cuda: no CUDA device visible to torch on this machine (GPU-only test)")
    cpu = runtime_planner(hgap_bundle, seed=1, graphs="plan")
    gpu = runtime_planner(hgap_bundle, backend="torch-cuda", seed=1, graphs="plan")
    for req in _requests(env, 3):  # replays of one captured CUDA graph
        a, b = cpu.candidates(req), gpu.candidates(req)
        assert (a.tokens == b.tokens).mean() >= 0.99 and np.isfinite(b.actions).all()
