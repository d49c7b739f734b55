"""The node's side of the planner worker: a ``PlanService`` whose planner runs in a child process.

``WorkerPlanService(spec, warm_obs)`` starts ``plan_worker`` and blocks until the worker has
verified, loaded and warmed its bundle (``WorkerFailed`` names why not). Then, per slot,
``submit`` writes the request into shared memory and rings, and ``collect`` waits on the answer
pipe until the slot's deadline, never longer. ``alive`` is a ``waitpid`` without blocking; a
worker that has left requests unanswered for ``hang_s`` is killed by ``collect``, so a hang
becomes a death the node handles like a crash (fallback, restart, count).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from planner_node.control.plan_service import Planned, PlanService
from planner_node.planning import PlanRequest
from planner_node.runtime import plan_channel as ch


class WorkerFailed(RuntimeError):
    """The worker did not come up: ``reason`` is a bundle gate reason, ``load_failed`` or ``died``."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class WorkerSpec:
    """Everything the worker needs to build the same planner the node would (JSON on its argv)."""

    bundle: str
    backend: str = "onnxruntime"
    seed: int = 0
    planner_settings: dict = field(default_factory=dict)
    safety_filter: str = "none"
    safety_filter_config: str = "{}"
    safety_filter_threshold: str = ""
    trusted_keys: list = field(default_factory=list)
    bundle_root: str = ""
    base: str = "."                     # where relative trusted_keys resolve (the share dir)
    running_version: int | None = None  # refuse an older bundle_version (rollback), when signed
    warm_pause_s: float = 0.005
    start_nice: int = 0                 # load and warm up at this nice value, then run at 0 (swaps)


#: A new worker loads at this nice value when it can be reniced back to 0 afterwards.
SWAP_NICE = 10


def can_renice_back() -> bool:
    """Whether this process may lower a child's nice value again (root, CAP_SYS_NICE approximated
    by euid 0, or an RLIMIT_NICE that reaches nice 0): only then does a worker start niced."""
    import resource
    try:
        return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20
    except (AttributeError, OSError, ValueError):
        return False


