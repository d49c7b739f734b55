"""torch -> ONNX -> bundle: ``planner export --checkpoint RUN --out BUNDLE [--tensorrt]``.

Fixed shapes per planner config (batch = samples for H-GAP; beam for TAP's prior step and
beam x expansion for its decoder), pinned opset, ``onnx.checker`` + shape inference, and a
parity check of every graph against torch before the bundle is written. The bundle is
assembled in a temp directory and renamed into place: a failed export leaves nothing.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import yaml

from planner_node import spec
from planner_node.atomic import sha256_file, write_text
from planner_node.export.graphs import DecoderGraph, PriorStepGraph
from planner_node.models.checkpoint import load_checkpoint
from planner_node.models.train import build_models
from planner_node.runtime.bundle import FORMAT_VERSION, load_bundle

OPSET = 17
PARITY_ATOL = {"prior_step": 1e-4, "decoder": 1e-4}  # max abs difference, ONNX Runtime vs torch (fp32)
DEFAULTS = {"hgap": {"samples": 64, "temperature": 2.0, "top_p": 0.99},
            "tap": {"beam": 64, "expansion": 4, "prob_threshold": 0.05, "prob_weight": 500.0, "temperature": 1.0}}


class ExportError(RuntimeError):
    pass


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
    """The training data, named by its hash (sha256 of the dataset's meta.json, which lists
    every shard's sha256) and a repo-relative path."""
    d = ck.get("dataset")
    if not d:
        return None
    return {"sha256": d.get("meta_sha256", "unknown"), "path": _repo_relative(d["path"]) if d.get("path") else None}


def _export(module, args, names_in, names_out, path: Path) -> None:
    import onnx

    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, do_constant_folding=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(path))


def _io(path: Path) -> tuple[list, list]:
    import onnx
    m = onnx.load(str(path))
    names = {1: "float32", 7: "int64", 10: "float16"}

    def conv(vs):
        out = []
        for v in vs:
            t = v.type.tensor_type
            dims = [d.dim_value for d in t.shape.dim]
            if any(d <= 0 for d in dims):
                raise ExportError(f"{path.name}: {v.name} has a non-fixed shape {dims}")
            out.append({"name": v.name, "dtype": names[t.elem_type], "shape": dims})
        return out
    return conv(m.graph.input), conv(m.graph.output)


def _parity(path: Path, feeds: dict, expected: list, atol: float) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    err = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
    if not err <= atol:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {err:.2e} > {atol:.0e}")
    return err


def bucket_sizes(full: int, factor: int) -> list[int]:
    """Batch sizes below ``full``: 1, factor, factor^2, ... (the smaller fixed-shape copies)."""
    sizes, b = [], 1
    while b < full and factor > 1:
        sizes.append(b)
        b *= factor
    return sizes


def _export_prior_step(step: PriorStepGraph, cfg, n: int, gen, path: Path) -> float:
    state = torch.randn(n, cfg.vq.obs_dim, generator=gen)
    token = torch.randint(0, cfg.vq.codebook_size, (n, 1), generator=gen)
    k = torch.randn(step.cache_shape(n), generator=gen) * 0.1
    v = torch.randn(step.cache_shape(n), generator=gen) * 0.1
    pos = torch.tensor([2])
    _export(step, (state, token, pos, k, v), ["state", "token", "pos", "k_cache", "v_cache"],
            ["logits", "k_new", "v_new"], path)
    with torch.no_grad():
        exp = [t.numpy() for t in step(state, token, pos, k, v)]
    return _parity(path, {"state": state.numpy(), "token": token.numpy(), "pos": pos.numpy(),
                          "k_cache": k.numpy(), "v_cache": v.numpy()}, exp, PARITY_ATOL["prior_step"])


def _export_decoder(dec: DecoderGraph, cfg, n: int, gen, path: Path) -> float:
    toks = torch.randint(0, cfg.vq.codebook_size, (n, cfg.vq.num_tokens), generator=gen)
    st = torch.randn(n, cfg.vq.obs_dim, generator=gen)
    _export(dec, (toks, st), ["tokens", "state"], ["trajectory"], path)
    with torch.no_grad():
        exp = [dec(toks, st).numpy()]
    return _parity(path, {"tokens": toks.numpy(), "state": st.numpy()}, exp, PARITY_ATOL["decoder"])


