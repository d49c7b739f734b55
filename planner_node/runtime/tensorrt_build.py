"""Build TensorRT plans from ONNX with NVIDIA's Python API (written to the documented API).

TensorRT 10: ``BuilderFlag.FP16`` on a weakly typed network. TensorRT 11 removed weak typing:
networks are strongly typed and FP16 comes from an FP16 ONNX, so the FP32 graph is converted
first (onnxconverter-common's float16 pass) when TensorRT >= 11. A timing cache is reused
across builds; plans are written atomically under the key of
``planner_node.runtime.plan_cache.plan_key``. TensorRT is not installable on the CI machines:
this module is exercised on a GPU host only (tests marked gpu).
"""
from __future__ import annotations

from pathlib import Path

from planner_node.atomic import atomic_path, sha256_file
from planner_node.runtime.plan_cache import default_cache_dir, plan_filename, plan_key


def machine_info() -> dict | None:
    """{"trt_version", "compute_capability"} or None when TensorRT or a CUDA GPU is absent."""
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart  # cuda-python
    except ImportError:
        return None
    err, dev = cudart.cudaGetDevice()
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    err, props = cudart.cudaGetDeviceProperties(dev)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    return {"trt_version": trt.__version__, "compute_capability": f"{props.major}.{props.minor}"}


def build_plan(onnx_path: Path, out_path: Path, precision: str = "fp16", workspace_mb: int = 1024,
               timing_cache: Path | None = None) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    src = onnx_path
    if major >= 11:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if precision == "fp16":
            src = _fp16_onnx(onnx_path)
    else:
        flags = 0  # TRT 10: explicit batch is the only mode; weakly typed
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16" and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_path = timing_cache or (default_cache_dir() / "timing.cache")
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed")
    with atomic_path(out_path, suffix=".plan") as tmp:
        Path(tmp).write_bytes(bytes(serialized))
    with atomic_path(cache_path, suffix=".cache") as tmp:
        Path(tmp).write_bytes(bytes(cache.serialize()))
    return out_path


def _fp16_onnx(onnx_path: Path) -> Path:
    import onnx
    from onnxconverter_common import float16

    out = onnx_path.with_suffix(".fp16.onnx")
    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def build_plans(bundle_dir: Path, graphs: dict, precision: str = "fp16") -> list[dict]:
    """Build a plan per graph for this machine; returns the manifest's ``plans`` entries."""
    info = machine_info()
    if info is None:
        raise RuntimeError("--tensorrt needs TensorRT and a CUDA GPU on this machine (pip install .[gpu])")
    out = []
    for name, g in graphs.items():
        key = plan_key(g["sha256"], info["trt_version"], info["compute_capability"], precision)
        path = bundle_dir / plan_filename(name, key)
        build_plan(bundle_dir / g["file"], path, precision)
        out.append({"graph": name, "file": path.name, "sha256": sha256_file(path), "key": key,
                    "tensorrt_version": info["trt_version"], "compute_capability": info["compute_capability"],
                    "precision": precision})
    return out
