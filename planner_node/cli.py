"""The ``planner`` command line: one entry point, subcommands per job.

    planner data generate --recipe tiny|default|large|fast|walk|dart|dagger|dagger_late|dagger_labels[_balance]|rescue_stand|...
                          --out STORE/NAME [--workers N]
                          [--ray [ADDRESS]] [--learner RUN]
    planner data import --format d4rl|mocapact SRC --out STORE/NAME
    planner data merge STORE/A STORE/B ... --out STORE/C
    planner data info STORE/NAME
    planner export --checkpoint RUN --out BUNDLE [--tensorrt] [--ldm LDM_RUN] [--bundle-version N]
    planner verify BUNDLE [--trusted KEY.pub ...]
    planner keygen --out KEYDIR [--name NAME]
    planner sign BUNDLE --key KEY [--bundle-version N]
    planner bench --bundle BUNDLE --ticks N [--checkpoint RUN] [--json FILE]
    planner up humanoid [--bundle B] [--lockstep] [--duration S] [--quiet]
    planner train --config config/train/<name>.yaml --data STORE/NAME --out RUN
    planner train-critic --data STORE/NAME --out RUN
    planner train-ldm --data STORE/NAME --out RUN
    planner eval --planner mppi|zero|<kind> [--checkpoint RUN] --task T --episodes N --seed S [--steps K]
                 [--budget-ms B] [--json FILE] [--video FILE] [--workers N | --ray [ADDRESS]]
                 [--score oracle|model|critic|critic_q|oracle+continuation] [--critic RUN]
                 [--filter none|ldm] [--filter-threshold G]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _env_defaults() -> None:
    # Headless rendering, quiet GL probing; never let DDS discovery leave the machine.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def cmd_data_generate(a) -> int:
    from planner_node.sim.generate import generate
    meta = generate(a.recipe, a.out, workers=a.workers, progress=not a.quiet, reuse=a.reuse,
                    learner=a.learner, seed=a.seed, ray_address=a.ray, episodes=a.episodes)
    print(f"{a.out}: {meta['transitions']} transitions in {len(meta['shards'])} shards "
          f"(dataset {meta['dataset_sha256'][:16]}, spec {meta['spec_hash']})")
    if a.expect:
        from planner_node.dataset import read_manifest
        want = read_manifest(a.expect)
        if want["dataset_sha256"] != meta["dataset_sha256"]:
            bad = next((i for i, (x, y) in enumerate(zip(want["shards"], meta["shards"])) if x != y),
                       min(len(want["shards"]), len(meta["shards"])))
            print(f"{a.out}: NOT the dataset {a.expect} records (dataset {want['dataset_sha256'][:16]}); "
                  f"the first differing shard is entry {bad}", file=sys.stderr)
            return 1
        print(f"{a.out}: matches {a.expect} byte for byte (every shard's sha256)")
    return 0


def cmd_data_import(a) -> int:
    from planner_node.sim.importers import import_dataset
    meta = import_dataset(a.format, a.src, a.out)
    print(f"{a.out}: imported {meta['transitions']} transitions in {len(meta['shards'])} episodes from {a.src}")
    return 0


def cmd_data_merge(a) -> int:
    from planner_node.dataset import merge
    paths, only = [], {}
    for i, src in enumerate(a.sources):  # STORE/NAME or STORE/NAME:task,task (those tasks' episodes)
        path, sep, names = src.rpartition(":")
        paths.append(path if sep else src)
        if sep:
            only[i] = [n for n in names.split(",") if n]
    meta = merge(paths, a.out, only=only)
    print(f"{a.out}: {meta['transitions']} transitions in {len(meta['shards'])} episodes from {len(a.sources)} datasets")
    return 0


def cmd_data_info(a) -> int:
    import numpy as np

    from planner_node.dataset import Dataset
    ds = Dataset(a.dir)
    eps = ds.episodes()
    arr = ds.arrays
    def recipes_of(src: dict) -> list[dict]:  # through nested merges
        if src.get("kind") == "merge":
            return [r for s in src.get("sources", []) for r in recipes_of(s.get("source") or {})]
        return [src.get("recipe", {})]

    recipes = recipes_of(ds.meta.get("source", {}))
    size = sum((ds.path.parent / "shards" / f"{e['sha256']}.npz").stat().st_size for e in ds.meta["shards"])
    print(f"dataset {ds.path}: {len(ds)} transitions, {len(eps)} episodes, {size / 1e6:.1f} MB in "
          f"{len(ds.meta['shards'])} shards, sha256 {ds.sha256[:16]}, spec {ds.meta['spec_hash']}")
    for r in recipes:
        if r:
            print(f"  recipe {r.get('name')!r}: seed {r.get('seed')}, {r.get('episodes')} episodes x {r.get('steps')} "
                  f"steps, expert {r.get('expert')}, learner {(r.get('learner') or '-')[:12]}")
    if ds.plans is not None:
        print(f"  expert plans recorded on {int((ds.plan_steps > 0).sum())} rows ({ds.plans.shape[1]} steps each)")
    clean = ds.optional("clean_actions")
    if clean is not None:
        has = np.isfinite(clean[:, 0])
        sigma, w = ds.optional("noise_std")[has], ds.optional("task_weight")[has]
        # per joint, averaged: the noise's share of each joint's variance over the rows
        noise = float((arr["actions"][has] - clean[has]).var(0).mean()) / max(float(arr["actions"][has].var(0).mean()), 1e-12)
        print(f"  policy rollouts on {int(has.sum())} rows: clean actions recorded; noise std {sigma.min():.3f}-"
              f"{sigma.max():.3f} (the noise is {noise:.0%} of the executed actions' variance), task weight "
              f"{w.min():.2f}-{w.max():.2f}")
    print(f"{'task':<12}{'episodes':>9}{'steps':>8}{'mean ret':>10}{'falls':>7}")
    for i, name in enumerate(ds.tasks):
        rows = [e for e in eps if arr["task_ids"][e[0]] == i]
        if not rows:
            continue
        rets = [arr["rewards"][e].sum() for e in rows]
        falls = np.mean([arr["terminals"][e[-1]] for e in rows])
        print(f"{name:<12}{len(rows):>9}{sum(map(len, rows)):>8}{np.mean(rets):>10.2f}{falls:>7.0%}")
    return 0


def cmd_data_view(a) -> int:
    try:
        from planner_node.view.dataset_view import view_episode
    except ImportError as e:
        print(f"planner data view: {e}", file=sys.stderr)
        return 2
    if not a.rrd and not a.view:
        print("planner data view: give --rrd FILE, --view native|web, or both", file=sys.stderr)
        return 2
    out = view_episode(a.dir, a.episode, rrd=a.rrd, view=a.view)
    ev = ", ".join(f"{v} {k}" for k, v in out["events"].items())
    print(f"{out['dataset']} episode {out['episode']}: {out['rows']} rows, task {out['task']}, recipe "
          f"{out['recipe'] or '-'}; {out['poses']} poses; marked: {ev}" + (f"; wrote {a.rrd}" if a.rrd else ""))
    viewer = out["viewer"]
    if viewer is not None and viewer.url:
        print(f"web viewer: {viewer.url} (Ctrl-C to stop serving)", flush=True)
        try:
            while viewer.proc.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        viewer.close()
    return 0


def _settings(pairs: list[str] | None) -> dict:
    """``--set KEY=VALUE`` pairs -> a kind's settings; values read as YAML scalars (2, 0.1, warm)."""
    import yaml
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE (e.g. --set sampler=warm)")
        v = "" if value == "" else yaml.safe_load(value)   # KEY= sets the empty string
        if not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"--set {pair!r}: the value must be a number, a word or true/false")
        out[key] = v
    return out


