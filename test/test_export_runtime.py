"""Export round trip, graph and plan parity (torch vs ONNX Runtime), bundle refusal, TensorRT keys."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from planner_node.planning import PlanRequest
from planner_node.runtime.bundle import BundleError, load_bundle
from planner_node.runtime.plan_cache import decide, plan_key

GRAPH_ATOL = 1e-4    # max abs diff per graph output, ONNX Runtime vs torch, fp32
ACTION_ATOL = 1e-4   # first action, runtime planner vs PyTorch reference planner


def test_bundle_round_trip(hgap_bundle, hgap_run):
    from planner_node import spec
    b = load_bundle(hgap_bundle)
    m = b.manifest
    assert m["planner"] == "hgap" and m["spec_hash"] == spec.SPEC_HASH and m["joint_names"] == list(spec.JOINT_NAMES)
    assert m["planner_defaults"]["samples"] == 16
    assert [t.shape for t in b.io("prior_step", "inputs")][0] == (16, 224)
    for g in m["graphs"].values():
        assert g["parity_max_abs_err"] <= GRAPH_ATOL
    assert (hgap_bundle / "CARD.md").read_text().startswith("# Bundle card")
    with pytest.raises(Exception, match="already exists"):
        from planner_node.export.bundle_writer import export_bundle
        export_bundle(hgap_run, hgap_bundle)


@pytest.mark.parametrize("graph", ["prior_step", "decoder"])
def test_graph_parity_onnxruntime_vs_torch(hgap_bundle, graph):
    from planner_node.runtime.engine import make_engine
    b = load_bundle(hgap_bundle)
    ort_e, torch_e = make_engine(b, graph, "onnxruntime"), make_engine(b, graph, "torch")
    rng = np.random.default_rng(0)
    feeds = {}
    for t in ort_e.inputs:
        if t.dtype == "int64":
            hi = 1 if t.name == "pos" else b.manifest["kind_config"]["codebook_size"]
            feeds[t.name] = rng.integers(0, hi if t.name != "pos" else 3, t.shape).astype(np.int64)
        else:
            feeds[t.name] = rng.normal(size=t.shape).astype(np.float32) * (0.1 if "cache" in t.name else 1)
    a, c = ort_e.run(feeds), torch_e.run(feeds)
    for t in ort_e.outputs:
        assert np.max(np.abs(a[t.name] - c[t.name])) <= GRAPH_ATOL


def test_plan_parity_hgap(hgap_bundle, hgap_run, env):
    from planner_node.models.hgap import HGAPPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    ref = HGAPPlanner(str(hgap_run), samples=16, seed=3, threads=1)
    rt = runtime_planner(hgap_bundle, seed=3)
    obs = env.reset(4)
    for _ in range(3):  # several ticks: the random streams stay in lockstep
        a = ref.plan(PlanRequest(obs=obs, task="forward"))
        b = rt.plan(PlanRequest(obs=obs, task="forward"))
        assert a.info["tokens"] == b.info["tokens"]
        np.testing.assert_allclose(b.actions[0], a.actions[0], atol=ACTION_ATOL)
        obs, _ = env.step(b.actions[0])


def test_plan_parity_tap(tap_bundle, tap_run, env):
    from planner_node.models.tap import TAPPlanner
    from planner_node.runtime.bundle_planner import runtime_planner
    ref = TAPPlanner(str(tap_run), beam=8, expansion=2, seed=5, threads=1)
    rt = runtime_planner(tap_bundle, seed=5)
    obs = env.reset(6)
    a, b = ref.plan(PlanRequest(obs=obs, task="stand")), rt.plan(PlanRequest(obs=obs, task="stand"))
    assert a.info["tokens"] == b.info["tokens"]
    np.testing.assert_allclose(b.actions[0], a.actions[0], atol=ACTION_ATOL)


def test_runtime_never_imports_torch(hgap_bundle):
    code = f"""
