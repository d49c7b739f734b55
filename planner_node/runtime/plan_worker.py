"""The planner worker: a bundle's engines, sampling and safety filter in a process of their own.

Started by ``worker_service.WorkerPlanService`` as ``python -m planner_node.runtime.plan_worker``
with the channel's shared memory and two pipe ends inherited (``plan_channel``). It verifies the
bundle itself (the same gate as the node: what runs is what was checked), builds the runtime
planner and filter, warms them on the observation the node left in request buffer 0, says
READY, then answers plan requests until its request pipe closes (the node is gone) or it is
told to exit. Requests that queue up while it plans are dropped for the newest: a plan for an
old slot is worth nothing. No torch, no ROS: a crash in an engine's native code takes down this
process only, and the node's command clock keeps commanding.

Fault injection for tests and drills (``PLANNER_NODE_WORKER_FAULT``): ``crash:N`` raises
SIGSEGV in this process after N plans, ``hang:N`` stops answering after N plans; a suffix
``@TEXT`` applies it only to bundles whose path contains TEXT.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--start-nice" in sys.argv:
    # Before the heavy imports: a swap's new worker loads at low priority, so it does not take
    # the CPU from the worker still serving, nor from the node (whose command clock then waited
    # for the GIL behind a descheduled thread). The node renices it to 0 once it is ready.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[sys.argv.index("--start-nice") + 1]))
    except OSError:  # below the nice value it was started at, without the right: keep that one
        pass

import numpy as np  # noqa: E402

from planner_node.runtime import plan_channel as ch  # noqa: E402

FAULT_ENV = "PLANNER_NODE_WORKER_FAULT"


def _fault(bundle: str) -> tuple[str, int] | None:
    text = os.environ.get(FAULT_ENV, "").strip()
    if not text:
        return None
    what, _, where = text.partition("@")
    kind, _, n = what.partition(":")
    if where and where not in bundle:
        return None
    if kind not in ("crash", "hang"):
        raise ValueError(f"{FAULT_ENV}: {text!r}: expected crash:N or hang:N[@TEXT]")
    return kind, int(n or 0)


def _build(spec: dict):
    from planner_node.control.action_filter import make_filter
    from planner_node.runtime.bundle_gate import BundleGate
    from planner_node.runtime.bundle_planner import runtime_planner
    gate = BundleGate(spec["trusted_keys"], spec["bundle_root"], base=Path(spec["base"]))
    bundle = gate.check(spec["bundle"], spec.get("running_version"), check_graphs=True)
    planner = runtime_planner(bundle, backend=spec["backend"], seed=int(spec["seed"]), **spec["planner_settings"])
    action_filter = make_filter(spec["safety_filter"], spec["safety_filter_config"], bundle=planner.bundle)
    threshold = str(spec.get("safety_filter_threshold", "")).strip()
    if threshold:
        if not hasattr(action_filter, "set_threshold"):
            raise ValueError(f"safety_filter_threshold: filter {spec['safety_filter']!r} has no threshold")
        action_filter.set_threshold(threshold)
    return bundle, planner, action_filter


def _warm_up(planner, chan: ch.SharedBuffers, seed: int, pause_s: float) -> None:
    """A few plans on the node's standing observation (request buffer 0), then a fresh seed."""
    from planner_node.planning import PlanRequest
    rec = chan.read_request(0)
    if rec is not None:
        for _ in range(3):
            planner.plan(PlanRequest(obs=rec["obs"], task=ch.TASK_NAMES[int(rec["task"])]))
            time.sleep(pause_s)  # yield between plans: the serving worker keeps its CPU during a swap
    planner.reset(seed)


def serve(spec: dict, chan: ch.SharedBuffers, req_fd: int, ans_fd: int) -> int:
    from planner_node.control.plan_service import filtered_plan
    from planner_node.planning import PlanRequest
    from planner_node.runtime.bundle_gate import BundleRefused
    try:
        fault = _fault(spec["bundle"])
        bundle, planner, action_filter = _build(spec)
        _warm_up(planner, chan, int(spec["seed"]), float(spec.get("warm_pause_s", 0.005)))
    except BundleRefused as e:
        ch.send_json(ans_fd, ch.FAILED, {"reason": e.reason, "error": str(e)})
        return 2
    except Exception as e:  # noqa: BLE001 - report any load failure to the node, by message
        ch.send_json(ans_fd, ch.FAILED, {"reason": "load_failed", "error": f"{e.__class__.__name__}: {e}"})
        return 2
    ch.send_json(ans_fd, ch.READY, {"pid": os.getpid(), "kind": bundle.manifest["planner"], "horizon": int(planner.H),
                                    "bundle_version": bundle.version})
    plans = 0
    while True:
        try:
            msgs = [ch.receive(req_fd, None)]
            while (m := ch.receive(req_fd, 0.0)) is not None:  # drain: only the newest request counts
                msgs.append(m)
        except EOFError:
            return 0  # the node is gone
        newest = None
        for kind, payload in msgs:
            if kind == ch.EXIT:
                return 0
            if kind == ch.THRESHOLD:
                action_filter.set_threshold(json.loads(payload))  # the node checked it; '' = the bundle's
            elif kind == ch.RESET:
                planner.reset(ch.seq_of(payload))
                action_filter.reset()
                newest = None
            elif kind == ch.PLAN_REQUEST:
                newest = ch.seq_of(payload)
        if newest is None:
            continue
        rec = chan.read_request(newest)
        if rec is None:
            continue  # overwritten while read: the next request's doorbell is on its way
        # No deadline for the planner: the command clock already commands the best plan shifted
        # when this one is late; an anytime fallback here would only repeat that, and push the
        # next fresh plan later. A late plan still feeds the slots after its own.
        request = PlanRequest(obs=rec["obs"], task=ch.TASK_NAMES[int(rec["task"])],
                              command=tuple(float(x) for x in rec["command"]) if rec["has_command"] else None)
        p = filtered_plan(int(rec["slot"]), planner, action_filter, request)
        flags = ((ch.INTERVENED if p.intervened else 0) | (ch.ANYTIME_FALLBACK if p.anytime_fallback else 0)
                 | (ch.ERROR if p.error else 0) | (ch.HAS_G if p.g is not None else 0)
                 | (ch.FILTER_ERROR if p.info.get("filter_error") else 0))
        chan.write_answer(newest, p.slot, p.actions if not p.error else None, p.score, flags,
                          np.nan if p.g is None else p.g,
                          np.nan if p.threshold is None else float(p.threshold), p.plan_ms, p.error or "",
                          intent=p.info.get("intent"), candidate_intent=p.info.get("candidate_intent"))
        ch.send_seq(ans_fd, ch.PLANNED, newest)
        plans += 1
        if fault is not None and plans >= fault[1]:
            if fault[0] == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            while True:  # hang: alive, silent
                time.sleep(3600)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="planner worker (started by the planner node)")
    ap.add_argument("--shm-fd", type=int, required=True)
    ap.add_argument("--request-fd", type=int, required=True)
    ap.add_argument("--answer-fd", type=int, required=True)
    ap.add_argument("--spec", required=True, help="JSON: bundle, backend, seed, settings, filter, trust")
    ap.add_argument("--start-nice", type=int, default=0, help="load at this nice value (set before the imports)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the node stops us
    chan = ch.SharedBuffers(a.shm_fd)
    return serve(json.loads(a.spec), chan, a.request_fd, a.answer_fd)


if __name__ == "__main__":
    sys.exit(main())