def cmd_eval(a) -> int:
    from planner_node.planning import planner_class
    from planner_node.sim.env import EnvConfig
    from planner_node.sim.evaluate import evaluate, format_table
    from planner_node.robot.tasks import get_task

    get_task(a.task)  # fail fast, listing the valid tasks
    if not a.bundle:
        planner_class(a.planner)  # fail fast, listing the valid planners
    kwargs = {}
    if a.bundle:
        if a.temperature is not None:
            kwargs = {"temperature": a.temperature}  # a bundle setting (refused if its kind lacks it)
        if a.critic_weight is not None:
            kwargs["critic_weight"] = a.critic_weight  # the bundle's critic term, reweighted
        kwargs.update(_settings(a.set))
    elif a.planner == "mppi":
        kwargs = {"budget_ms": a.budget_ms, "seed": a.seed}
        if a.samples:
            kwargs["samples"] = a.samples
        if a.walk_speed is not None:
            kwargs["walk_speed"] = a.walk_speed
        kwargs.update(_settings(a.set))  # any MPPIConfig field, e.g. --set horizon=30
    elif a.budget_ms is not None:
        print(f"note: --budget-ms applies to mppi only; ignored for {a.planner}", file=sys.stderr)
    if a.bundle and a.budget_ms is not None:
        print("note: --budget-ms applies to mppi only; ignored for a bundle", file=sys.stderr)
    from planner_node.planning import LEARNED
    from planner_node.sim.evaluate import PlannerFactory, evaluate_parallel
    name = a.planner
    if a.bundle:
        name = None
    elif a.planner in LEARNED:
        if not a.checkpoint:
            raise ValueError(f"--checkpoint RUN is required for planner {a.planner!r}")
        kwargs = {"checkpoint": a.checkpoint, "seed": a.seed}
        if a.samples:
            from planner_node.kinds import get_kind
            kwargs[get_kind(a.planner).batch_param] = a.samples  # the setting that sizes the batch
        if a.temperature is not None:
            kwargs["temperature"] = a.temperature
        kwargs.update(_settings(a.set))
    elif a.temperature is not None:
        print(f"note: --temperature applies to learned kinds only; ignored for {a.planner}", file=sys.stderr)
    if (a.ray or a.workers > 1) and not a.bundle:
        kwargs["threads"] = 1  # one Ray CPU per episode
    if a.filter != "none" and not a.bundle:
        raise ValueError(f"--filter {a.filter}: give --bundle B (its graphs hold the filter's model)")
    filter_config = json.dumps({"threshold": a.filter_threshold} if a.filter_threshold is not None else {})
    factory = PlannerFactory(name or "bundle", tuple(sorted(kwargs.items())), bundle=a.bundle or None,
                             backend=a.backend, seed=a.seed, filter=a.filter, filter_config=filter_config,
                             plan_latency_ms=a.plan_latency_ms)
    command = tuple(a.command) if a.command else None
    env_config = EnvConfig(push_every=a.push_every, push_speed=a.push_speed)
    extra = dict(budget_ms=a.budget_ms, push_every=a.push_every, push_speed=a.push_speed,
                 temperature=a.temperature, checkpoint=a.checkpoint, bundle=a.bundle, critic_weight=a.critic_weight,
                 **({"settings": _settings(a.set)} if a.set else {}),
                 **({"filter": a.filter, "filter_threshold": a.filter_threshold} if a.filter != "none" else {}),
                 **({"plan_latency_ms": a.plan_latency_ms} if a.plan_latency_ms else {}))
    if a.score:
        if a.plan_latency_ms:
            raise ValueError("--plan-latency-ms applies to a planner's own plans, not to --score")
        return _eval_scored(a, factory, env_config, command, extra)
    if a.ray or a.workers > 1:
        if a.video:
            raise ValueError("--video records one process's episodes: leave out --ray/--workers")
        res = evaluate_parallel(factory, a.task, a.episodes, a.seed, a.steps, env_config, command=command,
                                progress=not a.quiet, workers=a.workers, ray_address=a.ray, trace_png=a.trace,
                                planner=a.planner if not a.bundle else f"bundle[{a.backend}]", **extra)
    else:
        planner = factory()
        if a.bundle:
            a.planner = f"{planner.name}[{a.backend}]"
        res = evaluate(planner, a.task, a.episodes, a.seed, a.steps, env_config, command=command,
                       progress=not a.quiet, video=a.video, trace_png=a.trace, planner=a.planner,
                       samples=getattr(planner, "samples", None), **extra)
        if hasattr(planner, "close"):
            planner.close()
    print(format_table([res]))
    from planner_node.sim.evaluate import format_falls, format_tracking
    print(format_falls(res))
    if format_tracking(res):
        print(format_tracking(res))
    if a.trace:
        print(f"drift traces: {a.trace}")
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, res)
    return 0


