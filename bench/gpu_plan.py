#!/usr/bin/env python3
"""One H-GAP plan on a CUDA GPU: step graphs eager vs the whole-plan graph eager vs the whole-plan
graph replayed as one captured CUDA graph (the device check of the "one graph per plan" issue).

Needs torch (with CUDA), numpy and PyYAML only: the graphs are the bundle's reference modules
(``reference.pt``, hash-checked), so it runs on a lent device machine whose image lacks ONNX
Runtime, MuJoCo and ROS. ``--device cpu`` is a dry run of the same code (no CUDA-graph row).

    python bench/gpu_plan.py [--bundle bundles/hgap] [--ticks 500] [--json OUT.json]

``--train CONFIG ...``: training throughput instead, each config's trainer (``--device``, every
device in the same run: ``--device cpu,cuda``) for ``--train-steps`` optimizer steps after 5
warm-up steps on ``--data``, in optimizer steps/s and windows/s (nothing is saved):

    python bench/gpu_plan.py --train config/train/hgap_paper.yaml config/train/diffuser_paper.yaml \
        --data data/train --device cpu,cuda [--train-steps 50]
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
    ap.add_argument("--train", nargs="+", metavar="CONFIG", help="measure these training configs instead")
    ap.add_argument("--data", default="data/train", help="with --train: the dataset (world-model kinds need executed actions)")
    ap.add_argument("--train-steps", type=int, default=50)
    a = ap.parse_args()
    if a.train:
        return train_throughput(a)
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


def train_throughput(a) -> int:
    """Optimizer steps/s of each config's trainer on each device of ``--device`` (comma list)."""
    import shutil
    import tempfile

    import torch

    from planner_node.kinds import get_kind, resolve
    from planner_node.models.config import load_config

    devices = a.device.split(",")
    rows = []
    for path in a.train:
        cfg = load_config(path)
        for dev in devices:
            if dev == "cuda" and not torch.cuda.is_available():
                rows.append({"config": path, "device": "cuda", "skipped": "no CUDA device visible to torch"})
                continue
            tmp = tempfile.mkdtemp(prefix="train_bench_")
            try:
                try:
                    trainer = resolve(get_kind(cfg.kind).trainer)(cfg, a.data, Path(tmp) / "run", progress=False,
                                                                  device=dev)
                except ValueError as e:   # a config that cannot train on this data: say so, measure the rest
                    rows.append({"config": path, "device": dev, "skipped": str(e)[:120]})
                    continue
                trainer.run(stop_after=5)                       # warm-up: allocations, kernels, caches
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                trainer.run(stop_after=a.train_steps)
                if dev == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            batch = cfg.train.batch_size
            name = torch.cuda.get_device_name() if dev == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
            rows.append({"config": path, "device": name, "steps_per_s": a.train_steps / dt,
                         "windows_per_s": a.train_steps * batch / dt, "batch": batch})
    print(f"training throughput on {a.data}: {a.train_steps} optimizer steps per row after 5 warm-up steps "
          f"(torch {torch.__version__})")
    print(f"{'config':<38}{'device':<30}{'batch':>6}{'steps/s':>10}{'windows/s':>12}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['config']:<38}{r['device']:<30}  skipped: {r['skipped']}")
        else:
            print(f"{r['config']:<38}{r['device']:<30}{r['batch']:>6}{r['steps_per_s']:>10.2f}{r['windows_per_s']:>12.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"torch": torch.__version__, "data": a.data, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
