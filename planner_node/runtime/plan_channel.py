"""The node <-> planner worker channel: shared memory for arrays, a pipe for doorbells (no torch, no ROS).

Hot path, per slot: the node writes the request (observation, task, command) into the
request buffer ``seq % 2`` and rings the doorbell with ``seq`` (9 bytes on the request pipe); the
worker copies the request out, plans, writes the answer into the answer buffer ``seq % 2`` and
rings back with ``seq``. Nothing on that path is pickled. Double buffering lets the node write
the next request while the worker still reads the last one; each record's ``seq`` field is set
to -1 while it is written and checked again after a copy, so a torn read is detected and
dropped (a newer request or answer is then on its way). The pipe's write and read are system
calls, which order the buffer's bytes before the doorbell on every CPU (x86 and the Jetson's ARM).

Control messages (start-up, threshold, reset, errors) use the same pipes with a JSON payload.
The shared memory is an anonymous ``memfd`` the worker inherits: nothing to name, leak or
unlink, and it is freed when both processes close it.
"""
from __future__ import annotations

import json
import mmap
import os
import select
import struct

import numpy as np

from planner_node import spec
from planner_node.planning import INTENT_DIM, MAX_CANDIDATES
from planner_node.robot.tasks import TASKS

#: Longest plan the channel carries [control steps]; a longer plan is cut here.
MAX_HORIZON = 128
TASK_NAMES = tuple(TASKS)
ERROR_BYTES = 512

REQUEST = np.dtype([("seq", "<i8"), ("slot", "<i8"), ("task", "<i4"), ("has_command", "<i4"),
                    ("command", "<f8", (3,)), ("obs", "<f8", (spec.OBS_DIM,))])
ANSWER = np.dtype([("seq", "<i8"), ("slot", "<i8"), ("n", "<i8"), ("flags", "<i8"), ("g", "<f8"),
                   ("threshold", "<f8"), ("plan_ms", "<f8"), ("score", "<f8"),
                   ("actions", "<f8", (MAX_HORIZON, spec.ACTION_DIM)), ("error", f"S{ERROR_BYTES}"),
                   # the plan's predicted states, where its kind predicts them (planning.intent_of)
                   ("n_intent", "<i8"), ("intent", "<f8", (MAX_HORIZON + 1, INTENT_DIM)),
                   # and for the best other candidates (float32: drawn, never commanded)
                   ("n_candidates", "<i8"), ("candidate_intent", "<f4", (MAX_CANDIDATES, MAX_HORIZON + 1, INTENT_DIM))])
# Answer flags
INTERVENED, ANYTIME_FALLBACK, ERROR, HAS_G, FILTER_ERROR = 1, 2, 4, 8, 16

# Doorbell and control message types (one byte), then a little-endian u32 payload length.
PLAN_REQUEST, THRESHOLD, RESET, EXIT = b"Q", b"T", b"S", b"X"      # node -> worker
READY, FAILED, PLANNED = b"R", b"E", b"P"                         # worker -> node
_HEADER = struct.Struct("<cI")
_SEQ = struct.Struct("<q")


class SharedBuffers:
    """Two request and two answer records in one shared mapping."""

    SIZE = 2 * REQUEST.itemsize + 2 * ANSWER.itemsize

    def __init__(self, fd: int | None = None):
        created = fd is None
        if created:  # the node creates it; the worker inherits the fd (Popen pass_fds)
            fd = os.memfd_create("planner_channel", 0)
            os.ftruncate(fd, self.SIZE)
        self.fd = fd
        self.map = mmap.mmap(fd, self.SIZE)
        self.requests = np.ndarray((2,), REQUEST, buffer=self.map, offset=0)
        self.answers = np.ndarray((2,), ANSWER, buffer=self.map, offset=2 * REQUEST.itemsize)
        if created:
            self.requests["seq"] = -1
            self.answers["seq"] = -1

    def close(self) -> None:
        self.requests = self.answers = None
        try:
            self.map.close()
        except BufferError:  # a view still alive somewhere: the mapping goes with the process
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass

    # -- writes: seq = -1, fill, seq = value (the doorbell follows) ---------------------------------
    def write_request(self, seq: int, slot: int, obs, task: str, command) -> None:
        r = self.requests[seq % 2]
        r["seq"] = -1
        r["slot"] = slot
        r["task"] = TASK_NAMES.index(task)
        r["has_command"] = command is not None
        r["command"] = (0.0, 0.0, 0.0) if command is None else command
        r["obs"] = obs
        r["seq"] = seq

    def read_request(self, seq: int):
        """A copy of request ``seq`` or None if it was overwritten meanwhile."""
        rec = self.requests[seq % 2].copy()
        return rec if rec["seq"] == seq == self.requests[seq % 2]["seq"] else None

    def write_answer(self, seq: int, slot: int, actions=None, score=float("nan"), flags=0, g=float("nan"),
                     threshold=float("nan"), plan_ms=0.0, error: str = "", intent=None, candidate_intent=None) -> None:
        a = self.answers[seq % 2]
        a["seq"] = -1
        n = 0 if actions is None else min(len(actions), MAX_HORIZON)
        a["slot"], a["n"], a["flags"] = slot, n, flags
        a["g"], a["threshold"], a["plan_ms"], a["score"] = g, threshold, plan_ms, score
        if n:
            a["actions"][:n] = actions[:n]
        a["error"] = error.encode("utf-8", "replace")[:ERROR_BYTES]
        k = 0 if intent is None else min(len(intent), MAX_HORIZON + 1)
        a["n_intent"] = k
        if k:
            a["intent"][:k] = intent[:k]
        c = 0 if candidate_intent is None or not k else min(len(candidate_intent), MAX_CANDIDATES)
        a["n_candidates"] = c
        if c:
            a["candidate_intent"][:c, :k] = candidate_intent[:c, :k]
        a["seq"] = seq

    def read_answer(self, seq: int):
        rec = self.answers[seq % 2].copy()
        return rec if rec["seq"] == seq == self.answers[seq % 2]["seq"] else None


def send(fd: int, kind: bytes, payload: bytes = b"") -> None:
    """One framed message (< PIPE_BUF bytes: written whole, never interleaved)."""
    msg = _HEADER.pack(kind, len(payload)) + payload
    if len(msg) > select.PIPE_BUF:
        raise ValueError(f"channel message of {len(msg)} bytes exceeds PIPE_BUF")
    os.write(fd, msg)


def pack_seq(seq: int) -> bytes:
    return _SEQ.pack(seq)


def send_seq(fd: int, kind: bytes, seq: int) -> None:
    send(fd, kind, pack_seq(seq))


def send_json(fd: int, kind: bytes, obj) -> None:
    send(fd, kind, json.dumps(obj).encode()[: select.PIPE_BUF - _HEADER.size])


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError("channel closed")
        out += chunk
    return out


def receive(fd: int, timeout_s: float | None) -> tuple[bytes, bytes] | None:
    """The next (kind, payload), or None when nothing came within ``timeout_s`` (None: block).
    EOFError when the other side is gone."""
    if timeout_s is not None:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
        if not ready:
            return None
    kind, n = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return kind, _read_exact(fd, n) if n else b""


def seq_of(payload: bytes) -> int:
    return _SEQ.unpack(payload)[0]
