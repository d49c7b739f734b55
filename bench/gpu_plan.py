#!/usr/bin/env python3
"""One H-GAP plan on a CUDA GPU: step graphs eager vs the whole-plan graph eager vs the whole-plan
graph replayed as one captured CUDA graph (the device check of the "one graph per plan" issue).

Needs torch (with CUDA), numpy and PyYAML only: the graphs are the bundle's reference modules
(``reference.pt``, hash-checked), so it runs on a lent device machine whose image lacks ONNX
Runtime, MuJoCo and ROS. ``--device cpu`` is a dry run of the same code (no CUDA-graph row).

    python bench/gpu_plan.py [--bundle bundles/hgap] [--ticks 500] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="bundles/hgap")
    ap.add_argument("--ticks", type=int, default=500)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    from planner_node.export.graphs import sample_tokens_in_graph
    from planner_node.export.torch_engine import reference_module
    from planner_node.runtime.bundle import load_bundle

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to measure (use --device cpu for a dry run)")
        return 2
    bundle = load_bundle(a.bundle, check_graphs=False)  # no onnx package needed; hashes still checked
    m = bundle.manifest
    n, T = m["planner_defaults"]["samples"], m["kind_config"]["num_tokens"]
    temp = torch.tensor([m["planner_defaults"]["temperature"]], device=dev)
    top_p = torch.tensor([m["planner_defaults"]["top_p"]], device=dev)
    whole = reference_module(bundle, "plan").to(dev)
    step = reference_module(bundle, "prior_step").to(dev)
    dec = reference_module(bundle, "decoder").to(dev)
    gen = torch.Generator(device="cpu").manual_seed(0)
    state = torch.randn(1, m["kind_config"]["obs_dim"], generator=gen).to(dev)
    u = torch.rand(n, T, generator=gen).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def steps_eager():
        s = state.expand(n, -1).contiguous()
        k = torch.zeros(step.cache_shape(n), device=dev)
        v = torch.zeros_like(k)
        tok = torch.zeros(n, 1, dtype=torch.long, device=dev)
        toks = []
        for t in range(T):
            logits, kn, vn = step(s, tok, torch.tensor([t], device=dev), k, v)
            k[:, :, :, t], v[:, :, :, t] = kn, vn
            nxt, over = sample_tokens_in_graph(logits, u[:, t], temp, top_p, whole.tail)
            over.sum().item()  # a host sync per step, as a step-graph runtime has (it reads each step's draws)
            tok = nxt[:, None]
            toks.append(nxt)
        out = dec(torch.stack(toks, 1), s)
        return out.cpu()

    def whole_eager():
        return [o.cpu() for o in whole(u, state, temp, top_p)]

    graph = None
    if dev.type == "cuda":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                whole(u, state, temp, top_p)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            captured = whole(u, state, temp, top_p)

    def whole_graph():
        graph.replay()
        return [o.cpu() for o in captured]

    rows = []
    cases = [("step graphs, eager (host sync per step)", steps_eager), ("whole plan, eager", whole_eager)]
    if graph is not None:
        cases.append(("whole plan, one CUDA graph", whole_graph))
    with torch.inference_mode():
        ref = whole_eager()
        if graph is not None:
            same = bool((whole_graph()[0] == ref[0]).all())
        for name, fn in cases:
            for _ in range(20):
                fn()
            lat = []
            for _ in range(a.ticks):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                lat.append((time.perf_counter() - t0) * 1e3)
            rows.append({"case": name, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                         "max_ms": float(np.max(lat))})
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{a.bundle}: {n} samples x {T} codes on {name} (torch {torch.__version__}); {a.ticks} plans per row")
    print(f"{'case':<44}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for r in rows:
        print(f"{r['case']:<44}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}")
    if graph is not None:
        print(f"CUDA-graph replay draws the eager tokens: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
