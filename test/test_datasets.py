"""Dataset format round trip, refusal of bad data, resumable generation, and both importers."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from planner_node import spec
from planner_node.dataset import FIELDS, Dataset, DatasetError, finalize, write_shard
from planner_node.sim.generate import RECIPES, Recipe, generate
from planner_node.sim.importers import import_dataset


def fake_episode(rng, n, ep, task=0):
    return {"observations": rng.normal(size=(n, 224)), "actions": rng.uniform(-1, 1, (n, 56)),
            "rewards": rng.normal(size=n), "terminals": np.eye(1, n, n - 1, dtype=bool)[0],
            "timeouts": np.zeros(n, bool), "episode_ids": np.full(n, ep), "task_ids": np.full(n, task),
            "commands": np.zeros((n, 3))}


@pytest.fixture
def small_dataset(tmp_path):
    rng = np.random.default_rng(0)
    eps = [fake_episode(rng, n, i) for i, n in enumerate((5, 7))]
    entries = [write_shard(tmp_path / f"shard_{i:05d}.npz", e) for i, e in enumerate(eps)]
    finalize(tmp_path, entries, ["stand"], {"kind": "test"})
    return tmp_path, eps


def test_round_trip(small_dataset):
    root, eps = small_dataset
    ds = Dataset(root)
    assert len(ds) == 12 and [len(e) for e in ds.episodes()] == [5, 7]
    for k in FIELDS:
        np.testing.assert_allclose(ds.arrays[k], np.concatenate([e[k] for e in eps]).astype(FIELDS[k][1]))
    obs = np.concatenate([e["observations"] for e in eps]).astype(np.float32)
    np.testing.assert_allclose(ds.stats["obs_std"], obs.std(0) + 1e-4, rtol=1e-5)
    assert not list(root.glob("*.tmp*"))


def test_truncated_shard_refused_by_name(small_dataset):
    root, _ = small_dataset
    p = root / "shard_00001.npz"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="shard_00001.npz.*sha256"):
        Dataset(root)


def test_other_spec_hash_refused(small_dataset):
    root, _ = small_dataset
    meta = json.loads((root / "meta.json").read_text())
    meta["spec_hash"] = "0123456789abcdef"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="meta.json.*spec hash"):
        Dataset(root)


def test_shard_path_escape_refused(small_dataset):
    root, _ = small_dataset
    meta = json.loads((root / "meta.json").read_text())
    meta["shards"][0]["file"] = "../shard_00000.npz"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="escapes"):
        Dataset(root)


def test_missing_key_refused(tmp_path):
    e = fake_episode(np.random.default_rng(0), 4, 0)
    del e["rewards"]
    with pytest.raises(DatasetError, match="'rewards'"):
        write_shard(tmp_path / "s.npz", e)
    assert not list(tmp_path.iterdir())


def test_generate_tiny_and_refuse_other_recipe(tmp_path):
    out = tmp_path / "ds"
    meta = generate("tiny", out, progress=False)
    ds = Dataset(out)
    assert len(ds) == meta["transitions"] > 0
    assert np.all(np.abs(ds.arrays["actions"]) <= 1)
    assert set(ds.arrays["task_ids"]) <= set(range(len(RECIPES["tiny"].tasks)))
    before = (out / "meta.json").read_bytes()
    with pytest.raises(DatasetError, match="different recipe"):
        generate("x", out, recipe=Recipe(episodes=1, steps=2), progress=False)
    assert (out / "meta.json").read_bytes() == before
    other = tmp_path / "occupied"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate("tiny", other, progress=False)
    assert (other / "keep.txt").read_text() == "mine"


def test_resume_after_kill(tmp_path):
    """Kill a real generate process after its first shard; the rerun keeps it and matches a clean run."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "planner_node.cli", "data", "generate", "--recipe", "tiny",
                             "--out", str(out), "--quiet"], env=env)
    first = out / "shard_00000.npz"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "generation never wrote a shard"
    assert not (out / "meta.json").exists(), "killed too late to test resume"
    kept = first.stat().st_mtime_ns
    generate("tiny", out, progress=False)
    assert first.stat().st_mtime_ns == kept  # finished shard reused, not regenerated
    clean = tmp_path / "clean"
    generate("tiny", clean, progress=False)
    a, b = Dataset(out).arrays, Dataset(clean).arrays
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