def export_bundle(checkpoint: str | Path, out: str | Path, tensorrt: bool = False,
                  evaluations: list[dict] | None = None, **overrides) -> dict:
    ck = load_checkpoint(checkpoint)
    kind = ck["kind"]
    cfg, vq, prior, norm = build_models(ck)
    defaults = {**DEFAULTS[kind], **overrides}
    n_prior = defaults["samples"] if kind == "hgap" else defaults["beam"]
    n_dec = defaults["samples"] if kind == "hgap" else defaults["beam"] * defaults["expansion"]
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: already exists; refusing to overwrite a bundle (choose a new --out)")
    tmp = out.parent / f".{out.name}.exporting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gen = torch.Generator().manual_seed(0)
        step = PriorStepGraph(prior).eval()
        dec = DecoderGraph(vq).eval()
        errs = {"prior_step": _export_prior_step(step, cfg, n_prior, gen, tmp / "prior_step.onnx"),
                "decoder": _export_decoder(dec, cfg, n_dec, gen, tmp / "decoder.onnx")}
        if kind == "tap":
            # TAP's beam grows 1, E, E^2, ... before it reaches the beam width: smaller fixed-shape
            # copies let the runtime run each step at the smallest batch that fits, as the eager
            # reference does, instead of padding every step to the full beam (measured 3x slower).
            for b in bucket_sizes(n_prior, defaults["expansion"]):
                errs[f"prior_step_b{b}"] = _export_prior_step(step, cfg, b, gen, tmp / f"prior_step_b{b}.onnx")
            for b in bucket_sizes(n_dec, defaults["expansion"])[1:]:  # >= E: candidates come E at a time
                errs[f"decoder_b{b}"] = _export_decoder(dec, cfg, b, gen, tmp / f"decoder_b{b}.onnx")
        # Reference weights for the torch backend (loaded with weights_only=True).
        torch.save({"vq": vq.state_dict(), "prior": prior.state_dict()}, tmp / "reference.pt")
        graphs = {}
        for name in errs:
            ins, outs = _io(tmp / f"{name}.onnx")
            graphs[name] = {"file": f"{name}.onnx", "sha256": sha256_file(tmp / f"{name}.onnx"),
                            "inputs": ins, "outputs": outs, "parity_max_abs_err": errs[name]}
        import onnx
        manifest = {
            "format_version": FORMAT_VERSION, "planner": kind, "spec_hash": spec.SPEC_HASH,
            "joint_names": list(spec.JOINT_NAMES), "obs_blocks": [[n, s] for n, s in spec.OBS_BLOCKS],
            "control_period_s": spec.CONTROL_PERIOD_S, "horizon": cfg.vq.horizon,
            "num_tokens": cfg.vq.num_tokens, "codebook_size": cfg.vq.codebook_size,
            "latent_stride": cfg.vq.latent_stride, "codes_per_latent": cfg.vq.codes_per_latent,
            "obs_dim": cfg.vq.obs_dim, "act_dim": cfg.vq.act_dim, "predict_return": cfg.vq.predict_return,
            "discount": cfg.vq.discount, "trained_tasks": ck.get("tasks"),
            "normalizer": {k: np.asarray(v).astype(float).tolist() for k, v in norm.stats.items()},
            "planner_defaults": defaults, "model_config": ck["config"], "graphs": graphs,
            "reference": {"file": "reference.pt", "sha256": sha256_file(tmp / "reference.pt")},
            "plans": [],
            "producer": {"planner_node": _version(), "torch": str(torch.__version__), "onnx": str(onnx.__version__),
                         "opset": OPSET, "python": platform.python_version(), "git_commit": _git_commit(),
                         "checkpoint": _repo_relative(checkpoint), "dataset": dataset_record(ck)},
        }
        if tensorrt:
            from planner_node.runtime.tensorrt_build import build_plans
            manifest["plans"] = build_plans(tmp, graphs)
        write_text(tmp / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False, width=120))
        write_text(tmp / "CARD.md", bundle_card(manifest, ck, evaluations or []))
        load_bundle(tmp)  # verify what we wrote, exactly as a robot will
        os.replace(tmp, out)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluation_table(evaluations: list[dict]) -> str:
    """Markdown rows from ``planner eval --json`` results (closed loop, in simulation)."""
    if not evaluations:
        return ""
    rows = ["| task | planner | episodes x steps | mean return | mean length | fall rate |", "|---|---|---|---|---|---|"]
    for r in evaluations:
        rows.append(f"| {r['task']} | {r.get('planner', '?')} | {len(r['episodes'])} x {r['steps']} | "
                    f"{r['mean_return']:.1f} ± {r['std_return']:.1f} | {r['mean_length']:.0f} | {r['fall_rate']:.0%} |")
    return "\n## Evaluation (closed loop in simulation, `planner eval`; pushes included)\n\n" + "\n".join(rows) + "\n"


def _data_line(d: dict | None) -> str:
    if not d:
        return "not recorded"
    return f"dataset sha256 {d['sha256']} (`{d['path']}`)"


def bundle_card(m: dict, ck: dict, evaluations: list[dict] = ()) -> str:
    split = ck.get("split", {})
    return f"""# Bundle card: {m['planner']} ({m['producer']['planner_node']})

- Planner: {m['planner']}, horizon {m['horizon']} x {m['control_period_s']} s, {m['num_tokens']} codes of
  {m['codebook_size']}; defaults {m['planner_defaults']}.
- Spec: {m['spec_hash']} (56 joints, 224-D observation, see manifest.yaml).
- Data: {_data_line(m['producer']['dataset'])} ({split.get('train_windows', '?')} training windows from
  {split.get('train_episodes', '?')} episodes, {split.get('holdout_episodes', '?')} held out); tasks {m['trained_tasks']}.
- Training: {m['producer']['checkpoint']} (config in manifest.yaml: model_config).
- Export: ONNX opset {m['producer']['opset']}, torch {m['producer']['torch']}, commit {m['producer']['git_commit']};
  parity (max abs err vs torch): {', '.join(f"{k} {v['parity_max_abs_err']:.1e}" for k, v in m['graphs'].items())}.
- TensorRT plans: {len(m['plans'])} ({'none built: ONNX Runtime is used' if not m['plans'] else 'see manifest'}).
- Evaluation: run `planner eval --planner {m['planner']} --bundle <this dir> --task T` on the target machine.
- Known limits: trained on MPPI-expert data generated in simulation (small next to the papers' MoCapAct);
  not validated on hardware.
{evaluation_table(list(evaluations))}"""
