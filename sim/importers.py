"""Import real-world dataset layouts into our format (no network: the user brings the files).

* ``d4rl``: one HDF5 file with top-level ``observations`` (N, 224), ``actions`` (N, 56),
  ``rewards`` (N,), ``terminals`` (N,), ``timeouts`` (N,); episodes end at a terminal or
  timeout (D4RL's layout).
* ``mocapact``: MoCapAct's rollout HDF5 files: ``observable_indices/walker/<block>``
  holds each observation block's column indices into the per-rollout
  ``<clip>/<k>/observations/proprioceptive`` matrix (T or T+1 rows); ``<clip>/<k>/actions``
  (T, 56) and ``<clip>/<k>/rewards`` (T,); ``<clip>/early_termination`` (per rollout) marks
  rollouts that ended by falling. Blocks are gathered into spec order by name.

Every missing key is refused naming the file and key; the output manifest must not exist
(nothing is overwritten); shards are content-named in the store next to it, like generated ones.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from planner_node import spec
from planner_node.dataset import DatasetError, finalize, manifest_path, shard_dir, write_shard


def _get(f: h5py.File | h5py.Group, key: str, src: Path) -> np.ndarray:
    if key not in f:
        raise DatasetError(f"{src}: missing HDF5 key {f.name.rstrip('/')}/{key}")
    return f[key][()]


def _check_dims(src: Path, key: str, arr: np.ndarray, dim: int) -> None:
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DatasetError(f"{src}: key {key!r} has shape {arr.shape}; this robot needs (N, {dim})")


def _episode_rows(obs, act, rew, term, tout, ep, task=0):
    n = len(rew)
    return {"observations": obs, "actions": act, "rewards": rew, "terminals": term, "timeouts": tout,
            "episode_ids": np.full(n, ep), "task_ids": np.full(n, task), "commands": np.zeros((n, 3))}


def import_d4rl(src: Path, out: Path) -> dict:
    """``out``: the manifest to write; shards go to ``shards/`` next to it."""
    with h5py.File(src, "r") as f:
        obs = _get(f, "observations", src)
        act = _get(f, "actions", src)
        rew = _get(f, "rewards", src)
        term = _get(f, "terminals", src).astype(bool)
        tout = _get(f, "timeouts", src).astype(bool)
    _check_dims(src, "observations", obs, spec.OBS_DIM)
    _check_dims(src, "actions", act, spec.ACTION_DIM)
    ends = np.flatnonzero(term | tout) + 1
    if len(ends) == 0 or ends[-1] != len(rew):
        ends = np.append(ends, len(rew))
    starts = np.concatenate([[0], ends[:-1]])
    arrays = {"observations": [], "actions": [], "rewards": [], "terminals": [], "timeouts": [],
              "episode_ids": [], "task_ids": [], "commands": []}
    for ep, (a, b) in enumerate(zip(starts, ends)):
        for k, v in _episode_rows(obs[a:b], act[a:b], rew[a:b], term[a:b], tout[a:b], ep).items():
            arrays[k].append(v)
    entry = write_shard(shard_dir(out), {k: np.concatenate(v) for k, v in arrays.items()})
    return finalize(out, [entry], ["imported"], {"kind": "d4rl", "file": str(src)})


def import_mocapact(src: Path, out: Path) -> dict:
    entries, ep = [], 0
    with h5py.File(src, "r") as f:
        if "observable_indices" not in f or "walker" not in f["observable_indices"]:
            raise DatasetError(f"{src}: missing HDF5 key observable_indices/walker")
        idx_group = f["observable_indices/walker"]
        cols = []
        for name, size in spec.OBS_BLOCKS:
            if name not in idx_group:
                raise DatasetError(f"{src}: missing HDF5 key observable_indices/walker/{name}")
            c = idx_group[name][()].astype(np.int64).reshape(-1)
            if len(c) != size:
                raise DatasetError(f"{src}: observable_indices/walker/{name} has {len(c)} columns, expected {size}")
            cols.append(c)
        cols = np.concatenate(cols)
        clips = sorted(k for k in f.keys() if k != "observable_indices" and isinstance(f[k], h5py.Group))
        if not clips:
            raise DatasetError(f"{src}: no clip groups found")
        for clip in clips:
            g = f[clip]
            early = _get(g, "early_termination", src).astype(bool).reshape(-1)
            rollouts = sorted((k for k in g.keys() if k.isdigit()), key=int)
            for k in rollouts:
                r = g[k]
                full = _get(r, "observations/proprioceptive", src)
                act = _get(r, "actions", src)
                rew = _get(r, "rewards", src).reshape(-1)
                _check_dims(src, f"{clip}/{k}/actions", act, spec.ACTION_DIM)
                if full.ndim != 2 or full.shape[1] <= cols.max():
                    raise DatasetError(f"{src}: {clip}/{k}/observations/proprioceptive has shape "
                                       f"{full.shape}; indices need {cols.max() + 1} columns")
                T = len(act)
                if len(full) not in (T, T + 1) or len(rew) != T:
                    raise DatasetError(f"{src}: {clip}/{k}: {len(full)} observations, {T} actions and "
                                       f"{len(rew)} rewards do not line up")
                obs = full[:T, cols]
                fell = bool(early[int(k)]) if int(k) < len(early) else False
                term = np.zeros(T, bool)
                tout = np.zeros(T, bool)
                (term if fell else tout)[-1] = True
                rows = _episode_rows(obs, act, rew, term, tout, ep)
                entries.append(write_shard(shard_dir(out), rows))
                ep += 1
    return finalize(out, entries, ["imported"], {"kind": "mocapact", "file": str(src)})


IMPORTERS = {"d4rl": import_d4rl, "mocapact": import_mocapact}


def import_dataset(fmt: str, src: str | Path, out: str | Path) -> dict:
    if fmt not in IMPORTERS:
        raise KeyError(f"unknown format {fmt!r}; valid formats: {', '.join(IMPORTERS)}")
    src, out = Path(src), manifest_path(out)
    if not src.is_file():
        raise DatasetError(f"{src}: no such file")
    if out.exists():
        raise DatasetError(f"{out}: already exists; refusing to overwrite it")
    # Import into a sibling temp store, then move the shards and the manifest: a failed import
    # leaves nothing behind.
    tmp = out.parent / f".{out.stem}.importing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = IMPORTERS[fmt](src, tmp / out.name)
        store = shard_dir(out)
        store.mkdir(parents=True, exist_ok=True)
        for shard in shard_dir(tmp / out.name).iterdir():
            os.replace(shard, store / shard.name)  # content-named: an existing one is the same bytes
        os.replace(tmp / out.name, out)
        return meta
    except OSError as e:
        raise DatasetError(f"{src}: not a readable HDF5 file ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
