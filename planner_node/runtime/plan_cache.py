"""TensorRT plan keys and the load-time decision (pure logic: unit-tested without a GPU).

A serialized TensorRT plan is only valid for the TensorRT version and GPU compute capability
it was built with. Plan files are named by a key of (ONNX sha256, TensorRT version, compute
capability, precision). At load, for each graph:

* a bundle plan whose key matches this machine  -> use it;
* else a cached plan for this machine's key       -> use it (rebuilt earlier);
* else, if TensorRT's builder is available        -> rebuild from the ONNX into the cache;
* else                                            -> fall back to ONNX Runtime, and say why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def plan_key(onnx_sha256: str, trt_version: str, compute_capability: str, precision: str) -> str:
    cc = compute_capability.replace(".", "")
    return f"{onnx_sha256[:16]}-trt{trt_version}-sm{cc}-{precision}"


def plan_filename(graph: str, key: str) -> str:
    return f"{graph}.{key}.plan"


def default_cache_dir() -> Path:
    return Path(os.environ.get("PLANNER_TRT_CACHE", Path.home() / ".cache" / "planner_node" / "trt"))


@dataclass(frozen=True)
class PlanDecision:
    action: str          # "use_bundle_plan" | "use_cached_plan" | "rebuild" | "fallback_onnxruntime"
    path: Path | None
    reason: str


def decide(graph: str, onnx_sha256: str, bundle_root: Path, bundle_plans: list[dict], machine: dict | None,
           precision: str = "fp16", cache_dir: Path | None = None, can_build: bool = True) -> PlanDecision:
    """``machine``: {"trt_version", "compute_capability"} of this host, or None without TensorRT/GPU."""
    if machine is None:
        return PlanDecision("fallback_onnxruntime", None,
                            f"{graph}: TensorRT or a CUDA GPU is not available here; using ONNX Runtime")
    key = plan_key(onnx_sha256, machine["trt_version"], machine["compute_capability"], precision)
    for p in bundle_plans:
        if p.get("graph") == graph and p.get("key") == key:
            return PlanDecision("use_bundle_plan", bundle_root / p["file"], f"{graph}: bundle plan matches {key}")
    others = [p.get("key") for p in bundle_plans if p.get("graph") == graph]
    cached = (cache_dir or default_cache_dir()) / plan_filename(graph, key)
    if cached.is_file():
        return PlanDecision("use_cached_plan", cached, f"{graph}: cached plan for {key}")
    why = f"bundle plans {others} were built for other machines" if others else "the bundle has no plan"
    if can_build:
        return PlanDecision("rebuild", cached, f"{graph}: {why}; rebuilding {key} from ONNX into the cache")
    return PlanDecision("fallback_onnxruntime", None, f"{graph}: {why} and TensorRT's builder is unavailable; "
                        "using ONNX Runtime")