def _eval_scored(a, factory, env_config, command, extra) -> int:
    """--score oracle: the same candidates chosen three ways, on the same episodes, side by side."""
    from dataclasses import replace

    from planner_node.planning import LEARNED
    from planner_node.sim.evaluate import evaluate_parallel, format_table
    from planner_node.sim.oracle import MODES
    if a.score == "oracle":  # the side-by-side diagnostic
        modes = [m for m in MODES if not m.startswith("critic") or a.critic]
    elif a.score in MODES:
        modes = [a.score]
    else:
        raise ValueError(f"--score must be oracle (all of them side by side) or one of {', '.join(MODES)}, got {a.score!r}")
    if not a.bundle and a.planner not in LEARNED:
        raise ValueError("--score scores a learned planner's candidates: give --planner KIND --checkpoint RUN, "
                         "or --bundle B")
    rows = []
    for mode in modes:
        rows.append(evaluate_parallel(replace(factory, score=mode, critic=a.critic), a.task, a.episodes, a.seed, a.steps, env_config,
                                      command=command, progress=not a.quiet, workers=a.workers,
                                      ray_address=a.ray, planner=f"{'bundle' if a.bundle else a.planner}[{mode}]",
                                      score=mode, **extra))
    print(format_table(rows))
    if a.json:  # one mode: the same JSON as any evaluation (bench/eval_table.py reads it)
        from planner_node.atomic import write_json
        write_json(a.json, rows[0] if len(rows) == 1 else {"task": a.task, "seed": a.seed, "steps": a.steps, "rows": rows})
    return 0


