"""The command clock and the planner worker: plans from a child process over shared memory, a
command every slot whatever the worker does (late, crashed, hung), and the node that restarts
it and refuses a bundle that keeps crashing (real processes over real DDS)."""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from hil import BLOCKED_S, Probe, log_tail
from states import measured_state

from planner_node.control.action_filter import PassThrough
from planner_node.control.controller import Controller, ControllerConfig
from planner_node.control.plan_service import InlinePlanService
from planner_node.runtime.bundle_planner import runtime_planner
from planner_node.runtime.plan_worker import FAULT_ENV
from planner_node.runtime.worker_service import WorkerFailed, WorkerPlanService, WorkerSpec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "bundles" / "default"
KEYS = [str(ROOT / "config" / "keys" / "project_test.pub")]
_domains = itertools.count(165)  # apart from conftest 60-159, test_remote 170+, test_fuzz 200+


def _spec(bundle: Path = SHIPPED, **kw) -> WorkerSpec:
    return WorkerSpec(bundle=str(bundle), trusted_keys=KEYS, base=str(ROOT), **kw)


@pytest.fixture
def worker(env, request):
    made = []

    def start(**kw):
        svc = WorkerPlanService(_spec(), env.reset(0), **kw)
        made.append(svc)
        return svc
    yield start
    for svc in made:
        svc.close()


def _lockstep(env, controller, ticks: int):
    """Closed loop in lockstep (the controller waits for each plan): the commands and sources."""
    env.reset(0)
    out = []
    for k in range(ticks):
        r = controller.tick(measured_state(env, 0.03 * k), 0.03 * k, realtime=False)
        out.append(r)
        env.step(r.action)
    return out


