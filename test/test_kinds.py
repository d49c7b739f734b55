"""The planner-kind registry: every record runs end to end with no per-name code, and a toy kind
defined only in this file plus one record registers, exports, verifies, and runs in the runtime
and in the controller (the node's tick without ROS)."""
from pathlib import Path

import numpy as np
import pytest
from states import measured_state as _state

from planner_node import spec
from planner_node.control.controller import Controller, ControllerConfig
from planner_node.kinds import KINDS, Kind, resolve
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.runtime.bundle import load_bundle
from planner_node.runtime.bundle_planner import BundlePlanner, runtime_planner

def _valid(plan: Plan) -> bool:
    a = np.asarray(plan.actions)
    return a.ndim == 2 and a.shape[1] == spec.ACTION_DIM and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_record_trains_exports_and_runs(name, tiny_data, tmp_path, env):
    k = KINDS[name]
    for ref in (k.config, k.reference, k.export, k.runtime, k.flops, *([k.check_config] if k.check_config else [])):
        assert resolve(ref) is not None, ref
    assert k.batch_param in k.defaults and set(k.smoke) <= set(k.defaults)
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.config import config_from_dict
    run = tmp_path / "run"
    resolve(k.trainer)(config_from_dict({"kind": name, **k.tiny}), tiny_data, run, progress=False).run()
    obs = env.reset(0)
    ref = resolve(k.reference)(checkpoint=str(run), seed=0, threads=1, **k.smoke)
    assert _valid(ref.plan(PlanRequest(obs=obs, task="stand")))
    export_bundle(run, tmp_path / "bundle", **k.smoke)
    b = load_bundle(tmp_path / "bundle")
    assert b.planner == name and set(b.manifest["kind_config"]) == set(k.kind_config_keys)
    rt = runtime_planner(b, seed=0)
    assert type(rt).__name__ == k.runtime.split(":")[1]
    assert _valid(rt.plan(PlanRequest(obs=obs, task="stand")))
    assert resolve(k.flops)(b) > 0
    r = Controller(rt, ControllerConfig()).tick(_state(env, 1.0), 1.0)
    assert r.source == "plan" and np.all(np.isfinite(r.positions))


# -- a toy kind: a constant plan from a one-graph export, defined in this file only ----------------
H = 4


class ToyReference(Planner):
    name = kind = "toy"

    def __init__(self, checkpoint: str, level: float = 0.1, **_):
        self.level = level

    def plan(self, request: PlanRequest) -> Plan:
        return Plan(np.full((H, spec.ACTION_DIM), self.level), 0.0)


def export_graphs(ck: dict, out_dir: Path, settings: dict):
    """One graph: state (1, 224) -> actions (H, 56), the constant ``level`` (state * 0 + level)."""
    import onnx
    from onnx import TensorProto, helper

    from planner_node.export.kind_export import Exported, check_parity
    level = float(settings["level"])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["state"], ["s"], keepdims=1),
         helper.make_node("Mul", ["s", "zero"], ["z"]),
         helper.make_node("Add", ["z", "level"], ["actions"])],
        "toy", [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, spec.OBS_DIM])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [H, spec.ACTION_DIM])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [1, 1], [0.0]),
         helper.make_tensor("level", TensorProto.FLOAT, [H, spec.ACTION_DIM], [level] * (H * spec.ACTION_DIM))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out_dir / "plan.onnx"))
    err = check_parity(out_dir / "plan.onnx", {"state": np.zeros((1, spec.OBS_DIM), np.float32)},
                       [np.full((H, spec.ACTION_DIM), level, np.float32)], 1e-6)
    zeros, ones = [0.0] * spec.OBS_DIM, [1.0] * spec.OBS_DIM
    return Exported(graphs={"plan": err}, horizon=H, kind_config={"note": "constant plan"},
                    normalizer={"obs_mean": zeros, "obs_std": ones, "act_mean": [0.0] * 56, "act_std": [1.0] * 56,
                                "ret_mean": [0.0, 0.0], "ret_std": [1.0, 1.0]})


def tick_flops(bundle) -> int:
    return spec.OBS_DIM


class ToyRuntime(BundlePlanner):
    name = kind = "toy"

    def __init__(self, bundle, **kw):
        super().__init__(bundle, **kw)
        self.engine = self.engines("plan")[1]

    def plan(self, request: PlanRequest) -> Plan:
        acts = self.engine.run({"state": self.norm_obs(request.obs, 1)})["actions"]
        return Plan(self.unnorm_act(acts.astype(float)), 0.0)


TOY = Kind(name="toy", config="planner_node.models.config:ModelConfig", reference="test_kinds:ToyReference",
           export="test_kinds:export_graphs", runtime="test_kinds:ToyRuntime", flops="test_kinds:tick_flops",
           defaults={"level": 0.1}, batch_param="level", kind_config_keys=("note",), smoke={"level": 0.2})


def test_a_toy_kind_needs_only_its_own_file_and_one_record(tmp_path, env, monkeypatch):
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.models.checkpoint import save_checkpoint
    monkeypatch.setitem(KINDS, "toy", TOY)   # the one record
    ck = tmp_path / "toy_run" / "checkpoint.pt"
    save_checkpoint(ck, {"kind": "toy", "tasks": ["stand"], "config": {}})
    export_bundle(ck.parent, tmp_path / "toy_bundle", level=0.25)
    b = load_bundle(tmp_path / "toy_bundle")        # verifies hashes, schema, the kind's own keys
    assert b.planner == "toy" and b.manifest["reference"] is None
    rt = runtime_planner(b)
    plan = rt.plan(PlanRequest(obs=env.reset(0), task="stand"))
    np.testing.assert_allclose(plan.actions, 0.25, atol=1e-6)
    r = Controller(rt, ControllerConfig()).tick(_state(env, 1.0), 1.0)
    assert r.source == "plan"
    np.testing.assert_allclose(r.action, 0.25, atol=1e-6)
    monkeypatch.delitem(KINDS, "toy")
    from planner_node.runtime.bundle import BundleError
    with pytest.raises(BundleError, match="unknown planner kind 'toy'"):
        load_bundle(tmp_path / "toy_bundle")      # without its record, the kind does not exist
