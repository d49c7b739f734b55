"""Diffuser, the third planner kind: networks, training, every sampler, export and plan parity."""
import csv

import numpy as np
import pytest
import torch

from planner_node import spec
from planner_node.kinds import KINDS
from planner_node.planning import PlanRequest
from conftest import signed

TINY = {"kind": "diffuser", **KINDS["diffuser"].tiny}
TINY_TRAIN = {**TINY, "train": {**TINY["train"], "diffusion_steps": 150, "value_steps": 60, "checkpoint_every": 50,
                                "eval_every": 25}}
SAMPLERS = {  # every sampler, each guided and ranked only (tiny schedule: T = 5)
    "ddpm_gradient": {"sampler": "ddpm", "guide": "gradient"},
    "ddim_rank": {"sampler": "ddim", "steps": 3, "guide": "rank"},
    "ddim_gradient": {"sampler": "ddim", "steps": 3, "guide": "gradient", "guide_stop": 1},
    "warm_rank": {"sampler": "warm", "steps": 2, "warm_start": 3, "cold_steps": 4, "guide": "rank"},
    "warm_gradient": {"sampler": "warm", "steps": 2, "warm_start": 3, "cold_steps": 4, "guide": "gradient",
                      "guide_stop": 1},
}


@pytest.fixture(scope="module")
def diffuser_run(tiny_data, tmp_path_factory):
    from planner_node.models.config import config_from_dict
    from planner_node.models.diffuser import DiffuserTrainer
    out = tmp_path_factory.mktemp("runs") / "diffuser"
    DiffuserTrainer(config_from_dict(TINY_TRAIN), tiny_data, out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def diffuser_bundles(diffuser_run, tmp_path_factory):
    """One bundle per sampler setting (8 samples)."""
    from planner_node.export.bundle_writer import export_bundle
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, settings in SAMPLERS.items():
        export_bundle(diffuser_run, root / name, samples=8, **settings)
        out[name] = signed(root / name)
    return out


def test_shapes_and_closed_form_gradient():
    from planner_node.models.config import config_from_dict
    from planner_node.models.diffuser import TemporalUnet, TrajectoryValue
    for unet in ({"horizon": 8, "dim": 16, "levels": 2}, {"horizon": 16, "dim": 32, "levels": 3}):
        cfg = config_from_dict({"kind": "diffuser", "unet": unet})
        net = TemporalUnet(cfg.unet, cfg.transition_dim)
        x = torch.randn(3, unet["horizon"], cfg.transition_dim)
        assert net(x, torch.tensor([0.0, 3.0, 19.0])).shape == x.shape
    v = TrajectoryValue(8, 280, 10, 32, 3)
    x, t = torch.randn(4, 8, 280), torch.tensor([0.0, 1.0, 2.0, 3.0])
    w = torch.nn.functional.one_hot(torch.tensor([0, 3, 9, 3]), 10).float()
    val, g = v.value_and_grad(x, t, w)
    assert val.shape == (4, 10) and g.shape == x.shape
    xg = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad((v(xg, t) * w).sum(), xg)
    torch.testing.assert_close(g, want, atol=1e-6, rtol=1e-4)


def test_config_errors_name_the_field(tmp_path):
    from planner_node.models.config import ConfigError, config_from_dict, load_config
    with pytest.raises(ConfigError, match=r"unet\.horizon"):
        config_from_dict({"kind": "diffuser", "unet": {"horizon": 10, "levels": 3}})
    with pytest.raises(ConfigError, match=r"unet\.width: unknown key"):
        config_from_dict({"kind": "diffuser", "unet": {"width": 3}})
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        config_from_dict({"kind": "diffuser", "train": {"lr": "fast"}})
    for name in ("diffuser_small", "diffuser_paper"):
        assert load_config(f"config/train/{name}.yaml").kind == "diffuser"


def test_training_lowers_the_loss_and_resumes_exactly(tiny_data, diffuser_run, tmp_path):
    from planner_node.models.checkpoint import load_checkpoint
    from planner_node.models.config import config_from_dict
    from planner_node.models.diffuser import DiffuserTrainer
    rows = list(csv.DictReader(open(diffuser_run / "metrics.csv")))
    assert {r["stage"] for r in rows} == {"diffusion", "value"} and (diffuser_run / "loss.png").exists()
    # The training-set losses, on fixed windows and fixed noise, before and after a short run.
    tr = DiffuserTrainer(config_from_dict(TINY_TRAIN), tiny_data, tmp_path / "short", progress=False)
    x, v = tr.train_x[:256], tr.train_v[:256]

    def losses():
        with torch.no_grad():
            return (tr.diffusion_loss(tr.ema, x, np.random.default_rng(5)).item(),
                    tr.value_loss(x, v, np.random.default_rng(5)).item())
    d0, v0 = losses()
    tr.run()
    d1, v1 = losses()
    assert d1 < 0.7 * d0 and v1 < 0.7 * v0, (d0, d1, v0, v1)
    # A kill mid-run, then a resume, ends with the same weights as an uninterrupted run.
    cfg = config_from_dict(TINY)
    full, killed = tmp_path / "full", tmp_path / "killed"
    DiffuserTrainer(cfg, tiny_data, full, progress=False).run()
    assert DiffuserTrainer(cfg, tiny_data, killed, progress=False).run(stop_after=30)["stage"] == "killed"
    assert DiffuserTrainer(cfg, tiny_data, killed, progress=False).run()["stage"] == "done"
    a, b = load_checkpoint(full), load_checkpoint(killed)
    for part in ("ema", "value"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], atol=0, rtol=0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_inpaints_the_state_and_returns_bounded_actions(diffuser_run, env, name):
    from planner_node.models.diffuser import DiffuserPlanner
    p = DiffuserPlanner(str(diffuser_run), samples=6, seed=0, threads=1, **SAMPLERS[name])
    seen = []
    p.sampler.denoise = (lambda f: (lambda x, t: (seen.append(x[:, 0, :spec.OBS_DIM].copy()), f(x, t))[1]))(
        p.sampler.denoise)
    obs = env.reset(1)
    for _ in range(3):   # the warm start needs a previous plan: the second and third ticks
        state = p.norm.norm_obs(obs.astype(np.float32)).astype(np.float32)
        seen.clear()
        x, _ = p._sample(PlanRequest(obs=obs, task="stand"))
        assert seen and all(np.array_equal(s, np.broadcast_to(state, s.shape)) for s in seen)
        assert np.array_equal(x[:, 0, :spec.OBS_DIM], np.broadcast_to(state, (len(x), spec.OBS_DIM)))
        plan = p.plan(PlanRequest(obs=obs, task="stand"))
        a = np.asarray(plan.actions)
        assert a.shape == (p.horizon, spec.ACTION_DIM) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1)
        assert np.isfinite(plan.score)
        obs, _ = env.step(a[0])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_runtime_plan_matches_the_reference(diffuser_run, diffuser_bundles, env, name):
    from planner_node.models.diffuser import DiffuserPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    ref = DiffuserPlanner(str(diffuser_run), samples=8, seed=7, threads=1, **SAMPLERS[name])
    rt = runtime_planner(diffuser_bundles[name], seed=7)
    assert type(rt).__name__ == "RuntimeDiffuserPlanner"
    obs = env.reset(2)
    for _ in range(3):  # several ticks: random streams and warm starts stay in lockstep
        a, b = ref.plan(PlanRequest(obs=obs, task="forward")), rt.plan(PlanRequest(obs=obs, task="forward"))
        np.testing.assert_allclose(b.actions, a.actions, atol=2e-4)
        assert b.score == pytest.approx(a.score, abs=1e-3)
        obs, _ = env.step(b.actions[0])