def test_killed_sharded_generate_leaves_no_orphan_workers(tmp_path):
    """SIGKILL the parent of a --workers 2 run: its worker processes exit too, instead of
    writing shards on into a directory the user may already have deleted and reused."""
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "planner_node.cli", "data", "generate", "--recipe", "tiny",
                             "--out", str(out), "--quiet", "--workers", "2"], start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("shard_*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    deadline = time.time() + 30
    while group_alive() and time.time() < deadline:
        time.sleep(0.2)
    alive = group_alive()
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not alive, "worker processes outlived their killed parent"


def write_d4rl(path, n=30, drop=None, obs_dim=224):
    rng = np.random.default_rng(1)
    data = {"observations": rng.normal(size=(n, obs_dim)), "actions": rng.uniform(-1, 1, (n, 56)),
            "rewards": rng.normal(size=n), "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
    data["terminals"][9] = True
    data["timeouts"][19] = True
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k != drop:
                f[k] = v
    return data


def test_import_d4rl(tmp_path):
    src = tmp_path / "d4rl.hdf5"
    data = write_d4rl(src)
    import_dataset("d4rl", src, tmp_path / "out")
    ds = Dataset(tmp_path / "out")
    assert [len(e) for e in ds.episodes()] == [10, 10, 10]
    np.testing.assert_allclose(ds.arrays["observations"], data["observations"].astype(np.float32))
    assert ds.arrays["terminals"][9] and ds.arrays["timeouts"][19]


@pytest.mark.parametrize("drop", ["timeouts", "actions"])
def test_import_d4rl_missing_key(tmp_path, drop):
    src = tmp_path / "bad.hdf5"
    write_d4rl(src, drop=drop)
    with pytest.raises(DatasetError, match=f"bad.hdf5.*{drop}"):
        import_dataset("d4rl", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_d4rl_wrong_robot(tmp_path):
    src = tmp_path / "hopper.hdf5"
    write_d4rl(src, obs_dim=11)
    with pytest.raises(DatasetError, match="observations.*224"):
        import_dataset("d4rl", src, tmp_path / "out")


def write_mocapact(path, drop_block=None):
    """MoCapAct rollout layout: blocks live at scattered columns of a wider proprioceptive matrix."""
    rng = np.random.default_rng(2)
    width = 400
    perm = rng.permutation(width)
    cols, start = {}, 0
    for name, size in spec.OBS_BLOCKS:
        cols[name] = perm[start:start + size]
        start += size
    expected = []
    with h5py.File(path, "w") as f:
        for name, c in cols.items():
            if name != drop_block:
                f[f"observable_indices/walker/{name}"] = c
        for clip, lengths, early in (("CMU_016_22-0-82", (6, 4), (False, True)), ("CMU_038_03-0-50", (5,), (False,))):
            f[f"{clip}/early_termination"] = np.array(early)
            for k, T in enumerate(lengths):
                full = rng.normal(size=(T + 1, width))
                f[f"{clip}/{k}/observations/proprioceptive"] = full
                f[f"{clip}/{k}/actions"] = rng.uniform(-1, 1, (T, 56))
                f[f"{clip}/{k}/rewards"] = rng.uniform(size=T)
                expected.append((np.concatenate([full[:T, cols[n]] for n, _ in spec.OBS_BLOCKS], 1), early[k]))
    return expected


def test_import_mocapact(tmp_path):
    src = tmp_path / "CMU_016.hdf5"
    expected = write_mocapact(src)
    import_dataset("mocapact", src, tmp_path / "out")
    ds = Dataset(tmp_path / "out")
    eps = ds.episodes()
    assert [len(e) for e in eps] == [6, 4, 5]
    for e, (obs, fell) in zip(eps, expected):
        np.testing.assert_allclose(ds.arrays["observations"][e], obs.astype(np.float32))
        assert ds.arrays["terminals"][e[-1]] == fell and ds.arrays["timeouts"][e[-1]] == (not fell)


def test_import_mocapact_missing_block(tmp_path):
    src = tmp_path / "CMU_016.hdf5"
    write_mocapact(src, drop_block="sensors_gyro")
    with pytest.raises(DatasetError, match="CMU_016.hdf5.*observable_indices/walker/sensors_gyro"):
        import_dataset("mocapact", src, tmp_path / "out")


def test_import_never_overwrites(tmp_path):
    src = tmp_path / "d4rl.hdf5"
    write_d4rl(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.npz").write_bytes(b"x")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        import_dataset("d4rl", src, out)
    assert (out / "precious.npz").read_bytes() == b"x"
    with pytest.raises(KeyError, match="d4rl, mocapact"):
        import_dataset("rlds", src, tmp_path / "o2")


def test_sharded_generation_matches_single_process(tmp_path, tiny_data):
    """--workers 2 (process pool) writes exactly the data one process writes."""
    out = tmp_path / "two"
    generate("tiny", out, workers=2, progress=False)
    a, b = Dataset(out).arrays, Dataset(tiny_data).arrays
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


def _fake_dataset(root, seed, lengths, tasks=("stand",)):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    eps = [fake_episode(rng, n, i) for i, n in enumerate(lengths)]   # episode ids 0.. in both
    entries = [write_shard(root / f"shard_{i:05d}.npz", e) for i, e in enumerate(eps)]
    finalize(root, entries, list(tasks), {"kind": "test"})
    return eps


def test_merge_keeps_episodes_distinct_and_recomputes_stats(tmp_path):
    from planner_node.dataset import merge
    a = _fake_dataset(tmp_path / "a", 0, (5, 7))
    b = _fake_dataset(tmp_path / "b", 1, (6,))
    meta = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    ds = Dataset(tmp_path / "m")
    assert [len(e) for e in ds.episodes()] == [5, 7, 6] and meta["transitions"] == 18
    allobs = np.concatenate([e["observations"] for e in a + b]).astype(np.float32)  # stored as float32
    np.testing.assert_allclose(ds.stats["obs_mean"], allobs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.arrays["observations"][12:], b[0]["observations"].astype(np.float32))


def test_merge_refuses_other_tasks_and_nonempty_out(tmp_path):
    from planner_node.dataset import merge
    _fake_dataset(tmp_path / "a", 0, (5,))
    _fake_dataset(tmp_path / "b", 1, (5,), tasks=("stand", "forward"))
    with pytest.raises(DatasetError, match="task list"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        merge([tmp_path / "a", tmp_path / "a"], tmp_path / "keep")
    assert (tmp_path / "keep" / "precious.txt").read_text() == "x"


def test_generate_reuses_episodes_of_a_smaller_run_of_the_same_recipe(tmp_path):
    small = Recipe(episodes=1, steps=3, tasks=("stand",), expert={"samples": 4, "horizon": 3, "knots": 2, "threads": 1})
    generate("s", tmp_path / "one", recipe=small, progress=False)
    bigger = Recipe(**{**small.__dict__, "episodes": 2})
    meta = generate("b", tmp_path / "two", recipe=bigger, progress=False, reuse=tmp_path / "one")
    fresh = generate("b", tmp_path / "fresh", recipe=bigger, progress=False)
    assert [e["sha256"] for e in meta["shards"]] == [e["sha256"] for e in fresh["shards"]]
    # episode 0 was copied (copy2 keeps the source's mtime), not regenerated
    assert (tmp_path / "two" / "shard_00000.npz").stat().st_mtime == (tmp_path / "one" / "shard_00000.npz").stat().st_mtime
    other = Recipe(**{**bigger.__dict__, "action_noise": 0.2})
    with pytest.raises(DatasetError, match="differs in action_noise"):
        generate("o", tmp_path / "three", recipe=other, progress=False, reuse=tmp_path / "one")
    assert not list((tmp_path / "three").glob("shard_*"))


def test_dagger_episodes_start_where_the_learner_took_the_robot(tmp_path, hgap_run):
    """DAgger recipe: the expert's episodes begin at states the learned planner reached (not at a
    reset), the learner is identified by its checkpoint hash, and wrong learners are refused."""
    import shutil

    from planner_node.sim.env import EnvConfig, HumanoidEnv

    recipe = RECIPES["tiny_dagger"]
    with pytest.raises(DatasetError, match="--learner"):
        generate("tiny_dagger", tmp_path / "none", progress=False)
    from planner_node.models.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        generate("tiny_dagger", tmp_path / "missing", progress=False, learner=tmp_path / "nope")
    assert not (tmp_path / "missing").exists()  # nothing written
    with pytest.raises(ValueError, match="learner_planner must be one of"):
        Recipe(episodes=1, steps=1, learner_planner="dreamer")  # the learner's kind, if named, is a registered kind
    out = tmp_path / "dagger"
    generate("tiny_dagger", out, progress=False, learner=hgap_run)
    ds = Dataset(out)
    env = HumanoidEnv(EnvConfig(push_every=recipe.push_every, push_speed=recipe.push_speed))
    for ep in range(recipe.episodes):
        first = ds.arrays["observations"][ds.arrays["episode_ids"] == ep][0]
        reset = env.reset(recipe.seed * 100_003 + ep)
        assert not np.allclose(first, reset, atol=1e-3), f"episode {ep} starts at the reset state"
    # Another checkpoint under the same path is another recipe: refused, data kept.
    from planner_node.models.checkpoint import load_checkpoint, save_checkpoint
    other = tmp_path / "other_run"
    shutil.copytree(hgap_run, other)
    ck = load_checkpoint(other)
    ck["step"] = int(ck.get("step", 0)) + 1  # a later checkpoint of the same run
    save_checkpoint(other / "checkpoint.pt", {k: v for k, v in ck.items() if k not in ("format", "spec_hash")})
    before = (out / "meta.json").read_bytes()
    with pytest.raises(DatasetError, match="different recipe"):
        generate("tiny_dagger", out, progress=False, learner=other)
    assert (out / "meta.json").read_bytes() == before


def test_seed_override_makes_new_episodes_and_is_recorded(tmp_path, tiny_data):
    import json
    out = tmp_path / "reseeded"
    generate("tiny", out, progress=False, seed=7)
    assert json.loads((out / "recipe.json").read_text())["seed"] == 7
    a, b = Dataset(out).arrays, Dataset(tiny_data).arrays
    assert not np.allclose(a["observations"][0], b["observations"][0]), "same first state as the recipe's seed"
    with pytest.raises(DatasetError, match="different recipe"):  # resuming under another seed: refused
        generate("tiny", out, progress=False, seed=8)
