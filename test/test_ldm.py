"""The Lyapunov density safety filter: the model (G >= E), its export (E and G graphs against
torch), the bundle's safety_filter block, the runtime filter's choice rules, and the filter in
the node over real ROS 2 with its threshold changed at run time."""
import itertools
import shutil

import numpy as np
import pytest
import yaml
from conftest import signed

from planner_node.planning import Plan
from planner_node.runtime.bundle import BundleError, load_bundle

G_BELOW_E_TOL = 1e-3   # G = E + softplus(.) >= E exactly; float32 rounding of a ~1e2 sum only


@pytest.fixture(scope="module")
def ldm_run(tiny_data, tmp_path_factory):
    from planner_node.models.ldm import LDMConfig, train_ldm
    out = tmp_path_factory.mktemp("runs") / "ldm"
    train_ldm(tiny_data, out, LDMConfig(flow_layers=2, flow_width=32, flow_steps=150, g_width=32, g_steps=150,
                                        batch_size=64, threads=1), progress=False)
    return out


@pytest.fixture(scope="module")
def ldm_bundle(hgap_run, ldm_run, tmp_path_factory):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path_factory.mktemp("bundles") / "hgap_ldm"
    export_bundle(hgap_run, out, samples=16, ldm=ldm_run)
    return signed(out)


def test_training_lowers_nll_and_g_is_at_least_e_on_held_out_pairs(ldm_run, tiny_data):
    from planner_node.dataset import Dataset
    from planner_node.models.ldm import LDM, load_curves
    curves = [c for c in load_curves(ldm_run)["curves"] if c["stage"] == "E"]
    assert curves[-1]["nll"] < curves[0]["nll"]
    m = load_curves(ldm_run)["metrics"]
    assert m["g_minus_e_p1"] >= -G_BELOW_E_TOL
    ldm = LDM(ldm_run)
    a = Dataset(tiny_data).arrays
    rng = np.random.default_rng(1)
    obs, act = a["observations"], rng.uniform(-1, 1, (len(a["actions"]), a["actions"].shape[1]))
    g, e = ldm.lyapunov(obs, act), ldm.energy(obs, act)   # off-data actions too
    assert np.all(g >= e - G_BELOW_E_TOL)
    assert np.mean(ldm.energy(obs, a["actions"])) < np.mean(e)   # the data's actions are denser


def test_exported_energy_and_lyapunov_match_torch(ldm_bundle, ldm_run, tiny_data):
    from planner_node.dataset import Dataset
    from planner_node.models.ldm import LDM
    from planner_node.runtime.engine import make_engine
    b = load_bundle(ldm_bundle)
    sf = b.manifest["safety_filter"]
    assert sf["name"] == "ldm" and sf["percentile"] == 40.0
    ldm = LDM(ldm_run)
    assert sf["threshold"] == pytest.approx(ldm.threshold)
    a = Dataset(tiny_data).arrays
    obs, act = a["observations"][:16].astype(np.float32), a["actions"][:16].astype(np.float32)
    for role, fn in (("energy", ldm.energy), ("lyapunov", ldm.lyapunov)):
        got = make_engine(b, sf[role], "onnxruntime").run({"obs": obs, "act": act})[role]
        want = fn(obs, act)
        assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.abs(want).max())


def _plan_with(first_actions, scores):
    first_actions = np.asarray(first_actions, float)
    return Plan(np.repeat(first_actions[:1, None], 4, 1)[0], float(np.nanmax(scores)),
                info={"candidates": {"first_actions": first_actions, "scores": np.asarray(scores, float)}})


def test_filter_returns_the_best_admissible_else_the_lowest_g(ldm_bundle, env):
    from planner_node.runtime.ldm_filter import LDMFilter
    f = LDMFilter(ldm_bundle)
    obs = env.reset(0)
    rng = np.random.default_rng(0)
    for trial in range(20):
        acts = rng.uniform(-1, 1, (16, 56)) * rng.uniform(0.05, 1.0, (16, 1))
        scores = rng.normal(size=16)
        g = f.lyapunov(obs, acts)
        f.set_threshold(float(np.quantile(g, rng.uniform(0.1, 0.9))))
        out = f.filter(obs, _plan_with(acts, scores))
        ok = g <= f.threshold
        i = int(np.flatnonzero((acts == out.action).all(1))[0])
        assert ok[i] and scores[i] == scores[ok].max() and not out.intervened
        f.set_threshold(float(g.min()) - 1.0)       # nothing qualifies: the lowest G, an intervention
        out = f.filter(obs, _plan_with(acts, scores))
        assert np.array_equal(out.action, acts[int(np.argmin(g))]) and out.intervened
    assert f.interventions == 20
    f.set_threshold(None)
    assert f.threshold == load_bundle(ldm_bundle).manifest["safety_filter"]["threshold"]
    with pytest.raises(ValueError, match="finite"):
        f.set_threshold("inf")


