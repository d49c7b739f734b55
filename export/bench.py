"""``planner bench``: per-tick planning latency of a bundle's planner, torch eager vs runtime backends.

All backends run the same planner code on the same observations in one process, so ratios
are comparable. A bundle with a whole-plan graph (``plan``) gets two rows per backend: the step
graphs (``/steps``: an engine call per prior step, sampling on the host) and the whole plan in
one engine call (``/plan``). Also reported: FLOPs per tick (counted from the ONNX graphs), achieved
GFLOP/s and its share of this machine's fp32 GEMM peak (measured in the same run), and the
resident memory of a separate process that runs ONNX Runtime only (no torch imported).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from planner_node.kinds import get_kind, resolve
from planner_node.planning import PlanRequest


def onnx_flops(path) -> int:
    """Multiply-add FLOPs (x2) of MatMul/Gemm/Conv nodes, from inferred static shapes."""
    import onnx
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {}
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for n in m.graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(n.input[0]), shapes.get(n.input[1])
            out = shapes.get(n.output[0])
            if a and b and out:
                k = a[-1] if not (n.op_type == "Gemm" and any(at.name == "transA" and at.i for at in n.attribute)) else a[0]
                total += 2 * int(np.prod(out)) * k
        elif n.op_type == "Conv":
            w, out = shapes.get(n.input[1]), shapes.get(n.output[0])
            if w and out:
                total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def gemm_peak_gflops(n: int = 1024, reps: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _observations(n: int) -> list[np.ndarray]:
    from planner_node.sim.env import HumanoidEnv
    env = HumanoidEnv()
    obs = [env.reset(0)]
    for _ in range(n - 1):
        obs.append(env.step(env.zero_action)[0])
    return obs


def time_backend(bundle, backend: str, ticks: int, task: str, obs: list[np.ndarray],
                 checkpoint: str | None = None, threads: int = 0, graphs: str | None = None) -> dict:
    """``backend == "torch-eager"``: the PyTorch reference planner of ``checkpoint`` (growing KV
    cache, torch sampling), i.e. the planner before export, at the bundle's sample count."""
    if backend == "torch-eager":
        from planner_node.planning import planner_class
        m = bundle.manifest
        param = get_kind(m["planner"]).batch_param
        size = {param: m["planner_defaults"][param]}
        planner = planner_class(m["planner"])(checkpoint=checkpoint, seed=0, threads=os.cpu_count() or 1,
                                             **size)
    else:
        from planner_node.runtime.bundle_planner import runtime_planner
        planner = runtime_planner(bundle, backend=backend, seed=0, **({"threads": threads} if threads else {}),
                                  **({"graphs": graphs} if graphs else {}))
    for o in obs[:5]:  # warm-up (allocations, graph optimizations)
        planner.plan(PlanRequest(obs=o, task=task))
    lat = []
    for i in range(ticks):
        t = time.perf_counter()
        planner.plan(PlanRequest(obs=obs[i % len(obs)], task=task))
        lat.append((time.perf_counter() - t) * 1e3)
    lat = np.asarray(lat)
    first = (getattr(planner, "engines_made", None) or [None])[0]
    return {"backend": f"{backend}/{graphs}" if graphs else backend,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "mean_ms": float(lat.mean()),
            "engine": getattr(first, "backend", backend),
            "note": getattr(first, "fallback_reason", None) if backend != "torch-eager" else checkpoint}