def test_seeded_plans_are_deterministic(diffuser_bundles, env):
    from planner_node.runtime.bundle_planner import runtime_planner
    obs = env.reset(3)
    req = PlanRequest(obs=obs, task="stand")
    p1, p2, p3 = (runtime_planner(diffuser_bundles["ddim_rank"], seed=s) for s in (11, 11, 12))
    a1, a2, a3 = (p.plan(req).actions for p in (p1, p2, p3))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)
    p1.reset(11)
    np.testing.assert_array_equal(p1.plan(req).actions, a1)


def test_bad_settings_are_refused_by_name(diffuser_run, diffuser_bundles, tmp_path):
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.runtime.bundle_planner import runtime_planner
    with pytest.raises(ValueError, match="sampler='dpm'"):
        export_bundle(diffuser_run, tmp_path / "b", samples=4, sampler="dpm")
    with pytest.raises(ValueError, match="warm_start=9"):
        runtime_planner(diffuser_bundles["warm_rank"], warm_start=9)
    with pytest.raises(ValueError, match="samples=16"):
        runtime_planner(diffuser_bundles["warm_rank"], samples=16)
    with pytest.raises(KeyError, match="task 'fly'"):
        runtime_planner(diffuser_bundles["warm_rank"]).plan(PlanRequest(obs=np.zeros(spec.OBS_DIM), task="fly"))
    assert not (tmp_path / "b").exists()