def test_worker_commands_what_the_inline_planner_commands(env, worker):
    """Same bundle, seed and states: the worker's commands equal the in-process planner's, bit for bit."""
    inline = Controller(runtime_planner(str(SHIPPED), seed=0), ControllerConfig())
    inline.planner.reset(0)
    ref = _lockstep(env, inline, 25)
    svc = worker()
    got = _lockstep(env, Controller(None, ControllerConfig(), service=svc), 25)
    assert [r.source for r in got] == ["plan"] * 25
    np.testing.assert_array_equal(np.stack([r.action for r in got]), np.stack([r.action for r in ref]))
    # the worker is a runtime process: neither torch nor ROS is loaded in it
    maps = Path(f"/proc/{svc.pid}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps and "librcl" not in maps


def test_the_worker_carries_the_predicted_states_of_a_kind_that_has_them(env):
    """H-GAP predicts the states along its plan: the worker passes what they say of the body (the
    node's ~/plan_intent) through the channel, equal to the inline planner's; the chunk policy
    predicts none and sends none."""
    from planner_node.planning import INTENT_DIM, MAX_CANDIDATES
    hgap = ROOT / "bundles" / "hgap"
    inline = Controller(runtime_planner(str(hgap), seed=0), ControllerConfig())
    inline.planner.reset(0)
    ref = _lockstep(env, inline, 4)
    svc = WorkerPlanService(_spec(hgap), env.reset(0))
    try:
        got = _lockstep(env, Controller(None, ControllerConfig(), service=svc), 4)
    finally:
        svc.close()
    for r, g in zip(ref, got):
        assert r.plan is not None and g.plan is not None
        assert g.plan.info["intent"].shape == (len(r.plan.plan.info["predicted_obs"]), INTENT_DIM)
        np.testing.assert_array_equal(g.plan.info["intent"], r.plan.info["intent"])
        # the best other candidates' states, best first (float32 on the channel: drawn, never commanded)
        others = r.plan.info["candidate_intent"]
        assert len(others) == min(MAX_CANDIDATES, len(r.plan.plan.info["candidate_obs"])) > 0
        np.testing.assert_allclose(g.plan.info["candidate_intent"], others, rtol=1e-6, atol=1e-6)
    chunk = _lockstep(env, Controller(runtime_planner(str(SHIPPED), seed=0), ControllerConfig()), 2)
    assert all("intent" not in r.plan.info for r in chunk)


def test_a_crashed_worker_leaves_the_clock_commanding_the_shifted_plan_then_hold(env, worker, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "crash:3")  # SIGSEGV in the worker after its third plan
    svc = worker()
    c = Controller(None, ControllerConfig(), service=svc)
    res = _lockstep(env, c, 12)
    st = c.stats()
    horizon = len(res[0].plan.actions)
    assert [r.source for r in res[:3]] == ["plan"] * 3
    assert all(r.source.startswith("fallback") for r in res[3:])
    # the last plan, shifted by its age while it lasts (slots 3 .. H+1), then hold
    np.testing.assert_array_equal(res[4].action, res[2].plan.actions[2])
    assert st["commands_fresh_plan"] == 3 and st["commands_shifted_plan"] == horizon - 1, st
    assert st["commands_fallback"] == 12 - 3 - (horizon - 1), st
    assert st["fallback_worker_down"] + st["fallback_plan_late"] == 9, st
    assert all(np.all(np.isfinite(r.positions)) and c.guard.check(r.positions) is None for r in res)
    assert not svc.alive and "signal 11" in svc.exit_reason()


def test_a_hung_worker_is_killed_and_the_clock_goes_on(env, worker, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "hang:2")
    svc = worker(hang_s=0.2)
    c = Controller(None, ControllerConfig(), service=svc)
    res = _lockstep(env, c, 5)  # lockstep waits for plans: the hang check is what ends the wait
    assert [r.source.startswith("fallback") for r in res] == [False, False, True, True, True]
    assert not svc.alive and "hung" in svc.exit_reason()
    assert c.stats()["fallback_plan_late"] + c.stats()["fallback_worker_down"] == 3


def test_a_late_plan_is_commanded_shifted_by_its_age(env, worker):
    """Real time: the fresh plan misses the slot's deadline, so the slot holds; the next slot
    commands that plan's second action (its age is one slot), not the planner's answer to it."""
    svc = worker()
    c = Controller(None, ControllerConfig(deadline_ms=0.001), service=svc)
    env.reset(0)
    r0 = c.tick(measured_state(env, 0.0), 0.0)          # nothing can be planned in 1 us
    assert r0.source.startswith("fallback") and c.stats()["fallback_plan_late"] == 1
    late = svc.collect(0, None)                          # the answer to slot 0 comes in after its slot
    assert late is not None and late.slot == 0
    r1 = c.tick(measured_state(env, 0.0), 0.0, slot=1)
    np.testing.assert_array_equal(r1.action, late.actions[1])
    st = c.stats()
    assert st["commands_shifted_plan"] == 1 and st["deadline_misses"] == 2, st


def test_the_best_plan_outlives_a_swap_whose_first_plan_is_late(env, worker):
    """After a hot swap the old planner's plan is still the freshest intent: a late first plan
    from the new worker commands it shifted by its age, not the hold pose."""
    c = Controller(runtime_planner(str(SHIPPED), seed=0), ControllerConfig(deadline_ms=0.001))
    env.reset(0)
    first = c.tick(measured_state(env, 0.0), 0.0)   # inline: planned in the tick, however late
    assert first.source == "plan"
    c.swap_service(worker())
    r = c.tick(measured_state(env, 0.0), 0.0)       # the worker cannot answer in 1 us
    assert r.source.startswith("fallback") and c.stats()["commands_shifted_plan"] == 1
    np.testing.assert_array_equal(r.action, first.plan.actions[1])


def test_a_bad_bundle_fails_the_worker_start_by_the_gates_reason(env, tmp_path):
    b = Path(shutil.copytree(SHIPPED, tmp_path / "b"))
    (b / "manifest.sig").unlink()
    with pytest.raises(WorkerFailed, match="no manifest.sig") as e:
        WorkerPlanService(_spec(b), env.reset(0))
    assert e.value.reason == "unsigned"
    with pytest.raises(WorkerFailed, match="unknown planner settings") as e:
        WorkerPlanService(_spec(planner_settings={"temperature": 2}), env.reset(0))
    assert e.value.reason == "load_failed"


def test_inline_service_is_the_controllers_default(env):
    c = Controller(runtime_planner(str(SHIPPED), seed=0), ControllerConfig(), action_filter=PassThrough())
    assert isinstance(c.service, InlinePlanService) and c.stats()["planner_process"] == "inline"


def test_node_restarts_a_crashed_worker_and_refuses_a_bundle_that_keeps_crashing(tmp_path, monkeypatch):
    """Real time, real DDS: a swap to a bundle whose worker segfaults every 15 plans. Each crash is
    survived (the commands keep coming, the worker restarts); after the third the bundle is refused
    and the shipped one comes back and plans again."""
    from planner_node.ros.bringup import Bringup

    crashy = Path(shutil.copytree(SHIPPED, tmp_path / "crashy"))  # same signed bytes, another path
    monkeypatch.setenv(FAULT_ENV, "crash:15@crashy")
    probe = Probe(next(_domains))
    cmds = probe.msgs["/humanoid/joint_commands"]
    try:
        with Bringup({"lockstep": "false"}, extra={"planner": {}, "sim_bridge": {}}, log_dir=tmp_path):
            probe.wait_for(lambda: int(probe.diagnostics().get("commands_fresh_plan", 0)) > 10, 180,
                           "fresh plans from the worker")
            first_pid = probe.diagnostics()["worker_pid"]
            res = probe.set_param("planner", "bundle_path", str(crashy))
            assert res.successful, res.reason
            try:
                probe.wait_for(lambda: probe.diagnostics().get("rejected_bundle_path_crashed") == "1", 180,
                               "the crashy bundle to be refused")
                probe.wait_for(lambda: probe.diagnostics().get("active_bundle") != str(crashy)
                               and probe.diagnostics().get("worker_pid", "-1") != "-1", 60, "the shipped bundle back")
            except AssertionError:
                raise AssertionError(log_tail(tmp_path))
            fresh = int(probe.diagnostics()["commands_fresh_plan"])
            probe.wait_for(lambda: int(probe.diagnostics().get("commands_fresh_plan", 0)) > fresh + 30, 60,
                           "fresh plans after the revert")
            again = probe.set_param("planner", "bundle_path", str(crashy))
            d = probe.diagnostics()
    finally:
        probe.close()
    assert not again.successful and again.reason.startswith("bundle_path: crashed:"), again.reason
    assert int(d["worker_restarts"]) == 3 and d["worker_pid"] not in ("-1", first_pid), d
    assert d["active_bundle"] == str(SHIPPED) or d["active_bundle"].endswith("bundles/default"), d
    assert int(d["fallback_worker_down"]) + int(d["fallback_plan_late"]) > 0, d
    times = [t for t, _ in cmds]
    assert max(np.diff(times)) < BLOCKED_S, "the command stream stopped while a worker was down"
    assert all(np.all(np.isfinite(m.data)) for _, m in cmds)
