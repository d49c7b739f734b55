"""Checkpoint -> bundle: ``planner export --checkpoint RUN --out BUNDLE [--tensorrt]``, for any kind.

The checkpoint names its kind; the kind's registry record (``planner_node.kinds``) names the
export function that writes its graphs (fixed shapes, pinned opset, ``onnx.checker`` + shape
inference, parity against torch). This module writes what every bundle has: hashes, the manifest
(format 4: the kind's own fields under ``kind_config``; ``safety_filter``: the Lyapunov density
model's graphs and threshold when ``--ldm RUN`` is given), CARD.md, optional TensorRT plans. The
bundle is assembled in a temp directory, verified exactly as a robot will, and renamed into
place: a failed export leaves nothing.
"""
from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch
import yaml

from planner_node import spec
from planner_node.atomic import sha256_file, write_text
from planner_node.export.kind_export import OPSET, ExportError, graph_io
from planner_node.kinds import get_kind, resolve
from planner_node.models.checkpoint import load_checkpoint
from planner_node.runtime.bundle import FORMAT_VERSION, load_bundle

__all__ = ["ExportError", "export_bundle", "upgrade_bundle"]


def _version() -> str:
    import re
    xml = Path(__file__).resolve().parents[1] / "package.xml"
    m = re.search(r"<version>([^<]+)</version>", xml.read_text()) if xml.exists() else None
    return m.group(1) if m else "unknown"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _repo_relative(path) -> str:
    """A path as recorded in a bundle: relative to the repo (cwd) when inside it, else only its
    name; a bundle never records an absolute path of the machine that made it."""
    p = Path(path).resolve()
    for root in (Path.cwd().resolve(), Path(__file__).resolve().parents[1]):
        if p == root or root in p.parents:
            return str(p.relative_to(root))
    return f"<outside the repo>/{p.name}"


def dataset_record(ck: dict) -> dict | None:
    """The training data, named by its dataset hash (over the spec, the tasks and the ordered
    shard hashes: ``planner data info`` prints it) and a repo-relative path."""
    d = ck.get("dataset")
    if not d:
        return None
    return {"sha256": d.get("dataset_sha256", "unknown"), "path": _repo_relative(d["path"]) if d.get("path") else None}