def test_filter_never_returns_a_non_finite_candidate(ldm_bundle, env):
    from planner_node.runtime.ldm_filter import LDMFilter
    f = LDMFilter(ldm_bundle, threshold=1e9)         # everything admissible: only finiteness decides
    obs = env.reset(0)
    acts = np.random.default_rng(2).uniform(-0.5, 0.5, (16, 56))
    scores = np.arange(16.0)
    acts[15, 3] = np.nan                               # the best score, but a NaN action
    scores[14] = np.nan                                # a NaN score
    out = f.filter(obs, _plan_with(acts, scores))
    assert np.array_equal(out.action, acts[13]) and np.all(np.isfinite(out.action))
    with pytest.raises(ValueError, match="no candidate"):
        f.filter(obs, _plan_with(np.full((16, 56), np.nan), scores))


def test_runtime_planner_offers_its_candidates_to_the_filter(ldm_bundle, env):
    from planner_node.planning import PlanRequest
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.runtime.ldm_filter import LDMFilter
    p, f = runtime_planner(ldm_bundle, seed=0), LDMFilter(ldm_bundle)
    plan = p.plan(PlanRequest(obs=env.reset(0), task="stand"))
    c = plan.info["candidates"]
    assert c["first_actions"].shape == (16, 56) and c["scores"].shape == (16,)
    assert np.array_equal(c["first_actions"][int(np.argmax(c["scores"]))], plan.actions[0])
    out = f.filter(env.reset(0), plan)
    assert out.info["candidates"] == 16 and np.isfinite(out.info["g"])


def test_bundle_safety_filter_block_is_checked(ldm_bundle, hgap_bundle, tmp_path):
    def edited(src, fn, name):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        m = yaml.safe_load((dst / "manifest.yaml").read_text())
        fn(m)
        (dst / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
        return dst
    with pytest.raises(BundleError, match="safety_filter.lyapunov: graph 'nope' is not in graphs"):
        load_bundle(edited(ldm_bundle, lambda m: m["safety_filter"].update(lyapunov="nope"), "a"))
    with pytest.raises(BundleError, match="safety_filter.threshold must be a finite number"):
        load_bundle(edited(ldm_bundle, lambda m: m["safety_filter"].update(threshold=float("nan")), "b"))
    with pytest.raises(BundleError, match=r"safety_filter: unknown keys \['loader'\]"):
        load_bundle(edited(ldm_bundle, lambda m: m["safety_filter"].update(loader="x.so"), "c"))
    # Format 3 (before the filter existed) still loads, without a filter.
    old = edited(hgap_bundle, lambda m: (m.pop("safety_filter"), m.pop("critic"), m.pop("bundle_version"), m.pop("card"),
                                         m.update(format_version=3)), "d")
    assert load_bundle(old).manifest["safety_filter"] is None and load_bundle(old).manifest["critic"] is None
    from planner_node.control.action_filter import make_filter
    with pytest.raises(ValueError, match="needs a bundle exported with a Lyapunov density model"):
        make_filter("ldm", "{}", bundle=load_bundle(hgap_bundle))
    with pytest.raises(ValueError, match="needs the planner's bundle"):
        make_filter("ldm", "{}")


_domains = itertools.count(190)


def test_filter_runs_in_the_node_and_its_threshold_changes_at_run_time(ldm_bundle, tmp_path):
    from hil import Probe, log_tail

    from planner_node.ros.bringup import Bringup
    probe = Probe(next(_domains))
    try:
        with Bringup({"lockstep": "true", "bundle": str(ldm_bundle)},
                     extra={"planner": {"deadline_ms": 30.0, "safety_filter": "ldm"},
                            "sim_bridge": {"lockstep_timeout_s": 5.0}}, log_dir=tmp_path) as b:
            try:
                probe.wait_for(lambda: "filter_g_mean" in probe.diagnostics(), 120, "the filter's diagnostics")
                d0 = probe.diagnostics()
                bad = probe.set_param("planner", "safety_filter_threshold", "abc")
                assert not bad.successful and "must be a number" in bad.reason
                res = probe.set_param("planner", "safety_filter_threshold", "-1e9")  # nothing qualifies
                assert res.successful, res.reason
                probe.wait_for(lambda: probe.diagnostics().get("filter_threshold") == "-1000000000.000", 60,
                               "the new threshold in /diagnostics")
                n0 = int(probe.diagnostics()["filter_interventions"])
                probe.wait_for(lambda: int(probe.diagnostics()["filter_interventions"]) > n0 + 20, 60,
                               "interventions under the new threshold")
            except AssertionError:
                raise AssertionError(log_tail(tmp_path))
            assert all(b.alive().values())
    finally:
        probe.close()
    thr = load_bundle(ldm_bundle).manifest["safety_filter"]["threshold"]
    assert float(d0["filter_threshold"]) == pytest.approx(thr, abs=1e-3)
    cmds = [m.data for _, m in probe.msgs["/humanoid/joint_commands"]]
    assert cmds and all(np.all(np.isfinite(c)) for c in cmds)
