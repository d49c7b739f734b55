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
from planner_node.dataset import FIELDS, Dataset, DatasetError, finalize, merge, read_shard, write_shard
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
    entries = [write_shard(tmp_path / "shards", e) for e in eps]
    finalize(tmp_path / "small.json", entries, ["stand"], {"kind": "test"})
    return tmp_path / "small.json", eps


def test_round_trip(small_dataset):
    """float16 observations and actions come back within half an ulp; shards are content-named."""
    path, eps = small_dataset
    ds = Dataset(path)
    assert len(ds) == 12 and [len(e) for e in ds.episodes()] == [5, 7]
    for k in FIELDS:
        want = np.concatenate([e[k] for e in eps]).astype(np.float64)
        if k == "episode_ids":
            continue  # numbered over the dataset on load
        tol = 2.0 ** -11 * np.abs(want) + 1e-7 if FIELDS[k][1] == np.float16 else 1e-6 * np.abs(want) + 1e-7
        assert np.all(np.abs(ds.arrays[k] - want) <= tol), k
    assert ds.arrays["observations"].dtype == np.float32
    np.testing.assert_allclose(ds.stats["obs_std"], ds.arrays["observations"].std(0) + 1e-4, rtol=1e-5)
    store = path.parent / "shards"
    assert sorted(p.name for p in store.iterdir()) == sorted(f"{e['sha256']}.npz" for e in ds.meta["shards"])


def test_same_episode_same_shard_bytes(tmp_path):
    e = fake_episode(np.random.default_rng(3), 6, 0)
    a = write_shard(tmp_path / "a", e)
    time.sleep(1.1)  # zip member times would differ by now if they were written
    b = write_shard(tmp_path / "b", e)
    assert a == b and (tmp_path / "a" / f"{a['sha256']}.npz").read_bytes() == (tmp_path / "b" / f"{b['sha256']}.npz").read_bytes()


def test_truncated_shard_refused_by_name(small_dataset):
    path, _ = small_dataset
    sha = json.loads(path.read_text())["shards"][1]["sha256"]
    p = path.parent / "shards" / f"{sha}.npz"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=f"{sha}.npz.*sha256"):
        Dataset(path)


def test_other_spec_hash_refused(small_dataset):
    path, _ = small_dataset
    meta = json.loads(path.read_text())
    meta["spec_hash"] = "0123456789abcdef"
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="small.json.*spec hash"):
        Dataset(path)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["shards"][0].update(sha256="../" + m["shards"][0]["sha256"][3:]), "not a sha256"),
    (lambda m: m["shards"].reverse(), "dataset_sha256 does not match"),
    (lambda m: m.update(extra=1), "unknown key 'extra'"),
    (lambda m: m.pop("stats"), "missing key 'stats'"),
])
def test_edited_manifest_refused(small_dataset, edit, match):
    path, _ = small_dataset
    meta = json.loads(path.read_text())
    edit(meta)
    if "not a sha256" in match:  # keep the dataset hash consistent: only the name check may refuse it
        from planner_node.dataset import dataset_sha256
        meta["dataset_sha256"] = dataset_sha256(meta["tasks"], [e["sha256"] for e in meta["shards"]])
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=match):
        Dataset(path)