def export_bundle(checkpoint: str | Path, out: str | Path, tensorrt: bool = False,
                  evaluations: list[dict] | None = None, batch: int | None = None, ldm: str | Path | None = None,
                  critic: str | Path | None = None, critic_weight: float = 1.0, bundle_version: int = 1,
                  **overrides) -> dict:
    """``batch``: the kind's batch-sizing setting (its record's ``batch_param``: samples, beam);
    ``ldm``: a trained Lyapunov density model (``planner train-ldm``) whose E and G graphs go in,
    at the candidate count, for the ``ldm`` safety filter; ``critic``: a trained task critic (``planner
    train-critic``) whose V graph goes in: candidates then score predicted reward + ``critic_weight``
    x gamma^H V(predicted last state); ``bundle_version``: the release number a signing node's
    rollback check compares (raise it for every release); ``overrides``: any of the kind's settings."""
    if isinstance(bundle_version, bool) or not isinstance(bundle_version, int) or bundle_version < 1:
        raise ExportError(f"--bundle-version must be an integer >= 1, got {bundle_version!r}")
    ck = load_checkpoint(checkpoint)
    try:
        kind = get_kind(ck.get("kind"))
    except KeyError as e:
        raise ExportError(f"{checkpoint}: {e.args[0]}") from None
    unknown = sorted(set(overrides) - set(kind.defaults))
    if unknown:
        raise ExportError(f"unknown settings {unknown} for kind {kind.name!r}; valid: {sorted(kind.defaults)}")
    if critic and not kind.scores_with_critic:
        from planner_node.kinds import KINDS
        raise ExportError(f"--critic: a {kind.name!r} bundle would carry a critic its runtime planner ignores; kinds "
                          f"that score with one: {', '.join(k for k, v in KINDS.items() if v.scores_with_critic)}")
    settings = {**kind.defaults, **overrides, **({kind.batch_param: batch} if batch else {})}
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: already exists; refusing to overwrite a bundle (choose a new --out)")
    tmp = out.parent / f".{out.name}.exporting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ex = resolve(kind.export)(ck, tmp, settings)
        safety_filter = None
        if ldm:
            from planner_node.export.ldm import export_ldm
            errs, safety_filter = export_ldm(ldm, tmp, settings[kind.batch_param])
            ex.graphs.update(errs)
            ex.card.append(f"- Safety filter: Lyapunov density model `{safety_filter['source']}` (graphs "
                           f"{safety_filter['energy']}, {safety_filter['lyapunov']}), threshold G <= "
                           f"{safety_filter['threshold']:.2f} (-log of the data's {safety_filter['percentile']:g}th "
                           "percentile density).")
        critic_block = None
        if critic:
            from planner_node.export.critic import export_critic
            errs, critic_block = export_critic(critic, tmp, settings[kind.batch_param], critic_weight)
            ex.graphs.update(errs)
            ex.card.append(f"- Critic: `{critic_block['source']}` (graph {critic_block['graph']}): a candidate scores its "
                           f"predicted reward + {critic_weight:g} x {critic_block['discount']:g}^H V(predicted last state).")
        graphs = {}
        for name, err in ex.graphs.items():
            ins, outs = graph_io(tmp / f"{name}.onnx")
            graphs[name] = {"file": f"{name}.onnx", "sha256": sha256_file(tmp / f"{name}.onnx"),
                            "inputs": ins, "outputs": outs, "parity_max_abs_err": err}
        import onnx
        manifest = {
            "format_version": FORMAT_VERSION, "bundle_version": bundle_version, "planner": kind.name,
            "spec_hash": spec.SPEC_HASH,
            "joint_names": list(spec.JOINT_NAMES), "obs_blocks": [[n, s] for n, s in spec.OBS_BLOCKS],
            "control_period_s": spec.CONTROL_PERIOD_S, "horizon": ex.horizon, "trained_tasks": ck.get("tasks"),
            "normalizer": ex.normalizer, "planner_defaults": settings, "kind_config": ex.kind_config,
            "graphs": graphs,
            "reference": {"file": "reference.pt", "sha256": sha256_file(tmp / "reference.pt")} if ex.reference else None,
            "plans": [],
            "safety_filter": safety_filter,
            "critic": critic_block,
            "producer": {"planner_node": _version(), "torch": str(torch.__version__), "onnx": str(onnx.__version__),
                         "opset": OPSET, "python": platform.python_version(), "git_commit": _git_commit(),
                         "checkpoint": _repo_relative(checkpoint), "dataset": dataset_record(ck)},
        }
        if tensorrt:
            from planner_node.runtime.tensorrt_build import build_plans
            manifest["plans"] = build_plans(tmp, graphs)
        write_text(tmp / "CARD.md", bundle_card(manifest, ck, evaluations or [], ex.card))
        manifest = _with_card(manifest, tmp / "CARD.md")
        write_text(tmp / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False, width=120))
        load_bundle(tmp)  # verify what we wrote, exactly as a robot will
        os.replace(tmp, out)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _with_card(manifest: dict, card: Path) -> dict:
    """The manifest with ``card`` (file, sha256) right after ``bundle_version``."""
    out = {}
    for k, v in manifest.items():
        out[k] = v
        if k == "bundle_version":
            out["card"] = {"file": card.name, "sha256": sha256_file(card)}
    return out


def upgrade_bundle(src: str | Path, out: str | Path) -> dict:
    """A format-2 bundle (kind-specific fields at the top level) as format 3, in a new directory:
    the same files, the manifest restructured; verified before it is renamed into place."""
    src, out = Path(src), Path(out)
    m = yaml.safe_load((src / "manifest.yaml").read_text())
    if not isinstance(m, dict) or m.get("format_version") != 2:
        raise ExportError(f"{src}/manifest.yaml: not a format-2 bundle (format_version "
                          f"{m.get('format_version') if isinstance(m, dict) else None!r})")
    kind = get_kind(m.get("planner"))
    if out.exists():
        raise ExportError(f"{out}: already exists; refusing to overwrite a bundle (choose a new --out)")
    legacy = {k: m.pop(k) for k in kind.kind_config_keys if k in m}
    missing = sorted(set(kind.kind_config_keys) - set(legacy))
    if missing:
        raise ExportError(f"{src}/manifest.yaml: format 2 lacks {missing}")
    new = {}
    for k, v in m.items():  # keep the order: kind_config goes where planner_defaults ends
        new["format_version" if k == "format_version" else k] = 3 if k == "format_version" else v
        if k == "planner_defaults":
            new["kind_config"] = legacy
    tmp = out.parent / f".{out.name}.upgrading"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    try:
        write_text(tmp / "manifest.yaml", yaml.safe_dump(new, sort_keys=False, width=120))
        load_bundle(tmp)
        os.replace(tmp, out)
        return new
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluation_table(evaluations: list[dict]) -> str:
    """Markdown rows from ``planner eval --json`` results (closed loop, in simulation)."""
    if not evaluations:
        return ""
    rows = ["| task | planner | episodes x steps | mean return ± s.e. | mean length | fall rate |",
            "|---|---|---|---|---|---|"]
    for r in evaluations:
        n = len(r["episodes"])
        se = r["std_return"] / math.sqrt(max(n - 1, 1))   # std_return is numpy's (ddof 0)
        rows.append(f"| {r['task']} | {r.get('planner', '?')} | {n} x {r['steps']} | "
                    f"{r['mean_return']:.1f} ± {se:.1f} | {r['mean_length']:.0f} | {r['fall_rate']:.0%} |")
    return "\n## Evaluation (closed loop in simulation, `planner eval`; pushes included)\n\n" + "\n".join(rows) + "\n"


