"""The trajectory dataset format: a directory of .npz shards plus ``meta.json``.

Layout (format version 1)::

    DIR/meta.json        format_version, spec_hash, source, tasks (names), shards:
                         [{file, sha256, transitions, episodes}], stats (normalizers)
    DIR/shard_00000.npz  arrays, one row per transition (control step):
        observations (N, 224) float32   obs before the action, spec.OBS_BLOCKS layout
        actions      (N, 56)  float32   normalized position targets in [-1, 1]
        rewards      (N,)     float32   task reward of the next observation
        terminals    (N,)     bool      the robot fell after this action
        timeouts     (N,)     bool      episode cut by its step limit after this action
        episode_ids  (N,)     int32     unique within the dataset
        task_ids     (N,)     int16     index into meta["tasks"]
        commands     (N, 3)   float32   commanded twist (vx, vy, wz) for 'track', else 0

Shards are written atomically (temp + rename) and listed with their sha256, so a
truncated or edited shard is refused by name. Normalization statistics (z-score with
std + 1e-4, as in H-GAP) are computed over all shards when the dataset is finalized.
No pickle: ``np.load(..., allow_pickle=False)``.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from planner_node import spec
from planner_node.atomic import atomic_path, sha256_file, write_json

FORMAT_VERSION = 1
FIELDS = {  # name: (trailing shape, dtype)
    "observations": ((spec.OBS_DIM,), np.float32),
    "actions": ((spec.ACTION_DIM,), np.float32),
    "rewards": ((), np.float32),
    "terminals": ((), np.bool_),
    "timeouts": ((), np.bool_),
    "episode_ids": ((), np.int32),
    "task_ids": ((), np.int16),
    "commands": ((3,), np.float32),
}
STD_EPS = 1e-4


class DatasetError(ValueError):
    """A dataset file or key is missing, corrupt, or made for another spec."""


def validate_arrays(arrays: dict[str, np.ndarray], where: str) -> int:
    n = None
    for name, (shape, _dtype) in FIELDS.items():
        if name not in arrays:
            raise DatasetError(f"{where}: missing key {name!r}")
        a = arrays[name]
        if a.shape[1:] != shape:
            raise DatasetError(f"{where}: key {name!r} has shape {a.shape}, expected (N, *{shape})")
        n = a.shape[0] if n is None else n
        if a.shape[0] != n:
            raise DatasetError(f"{where}: key {name!r} has {a.shape[0]} rows, expected {n}")
    for name in ("observations", "actions", "rewards", "commands"):
        if not np.all(np.isfinite(arrays[name])):
            raise DatasetError(f"{where}: key {name!r} contains NaN or Inf")
    return int(n)


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Atomically write one shard; returns its meta entry."""
    missing = [k for k in FIELDS if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing key {missing[0]!r}")
    arrays = {k: np.asarray(arrays[k], dtype=FIELDS[k][1]) for k in FIELDS}
    n = validate_arrays(arrays, str(path))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return {"file": path.name, "sha256": sha256_file(path), "transitions": n,
            "episodes": int(len(np.unique(arrays["episode_ids"])))}


def read_shard(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: shard file is missing")
    if sha256 is not None and sha256_file(path) != sha256:
        raise DatasetError(f"{path}: sha256 mismatch (truncated or modified shard)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable shard ({e})") from e
    validate_arrays(arrays, str(path))
    return arrays


def compute_stats(observations: np.ndarray, actions: np.ndarray) -> dict:
    return {"obs_mean": observations.mean(0).tolist(), "obs_std": (observations.std(0) + STD_EPS).tolist(),
            "act_mean": actions.mean(0).tolist(), "act_std": (actions.std(0) + STD_EPS).tolist(),
            "std_eps": STD_EPS}


def finalize(out: Path, shard_entries: list[dict], tasks: list[str], source: dict) -> dict:
    """Compute normalizers over the shards and atomically write meta.json."""
    obs, act = [], []
    for e in shard_entries:
        a = read_shard(out / e["file"], e["sha256"])
        obs.append(a["observations"])
        act.append(a["actions"])
    meta = {"format_version": FORMAT_VERSION, "spec_hash": spec.SPEC_HASH, "tasks": list(tasks),
            "source": source, "shards": shard_entries,
            "transitions": int(sum(e["transitions"] for e in shard_entries)),
            "stats": compute_stats(np.concatenate(obs), np.concatenate(act))}
    write_json(out / "meta.json", meta)
    return meta


class Dataset:
    """A loaded, verified dataset (all shards concatenated in memory)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{meta_path}: missing (not a dataset directory, or generation unfinished)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path}: not valid JSON ({e})") from e
        for key in ("format_version", "spec_hash", "tasks", "shards", "stats"):
            if key not in self.meta:
                raise DatasetError(f"{meta_path}: missing key {key!r}")
        if self.meta["format_version"] != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format_version {self.meta['format_version']} "
                               f"is not supported (expected {FORMAT_VERSION})")
        try:
            spec.check_spec_hash(self.meta["spec_hash"], str(meta_path))
        except ValueError as e:
            raise DatasetError(str(e)) from e
        parts = []
        for e in self.meta["shards"]:
            name = Path(e["file"])
            if name.name != e["file"]:
                raise DatasetError(f"{meta_path}: shard path {e['file']!r} escapes the dataset directory")
            parts.append(read_shard(self.root / name, e["sha256"]))
        self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
        self.stats = {k: np.asarray(v) for k, v in self.meta["stats"].items() if k != "std_eps"}

    def __len__(self) -> int:
        return len(self.arrays["rewards"])

    @property
    def tasks(self) -> list[str]:
        return list(self.meta["tasks"])

    def episodes(self) -> list[np.ndarray]:
        """Row indices of each episode, in order."""
        ids = self.arrays["episode_ids"]
        bounds = np.flatnonzero(np.diff(ids)) + 1
        return np.split(np.arange(len(ids)), bounds)


def merge(sources: list[str | Path], out: str | Path) -> dict:
    """Concatenate verified datasets into a new one (e.g. expert data from two recipes).

    Every source is verified (sha256 of each shard) and must share the spec and the task list;
    episode ids are renumbered so episodes stay distinct; normalizers are recomputed over the
    union. Refuses to write into a non-empty directory; meta.json is written last, so a killed
    merge leaves no dataset that loads.
    """
    if len(sources) < 2:
        raise DatasetError("merge: give at least two source datasets")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: directory is not empty; refusing to overwrite it")
    loaded = [Dataset(s) for s in sources]
    tasks = loaded[0].tasks
    for s, ds in zip(sources, loaded):
        if ds.tasks != tasks:
            raise DatasetError(f"{s}: task list {ds.tasks} differs from {sources[0]}'s {tasks}")
    out.mkdir(parents=True, exist_ok=True)
    entries, next_id = [], 0
    for ds in loaded:
        for ep_rows in ds.episodes():
            arrays = {k: ds.arrays[k][ep_rows] for k in FIELDS}
            arrays["episode_ids"] = np.full(len(ep_rows), next_id)
            entries.append(write_shard(out / f"shard_{next_id:05d}.npz", arrays))
            next_id += 1
    source = {"kind": "merge", "sources": [{"path": str(Path(s).resolve()), "source": ds.meta.get("source"),
                                            "transitions": len(ds)} for s, ds in zip(sources, loaded)]}
    return finalize(out, entries, tasks, source)
