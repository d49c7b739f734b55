"""Checkpoints: one atomic ``torch.save`` of plain tensors and primitives, loaded with weights_only=True."""
from __future__ import annotations

from pathlib import Path

import torch

from planner_node import spec
from planner_node.atomic import atomic_path

FORMAT = "planner_node.checkpoint/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT, "spec_hash": spec.SPEC_HASH, **payload}, tmp)


def checkpoint_file(run_or_file: str | Path) -> Path:
    p = Path(run_or_file)
    return p / "checkpoint.pt" if p.is_dir() else p


def load_checkpoint(run_or_file: str | Path, expect_kind: str | None = None) -> dict:
    path = checkpoint_file(run_or_file)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise CheckpointError(f"{path}: not a loadable checkpoint ({e.__class__.__name__}: {e})") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a planner_node checkpoint (format {ck.get('format') if isinstance(ck, dict) else None!r})")
    try:
        spec.check_spec_hash(ck.get("spec_hash"), str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    if expect_kind is not None and ck.get("kind") != expect_kind:
        raise CheckpointError(f"{path}: checkpoint is a {ck.get('kind')!r} model, expected {expect_kind!r}")
    return ck