def _device_arg(parser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train (default auto: the CUDA GPU torch sees, else the CPU); checkpoints "
                             "load on either. Several GPUs: torchrun --nproc_per_node N -m planner_node.cli ...")


def cmd_train_critic(a) -> int:
    from planner_node.models.critic import CriticConfig, train_critic
    m = train_critic(a.data, a.out, CriticConfig(steps=a.steps), progress=not a.quiet, device=a.device)
    auc = m["near_fall_auc"]
    print(f"{a.out}: held-out TD MSE {m['holdout_td_mse']:.4f} over {m['holdout_transitions']} transitions; "
          f"V ranks states 10 steps before a fall below the rest (AUC): "
          + ", ".join(f"{t} {v:.2f}" for t, v in auc.items()))
    return 0


def cmd_train_ldm(a) -> int:
    from planner_node.models.ldm import LDMConfig, train_ldm
    given = {k: v for k, v in (("flow_steps", a.flow_steps), ("g_steps", a.g_steps), ("percentile", a.percentile))
             if v is not None}  # the rest, and anything not given, are LDMConfig's defaults
    m = train_ldm(a.data, a.out, LDMConfig(**given), progress=not a.quiet, device=a.device)
    print(f"{a.out}: held-out NLL {m['holdout_nll']:.1f} over {m['holdout_pairs']} pairs; threshold G <= "
          f"{m['threshold']:.2f}; held-out pairs above it: E {m['e_above_threshold_fraction']:.0%}, "
          f"G {m['g_above_threshold_fraction']:.0%}; G < E on {m['g_below_e_fraction']:.1%}")
    return 0


def cmd_train(a) -> int:
    from planner_node.models.train import train
    res = train(a.config, a.data, a.out, progress=not a.quiet, device=a.device)
    print(f"{a.out}: {res['stage']} in {res['wall_s']:.0f} s ({res['train_windows']} training windows, "
          f"{res['holdout_windows']} held out); curves in {a.out}/loss.png")
    return 0


def cmd_export(a) -> int:
    from planner_node.export.bundle_writer import export_bundle
    evaluations = []
    for f in a.evaluation or []:
        try:
            evaluations.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise ValueError(f"--evaluation {f}: not a readable `planner eval --json` file ({e})") from e
        missing = [k for k in ("task", "steps", "episodes", "mean_return", "std_return", "mean_length", "fall_rate")
                   if k not in evaluations[-1]]
        if missing:
            raise ValueError(f"--evaluation {f}: missing key {missing[0]!r} (expected `planner eval --json` output)")
    m = export_bundle(a.checkpoint, a.out, tensorrt=a.tensorrt, evaluations=evaluations, batch=a.samples, ldm=a.ldm,
                      critic=a.critic, critic_weight=a.critic_weight, bundle_version=a.bundle_version,
                      **_settings(a.set))
    errs = ", ".join(f"{k} {v['parity_max_abs_err']:.1e}" for k, v in m["graphs"].items())
    print(f"{a.out}: {m['planner']} bundle, graphs {list(m['graphs'])} (ONNX Runtime vs torch max abs err: {errs}), "
          f"{len(m['plans'])} TensorRT plans")
    return 0


def cmd_verify(a) -> int:
    from planner_node.runtime.bundle import BundleError, load_bundle
    trust = None
    if a.trusted:
        from planner_node.runtime.signing import TrustStore
        trust = TrustStore.from_files(a.trusted)
    try:
        b = load_bundle(a.bundle, trust=trust)
    except BundleError as e:
        print(f"planner verify: REJECTED: {e}", file=sys.stderr)
        return 1
    m = b.manifest
    signed = f", signed by {b.signed_by}" if b.signed_by else ""
    print(f"{a.bundle}: OK ({m['planner']}, bundle_version {b.version}{signed}, spec {m['spec_hash']}, "
          f"{len(m['graphs'])} graphs, {len(m.get('plans') or [])} plans, "
          f"producer {m['producer']['planner_node']} @ {m['producer']['git_commit'][:10]})")
    return 0


def cmd_keygen(a) -> int:
    from planner_node.runtime.signing import generate_keypair, key_id, load_public_key
    priv, pub = generate_keypair(a.out, a.name)
    print(f"{priv}: private signing key (keep it off the robot)\n{pub}: public key, id "
          f"{key_id(load_public_key(pub))} (list it in the node's trusted_keys)")
    return 0