class WorkerPlanService(PlanService):
    mode = "worker"

    def __init__(self, spec: WorkerSpec, warm_obs: np.ndarray, warm_task: str = "stand",
                 ready_timeout_s: float = 120.0, hang_s: float = 0.3):
        self.spec, self.hang_s = spec, float(hang_s)
        self.chan = ch.SharedBuffers()
        self.chan.write_request(0, -1, warm_obs, warm_task, None)
        req_r, self._req_w = os.pipe()
        self._ans_r, ans_w = os.pipe()
        cmd = [sys.executable, "-m", "planner_node.runtime.plan_worker", "--shm-fd", str(self.chan.fd),
               "--request-fd", str(req_r), "--answer-fd", str(ans_w), "--spec", json.dumps(asdict(spec))]
        # always absolute: a node that raised its own threads' priority (command_clock_priority)
        # does not hand it down to the planner
        cmd += ["--start-nice", str(spec.start_nice)]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(self.chan.fd, req_r, ans_w), close_fds=True)
        finally:
            os.close(req_r)
            os.close(ans_w)
        self._seq = 0
        self._latest: Planned | None = None
        self._waiting_since: float | None = None  # first unanswered submit since the last answer
        self._dead = False
        self.killed_for_hang = False
        self.info = self._await_ready(ready_timeout_s)
        if spec.start_nice:
            try:  # ready: it serves at normal priority
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, 0)
            except OSError as e:
                self.info["renice"] = f"stays at nice {spec.start_nice}: {e}"

    def _await_ready(self, timeout_s: float) -> dict:
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                self.close()
                raise WorkerFailed(f"{self.spec.bundle}: the worker was not ready within {timeout_s:.0f} s", "load_failed")
            try:
                msg = ch.receive(self._ans_r, min(left, 0.2))
            except EOFError:
                msg = None
            if msg is not None:
                kind, payload = msg
                body = json.loads(payload)
                if kind == ch.READY:
                    return body
                if kind == ch.FAILED:
                    self.close()
                    raise WorkerFailed(body["error"], body["reason"])
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.close()
                raise WorkerFailed(f"{self.spec.bundle}: the worker exited ({code}) before it was ready", "load_failed")

    # -- the hot path --------------------------------------------------------------------------------
    def submit(self, slot: int, request: PlanRequest) -> None:
        self._seq += 1
        self.chan.write_request(self._seq, slot, request.obs, request.task, request.command)
        try:
            ch.send_seq(self._req_w, ch.PLAN_REQUEST, self._seq)
        except OSError:  # the worker is gone (broken pipe): alive says so
            self._dead = True
            return
        if self._waiting_since is None:
            self._waiting_since = time.perf_counter()

    def collect(self, slot: int, until: float | None) -> Planned | None:
        while not self._dead:
            now = time.perf_counter()
            if until is not None:
                timeout = max(0.0, until - now)
            else:  # lockstep: wait for the answer, checking now and then that the worker lives
                timeout = 0.05
            try:
                msg = ch.receive(self._ans_r, timeout)
            except EOFError:
                self._dead = True
                break
            if msg is None:
                if self.busy_s > self.hang_s:
                    self.kill()  # a hang becomes a death: the node restarts the worker
                    self.killed_for_hang = True
                    break
                if until is not None or self.proc.poll() is not None:
                    break
                continue
            kind, payload = msg
            if kind != ch.PLANNED:
                continue
            seq = ch.seq_of(payload)
            rec = self.chan.read_answer(seq)
            if seq == self._seq:
                self._waiting_since = None
            elif self._waiting_since is not None:
                self._waiting_since = time.perf_counter()  # answered an older one: newer still pending
            if rec is None:
                continue
            self._latest = _planned(rec)
            if self._latest.slot == slot:
                break
        return self._latest

    @property
    def busy_s(self) -> float:
        """How long requests have waited unanswered [s] (0 when none waits)."""
        return 0.0 if self._waiting_since is None else time.perf_counter() - self._waiting_since

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_reason(self) -> str:
        code = self.proc.poll()
        if self.killed_for_hang:
            return f"hung (no answer for {self.hang_s * 1e3:.0f} ms; killed)"
        if code is None:
            return "pipe closed"
        return f"killed by signal {-code}" if code < 0 else f"exited with {code}"

    # -- control ----------------------------------------------------------------------------------
    def set_threshold(self, value: str) -> None:
        self._control(ch.THRESHOLD, json.dumps(value).encode())

    def reset(self, seed: int | None = None) -> None:
        self._latest, self._waiting_since = None, None
        self._control(ch.RESET, ch.pack_seq(int(seed or 0)))

    def _control(self, kind: bytes, payload: bytes) -> None:
        try:
            ch.send(self._req_w, kind, payload)
        except OSError:
            self._dead = True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._dead = True

    def close(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit, then make sure of it, and release the channel."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            ch.send(self._req_w, ch.EXIT)
        except OSError:
            pass
        for fd in (self._req_w, self._ans_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)
        self._dead = True
        self.chan.close()


def _planned(rec) -> Planned:
    flags, n = int(rec["flags"]), int(rec["n"])
    err = bytes(rec["error"]).decode("utf-8", "replace") or None
    g, thr = float(rec["g"]), float(rec["threshold"])
    info = {"filter_error": True} if flags & ch.FILTER_ERROR else {}
    k = int(rec["n_intent"])
    if k and not flags & ch.ERROR:
        info["intent"] = np.array(rec["intent"][:k])
        c = int(rec["n_candidates"])
        if c:
            info["candidate_intent"] = np.array(rec["candidate_intent"][:c, :k], dtype=np.float64)
    return Planned(int(rec["slot"]), np.array(rec["actions"][:n]) if not flags & ch.ERROR else np.zeros((0, 0)),
                   float(rec["score"]), bool(flags & ch.ANYTIME_FALLBACK), bool(flags & ch.INTERVENED),
                   g if flags & ch.HAS_G else None, None if np.isnan(thr) else thr, float(rec["plan_ms"]),
                   err if flags & ch.ERROR else None, info=info)
