"""Signed bundles, the bundle root, rollback and locked parameters: each attack the trust issue
names is refused by name; then the same attacks against a running node over real DDS, whose
running bundle keeps commanding."""
import itertools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_TEST_KEY
from hil import Probe

from planner_node.export.bundle_writer import set_bundle_version
from planner_node.runtime.bundle import load_bundle
from planner_node.runtime.bundle_gate import REASONS, BundleGate, BundleRefused
from planner_node.runtime.signing import TrustStore, generate_keypair, sign_manifest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "bundles" / "default"
PROJECT_PUB = PROJECT_TEST_KEY.with_suffix(".pub")
V = load_bundle(SHIPPED).version     # the shipped bundle's bundle_version
_domains = itertools.count(175)   # apart from conftest 60-159, test_hil 120+, test_remote 170+


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def attack_bundles(root: Path, outside: Path, other_key: Path) -> dict[str, tuple[Path, str]]:
    """Each attack as a bundle directory under ``root`` and the reason a gate must name."""
    attacks = {}
    b = _copy(SHIPPED, root / "changed_graph_byte")
    _flip_byte(b / "policy.onnx")
    attacks["changed_graph_byte"] = (b, "invalid")            # sha256 mismatch: the manifest pins it
    b = _copy(SHIPPED, root / "changed_card_byte")
    (b / "CARD.md").write_text((b / "CARD.md").read_text().replace("not validated on hardware", "validated on hardware"))
    attacks["changed_card_byte"] = (b, "invalid")             # the card is pinned too: what it claims is signed
    b = _copy(SHIPPED, root / "changed_manifest_byte")
    text = (b / "manifest.yaml").read_text().replace("decay: 0.5", "decay: 0.9")
    (b / "manifest.yaml").write_text(text)
    attacks["changed_manifest_byte"] = (b, "bad_signature")
    b = _copy(SHIPPED, root / "other_key")
    (b / "manifest.sig").unlink()
    sign_manifest(b, other_key)
    attacks["other_key"] = (b, "unknown_key")
    b = _copy(SHIPPED, root / "copied_signature")
    old_sig = (b / "manifest.sig").read_bytes()
    set_bundle_version(b, 7)                       # a new manifest (version 7) ...
    (b / "manifest.sig").write_bytes(old_sig)      # ... under the old manifest's signature
    attacks["copied_signature"] = (b, "bad_signature")
    b = _copy(SHIPPED, root / "unsigned")
    (b / "manifest.sig").unlink()
    attacks["unsigned"] = (b, "unsigned")
    b = _copy(SHIPPED, root / "malformed_signature")
    (b / "manifest.sig").write_text('{"signatures": [{"key_id": "x"}]}')
    attacks["malformed_signature"] = (b, "malformed_signature")
    target = _copy(SHIPPED, outside / "elsewhere")   # validly signed, but outside the root
    (root / "symlink_out").symlink_to(target, target_is_directory=True)
    attacks["symlink_out"] = (root / "symlink_out", "outside_bundle_root")
    attacks["outside_path"] = (target, "outside_bundle_root")
    return attacks


@pytest.fixture
def trust_dirs(tmp_path):
    root, outside, keys = tmp_path / "root", tmp_path / "outside", tmp_path / "keys"
    root.mkdir(), outside.mkdir()
    other_priv, _ = generate_keypair(keys, "intruder")
    good = _copy(SHIPPED, root / "good")
    newer = _copy(SHIPPED, root / "newer")
    set_bundle_version(newer, V + 1)
    sign_manifest(newer, PROJECT_TEST_KEY)
    return root, good, newer, attack_bundles(root, outside, other_priv)


def test_the_shipped_bundles_are_signed_by_the_project_key():
    trust = TrustStore.from_files([PROJECT_PUB])
    for b in ("default", "hgap"):
        bundle = load_bundle(ROOT / "bundles" / b, trust=trust)
        assert bundle.signed_by in trust.keys and bundle.version >= 1


def test_every_attack_is_refused_by_name(trust_dirs):
    root, good, newer, attacks = trust_dirs
    gate = BundleGate([str(PROJECT_PUB)], str(root))
    assert gate.check(good).version == V
    assert gate.check(newer, running_version=V).version == V + 1
    for name, (path, reason) in attacks.items():
        with pytest.raises(BundleRefused) as e:
            gate.check(path, running_version=V, check_graphs=True)
        assert e.value.reason == reason, (name, str(e.value))
    with pytest.raises(BundleRefused) as e:
        gate.check(good, running_version=V + 1)
    assert e.value.reason == "rollback" and f"older than the running bundle's {V + 1}" in str(e.value)
    assert set(r for _, r in attacks.values()) | {"rollback"} == set(REASONS)


def test_without_trusted_keys_unsigned_bundles_load_as_before(trust_dirs):
    root, good, newer, attacks = trust_dirs
    gate = BundleGate([], "")
    assert gate.check(attacks["unsigned"][0]).version == V
    assert gate.check(good, running_version=V + 1).version == V   # no rollback check without trust
    with pytest.raises(BundleRefused, match="sha256 mismatch"):
        gate.check(attacks["changed_graph_byte"][0])


def test_keygen_refuses_to_overwrite_and_keeps_the_private_key_private(tmp_path):
    priv, pub = generate_keypair(tmp_path, "k")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_keypair(tmp_path, "k")
    with pytest.raises(ValueError, match="not an Ed25519 public key|not a PEM public key"):
        TrustStore.from_files([priv])