def test_format_1_directory_refused_with_the_reason(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(DatasetError, match="format-1 dataset directory.*regenerate"):
        Dataset(tmp_path / "old")


def test_missing_key_refused(tmp_path):
    e = fake_episode(np.random.default_rng(0), 4, 0)
    del e["rewards"]
    with pytest.raises(DatasetError, match="'rewards'"):
        write_shard(tmp_path / "s", e)
    assert not list((tmp_path / "s").iterdir())


def test_optional_plans_round_trip_and_are_refused_by_name_when_malformed(tmp_path, capsys):
    """A shard may carry the expert's plans (N, K, 56); shards without them load beside it."""
    rng = np.random.default_rng(0)
    e = fake_episode(rng, 5, 0)
    with_plans = {**e, "plans": rng.uniform(-1, 1, (5, 3, spec.ACTION_DIM))}
    entry = write_shard(tmp_path / "shards", with_plans)
    back = read_shard(tmp_path / "shards", entry["sha256"])
    assert back["plans"].dtype == np.float32 and back["plans"].shape == (5, 3, spec.ACTION_DIM)
    np.testing.assert_allclose(back["plans"], with_plans["plans"], atol=5e-4)
    plain = write_shard(tmp_path / "shards", fake_episode(rng, 4, 1))
    finalize(tmp_path / "mixed.json", [plain, entry], ["stand"], {"kind": "test"})
    ds = Dataset(tmp_path / "mixed.json")
    np.testing.assert_array_equal(ds.plan_steps, [0] * 4 + [3] * 5)
    np.testing.assert_allclose(ds.plans[4:], back["plans"])
    assert not ds.plans[:4].any()
    from planner_node.cli import main
    assert main(["data", "info", str(tmp_path / "mixed")]) == 0
    assert "expert plans recorded on 5 rows (3 steps each)" in capsys.readouterr().out
    finalize(tmp_path / "plain.json", [plain], ["stand"], {"kind": "test"})
    assert Dataset(tmp_path / "plain.json").plans is None
    for bad, match in [(rng.uniform(-1, 1, (5, 3, 7)), r"'plans' has shape"), (np.zeros((5, 0, spec.ACTION_DIM)), "K >= 1"),
                       (np.full((5, 2, spec.ACTION_DIM), np.nan), "'plans' contains NaN")]:
        with pytest.raises(DatasetError, match=match):
            write_shard(tmp_path / "bad", {**e, "plans": bad})


def test_generate_tiny_and_refuse_other_recipe(tmp_path):
    out = tmp_path / "ds.json"
    meta = generate("tiny", tmp_path / "ds", progress=False)
    ds = Dataset(out)
    assert len(ds) == meta["transitions"] > 0 and ds.sha256 == meta["dataset_sha256"]
    assert np.all(np.abs(ds.arrays["actions"]) <= 1)
    assert set(ds.arrays["task_ids"]) <= set(range(len(RECIPES["tiny"].tasks)))
    assert not (tmp_path / ".ds.progress.json").exists()
    before = out.read_bytes()
    with pytest.raises(DatasetError, match="different recipe"):
        generate("x", out, recipe=Recipe(episodes=1, steps=2), progress=False)
    assert out.read_bytes() == before


def _progress(out):
    p = out.with_name(f".{out.stem}.progress.json")
    try:
        return json.loads(p.read_text())["done"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def test_resume_after_kill(tmp_path):
    """Kill a real generate process after its first episode; the rerun keeps it and matches a clean run."""
    out = tmp_path / "killed.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "planner_node.cli", "data", "generate", "--recipe", "tiny",
                             "--out", str(out), "--quiet"], env=env)
    deadline = time.time() + 120
    while not _progress(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _progress(out)
    assert done, "generation never finished an episode"
    assert not out.exists(), "killed too late to test resume"
    first = tmp_path / "shards" / f"{done['0']['sha256']}.npz"
    kept = first.stat().st_mtime_ns
    generate("tiny", out, progress=False)
    assert first.stat().st_mtime_ns == kept  # finished shard reused, not regenerated
    clean = tmp_path / "elsewhere" / "clean.json"
    generate("tiny", clean, progress=False)
    assert json.loads(out.read_text())["dataset_sha256"] == json.loads(clean.read_text())["dataset_sha256"]
    a, b = Dataset(out).arrays, Dataset(clean).arrays
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k])


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
    ds = Dataset(tmp_path / "out.json")
    assert [len(e) for e in ds.episodes()] == [10, 10, 10]
    np.testing.assert_array_equal(ds.arrays["observations"], data["observations"].astype(np.float16))
    assert ds.arrays["terminals"][9] and ds.arrays["timeouts"][19]


@pytest.mark.parametrize("drop", ["timeouts", "actions"])
def test_import_d4rl_missing_key(tmp_path, drop):
    src = tmp_path / "bad.hdf5"
    write_d4rl(src, drop=drop)
    with pytest.raises(DatasetError, match=f"bad.hdf5.*{drop}"):
        import_dataset("d4rl", src, tmp_path / "out")
    assert not (tmp_path / "out.json").exists()


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
    ds = Dataset(tmp_path / "out.json")
    eps = ds.episodes()
    assert [len(e) for e in eps] == [6, 4, 5]
    for e, (obs, fell) in zip(eps, expected):
        np.testing.assert_array_equal(ds.arrays["observations"][e], obs.astype(np.float16))
        assert ds.arrays["terminals"][e[-1]] == fell and ds.arrays["timeouts"][e[-1]] == (not fell)


def test_import_mocapact_missing_block(tmp_path):
    src = tmp_path / "CMU_016.hdf5"
    write_mocapact(src, drop_block="sensors_gyro")
    with pytest.raises(DatasetError, match="CMU_016.hdf5.*observable_indices/walker/sensors_gyro"):
        import_dataset("mocapact", src, tmp_path / "out")


