"""Where a trainer runs: ``--device auto|cpu|cuda``, and multi-process training under torchrun.

Every trainer keeps its data on the CPU and moves each batch to the device: the datasets are
larger than a Jetson's or a small card's memory, and a batch is small. Models, optimizer state
and the loss live on the device. Checkpoints are written with CPU tensors and loaded with
``map_location="cpu"`` (``models/checkpoint.py``), so a run trained on a GPU resumes, exports
and evaluates on a CPU machine, and the other way round.

Under ``torchrun --nproc_per_node N`` each process is one rank: on CUDA, rank ``LOCAL_RANK``
drives GPU ``LOCAL_RANK`` and gradients are all-reduced over NCCL; on the CPU, over gloo.
"""
from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    pass


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the CUDA device when torch sees one, else the CPU. ``cuda`` without one is an
    error that says why (a CPU-only torch build, or no visible device)."""
    if name not in DEVICES:
        raise DeviceError(f"--device: {name!r}; valid: {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
        raise DeviceError(f"--device cuda: {why}; use --device cpu or auto")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(world size, rank). Under torchrun (``WORLD_SIZE`` > 1) joins the process group once:
    NCCL for CUDA, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return world, rank


def ddp(module: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """``module`` wrapped for data-parallel training when there is more than one rank."""
    if world <= 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def cpu_state(state: dict) -> dict:
    """A state dict (or nested dict of tensors) with every tensor on the CPU: what a checkpoint holds."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [cpu_state(v) for v in state]
    if isinstance(state, tuple):
        return tuple(cpu_state(v) for v in state)
    return state


def to(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device`` (the CPU case returns them as they are)."""
    if device.type == "cpu":
        return tensors
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def describe(device: torch.device) -> str:
    """For a trainer's first line: which device, and its name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
