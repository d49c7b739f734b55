"""The trajectory dataset format: content-named shards in a store, listed by JSON manifests.

Layout (format version 2)::

    STORE/shards/<sha256>.npz   immutable shards, each named by the sha256 of its bytes
    STORE/<name>.json           a dataset: format_version, spec_hash, tasks (names), source
                                (recipe and seed, or merge sources), shards: [{sha256,
                                transitions, episodes}], dataset_sha256, stats (normalizers)

A dataset is its manifest; its shards are found by hash in ``shards/`` next to it, so a
manifest holds no paths that could escape the store. A new round (a DAgger round, a walking
recipe) only adds shard files and a manifest; a merged dataset lists the shards of its sources
and copies nothing. ``dataset_sha256`` (over the spec, the tasks and the ordered shard hashes)
names the data on a bundle's card.

A shard holds one episode or more, one row per transition (control step)::

    observations (N, 224) float16   obs before the action, spec.OBS_BLOCKS layout
    actions      (N, 56)  float16   normalized position targets in [-1, 1]
    rewards      (N,)     float32   task reward of the next observation
    terminals    (N,)     bool      the robot fell after this action
    timeouts     (N,)     bool      episode cut by its step limit after this action
    episode_ids  (N,)     int32     episode within the shard (made unique over the dataset on load)
    task_ids     (N,)     int16     index into the manifest's tasks
    commands     (N, 3)   float32   commanded twist (vx, vy, wz) for 'track', else 0

and, in the shards of label rounds that record plans (recipe ``plan_labels``), optionally::

    plans        (N, K, 56) float16  the expert's first K planned actions at the row's state
                                     (plans[:, 0] is the row's action, its label)

and, in the shards of policy rollouts (recipe ``rollout``; MoCapAct's ``mean_actions``)::

    clean_actions (N, 56) float16   the policy's own action at the row's state, before the
                                    episode's exploration noise (``actions`` is what ran)
    noise_std     (N,)    float32   the episode's exploration noise (std, action units)
    task_weight   (N,)    float32   the episode's task weight (the policy's ``task_weights``)

float16 keeps 11 significant bits: the round trip changes an action by at most 2.4e-4 and an
observation by at most 2^-11 of its magnitude (``bench/data_throughput.py`` prints the error in
units of each feature's standard deviation, which is what training sees). Arrays are loaded as
float32. Shards are deflate-compressed zip files written byte-for-byte deterministically (fixed
member timestamps), so the same episode always gets the same name. Writes are atomic (temp +
rename); every shard is checked against its hash when loaded, and a truncated or edited shard is
refused by name. No pickle: ``np.load(..., allow_pickle=False)``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from planner_node import spec
from planner_node.atomic import sha256_file, write_json

FORMAT_VERSION = 2
FIELDS = {  # name: (trailing shape, stored dtype)
    "observations": ((spec.OBS_DIM,), np.float16),
    "actions": ((spec.ACTION_DIM,), np.float16),
    "rewards": ((), np.float32),
    "terminals": ((), np.bool_),
    "timeouts": ((), np.bool_),
    "episode_ids": ((), np.int32),
    "task_ids": ((), np.int16),
    "commands": ((3,), np.float32),
}
# Optional fields: (shape after the row axis, stored dtype); None: an axis whose length varies
# by shard (>= 1: plan steps K).
OPTIONAL_FIELDS = {"plans": ((None, spec.ACTION_DIM), np.float16),
                   "clean_actions": ((spec.ACTION_DIM,), np.float16),
                   "noise_std": ((), np.float32),
                   "task_weight": ((), np.float32)}
#: the optional fields of a fixed row shape, which ``Dataset.optional`` concatenates
ROW_FIELDS = ("clean_actions", "noise_std", "task_weight")


def fields_of(arrays: dict) -> dict:
    """The fields a shard holds: every required one, and the optional ones it has."""
    return {**FIELDS, **{k: v for k, v in OPTIONAL_FIELDS.items() if k in arrays}}

LOADED_DTYPE = {"observations": np.float32, "actions": np.float32, "plans": np.float32, "clean_actions": np.float32}  # widened on load
STD_EPS = 1e-4
SHARDS = "shards"
MANIFEST_KEYS = ("format_version", "spec_hash", "tasks", "source", "shards", "transitions",
                 "dataset_sha256", "stats")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same arrays, same bytes, same name


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
    for name, (shape, _dtype) in OPTIONAL_FIELDS.items():
        if name not in arrays:
            continue
        a = arrays[name]
        fits = a.ndim == 1 + len(shape) and a.shape[0] == n and all(
            (d >= 1) if want is None else (d == want) for d, want in zip(a.shape[1:], shape))
        if not fits:
            dims = ", ".join(["N"] + ["K >= 1" if d is None else str(d) for d in shape])
            raise DatasetError(f"{where}: key {name!r} has shape {a.shape}, expected ({dims}) with N = {n}")
    for name in ("observations", "actions", "rewards", "commands", *(k for k in fields_of(arrays) if k not in FIELDS)):
        if not np.all(np.isfinite(arrays[name])):
            raise DatasetError(f"{where}: key {name!r} contains NaN or Inf")
    return int(n)


def manifest_path(path: str | os.PathLike) -> Path:
    """``data/large`` or ``data/large.json`` -> ``data/large.json``."""
    p = Path(path)
    return p if p.suffix == ".json" else p.with_name(p.name + ".json")


def shard_dir(manifest: str | os.PathLike) -> Path:
    return manifest_path(manifest).parent / SHARDS


def encode(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Cast to the stored dtypes and validate (refusing values float16 cannot hold)."""
    missing = [k for k in FIELDS if k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing key {missing[0]!r}")
    out = {}
    for k, (_shape, dtype) in fields_of(arrays).items():
        a = np.asarray(arrays[k])
        if dtype == np.float16 and np.any(np.abs(a[np.isfinite(a)]) > np.finfo(np.float16).max):
            raise DatasetError(f"{where}: key {k!r} has values beyond float16's range")
        out[k] = a.astype(dtype)
    validate_arrays(out, where)
    return out


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for k in fields_of(arrays):
            info = zipfile.ZipInfo(f"{k}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[k]), allow_pickle=False)


def write_shard(store: str | os.PathLike, arrays: dict[str, np.ndarray]) -> dict:
    """Write one shard into ``store`` under its content name (atomically; a shard that is
    already there is kept as it is: same name, same bytes). Returns its manifest entry."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    enc = encode(arrays, str(store))
    fd, tmp = tempfile.mkstemp(prefix=".shard.", suffix=".tmp", dir=store)
    os.close(fd)
    try:
        _write_npz(Path(tmp), enc)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        final = store / f"{digest}.npz"
        if final.exists() and sha256_file(final) == digest:
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"sha256": digest, "transitions": int(len(enc["rewards"])),
            "episodes": int(len(np.unique(enc["episode_ids"])))}


def is_sha256(name: str) -> bool:
    return isinstance(name, str) and len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def read_shard(store: str | os.PathLike, sha256: str, verify: bool = True) -> dict[str, np.ndarray]:
    """The shard named ``sha256`` in ``store``, checked against its name, widened to float32."""
    if not is_sha256(sha256):
        raise DatasetError(f"{store}: shard name {sha256!r} is not a sha256 hex digest")
    path = Path(store) / f"{sha256}.npz"
    if not path.is_file():
        raise DatasetError(f"{path}: shard file is missing")
    if verify and sha256_file(path) != sha256:
        raise DatasetError(f"{path}: sha256 mismatch (truncated or modified shard)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable shard ({e})") from e
    validate_arrays(arrays, str(path))
    return {k: v.astype(LOADED_DTYPE.get(k, v.dtype)) for k, v in arrays.items()
            if k in FIELDS or k in OPTIONAL_FIELDS}


def compute_stats(observations: np.ndarray, actions: np.ndarray) -> dict:
    return {"obs_mean": observations.mean(0).tolist(), "obs_std": (observations.std(0) + STD_EPS).tolist(),
            "act_mean": actions.mean(0).tolist(), "act_std": (actions.std(0) + STD_EPS).tolist(),
            "std_eps": STD_EPS}


def dataset_sha256(tasks: list[str], shard_hashes: list[str]) -> str:
    """The data's name: the spec, the task list and the ordered shard hashes."""
    blob = json.dumps({"spec_hash": spec.SPEC_HASH, "tasks": list(tasks), "shards": list(shard_hashes)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def finalize(manifest: str | os.PathLike, shard_entries: list[dict], tasks: list[str], source: dict) -> dict:
    """Compute normalizers over the shards (as loaded: after the float16 round trip) and
    atomically write the manifest."""
    manifest = manifest_path(manifest)
    store = shard_dir(manifest)
    obs, act = [], []
    for e in shard_entries:
        a = read_shard(store, e["sha256"])
        obs.append(a["observations"])
        act.append(a["actions"])
    meta = {"format_version": FORMAT_VERSION, "spec_hash": spec.SPEC_HASH, "tasks": list(tasks),
            "source": source, "shards": shard_entries,
            "transitions": int(sum(e["transitions"] for e in shard_entries)),
            "dataset_sha256": dataset_sha256(tasks, [e["sha256"] for e in shard_entries]),
            "stats": compute_stats(np.concatenate(obs), np.concatenate(act))}
    write_json(manifest, meta)
    return meta


def read_manifest(path: str | os.PathLike) -> dict:
    """A manifest, checked for format, spec and keys (shards are not read)."""
    mpath = manifest_path(path)
    if not mpath.is_file():
        legacy = Path(path) / "meta.json"
        if legacy.is_file():
            raise DatasetError(f"{legacy}: a format-1 dataset directory (per-index shards); this version reads "
                               f"format-{FORMAT_VERSION} manifests (STORE/NAME.json + STORE/shards/): regenerate it")
        raise DatasetError(f"{mpath}: missing (not a dataset, or its generation is unfinished)")
    try:
        meta = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{mpath}: not a dataset manifest (a JSON object is expected)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{mpath}: format_version {meta.get('format_version')!r} "
                           f"is not supported (expected {FORMAT_VERSION})")
    for key in MANIFEST_KEYS:
        if key not in meta:
            raise DatasetError(f"{mpath}: missing key {key!r}")
    unknown = sorted(set(meta) - set(MANIFEST_KEYS))
    if unknown:
        raise DatasetError(f"{mpath}: unknown key {unknown[0]!r}")
    try:
        spec.check_spec_hash(meta["spec_hash"], str(mpath))
    except ValueError as e:
        raise DatasetError(str(e)) from e
    hashes = [e.get("sha256") for e in meta["shards"]]
    if dataset_sha256(meta["tasks"], hashes) != meta["dataset_sha256"]:
        raise DatasetError(f"{mpath}: dataset_sha256 does not match its shard list (edited manifest)")
    return meta


class Dataset:
    """A loaded, verified dataset (all shards concatenated in memory, float32)."""

    def __init__(self, path: str | os.PathLike):
        self.path = manifest_path(path)
        self.meta = read_manifest(path)
        store = shard_dir(self.path)
        parts, next_id = [], 0
        for e in self.meta["shards"]:
            a = read_shard(store, e["sha256"])
            # Episode ids are per shard; number them over the dataset in manifest order.
            _, local = np.unique(a["episode_ids"], return_inverse=True)
            a["episode_ids"] = (local + next_id).astype(np.int32)
            next_id += int(local.max()) + 1 if len(local) else 0
            parts.append(a)
        self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
        # The expert's plans where shards recorded them: plan_steps (N,) says how many steps a
        # row has (0 = none); the dense (N, K, 56) array is built only when asked for (``plans``).
        self.plan_steps = np.concatenate([np.full(len(p["rewards"]), p["plans"].shape[1] if "plans" in p else 0)
                                          for p in parts]) if parts else np.zeros(0, np.int64)
        starts = np.cumsum([0] + [len(p["rewards"]) for p in parts])
        self._plan_parts = [(int(start), p["plans"]) for start, p in zip(starts, parts) if "plans" in p]
        self._optional = {name: [(int(start), p[name]) for start, p in zip(starts, parts) if name in p]
                          for name in ROW_FIELDS}
        self.stats = {k: np.asarray(v) for k, v in self.meta["stats"].items() if k != "std_eps"}

    def __len__(self) -> int:
        return len(self.arrays["rewards"])

    @functools.cached_property
    def plans(self) -> np.ndarray | None:
        """(N, K, 56) float32: the recorded plans, K the longest, zero past a row's ``plan_steps``;
        None if no shard recorded any."""
        if not self._plan_parts:
            return None
        out = np.zeros((len(self), max(p.shape[1] for _, p in self._plan_parts), spec.ACTION_DIM), np.float32)
        for start, p in self._plan_parts:
            out[start:start + len(p), : p.shape[1]] = p
        return out

    def optional(self, name: str) -> np.ndarray | None:
        """(N, ...) float32: the optional row field ``name`` (``ROW_FIELDS``), NaN in the rows of
        shards that did not record it; None if none did."""
        if name not in ROW_FIELDS:
            raise KeyError(f"{name!r} is not an optional row field; valid: {', '.join(ROW_FIELDS)}")
        parts = self._optional[name]
        if not parts:
            return None
        shape = OPTIONAL_FIELDS[name][0]
        out = np.full((len(self), *shape), np.nan, np.float32)
        for start, p in parts:
            out[start:start + len(p)] = p
        return out

    def plans_at(self, rows: np.ndarray) -> np.ndarray | None:
        """(len(rows), K, 56) float32: the recorded plans of these rows only (``plans`` builds the
        dense array for the whole dataset, hundreds of MB for a large one); None if none recorded."""
        if not self._plan_parts:
            return None
        rows = np.asarray(rows)
        out = np.zeros((len(rows), max(p.shape[1] for _, p in self._plan_parts), spec.ACTION_DIM), np.float32)
        for start, p in self._plan_parts:
            hit = (rows >= start) & (rows < start + len(p))
            out[hit, : p.shape[1]] = p[rows[hit] - start]
        return out

    @property
    def sha256(self) -> str:
        return self.meta["dataset_sha256"]

    @property
    def tasks(self) -> list[str]:
        return list(self.meta["tasks"])

    def _recipes(self) -> list[tuple[dict, int]]:
        """Each original source's recipe and transition count, in row order, through nested
        merges (a merge lists its sources' shards in order, recording each one's count)."""
        def walk(src: dict, n: int) -> list[tuple[dict, int]]:
            if src.get("kind") == "merge":
                return [x for s in src.get("sources", []) for x in walk(s.get("source") or {}, int(s.get("transitions", 0)))]
            return [(src.get("recipe") or {}, n)]
        return walk(self.meta.get("source") or {}, len(self))

    def label_sources(self) -> list[str]:
        """The recipes whose recorded actions are an expert's labels at states another controller
        drove to, not the actions executed (``labels="expert"``)."""
        return [str(r.get("name")) for r, _ in self._recipes() if r.get("labels") == "expert"]

    def _per_row(self, value, empty: np.ndarray) -> np.ndarray:
        """(N,): ``value(recipe)`` of the source each row comes from; each source's rows are one block."""
        parts = [np.full(n, value(r)) for r, n in self._recipes()]
        rows = np.concatenate(parts) if parts else empty
        if len(rows) != len(self):
            raise DatasetError(f"{self.path}: its merge sources count {len(rows)} transitions, its shards {len(self)}")
        return rows

    def label_rows(self) -> np.ndarray:
        """(N,) bool: the rows whose action is an expert's label."""
        return self._per_row(lambda r: r.get("labels") == "expert", np.zeros(0, bool))

    def recipe_rows(self) -> np.ndarray:
        """(N,) str: the name of the recipe that made each row ('' for imported data)."""
        return self._per_row(lambda r: str(r.get("name") or ""), np.zeros(0, str))

    def push_every_rows(self) -> np.ndarray:
        """(N,) int: the push schedule of the recipe that made each row (0: no pushes, or unknown)."""
        return self._per_row(lambda r: int(r.get("push_every") or 0), np.zeros(0, int))

    def require_executed_actions(self, user: str) -> None:
        """Refuse data whose actions are labels: a model of the dynamics or a backup over
        (s, a, s') must see the action that led from s to s'."""
        found = self.label_sources()
        if found:
            raise DatasetError(f"{self.path}: holds expert-label data (recipe {found[0]!r}), whose recorded actions "
                               f"are not the executed ones; {user} learns from (s, a, s') and cannot use it "
                               "(only behaviour-cloning kinds, e.g. a policy, train on labels)")

    def episodes(self) -> list[np.ndarray]:
        """Row indices of each episode, in order."""
        ids = self.arrays["episode_ids"]
        bounds = np.flatnonzero(np.diff(ids)) + 1
        return np.split(np.arange(len(ids)), bounds)


def merge(sources: list[str | os.PathLike], out: str | os.PathLike,
          only: dict[int, list[str]] | None = None) -> dict:
    """A dataset listing the shards of the sources, in order (e.g. expert data plus DAgger rounds).
    ``only`` maps a source's index to the tasks whose episodes are taken from it (all if absent);
    the manifest's source records the selection.

    Every source is verified (sha256 of each shard) and must share the spec and the task list;
    normalizers are recomputed over the union. Shards of a source in another store are copied
    into ``out``'s store (content-named: nothing is duplicated within a store). Refuses to
    overwrite an existing manifest; the manifest is written last, so a killed merge leaves no
    dataset that loads.
    """
    if len(sources) < 2:
        raise DatasetError("merge: give at least two source datasets")
    out = manifest_path(out)
    if out.exists():
        raise DatasetError(f"{out}: already exists; refusing to overwrite it")
    loaded = [Dataset(s) for s in sources]
    tasks = loaded[0].tasks
    for s, ds in zip(sources, loaded):
        if ds.tasks != tasks:
            raise DatasetError(f"{s}: task list {ds.tasks} differs from {sources[0]}'s {tasks}")
    only = dict(only or {})
    for i, names in only.items():
        unknown = sorted(set(names) - set(tasks))
        if unknown or not names:
            raise DatasetError(f"{sources[i]}: no task {unknown or names} to select (its tasks: {', '.join(tasks)})")
        if (loaded[i].meta.get("source") or {}).get("kind") == "merge":
            # Its rows are blocks by original source (label_rows): a selection would cut them.
            raise DatasetError(f"{sources[i]}: a merged dataset; select tasks from the datasets it merges")
    store = shard_dir(out)
    store.mkdir(parents=True, exist_ok=True)
    entries, taken = [], []
    for i, ds in enumerate(loaded):
        src_store = shard_dir(ds.path)
        keep = None if i not in only else {tasks.index(t) for t in only[i]}
        taken.append(0)
        # Shards are episodes (one task each), their rows in order in the loaded arrays.
        starts = np.cumsum([0] + [int(e["transitions"]) for e in ds.meta["shards"]])[:-1]
        for e, row in zip(ds.meta["shards"], starts):
            if keep is not None and int(ds.arrays["task_ids"][row]) not in keep:
                continue
            taken[-1] += int(e["transitions"])
            if src_store.resolve() != store.resolve():
                dst = store / f"{e['sha256']}.npz"
                if not dst.exists():
                    tmp = store / f".{e['sha256']}.copy.tmp"
                    shutil.copyfile(src_store / f"{e['sha256']}.npz", tmp)
                    os.replace(tmp, dst)
            entries.append(dict(e))
    source = {"kind": "merge", "sources": [{"name": ds.path.stem, "dataset_sha256": ds.sha256,
                                            "source": ds.meta.get("source"), "transitions": taken[i],
                                            **({"only_tasks": list(only[i])} if i in only else {})}
                                           for i, ds in enumerate(loaded)]}
    return finalize(out, entries, tasks, source)
