"""Test-wide environment: headless GL, loopback-only DDS, a unique ROS domain per test."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

_domain = [int(os.environ.get("PLANNER_TEST_DOMAIN_BASE", "60"))]


@pytest.fixture
def ros_domain(monkeypatch):
    """A fresh ROS_DOMAIN_ID (and localhost-only discovery) for tests that start nodes."""
    _domain[0] = 60 + (_domain[0] - 59) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(_domain[0]))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return _domain[0]


@pytest.fixture(scope="session")
def env():
    from planner_node.sim.env import HumanoidEnv
    return HumanoidEnv()


# Tiny H-GAP / TAP runs trained once per session on a tiny expert dataset (seconds).
TINY = {
    "vq": {"horizon": 8, "width": 32, "heads": 2, "conv_blocks": 1, "latent_stride": 4, "codes_per_latent": 2,
           "code_dim": 16, "codebook_size": 32},
    "prior": {"layers": 1, "heads": 2, "width": 32},
    "train": {"vq_steps": 150, "prior_steps": 150, "batch_size": 32, "lr": 0.002, "checkpoint_every": 50,
              "eval_every": 50, "holdout_fraction": 0.25, "threads": 1},
}
TINY_TAP = {**TINY, "kind": "tap", "vq": {**TINY["vq"], "horizon": 9, "latent_stride": 3, "codes_per_latent": 1,
                                          "predict_return": True}}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from planner_node.sim.generate import generate
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate("tiny", out, progress=False)
    return out


@pytest.fixture(scope="session")
def hgap_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "hgap"
    from planner_node.models.config import config_from_dict
    from planner_node.models.train import Trainer
    Trainer(config_from_dict({"kind": "hgap", **TINY}), tiny_data, out, progress=False).run()
    return out


@pytest.fixture(scope="session")
def tap_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tap"
    from planner_node.models.config import config_from_dict
    from planner_node.models.train import Trainer
    Trainer(config_from_dict(TINY_TAP), tiny_data, out, progress=False).run()
    return out




#: The project's test signing key (config/humanoid.yaml trusts its public half): a node started
#: with the shipped parameters accepts only bundles it signed.
PROJECT_TEST_KEY = Path(__file__).resolve().parents[1] / "config" / "keys" / "project_test.key"


def signed(bundle):
    """``bundle``, signed by the project test key (as the shipped bundles are)."""
    from planner_node.runtime.signing import sign_manifest
    sign_manifest(bundle, PROJECT_TEST_KEY)
    return bundle


@pytest.fixture(scope="session")
def hgap_bundle(hgap_run, tmp_path_factory):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path_factory.mktemp("bundles") / "hgap"
    export_bundle(hgap_run, out, samples=16)
    return signed(out)


@pytest.fixture(scope="session")
def kind_bundles(tiny_data, tmp_path_factory):
    """A signed bundle of every registered kind, in registry order: trained on its record's tiny
    config, exported at its record's smoke settings (no per-kind code)."""
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.kinds import KINDS, resolve
    from planner_node.models.config import config_from_dict
    out = {}
    for name, k in KINDS.items():
        run = tmp_path_factory.mktemp("runs") / name
        resolve(k.trainer)(config_from_dict({"kind": name, **k.tiny}), tiny_data, run, progress=False).run()
        bundle = tmp_path_factory.mktemp("bundles") / name
        export_bundle(run, bundle, **k.smoke)
        out[name] = signed(bundle)
    return out


@pytest.fixture(scope="session")
def tap_bundle(tap_run, tmp_path_factory):
    from planner_node.export.bundle_writer import export_bundle
    out = tmp_path_factory.mktemp("bundles") / "tap"
    export_bundle(tap_run, out, beam=8, expansion=2)
    return signed(out)