import sys, numpy as np
from planner_node.runtime.bundle_planner import runtime_planner
from planner_node.planning import PlanRequest
from planner_node.sim.env import HumanoidEnv
env = HumanoidEnv(); obs = env.reset(0)
p = runtime_planner({str(hgap_bundle)!r}, backend="onnxruntime")
for _ in range(3):
    obs, _ = env.step(p.plan(PlanRequest(obs=obs, task="stand")).actions[0])
print("TORCH" if "torch" in sys.modules else "NO_TORCH")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("NO_TORCH")


@pytest.mark.parametrize("graphs", ["plan", "steps"])
def test_deadline_returns_shifted_previous_plan(hgap_bundle, env, graphs):
    import time
    from planner_node.runtime.bundle_planner import runtime_planner
    p = runtime_planner(hgap_bundle, seed=0, graphs=graphs)
    obs = env.reset(0)
    first = p.plan(PlanRequest(obs=obs, task="stand", deadline=time.perf_counter() - 1))
    assert "fallback" not in first.info  # nothing to fall back to: the first plan completes late
    late = p.plan(PlanRequest(obs=obs, task="stand", deadline=time.perf_counter() - 1))
    assert "fallback" in late.info
    np.testing.assert_array_equal(late.actions[:-1], first.actions[1:])
    p.plan(PlanRequest(obs=obs, task="stand", deadline=time.perf_counter() - 1))
    fresh = p.plan(PlanRequest(obs=obs, task="stand", deadline=time.perf_counter() - 1))
    assert "fallback" not in fresh.info  # never runs open loop for more than MAX_FALLBACK_TICKS


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(b, fn):
    m = yaml.safe_load((b / "manifest.yaml").read_text())
    fn(m)
    (b / "manifest.yaml").write_text(yaml.safe_dump(m))


