"""The long-stand drift trace (sim/drift.py): `planner eval --trace` names when each episode fell
and what moved before it, and draws it."""
import numpy as np

from planner_node import spec
from planner_node.planning import Plan
from planner_node.sim.baselines import ZeroPlanner
from planner_node.sim.env import EnvConfig
from planner_node.sim.evaluate import evaluate, format_falls

CREEP_JOINT = spec.JOINT_NAMES.index("rfemurry")


class Creeping(ZeroPlanner):
    """The hold posture, with one hip joint's target creeping a little further every step:
    the slow drift the shipped policy shows, made on purpose."""

    name = "creeping"

    def __init__(self):
        super().__init__()
        self.k = 0

    def plan(self, request) -> Plan:
        self.k += 1
        a = self.hold.copy()
        a[CREEP_JOINT] = np.clip(a[CREEP_JOINT] - 0.03 * self.k, -1.0, 1.0)
        return Plan(a[None], score=0.0)

    def reset(self, *_a, **_k):
        self.k = 0


def test_trace_names_the_creeping_joint_and_the_fall_step(tmp_path):
    png = tmp_path / "drift.png"
    r = evaluate(Creeping(), "stand", episodes=2, seed=3, steps=400, env_config=EnvConfig(push_every=0),
                 progress=False, trace_png=str(png))
    assert png.is_file() and png.stat().st_size > 10_000
    for e in r["episodes"]:
        d = e["drift"]
        assert d["steps"] == e["length"]
        assert (e["fell_at"] == e["length"]) if e["fell"] else e["fell_at"] is None
        assert d["joints_moved_most"][0]["joint"] == "rfemurry", d["joints_moved_most"]
        assert d["joints_moved_most"][0]["change_rad"] < -0.2
        for k in ("base_height_change_m", "base_yaw_change_rad", "base_travel_m", "stance_width_change_m",
                  "activation_error_start", "activation_error_end"):
            assert np.isfinite(d[k]), k
        assert d["activation_error_end"] > d["activation_error_start"]
    text = format_falls(r)
    assert f"seed {r['episodes'][0]['seed']}:" in text and "rfemurry" in text


def test_hold_posture_does_not_name_a_creep(tmp_path):
    """The control: the same seed held still (it falls too, but nothing creeps) does not name the
    creeping hip among the joints that moved most; and an untraced run carries no drift."""
    r = evaluate(ZeroPlanner(), "stand", episodes=2, seed=3, steps=400, env_config=EnvConfig(push_every=0),
                 progress=False, trace_png=str(tmp_path / "hold.png"))
    for e in r["episodes"]:
        assert "rfemurry" not in [j["joint"] for j in e["drift"]["joints_moved_most"][:3]], e["drift"]
    r = evaluate(ZeroPlanner(), "stand", episodes=1, seed=3, steps=40, env_config=EnvConfig(push_every=0),
                 progress=False, trace_png=None)
    assert "drift" not in r["episodes"][0]


class _Counting(ZeroPlanner):
    """Plan k (made on the k-th call) is the actions 100 k + 0, 100 k + 1, ... (first joint)."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.k = 0

    def reset(self, *_a, **_k):
        self.k = 0

    def plan(self, request) -> Plan:
        a = np.zeros((8, spec.ACTION_DIM))
        a[:, 0] = 100 * self.k + np.arange(8)
        self.k += 1
        return Plan(a, 0.0)


def test_delayed_plans_are_shifted_by_their_age():
    """`planner eval --plan-latency-ms`: the plan made on step k is commanded from step k + d,
    shifted by its age; before the first is ready, the first plan's first action; d = 0 is the
    planner itself."""
    from planner_node.sim.evaluate import DelayedPlanner
    p = DelayedPlanner(_Counting(), latency_ms=61.0)      # 3 control periods (rounded up)
    p.reset(0)
    first = [p.plan(None).actions[0, 0] for _ in range(6)]
    assert first == [0, 0, 0, 3, 103, 203]               # plan 0 at age 3, then plans 1, 2 at age 3
    assert p.plan(None).info["plan_age_steps"] == 3
    p = DelayedPlanner(_Counting(), latency_ms=0.0)
    p.reset(0)
    assert [p.plan(None).actions[0, 0] for _ in range(3)] == [0, 100, 200]
    p = DelayedPlanner(_Counting(), latency_ms=1000.0)    # older than the horizon: its last action held
    p.reset(0)
    out = [p.plan(None).actions[0, 0] for _ in range(40)]
    assert out[34] == 7 and out[35] == 107
