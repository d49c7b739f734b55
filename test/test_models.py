"""H-GAP / TAP models on a tiny generated dataset: shapes, learning, codebook use, save/load, planners."""
import shutil

import numpy as np
import pytest
import torch
import yaml

from planner_node.models.checkpoint import CheckpointError, load_checkpoint
from planner_node.models.config import ConfigError, config_from_dict, load_config
from planner_node.models.hgap import HGAPPlanner
from planner_node.models.tap import TAPPlanner
from planner_node.models.prior import LatentPrior
from planner_node.models.train import Trainer, build_models
from planner_node.models.vqvae import TrajectoryVQVAE
from planner_node.planning import PlanRequest

from conftest import TINY  # noqa: E402

CODE_USE_FLOOR = 0.25  # fraction of the 32 codes used on held-out windows after training


def test_shapes():
    cfg = config_from_dict({"kind": "hgap", **TINY})
    vq, prior = TrajectoryVQVAE(cfg.vq), LatentPrior(cfg.vq, cfg.prior)
    x = torch.randn(3, 8, 280)
    recon, idx, _ = vq(x)
    assert recon.shape == x.shape and idx.shape == (3, cfg.vq.num_tokens) == (3, 4)
    assert prior(x[:, 0, :224], idx).shape == (3, 4, 32)