def _data_line(d: dict | None) -> str:
    if not d:
        return "not recorded"
    return f"dataset sha256 {d['sha256']} (`{d['path']}`)"


def bundle_card(m: dict, ck: dict, evaluations: list[dict] = (), kind_lines: list[str] = ()) -> str:
    split = ck.get("split", {})
    lines = "\n".join(kind_lines)
    return f"""# Bundle card: {m['planner']} ({m['producer']['planner_node']})

- Planner: {m['planner']}, horizon {m['horizon']} x {m['control_period_s']} s; settings {m['planner_defaults']}.
{lines}
- Spec: {m['spec_hash']} (56 joints, 224-D observation, see manifest.yaml).
- Data: {_data_line(m['producer']['dataset'])} ({split.get('train_windows', '?')} training windows from
  {split.get('train_episodes', '?')} episodes, {split.get('holdout_episodes', '?')} held out); tasks {m['trained_tasks']}.
- Training: {m['producer']['checkpoint']}.
- Export: ONNX opset {m['producer']['opset']}, torch {m['producer']['torch']}, commit {m['producer']['git_commit']};
  parity (max abs err vs torch): {', '.join(f"{k} {v['parity_max_abs_err']:.1e}" for k, v in m['graphs'].items())}.
- TensorRT plans: {len(m['plans'])} ({'none built: ONNX Runtime is used' if not m['plans'] else 'see manifest'}).
- Evaluation: run `planner eval --bundle <this dir> --task T` on the target machine.
- Known limits: trained on MPPI-expert data generated in simulation (small next to the papers' MoCapAct);
  not validated on hardware.
{evaluation_table(list(evaluations))}"""


def set_bundle_version(bundle: str | Path, version: int) -> int:
    """Set ``bundle_version`` in place, as one line of the manifest (every other byte stays, so
    the diff is that line); a format-4 bundle becomes format 5. Verified before and after; any
    signature over the old bytes no longer verifies (sign again). Returns the old version."""
    import re

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"--bundle-version must be an integer >= 1, got {version!r}")
    bundle = Path(bundle)
    old = load_bundle(bundle, check_graphs=False)
    mpath = bundle / "manifest.yaml"
    original = text = mpath.read_text()
    if old.manifest["format_version"] >= 5:
        text, n = re.subn(r"(?m)^bundle_version: .*$", f"bundle_version: {version}", text, count=1)
    elif old.manifest["format_version"] == 4:
        card = bundle / "CARD.md"
        card_yaml = (f"card:\n  file: CARD.md\n  sha256: {sha256_file(card)}" if card.is_file() else "card: null")
        text, n = re.subn(r"(?m)^format_version: 4$",
                          f"format_version: {FORMAT_VERSION}\nbundle_version: {version}\n{card_yaml}", text, count=1)
    else:
        raise ExportError(f"{mpath}: format {old.manifest['format_version']}: upgrade it first "
                          "(`planner upgrade-bundle`)")
    if n != 1:
        raise ExportError(f"{mpath}: no top-level bundle_version/format_version line to edit")
    write_text(mpath, text)
    try:
        load_bundle(bundle, check_graphs=False)
    except Exception:
        write_text(mpath, original)   # the edit broke it: put the manifest back as it was
        raise
    return old.version