def cmd_sign(a) -> int:
    from planner_node.runtime.bundle import load_bundle
    from planner_node.runtime.signing import sign_manifest
    if a.bundle_version is not None:
        from planner_node.export.bundle_writer import set_bundle_version
        old = set_bundle_version(a.bundle, a.bundle_version)
        print(f"{a.bundle}: bundle_version {old} -> {a.bundle_version}")
    b = load_bundle(a.bundle)   # sign only what verifies (hashes, spec, paths, graphs)
    kid = sign_manifest(a.bundle, a.key)
    print(f"{a.bundle}: signed by {kid} (bundle_version {b.version}): {Path(a.bundle) / 'manifest.sig'}")
    return 0


def cmd_bench(a) -> int:
    from planner_node.export.bench import run_bench
    return run_bench(a.bundle, a.ticks, a.json, a.backends, a.task, a.checkpoint, a.threads)


def cmd_up(a) -> int:
    from planner_node.ros.bringup import up
    values = {"bundle": a.bundle or "", "backend": a.backend, "task": a.task, "planner": a.planner_kind,
              "lockstep": str(a.lockstep).lower(), "use_sim_time": a.use_sim_time,
              "trusted_keys": a.trusted_keys, "bundle_root": a.bundle_root,
              "lock_parameters": str(a.lock_parameters).lower(), "reset_on_fall": str(a.reset_on_fall).lower()}
    view = None
    if a.view == "native" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("planner up: no display for the native viewer: serving the web viewer instead (--view web)",
              file=sys.stderr, flush=True)
        a.view = "web"
    if a.view or a.rrd:
        view = (["--view", a.view] if a.view else []) + (["--rrd", str(a.rrd)] if a.rrd else [])
    return up(values, a.duration, quiet=a.quiet, log_dir=a.log_dir, view=view)


def cmd_swap(a) -> int:
    from planner_node.ros.remote import swap
    return swap(a.bundle, timeout=a.timeout, wait=not a.no_wait)


def cmd_task(a) -> int:
    from planner_node.ros.remote import set_task
    return set_task(a.task, tuple(a.cmd_vel) if a.cmd_vel else None, timeout=a.timeout)


def cmd_upgrade_bundle(a) -> int:
    from planner_node.export.bundle_writer import upgrade_bundle
    m = upgrade_bundle(a.bundle, a.out)
    print(f"{a.out}: format {m['format_version']} ({m['planner']}; graphs unchanged, verified)")
    return 0