def test_kv_cache_matches_teacher_forcing():
    cfg = config_from_dict({"kind": "hgap", **TINY})
    prior = LatentPrior(cfg.vq, cfg.prior).eval()
    s, tok = torch.randn(2, 224), torch.randint(0, 32, (2, 4))
    full = prior(s, tok)
    logits, cache = prior.step(s, None, None)
    steps = [logits]
    for t in range(3):
        logits, cache = prior.step(s, tok[:, t:t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_training_lowers_loss_and_uses_codebook(hgap_run):
    import csv
    rows = list(csv.DictReader(open(hgap_run / "metrics.csv")))
    vq = [r for r in rows if r["stage"] == "vq"]
    pr = [r for r in rows if r["stage"] == "prior"]
    assert float(vq[-1]["train_loss"]) < float(vq[0]["train_loss"])
    assert float(pr[-1]["train_loss"]) < float(pr[0]["train_loss"])
    assert float(vq[-1]["code_use"]) >= CODE_USE_FLOOR
    assert (hgap_run / "loss.png").stat().st_size > 1000
    ck = load_checkpoint(hgap_run)  # the kept prior is the one with the best held-out NLL
    assert ck["prior_best_holdout_nll"] == min(float(r["holdout_loss"]) for r in pr)
    assert ck["prior_best_step"] == int(min(pr, key=lambda r: float(r["holdout_loss"]))["step"])


def test_checkpoint_round_trip_identical_outputs(hgap_run, tmp_path):
    ck = load_checkpoint(hgap_run, expect_kind="hgap")
    _, vq, prior, norm = build_models(ck)
    _, vq2, prior2, _ = build_models(load_checkpoint(hgap_run / "checkpoint.pt"))
    _, _, last, _ = build_models(ck, best=False)
    for name, w in last.state_dict().items():
        torch.testing.assert_close(w, ck["prior"][name], rtol=0, atol=0)
    x = torch.randn(4, 8, 280)
    torch.testing.assert_close(vq(x)[0], vq2(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(prior(x[:, 0, :224], vq(x)[1]), prior2(x[:, 0, :224], vq(x)[1]), rtol=0, atol=0)


def test_resume_matches_uninterrupted(tiny_data, hgap_run, tmp_path):
    """Kill mid-run (after the step-50 checkpoint, before the next), resume, land on identical weights."""
    cfg = config_from_dict({"kind": "hgap", **TINY})
    part = tmp_path / "part"
    assert Trainer(cfg, tiny_data, part, progress=False).run(stop_after=70)["stage"] == "killed"
    assert torch.load(part / "checkpoint.pt", weights_only=True)["step"] == 50
    Trainer(cfg, tiny_data, part, progress=False).run()
    a, b = load_checkpoint(part), load_checkpoint(hgap_run)
    for key in ("vq", "prior", "prior_best"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
    other = config_from_dict({"kind": "hgap", **TINY, "train": {**TINY["train"], "lr": 0.01}})
    with pytest.raises(CheckpointError, match="different config"):
        Trainer(other, tiny_data, part, progress=False)


def test_planners_deterministic_and_bounded(hgap_run, tap_run, env):
    obs = env.reset(0)
    for cls, run, kw in ((HGAPPlanner, hgap_run, {"samples": 16}), (TAPPlanner, tap_run, {"beam": 8, "expansion": 2})):
        a = cls(str(run), seed=7, threads=1, **kw).plan(PlanRequest(obs=obs, task="forward"))
        b = cls(str(run), seed=7, threads=1, **kw).plan(PlanRequest(obs=obs, task="forward"))
        c = cls(str(run), seed=8, threads=1, **kw).plan(PlanRequest(obs=obs, task="forward"))
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.actions.shape == (run_horizon(run), 56) and np.all(np.abs(a.actions) <= 1.0)
        if cls is HGAPPlanner:  # 16 samples at temperature 2: another seed draws other codes
            assert a.info["tokens"] != c.info["tokens"]


def run_horizon(run):
    return load_checkpoint(run)["config"]["vq"]["horizon"]


def test_bad_config_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"kind": "hgap", "vq": {"width": "wide"}}))
    with pytest.raises(ConfigError, match="bad.yaml: vq.width: expected int"):
        load_config(p)
    p.write_text(yaml.safe_dump({"kind": "hgap", "train": {"epochs": 3}}))
    with pytest.raises(ConfigError, match="train.epochs: unknown key"):
        load_config(p)


def test_checkpoint_of_other_kind_refused(hgap_run):
    with pytest.raises(CheckpointError, match="'hgap' model, expected 'tap'"):
        TAPPlanner(str(hgap_run))


def test_dataset_of_other_spec_refused(tiny_data, tmp_path):
    import json

    from planner_node.dataset import manifest_path
    bad = tmp_path / "other.json"  # the manifest, next to a copy of its store
    shutil.copytree(manifest_path(tiny_data).parent / "shards", tmp_path / "shards")
    meta = json.loads(manifest_path(tiny_data).read_text())
    meta["spec_hash"] = "ffffffffffffffff"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other.json.*spec hash"):
        Trainer(config_from_dict({"kind": "hgap", **TINY}), bad, tmp_path / "run", progress=False)


def test_window_sets_gather_the_materialised_windows(tiny_data):
    """The trainers' windows, cut per batch from one feature array, are ``make_windows``' windows,
    in its order; no window crosses an episode; ``windows_at`` cuts the same window at a row."""
    import numpy as np
    import torch

    from planner_node.dataset import Dataset
    from planner_node.models.data import (Normalizer, make_windows, returns_to_go, split_episodes, window_features,
                                          window_set, windows_at)
    ds = Dataset(tiny_data)
    rets = returns_to_go(ds, 0.99)
    norm = Normalizer.from_dataset(ds, rets)
    train, _ = split_episodes(ds, 0.25, 0)
    want = make_windows(ds, train, 8, norm, rets, True)
    ws = window_set(window_features(ds, norm, rets, True), train, 8)
    assert ws.shape == want.shape
    idx = torch.from_numpy(np.random.default_rng(0).integers(0, len(ws), 50))
    np.testing.assert_array_equal(ws[idx].numpy(), want[idx.numpy()])
    np.testing.assert_array_equal(ws[:7].numpy(), want[:7])
    np.testing.assert_array_equal(ws.first().numpy(), want[:, 0])
    ids = ds.arrays["episode_ids"]
    rows = ws.starts.numpy()[:, None] + np.arange(8)
    assert (ids[rows] == ids[rows[:, :1]]).all()
    np.testing.assert_array_equal(windows_at(ds, ws.starts.numpy()[idx.numpy()], 8, norm, rets, True), want[idx.numpy()])
    last = train[0][-1]
    with pytest.raises(ValueError, match="leaves its episode"):
        windows_at(ds, np.asarray([last]), 8, norm, rets, True)


def test_prior_holdout_nll_is_chunked_and_bounded(tiny_data, hgap_run, monkeypatch):
    """The prior's held-out NLL, 1,024 windows at a time over at most 8,192: the same figure as
    one batch where everything fits (a 100k-window held-out set in one batch ran out of memory)."""
    import torch

    from conftest import TINY
    from planner_node.models.config import config_from_dict
    from planner_node.models.train import Trainer
    tr = Trainer(config_from_dict({"kind": "hgap", **TINY}), tiny_data, hgap_run, progress=False)
    state, tok = tr.hold_x.first()[:, : tr.cfg.vq.obs_dim], tr.encode_all(tr.hold_x)
    assert len(tok) > 5
    with torch.no_grad():
        whole = tr.prior.nll(state, tok).item()
        first5 = tr.prior.nll(state[:5], tok[:5]).item()
    monkeypatch.setattr(Trainer, "PRIOR_HOLDOUT_CHUNK", 3)
    assert abs(tr._prior_holdout_nll(state, tok) - whole) < 1e-5
    monkeypatch.setattr(Trainer, "PRIOR_HOLDOUT_MAX", 5)
    assert abs(tr._prior_holdout_nll(state, tok) - first5) < 1e-5