def _ort_only_rss(bundle_path: str, task: str) -> dict:
    """RSS of a fresh process that plans with ONNX Runtime and never imports torch."""
    code = (
        "import sys, json\n"
        "from planner_node.runtime.bundle_planner import runtime_planner\n"
        "from planner_node.planning import PlanRequest\n"
        "from planner_node.export.bench import _rss_mb\n"
        "import numpy as np\n"
        f"p = runtime_planner({bundle_path!r}, backend='onnxruntime')\n"
        "obs = np.zeros(224, np.float32)\n"
        f"[p.plan(PlanRequest(obs=obs, task={task!r})) for _ in range(20)]\n"
        "print(json.dumps({'rss_mb': _rss_mb(), 'torch_imported': 'torch' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"rss_mb": float("nan"), "torch_imported": None, "error": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_bench(bundle_path: str, ticks: int, json_path: str | None, backends: list[str], task: str,
              checkpoint: str | None = None, threads: int = 0) -> int:
    from planner_node.runtime.bundle import load_bundle
    bundle = load_bundle(bundle_path)
    m = bundle.manifest
    kind = get_kind(m["planner"])
    flops = resolve(kind.flops)(bundle)
    obs = _observations(50)
    peak = gemm_peak_gflops()
    rows, skipped = [], []
    if "torch-eager" in backends and not checkpoint:
        raise ValueError("--backends torch-eager needs --checkpoint RUN (the run the bundle was exported from)")
    if checkpoint:
        backends = ["torch-eager", *[b for b in backends if b != "torch-eager"]]
    for be in backends:
        if be == "tensorrt":
            from planner_node.runtime.tensorrt_build import machine_info
            if machine_info() is None:
                skipped.append("tensorrt: skipped (TensorRT / CUDA GPU not available on this machine)")
                continue
        if be == "torch-cuda" and not _cuda_available():
            skipped.append("torch-cuda: skipped (no CUDA device visible to torch on this machine)")
            continue
        if be in ("torch", "torch-cuda") and m["reference"] is None:
            # Only the VQ-VAE + prior kinds ship reference.pt; the others run on ONNX Runtime or TensorRT.
            skipped.append(f"{be}: skipped (this {m['planner']} bundle carries no reference.pt torch weights; "
                           "--checkpoint RUN adds the PyTorch reference planner instead)")
            continue
        if be == "torch-eager":
            rows.append(time_backend(bundle, be, ticks, task, obs, checkpoint, threads))
            continue
        for graphs in ([None] if "plan" not in m["graphs"] else ["steps", "plan"]):
            if be == "torch-cuda" and graphs == "steps":
                continue  # a CUDA graph per step call would still sync on the host every step
            rows.append(time_backend(bundle, be, ticks, task, obs, checkpoint, threads, graphs))
    # The ratio is against torch eager: the reference planner when --checkpoint is given, else
    # the exported fixed-shape graphs run by torch.
    base = next((r for r in rows if r["backend"] == "torch-eager"), None) or \
        next((r for r in rows if r["backend"].split("/")[0] == "torch"), None)
    print(f"bundle {bundle_path}: {m['planner']}, {m['planner_defaults']}, {flops / 1e6:.1f} MFLOP/tick; "
          f"fp32 GEMM peak here {peak:.0f} GFLOP/s; {ticks} ticks per backend")
    print(f"{'backend':<20}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'x ' + (base or {}).get('backend', '-') + ' p50':>18}"
          f"{'GFLOP/s':>9}{'% peak':>8}")
    for r in rows:
        r["gflops"] = flops / (r["mean_ms"] / 1e3) / 1e9
        r["peak_share"] = r["gflops"] / peak
        r["speedup_vs_torch_p50"] = base["p50_ms"] / r["p50_ms"] if base else None
        r["speedup_base"] = base["backend"] if base else None
        sp = f"{r['speedup_vs_torch_p50']:.2f}" if base else "-"
        print(f"{r['backend']:<20}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{sp:>18}"
              f"{r['gflops']:>9.1f}{r['peak_share']:>8.1%}")
    for s in skipped:
        print(s)
    rss = _ort_only_rss(str(bundle_path), task)
    print(f"runtime process (ONNX Runtime only): RSS {rss['rss_mb']:.0f} MB, torch imported: {rss['torch_imported']}")
    print(f"this process (all backends, torch loaded): RSS {_rss_mb():.0f} MB")
    if json_path:
        from planner_node.atomic import write_json
        write_json(json_path, {"backends": rows, "skipped": skipped, "flops_per_tick": flops,
                               "gemm_peak_gflops": peak, "runtime_rss_mb": rss["rss_mb"],
                               "runtime_torch_imported": rss["torch_imported"], "ticks": ticks})
    return 0