def cmd_demo(a) -> int:
    from planner_node.ros.demo import main_demo
    if a.rrd:
        try:
            import planner_node.view.rerun_log  # noqa: F401 - fail before the run, not after it
        except ImportError as e:
            print(f"planner demo --rrd: {e}", file=sys.stderr)
            return 2
    return main_demo(a.bundle, a.out, int(os.environ.get("ROS_DOMAIN_ID", "47")), planner=a.planner,
                     safety_filter=a.filter, rrd=a.rrd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="planner", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="generate, import or inspect trajectory datasets")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    g = dsub.add_parser("generate", help="run the MPPI expert to make a dataset (resumable)")
    g.add_argument("--recipe", default="tiny", help="a recipe of sim/generate.py's RECIPES, each with a comment saying what it makes "
                   "(an unknown name is refused with the list)")
    g.add_argument("--out", required=True, help="the dataset's manifest, STORE/NAME[.json]; shards go to STORE/shards/")
    g.add_argument("--workers", type=int, default=1,
                   help="episodes at once: > 1 runs them as tasks on a local Ray with this many CPUs")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run episodes as Ray tasks: no ADDRESS = a local Ray with --workers CPUs; "
                        "'auto' or HOST:PORT = an existing cluster (`ray start --head`)")
    g.add_argument("--reuse", help="a finished dataset of the same recipe with fewer episodes (e.g. data/default "
                   "for --recipe large): its episodes are taken, not regenerated")
    g.add_argument("--learner", help="for the dagger recipes: the learned planner's run (dagger, dagger_late: it drives "
                   "first and the expert recovers from where it took the robot; dagger_labels: it drives the "
                   "episode and the expert's action at every state it visits is recorded; rescue_stand: it drives the episode "
                   "and, where it tried ahead would fall after a push, the expert drives that window, which is recorded; "
                   "policy_rollouts: the policy drives every episode, its executed and clean actions recorded)")
    g.add_argument("--seed", type=int, help="replace the recipe's seed (new episodes, e.g. a second DAgger round)")
    g.add_argument("--expect", metavar="MANIFEST", help="a committed manifest whose shards are not committed (e.g. "
                   "data/regenerate/policy_rollouts.json): exit 1 unless the generated dataset is it, shard by shard")
    g.add_argument("--episodes", type=int, help="replace the recipe's episode count; a generation in progress "
                                                "resumes with another count (e.g. stop a long round early with "
                                                "the episodes it has)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(fn=cmd_data_generate)
    i = dsub.add_parser("import", help="import a D4RL or MoCapAct HDF5 file")
    i.add_argument("--format", required=True, help="d4rl | mocapact")
    i.add_argument("src")
    i.add_argument("--out", required=True)
    i.set_defaults(fn=cmd_data_import)
    mg = dsub.add_parser("merge", help="concatenate verified datasets (same spec and tasks) into a new one")
    mg.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="STORE/NAME, or STORE/NAME:TASK,TASK to take only those tasks' episodes")
    mg.add_argument("--out", required=True)
    mg.set_defaults(fn=cmd_data_merge)
    dv = dsub.add_parser("view", help="show one episode in Rerun: the robot posed from its observations, rewards, "
                                      "terminals, scheduled pushes and label rows marked")
    dv.add_argument("dir", metavar="DATASET", help="STORE/NAME[.json]")
    dv.add_argument("--episode", type=int, default=0, help="episode index in the dataset (default 0)")
    dv.add_argument("--rrd", help="write a Rerun recording here")
    dv.add_argument("--view", choices=("native", "web"), help="open a viewer: native (needs a display) or web (localhost)")
    dv.set_defaults(fn=cmd_data_view)

    n = dsub.add_parser("info", help="verify a dataset and print its recipe and per-task summary")
    n.add_argument("dir", metavar="DATASET", help="STORE/NAME[.json]")
    n.set_defaults(fn=cmd_data_info)

    t = sub.add_parser("train", help="train a VQ-VAE and its prior (H-GAP or TAP); resumes if --out exists")
    t.add_argument("--config", required=True, help="e.g. config/train/hgap_small.yaml")
    t.add_argument("--data", required=True, help="dataset manifest, STORE/NAME[.json]")
    t.add_argument("--out", required=True, help="run directory")
    _device_arg(t)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=cmd_train)

    x = sub.add_parser("export", help="export a trained run to an engine bundle (ONNX [+ TensorRT])")
    x.add_argument("--checkpoint", required=True, help="training run directory or checkpoint.pt")
    x.add_argument("--out", required=True, help="bundle directory (must not exist)")
    x.add_argument("--samples", type=int, help="the batch baked into the fixed shapes: samples (H-GAP, Diffuser) or "
                   "beam (TAP); default the kind's")
    x.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a planner setting written into the bundle, e.g. --set sampler=warm --set steps=2 (repeatable)")
    x.add_argument("--evaluation", nargs="+", help="`planner eval --json` files: their table goes into CARD.md")
    x.add_argument("--tensorrt", action="store_true", help="also build TensorRT plans for this GPU")
    x.add_argument("--critic", help="a trained task critic (planner train-critic): its V graph goes in and the "
                                    "candidates score predicted reward + weight x gamma^H V(predicted last state)")
    x.add_argument("--critic-weight", type=float, default=1.0, help="the critic term's weight in the bundle (default 1)")
    x.add_argument("--ldm", help="a trained Lyapunov density model (planner train-ldm): its E and G graphs go in, "
                                 "for the ldm safety filter")
    x.set_defaults(fn=cmd_export)
    x.add_argument("--bundle-version", type=int, default=1,
                   help="the release number (>= 1) a node trusting signers compares: it refuses an older one")
    v = sub.add_parser("verify", help="verify a bundle's hashes, spec, shapes and paths (and signature)")
    v.add_argument("bundle")
    v.add_argument("--trusted", nargs="+", metavar="KEY.pub",
                   help="public keys: the bundle must also carry a valid signature by one of them")
    v.set_defaults(fn=cmd_verify)
    k = sub.add_parser("keygen", help="an Ed25519 key pair for signing bundles")
    k.add_argument("--out", required=True, help="directory for NAME.key (private, 0600) and NAME.pub")
    k.add_argument("--name", default="bundle_signing")
    k.set_defaults(fn=cmd_keygen)
    sg = sub.add_parser("sign", help="sign a bundle's manifest (detached Ed25519 signature in manifest.sig)")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="private key (planner keygen)")
    sg.add_argument("--bundle-version", type=int,
                    help="set the manifest's bundle_version first (a release number: raise it every release)")
    sg.set_defaults(fn=cmd_sign)
    b = sub.add_parser("bench", help="per-tick planning latency: torch eager vs runtime backends")
    b.add_argument("--bundle", required=True)
    b.add_argument("--ticks", type=int, default=1000)
    b.add_argument("--task", default="forward")
    b.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "tensorrt", "torch-cuda"],
                   help="engine backends (each bundle graph mode: /steps and /plan rows when the bundle has a "
                        "whole-plan graph); tensorrt and torch-cuda rows are skipped, with the reason, without a GPU")
    b.add_argument("--threads", type=int, default=0, help="engine intra-op threads (default: the runtime planner's, 1)")
    b.add_argument("--checkpoint", help="the training run the bundle was exported from: adds the PyTorch "
                   "reference planner (torch-eager) as the baseline row")
    b.add_argument("--json")
    b.set_defaults(fn=cmd_bench)

    u = sub.add_parser("up", help="start sim bridge + planner node (what humanoid.launch.py starts)")
    u.add_argument("system", choices=["humanoid"])
    u.add_argument("--bundle", help="engine bundle for the planner (default: the shipped bundle)")
    u.add_argument("--backend", default="onnxruntime")
    u.add_argument("--task", default="stand")
    u.add_argument("--planner", dest="planner_kind", default="bundle", help="bundle | mppi | zero")
    u.add_argument("--lockstep", action="store_true", help="sim waits for each command (deterministic)")
    u.add_argument("--use-sim-time", choices=["true", "false"], default="true",
                   help="planner on the bridge's /clock (default true: state stamps are sim time)")
    u.add_argument("--trusted-keys", default="config/keys/project_test.pub",
                   help="comma-separated public key files the node trusts ('' = accept unsigned bundles; "
                        "default: the project test key, relative to the package share dir)")
    u.add_argument("--bundle-root", default="", help="accept bundles only under this directory ('' = anywhere)")
    u.add_argument("--lock-parameters", action="store_true",
                   help="make safety_filter, safety_filter_threshold, deadline_ms, planner_settings read-only")
    u.add_argument("--reset-on-fall", action="store_true", help="the sim bridge resets the robot on the step it falls")
    u.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    u.add_argument("--quiet", action="store_true", help="no 1 Hz status line")
    u.add_argument("--log-dir", type=Path, help="node logs here (default: a new temp dir, printed)")
    u.add_argument("--view", nargs="?", const="native", choices=("native", "web"),
                   help="also run `planner view`: the native Rerun viewer (needs a display), or web: the web "
                        "viewer on http://127.0.0.1:9090 (needs the view extra: pip install 'planner_node[view]')")
    u.add_argument("--rrd", type=Path, help="also record the run to this Rerun .rrd file (through `planner view`)")
    u.set_defaults(fn=cmd_up)

    sub.add_parser("view", help="stream the running stack to Rerun: --rrd FILE, --view native|web "
                                "(a ROS node that only listens; `planner view --help`)")

    sw = sub.add_parser("swap", help="hot-swap the running planner's bundle (what `ros2 param set /planner "
                                     "bundle_path DIR` does)")
    sw.add_argument("bundle", help="bundle directory; verified by the node, which keeps the old one if it is refused")
    sw.add_argument("--no-wait", action="store_true", help="return once the node accepted the path, before the swap")
    sw.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node and the swap")
    sw.set_defaults(fn=cmd_swap)
    tk = sub.add_parser("task", help="set the running planner's task, and /cmd_vel for task track")
    tk.add_argument("task", help="stand, track, forward, ... (the node refuses an unknown one with the list)")
    tk.add_argument("--cmd-vel", type=float, nargs=3, metavar=("VX", "VY", "WZ"),
                    help="publish this twist on /cmd_vel: m/s forward, m/s left, rad/s yaw (heading frame)")
    tk.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node")
    tk.set_defaults(fn=cmd_task)

    ub = sub.add_parser("upgrade-bundle", help="rewrite a format-2 bundle as format 3 (kind_config) in a new dir")
    ub.add_argument("bundle")
    ub.add_argument("--out", required=True)
    ub.set_defaults(fn=cmd_upgrade_bundle)

    dm = sub.add_parser("demo", help="sim + planner, scripted stand/walk/turn/push sequence, report")
    dm.add_argument("--bundle", default="", help="engine bundle (default: the shipped bundle)")
    dm.add_argument("--out", default="demo_out")
    dm.add_argument("--planner", default="bundle", choices=("bundle", "mppi"),
                    help="bundle: the learned planner (default); mppi: ground-truth MPC through the same node "
                         "(walks; ~10 min)")
    dm.add_argument("--filter", default="auto", choices=("auto", "none", "ldm"),
                    help="safety filter: auto (ldm when the bundle carries a Lyapunov density model), none, ldm")
    dm.add_argument("--rrd", help="also record the run with `planner view` to this Rerun file (make demo: "
                                  "demo_out/demo.rrd; open it with `rerun FILE`)")
    dm.set_defaults(fn=cmd_demo)

    e = sub.add_parser("eval", help="closed-loop evaluation in the MuJoCo sim")
    e.add_argument("--planner", default="mppi")
    e.add_argument("--task", default="stand")
    e.add_argument("--episodes", type=int, default=5)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--steps", type=int, default=400, help="control steps per episode (x 30 ms)")
    e.add_argument("--budget-ms", type=float, default=None,
                   help="cap mppi's work per control step to this many ms on this machine")
    e.add_argument("--samples", type=int, default=None,
                   help="mppi samples, or a learned kind's batch setting (its record's batch_param: "
                        "samples, beam; default: the planner's own)")
    e.add_argument("--walk-speed", type=float, default=None,
                   help="mppi: on forward/backward/shift_left/track, lead the feet by this speed [m/s] "
                        "(0.2 walks forward; default 0: balance over the feet, as the datasets' expert)")
    e.add_argument("--temperature", type=float, default=None,
                   help="a learned kind's sampling temperature (default: the kind's own)")
    e.add_argument("--checkpoint", help="training run (or checkpoint.pt) for a learned kind")
    e.add_argument("--bundle", help="run an exported bundle's runtime planner instead (no torch)")
    e.add_argument("--backend", default="onnxruntime", help="engine backend for --bundle")
    e.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a planner setting: a learned kind's (--bundle: overrides the bundle's), e.g. "
                        "--set steps=4, or an MPPIConfig field for mppi, e.g. --set w_terminal=1")
    e.add_argument("--command", type=float, nargs=3, metavar=("VX", "VY", "WZ"),
                   help="twist for the 'track' task")
    e.add_argument("--push-every", type=int, default=100, help="control steps between pushes (0: none)")
    e.add_argument("--push-speed", type=float, default=0.25, help="push velocity impulse [m/s]")
    e.add_argument("--json", help="write the results here")
    e.add_argument("--video", help="render the episodes to this MP4")
    e.add_argument("--trace", metavar="PNG", help="record each episode's drift (base height and yaw, feet slide, "
                   "the joints that moved most, activation error): a PNG of the traces, and a per-episode "
                   "'drift' summary in --json")
    e.add_argument("--score", help="oracle: choose among a learned planner's candidates by the model, by true "
                   "rollouts, and by true rollouts with the previous plan as a candidate; prints the three side "
                   "by side (simulation only)")
    e.add_argument("--critic", help="a trained critic's run (planner train-critic): adds the critic-scored column")
    e.add_argument("--critic-weight", type=float, help="--bundle with a critic: its term's weight (0: off)")
    e.add_argument("--filter", default="none", help="safety filter between plan and action: none | ldm (needs a "
                                                    "bundle exported with --ldm)")
    e.add_argument("--filter-threshold", type=float, help="ldm: admissible while G <= this (default: the bundle's)")
    e.add_argument("--plan-latency-ms", type=float, default=0.0,
                   help="plans reach the robot this late, shifted by their age, as a command clock uses them")
    e.add_argument("--workers", type=int, default=1,
                   help="episodes at once: > 1 runs them as tasks on a local Ray with this many CPUs")
    e.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run episodes as Ray tasks: no ADDRESS = a local Ray with --workers CPUs; "
                        "'auto' or HOST:PORT = an existing cluster")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=cmd_eval)
    tc = sub.add_parser("train-critic", help="train the task critic (IQL-style V(s) for every task, falls terminal)")
    tc.add_argument("--data", required=True, help="dataset manifest, STORE/NAME[.json]")
    tc.add_argument("--out", required=True, help="run directory (critic.pt, curves.json)")
    tc.add_argument("--steps", type=int, default=20_000)
    _device_arg(tc)
    tc.add_argument("--quiet", action="store_true")
    tc.set_defaults(fn=cmd_train_critic)
    tl = sub.add_parser("train-ldm", help="train the Lyapunov density model: density E(s,a) (a flow), then G by the backup")
    tl.add_argument("--data", required=True, help="dataset manifest, STORE/NAME[.json]")
    tl.add_argument("--out", required=True, help="run directory (ldm.pt, curves.json)")
    tl.add_argument("--flow-steps", type=int, help="density (E) training steps (default 4000)")
    tl.add_argument("--g-steps", type=int, help="Lyapunov density (G) training steps (default 4000)")
    tl.add_argument("--percentile", type=float,
                    help="threshold: -log of this percentile of the data's densities (default 40, the prototype's)")
    _device_arg(tl)
    tl.add_argument("--quiet", action="store_true")
    tl.set_defaults(fn=cmd_train_ldm)
    return p


def main(argv: list[str] | None = None) -> int:
    _env_defaults()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["view"]:  # its own parser (and --ros-args), see planner_node.ros.view
        from planner_node.ros.view import main as view_main
        return view_main(["planner view", *argv[1:]])
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (KeyError, ValueError, FileNotFoundError) as e:  # config, data and checkpoint errors too
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"planner: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