def test_set_bundle_version_changes_one_line(tmp_path):
    b = _copy(SHIPPED, tmp_path / "b")
    before = (b / "manifest.yaml").read_text().splitlines()
    assert set_bundle_version(b, V + 4) == V
    after = (b / "manifest.yaml").read_text().splitlines()
    assert [x for x in after if x not in before] == [f"bundle_version: {V + 4}"]
    assert len(before) == len(after)


def test_cli_keygen_sign_verify(tmp_path):
    planner = str(Path(sys.executable).with_name("planner"))

    def run(*args):
        return subprocess.run([planner, *args], capture_output=True, text=True, timeout=120)

    b = _copy(SHIPPED, tmp_path / "b")
    (b / "manifest.sig").unlink()
    r = run("keygen", "--out", str(tmp_path / "keys"), "--name", "lab")
    assert r.returncode == 0, r.stderr
    r = run("verify", str(b), "--trusted", str(tmp_path / "keys" / "lab.pub"))
    assert r.returncode == 1 and "unsigned" in r.stderr, r.stderr
    r = run("sign", str(b), "--key", str(tmp_path / "keys" / "lab.key"), "--bundle-version", str(V + 2))
    assert r.returncode == 0 and f"bundle_version {V} -> {V + 2}" in r.stdout, r.stdout + r.stderr
    r = run("verify", str(b), "--trusted", str(tmp_path / "keys" / "lab.pub"))
    assert r.returncode == 0 and f"bundle_version {V + 2}, signed by" in r.stdout, r.stdout + r.stderr
    r = run("verify", str(b), "--trusted", str(PROJECT_PUB))
    assert r.returncode == 1 and "signed by an unknown key" in r.stderr, r.stderr


def test_a_running_node_refuses_every_attack_and_keeps_commanding(trust_dirs, tmp_path):
    """Real processes over real DDS: the node runs a signed bundle under bundle_root with locked
    safety parameters; every attack is refused with its reason, the bundle in use stays, the
    commands keep coming, and a newer signed bundle still swaps in."""
    from planner_node.ros.bringup import Bringup

    root, good, newer, attacks = trust_dirs
    probe = Probe(next(_domains))
    planner = {"bundle_root": str(root), "lock_parameters": True}
    try:
        with Bringup({"lockstep": "false", "bundle": str(good)}, extra={"planner": planner, "sim_bridge": {}},
                     log_dir=tmp_path):
            probe.wait_for(lambda: len(probe.msgs["/humanoid/joint_commands"]) > 5, 180, "commands from the node")
            refused = {}
            for name, (path, reason) in attacks.items():
                res = probe.set_param("planner", "bundle_path", str(path))
                refused[name] = (res.successful, res.reason)
                assert not res.successful and res.reason.startswith(f"bundle_path: {reason}:"), (name, res.reason)
            for name, value in (("safety_filter_threshold", "1e9"), ("deadline_ms", 1000.0)):
                res = probe.set_param("planner", name, value)
                assert not res.successful and "locked" in res.reason, (name, res.reason)
            n0 = len(probe.msgs["/humanoid/joint_commands"])
            probe.wait_for(lambda: len(probe.msgs["/humanoid/joint_commands"]) > n0 + 20, 60,
                           "commands after the attacks")
            # /diagnostics comes at 1 Hz: the attacks can all be answered before the first one
            probe.wait_for(lambda: "active_bundle" in probe.diagnostics(), 10, "the node's diagnostics")
            d = probe.diagnostics()
            assert d["active_bundle"] == str(good) and d["bundle_version"] == str(V), d
            # a newer signed bundle swaps in; then the older one is a rollback
            res = probe.set_param("planner", "bundle_path", str(newer))
            assert res.successful, res.reason
            probe.wait_for(lambda: probe.diagnostics().get("bundle_version") == str(V + 1), 60, "the swap to the newer version")
            res = probe.set_param("planner", "bundle_path", str(good))
            assert not res.successful and res.reason.startswith("bundle_path: rollback:"), res.reason
            probe.spin(2.2)
            d = probe.diagnostics()
    finally:
        probe.close()
    assert d["active_bundle"] == str(newer) and int(d["swaps"]) == 1, d
    for reason in set(REASONS) - {"invalid"}:
        assert int(d[f"rejected_bundle_path_{reason}"]) >= 1, (reason, d)
    assert int(d["rejected_parameters_locked"]) == 2, d
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"


SECURITY_PROBE = """
import rclpy
rclpy.init(args=["--ros-args", "--enclave", "/planner"])
try:
    rclpy.create_node("security_probe")
    print("SECURE_NODE_CREATED")
except Exception as e:
    print("REFUSED:", e)
"""


@pytest.mark.parametrize("strategy", ["Enforce", "Permissive"])
def test_pypi_fast_dds_has_no_dds_security(tmp_path, strategy):
    """The finding in docs/safety.md: the PyPI Fast DDS is built without DDS Security, so
    ``ROS_SECURITY_ENABLE`` cannot make a node at all. When a wheel gains it, this fails, and the
    ``planner up --secure`` profile the trust issue describes becomes possible."""
    (tmp_path / "enclaves" / "planner").mkdir(parents=True)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(next(_domains)),
               ROS_SECURITY_ENABLE="true", ROS_SECURITY_STRATEGY=strategy,
               ROS_SECURITY_KEYSTORE=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", SECURITY_PROBE], capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert "SECURE_NODE_CREATED" not in out, "this rmw now creates secure participants: build the --secure profile"
    assert "doesn't have the security libraries" in out, out[-2000:]