def test_import_never_overwrites(tmp_path):
    src = tmp_path / "d4rl.hdf5"
    write_d4rl(src)
    out = tmp_path / "out.json"
    out.write_text("precious")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        import_dataset("d4rl", src, out)
    assert out.read_text() == "precious"
    with pytest.raises(KeyError, match="d4rl, mocapact"):
        import_dataset("rlds", src, tmp_path / "o2")


def _fake_dataset(path, seed, lengths, tasks=("stand",)):
    rng = np.random.default_rng(seed)
    eps = [fake_episode(rng, n, i) for i, n in enumerate(lengths)]   # episode ids 0.. in both
    entries = [write_shard(path.parent / "shards", e) for e in eps]
    finalize(path, entries, list(tasks), {"kind": "test"})
    return eps


def test_merge_lists_the_sources_shards_and_recomputes_stats(tmp_path):
    """A merge adds a manifest and no shard: the union is the sources' content-named shards."""
    from planner_node.dataset import merge
    a = _fake_dataset(tmp_path / "a.json", 0, (5, 7))
    b = _fake_dataset(tmp_path / "b.json", 1, (6,))
    before = sorted((tmp_path / "shards").iterdir())
    meta = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert sorted((tmp_path / "shards").iterdir()) == before
    ds = Dataset(tmp_path / "m")
    assert [len(e) for e in ds.episodes()] == [5, 7, 6] and meta["transitions"] == 18
    assert meta["source"]["sources"][1]["dataset_sha256"] == Dataset(tmp_path / "b").sha256
    allobs = np.concatenate([e["observations"] for e in a + b]).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(ds.stats["obs_mean"], allobs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.arrays["observations"][12:], b[0]["observations"].astype(np.float16))
    # a source in another store: its shards are copied into the output's store
    _fake_dataset(tmp_path / "other" / "c.json", 2, (4,))
    merge([tmp_path / "a", tmp_path / "other" / "c"], tmp_path / "m2")
    assert len(Dataset(tmp_path / "m2")) == 16


def test_merge_takes_only_the_selected_tasks_episodes_of_a_source(tmp_path):
    from planner_node.cli import main
    tasks = ("stand", "forward", "rotate_x")
    rng = np.random.default_rng(0)
    eps = [fake_episode(rng, 4 + i, i, task=i % 3) for i in range(6)]
    finalize(tmp_path / "a.json", [write_shard(tmp_path / "shards", e) for e in eps], list(tasks), {"kind": "test"})
    _fake_dataset(tmp_path / "b.json", 1, (5,), tasks=tasks)
    assert main(["data", "merge", str(tmp_path / "b"), f"{tmp_path / 'a'}:stand,rotate_x", "--out", str(tmp_path / "m")]) == 0
    ds = Dataset(tmp_path / "m")
    lengths = [len(e) for e in ds.episodes()]
    assert lengths == [5, 4, 6, 7, 9], lengths  # b's episode, then a's stand (0, 3) and rotate_x (2, 5) ones
    assert set(ds.arrays["task_ids"][5:].tolist()) == {0, 2}
    assert ds.meta["source"]["sources"][1]["only_tasks"] == ["stand", "rotate_x"]
    assert "only_tasks" not in ds.meta["source"]["sources"][0]
    assert ds.meta["source"]["sources"][1]["transitions"] == 26 and len(ds.label_rows()) == len(ds) == 31
    with pytest.raises(DatasetError, match="merged dataset"):
        merge([tmp_path / "b", tmp_path / "m"], tmp_path / "n", only={1: ["stand"]})
    with pytest.raises(DatasetError, match="fly"):
        merge([tmp_path / "b", tmp_path / "a"], tmp_path / "n", only={1: ["fly"]})
    assert not (tmp_path / "n.json").exists()