def test_node_hot_swaps_between_hgap_diffuser_and_tap(tmp_path, diffuser_bundles, hgap_bundle, tap_bundle):
    """Real processes over real DDS (lockstep): H-GAP, then Diffuser, then TAP, without a gap."""
    from hil import Probe
    from test_hil import bringup
    probe = Probe(190)
    try:
        with bringup(tmp_path, {"deadline_ms": 30.0}, {"lockstep_timeout_s": 5.0}, bundle=str(hgap_bundle)):
            probe.wait_for(lambda: len(probe.msgs["/joint_states"]) > 20, 120, "the loop to run")
            for b in (diffuser_bundles["warm_rank"], tap_bundle):
                n0 = len(probe.msgs["/joint_states"])
                res = probe.set_param("planner", "bundle_path", str(b))
                assert res.successful, res.reason
                probe.wait_for(lambda b=b: probe.diagnostics().get("active_bundle") == str(b), 120, f"the swap to {b}")
                probe.wait_for(lambda n0=n0: len(probe.msgs["/joint_states"]) > n0 + 40, 120, "40 steps after the swap")
            probe.spin(2.2)
            d, sim = probe.diagnostics(), probe.diagnostics("sim_bridge")
    finally:
        probe.close()
    reasons = {k: v for k, v in d.items() if k.startswith(("fallback", "guard_", "planner_errors", "stale"))}
    assert int(d.get("swaps", 0)) == 2 and int(d.get("fallbacks", 0)) == 0, reasons
    assert int(sim["lockstep_timeouts"]) == 0, f"a gap in the command stream during a swap: {sim}"


def test_cli_sets_a_kinds_settings_in_export_and_eval(diffuser_run, tmp_path, capsys):
    import yaml

    from planner_node.cli import main
    out = tmp_path / "b"
    assert main(["export", "--checkpoint", str(diffuser_run), "--out", str(out), "--samples", "4",
                 "--set", "sampler=ddim", "--set", "steps=3", "--set", "guide_scale=0.05"]) == 0
    d = yaml.safe_load((out / "manifest.yaml").read_text())["planner_defaults"]
    assert (d["samples"], d["sampler"], d["steps"], d["guide_scale"]) == (4, "ddim", 3, 0.05)
    assert main(["eval", "--bundle", str(out), "--task", "stand", "--episodes", "1", "--steps", "3", "--quiet",
                 "--set", "steps=2", "--json", str(tmp_path / "e.json")]) == 0
    assert main(["eval", "--bundle", str(out), "--task", "stand", "--episodes", "1", "--steps", "3", "--quiet",
                 "--set", "sampler=dpm"]) == 2
    assert "sampler='dpm'" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(diffuser_run), "--out", str(tmp_path / "c"), "--set", "steps"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_deadline_returns_the_shifted_plan_and_the_warm_start_ages_with_it(diffuser_bundles, env):
    import time
    from planner_node.runtime.bundle_planner import runtime_planner
    p = runtime_planner(diffuser_bundles["warm_rank"], seed=0)
    obs = env.reset(0)
    past = time.perf_counter() - 1
    first = p.plan(PlanRequest(obs=obs, task="stand", deadline=past))
    assert "fallback" not in first.info   # nothing to fall back to: the first plan completes late
    warm = p._last.copy()
    late = p.plan(PlanRequest(obs=obs, task="stand", deadline=past))
    assert "fallback" in late.info
    np.testing.assert_array_equal(late.actions[:-1], first.actions[1:])
    np.testing.assert_array_equal(p._last[:-1], warm[1:])


def test_a_critic_the_runtime_would_ignore_is_refused_at_export(diffuser_run, tmp_path):
    from planner_node.export.bundle_writer import ExportError, export_bundle
    with pytest.raises(ExportError, match="'diffuser' bundle would carry a critic its runtime planner ignores"):
        export_bundle(diffuser_run, tmp_path / "b", samples=4, critic=str(tmp_path / "critic"))
    assert not (tmp_path / "b").exists()
