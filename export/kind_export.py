"""What a kind's export function returns, and the ONNX tools it uses (torch allowed here).

A kind's ``export_graphs(checkpoint, out_dir, settings) -> Exported`` (named in its registry
record) writes ``<name>.onnx`` for each graph into ``out_dir`` (fixed shapes, pinned opset,
``onnx.checker`` + shape inference, parity against torch) and, if it has torch weights for the
``torch`` backend, ``reference.pt``. The bundle writer does the rest: hashes, manifest, card,
verification, the atomic rename.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

OPSET = 17


class ExportError(RuntimeError):
    pass


@dataclass
class Exported:
    graphs: dict[str, float]                 # graph name -> max abs parity error vs torch
    horizon: int                             # control steps a plan covers
    kind_config: dict                        # the manifest's kind_config (the record's keys)
    normalizer: dict                         # obs_mean, obs_std, act_mean, act_std, ret_mean, ret_std
    reference: bool = False                  # reference.pt written (weights for the torch backend)
    card: list[str] = field(default_factory=list)   # kind-specific lines for CARD.md


def export_onnx(module, args, names_in, names_out, path: Path) -> None:
    import onnx

    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, do_constant_folding=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(path))


def graph_io(path: Path) -> tuple[list, list]:
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


def check_parity(path: Path, feeds: dict, expected: list, atol: float) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    err = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
    if not err <= atol:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {err:.2e} > {atol:.0e}")
    return err