def test_merge_refuses_other_tasks_and_existing_out(tmp_path):
    from planner_node.dataset import merge
    _fake_dataset(tmp_path / "a.json", 0, (5,))
    _fake_dataset(tmp_path / "b.json", 1, (5,), tasks=("stand", "forward"))
    with pytest.raises(DatasetError, match="task list"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    (tmp_path / "keep.json").write_text("x")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        merge([tmp_path / "a", tmp_path / "a"], tmp_path / "keep")
    assert (tmp_path / "keep.json").read_text() == "x"


def test_generate_reuses_episodes_of_a_smaller_run_of_the_same_recipe(tmp_path, monkeypatch):
    import planner_node.sim.generate as gen
    small = Recipe(episodes=1, steps=3, tasks=("stand",), expert={"samples": 4, "horizon": 3, "knots": 2, "threads": 1})
    generate("s", tmp_path / "one", recipe=small, progress=False)
    bigger = Recipe(**{**small.__dict__, "episodes": 2})
    fresh = generate("b", tmp_path / "elsewhere" / "fresh", recipe=bigger, progress=False)
    made = []
    real = gen.generate_episode
    monkeypatch.setattr(gen, "generate_episode", lambda r, i, t: made.append(i) or real(r, i, t))
    meta = generate("b", tmp_path / "other_store" / "two", recipe=bigger, progress=False, reuse=tmp_path / "one")
    assert made == [1]  # episode 0 was taken from "one" (in another store: its shard copied), not generated again
    assert [e["sha256"] for e in meta["shards"]] == [e["sha256"] for e in fresh["shards"]]
    other = Recipe(**{**bigger.__dict__, "action_noise": 0.2})
    with pytest.raises(DatasetError, match="differs in action_noise"):
        generate("o", tmp_path / "three", recipe=other, progress=False, reuse=tmp_path / "one")
    assert not (tmp_path / "three.json").exists()


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
    assert not (tmp_path / "missing.json").exists()  # nothing written
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
    before = out.with_suffix(".json").read_bytes()
    with pytest.raises(DatasetError, match="different recipe"):
        generate("tiny_dagger", out, progress=False, learner=other)
    assert out.with_suffix(".json").read_bytes() == before


def test_seed_override_makes_new_episodes_and_is_recorded(tmp_path, tiny_data):
    out = tmp_path / "reseeded"
    generate("tiny", out, progress=False, seed=7)
    assert Dataset(out).meta["source"]["recipe"]["seed"] == 7
    a, b = Dataset(out).arrays, Dataset(tiny_data).arrays
    assert not np.allclose(a["observations"][0], b["observations"][0]), "same first state as the recipe's seed"
    with pytest.raises(DatasetError, match="different recipe"):  # resuming under another seed: refused
        generate("tiny", out, progress=False, seed=8)


def test_walk_recipe_draws_only_locomotion_tasks_and_keeps_the_full_task_list():
    """The walking recipe's episodes are locomotion tasks with the expert's capture-point lead,
    and its task ids index the full list, so it merges with the other recipes."""
    from planner_node.sim.generate import LOCOMOTION
    walk = RECIPES["walk"]
    assert walk.tasks == RECIPES["large"].tasks and set(walk.draw) == set(LOCOMOTION)
    assert walk.expert.get("walk_speed", 0) > 0
    from planner_node.sim.generate import episode_start
    drawn = {episode_start(walk, i)[2] for i in range(40)}
    assert drawn == set(LOCOMOTION)  # every locomotion task, and nothing else
    assert {episode_start(RECIPES["large"], i)[2] for i in range(40)} - set(LOCOMOTION)  # the others draw all tasks
    with pytest.raises(ValueError, match="Recipe.draw names 'moonwalk'"):
        Recipe(episodes=1, steps=1, draw=("moonwalk",))


def test_expert_warmup_is_checked_and_recorded_only_when_used():
    from planner_node.sim.generate import _recipe_dict
    with pytest.raises(ValueError, match="expert_warmup"):
        Recipe(episodes=1, steps=1, expert_warmup=-1)
    # 0 leaves it out, so the manifests of datasets made before it existed still match
    assert "expert_warmup" not in _recipe_dict("default", RECIPES["default"])
    assert RECIPES["dagger_late"].expert_warmup > 0


def test_a_generation_in_progress_finishes_early_with_another_episode_count(tmp_path):
    """--episodes: resuming with fewer episodes keeps the finished ones below the count and
    generates nothing; the result equals a clean run of that count. Any other change is refused."""
    out = tmp_path / "run.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "planner_node.cli", "data", "generate", "--recipe", "tiny",
                             "--out", str(out), "--quiet"], env=env)
    deadline = time.time() + 120
    while len(_progress(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _progress(out)
    assert "0" in done and "1" in done and not out.exists(), "killed too late to test an early finish"
    kept = [(tmp_path / "shards" / f"{done[k]['sha256']}.npz").stat().st_mtime_ns for k in ("0", "1")]
    with pytest.raises(DatasetError, match="different recipe"):
        generate("tiny", out, progress=False, seed=5, episodes=2)
    meta = generate("tiny", out, progress=False, episodes=2)
    assert [e["sha256"] for e in meta["shards"]] == [done["0"]["sha256"], done["1"]["sha256"]]
    assert kept == [(tmp_path / "shards" / f"{done[k]['sha256']}.npz").stat().st_mtime_ns for k in ("0", "1")]
    clean = generate("tiny", tmp_path / "elsewhere" / "clean.json", progress=False, episodes=2)
    assert meta["dataset_sha256"] == clean["dataset_sha256"] and meta["source"]["recipe"]["episodes"] == 2