def test_changed_byte_refused(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    data = bytearray((b / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx: sha256 mismatch"):
        load_bundle(b)


def test_edited_shape_refused(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    _edit_manifest(b, lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape=[32, 4]))
    with pytest.raises(BundleError, match="inputs .* do not match manifest graphs.decoder.inputs"):
        load_bundle(b)


def test_path_escape_refused(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    shutil.copy(b / "decoder.onnx", tmp_path / "evil.onnx")
    _edit_manifest(b, lambda m: m["graphs"]["decoder"].update(file="../evil.onnx"))
    with pytest.raises(BundleError, match="escapes the bundle"):
        load_bundle(b)


def test_unknown_planner_kind_refused(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    _edit_manifest(b, lambda m: m.update(planner="dreamer"))
    with pytest.raises(BundleError, match="unknown planner kind 'dreamer'"):
        load_bundle(b)


def test_external_data_outside_bundle_refused(hgap_bundle, tmp_path):
    import onnx

    from planner_node.atomic import sha256_file
    b = _copy(hgap_bundle, tmp_path)
    model = onnx.load(str(b / "decoder.onnx"))
    init = model.graph.initializer[0]  # point one weight at a file outside the bundle (by hand:
    init.ClearField("raw_data")        # onnx's own helper refuses to write such a path)
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../stolen.bin")
    (b / "decoder.onnx").write_bytes(model.SerializeToString())
    _edit_manifest(b, lambda m: m["graphs"]["decoder"].update(sha256=sha256_file(b / "decoder.onnx")))
    with pytest.raises(BundleError, match="external data .* escapes the bundle"):
        load_bundle(b)


def test_cli_verify_exit_codes(hgap_bundle, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "planner_node.cli", "verify", str(hgap_bundle)], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "OK" in ok.stdout
    b = _copy(hgap_bundle, tmp_path)
    (b / "prior_step.onnx").write_bytes(b"junk")
    bad = subprocess.run([sys.executable, "-m", "planner_node.cli", "verify", str(b)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "prior_step.onnx: sha256 mismatch" in bad.stderr


# --- TensorRT plan keys and fallback (pure logic, no GPU needed) --------------------------------

MACHINE = {"trt_version": "10.13.0", "compute_capability": "8.7"}  # e.g. Jetson Orin


def test_plan_key_separates_machines():
    k = plan_key("ab" * 32, "10.13.0", "8.7", "fp16")
    assert k != plan_key("ab" * 32, "10.13.0", "8.9", "fp16")
    assert k != plan_key("ab" * 32, "11.0.0", "8.7", "fp16")
    assert k != plan_key("cd" * 32, "10.13.0", "8.7", "fp16")
    assert k != plan_key("ab" * 32, "10.13.0", "8.7", "fp32")


def test_decide_each_case(tmp_path):
    sha = "ab" * 32
    key = plan_key(sha, MACHINE["trt_version"], MACHINE["compute_capability"], "fp16")
    mine = [{"graph": "decoder", "file": "decoder.x.plan", "key": key}]
    other = [{"graph": "decoder", "file": "decoder.y.plan", "key": plan_key(sha, "10.13.0", "9.0", "fp16")}]
    assert decide("decoder", sha, tmp_path, mine, MACHINE, cache_dir=tmp_path).action == "use_bundle_plan"
    d = decide("decoder", sha, tmp_path, other, MACHINE, cache_dir=tmp_path)
    assert d.action == "rebuild" and "other machines" in d.reason and d.path.parent == tmp_path
    d.path.write_bytes(b"plan")
    assert decide("decoder", sha, tmp_path, other, MACHINE, cache_dir=tmp_path).action == "use_cached_plan"
    d = decide("decoder", sha, tmp_path, other, MACHINE, cache_dir=tmp_path / "empty", can_build=False)
    assert d.action == "fallback_onnxruntime" and "ONNX Runtime" in d.reason
    d = decide("decoder", sha, tmp_path, mine, None, cache_dir=tmp_path)
    assert d.action == "fallback_onnxruntime" and "not available" in d.reason


def test_tensorrt_backend_falls_back_here_and_says_why(hgap_bundle, monkeypatch):
    from planner_node.runtime import tensorrt_build as tensorrt
    from planner_node.runtime.engine import make_engine
    # Runs on every machine: a GPU machine is made to look like one without TensorRT.
    monkeypatch.setattr(tensorrt, "machine_info", lambda: None)
    e = make_engine(load_bundle(hgap_bundle), "decoder", "tensorrt")
    assert e.backend == "onnxruntime" and "not available" in e.fallback_reason


def test_tensorrt_build_and_parity_gpu_only(hgap_bundle, tmp_path):
    """GPU-only: build a plan from the bundle's ONNX and compare with ONNX Runtime (FP16 tolerance)."""
    from planner_node.runtime.tensorrt_build import machine_info
    if machine_info() is None:
        pytest.skip("GPU-only: TensorRT and a CUDA GPU are not available on this machine")
    from planner_node.runtime.engine import make_engine
    b = load_bundle(hgap_bundle)
    trt_e, ort_e = make_engine(b, "decoder", "tensorrt"), make_engine(b, "decoder", "onnxruntime")
    rng = np.random.default_rng(0)
    feeds = {"tokens": rng.integers(0, b.manifest["kind_config"]["codebook_size"], trt_e.inputs[0].shape).astype(np.int64),
             "state": rng.normal(size=trt_e.inputs[1].shape).astype(np.float32)}
    np.testing.assert_allclose(trt_e.run(feeds)["trajectory"], ort_e.run(feeds)["trajectory"], atol=5e-2)


def test_bench_compares_backends_against_torch_eager(hgap_bundle, hgap_run, tmp_path):
    """`planner bench` runs every backend in one process and writes one JSON row per backend,
    ratios against the PyTorch reference planner (no timing is asserted)."""
    import json

    from planner_node.cli import main
    out = tmp_path / "bench.json"
    assert main(["bench", "--bundle", str(hgap_bundle), "--checkpoint", str(hgap_run), "--ticks", "3",
                 "--backends", "torch", "onnxruntime", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["backends"]
    # A bundle with the whole-plan graph: a row for the step graphs and one for the whole plan.
    assert [r["backend"] for r in rows] == ["torch-eager", "torch/steps", "torch/plan", "onnxruntime/steps",
                                            "onnxruntime/plan"]
    for r in rows:
        assert r["speedup_base"] == "torch-eager" and r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert json.loads(out.read_text())["runtime_torch_imported"] is False


def test_export_card_holds_the_evaluation_table_and_refuses_bad_files(hgap_run, tmp_path, capsys):
    import json

    from planner_node.cli import main
    ev = {"task": "stand", "planner": "hgap", "steps": 20, "episodes": [{}, {}, {}, {}], "mean_return": 12.5,
          "std_return": 1.0, "mean_length": 18.0, "fall_rate": 0.5}
    (tmp_path / "ev.json").write_text(json.dumps(ev))
    assert main(["export", "--checkpoint", str(hgap_run), "--out", str(tmp_path / "b"), "--samples", "4",
                 "--evaluation", str(tmp_path / "ev.json")]) == 0
    # std_return is over episodes with ddof 0: the standard error is 1.0 / sqrt(4 - 1)
    assert "| stand | hgap | 4 x 20 | 12.5 ± 0.6 | 18 | 50% |" in (tmp_path / "b" / "CARD.md").read_text()
    del ev["fall_rate"]
    (tmp_path / "bad.json").write_text(json.dumps(ev))
    assert main(["export", "--checkpoint", str(hgap_run), "--out", str(tmp_path / "c"), "--evaluation",
                 str(tmp_path / "bad.json")]) == 2
    assert "bad.json: missing key 'fall_rate'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_unknown_manifest_key_refused_by_name(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    _edit_manifest(b, lambda m: m.update(payload={"x": [1, 2]}))
    with pytest.raises(BundleError, match=r"top level: unknown keys \['payload'\]"):
        load_bundle(b)
    b2 = _copy(hgap_bundle, tmp_path / "2")
    _edit_manifest(b2, lambda m: m["graphs"]["decoder"].update(loader="evil.so"))
    with pytest.raises(BundleError, match=r"graphs.decoder: unknown keys \['loader'\]"):
        load_bundle(b2)


def test_missing_manifest_key_refused_by_name(hgap_bundle, tmp_path):
    b = _copy(hgap_bundle, tmp_path)
    _edit_manifest(b, lambda m: m.pop("normalizer"))
    with pytest.raises(BundleError, match=r"missing keys \['normalizer'\]"):
        load_bundle(b)


def test_yaml_alias_nest_refused(hgap_bundle, tmp_path):
    """A 'billion laughs' nest of aliases under an extra key: refused before anything walks it."""
    b = _copy(hgap_bundle, tmp_path)
    text = (b / "manifest.yaml").read_text()
    nest = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n"
        for i in range(1, 9))
    (b / "manifest.yaml").write_text(text + nest)
    with pytest.raises(BundleError, match="aliases are not allowed"):
        load_bundle(b)


@pytest.mark.parametrize("extra", ["format_version: 3\n", "normalizer:\n  obs_mean: x\n  obs_mean: y\n"])
def test_yaml_duplicate_key_refused(hgap_bundle, tmp_path, extra):
    """A key given twice (top level, or inside a mapping): YAML would keep the last silently, so
    what a reviewer reads is not what loads; refused by name."""
    b = _copy(hgap_bundle, tmp_path)
    text = (b / "manifest.yaml").read_text()
    if extra.startswith("normalizer"):
        text = text.replace("normalizer:", "normalizer_unused:", 1)  # one normalizer block, with the duplicate inside
    (b / "manifest.yaml").write_text(text + extra)
    key = "format_version" if extra.startswith("format") else "obs_mean"
    with pytest.raises(BundleError, match=f"duplicate key '{key}'"):
        load_bundle(b)


def test_card_names_data_by_hash_never_an_absolute_path(hgap_bundle, tiny_data):
    from planner_node.dataset import Dataset
    card = (hgap_bundle / "CARD.md").read_text()
    m = load_bundle(hgap_bundle).manifest
    want = Dataset(tiny_data).sha256
    assert m["producer"]["dataset"]["sha256"] == want and f"dataset sha256 {want}" in card
    for text in (card, (hgap_bundle / "manifest.yaml").read_text()):
        assert str(tiny_data) not in text and str(tiny_data.parent) not in text, "an absolute machine path"
